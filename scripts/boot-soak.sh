#!/bin/sh
# boot-soak.sh [N]: boot the guest in /nimbus/guest N times (default 100)
# with nimbus, 2 vCPUs, and count the boots that fail: no clean poweroff
# with exit status 0 within 3 minutes, or a guest kernel WARNING/BUG/Oops.
# It measures how often nested KVM breaks a boot (README "Sandbox"):
#   go run ./cmd/nimbus-sandbox image -o build/soak -script true
#   go run ./cmd/nimbus-sandbox --timeout 3h --file build/soak:/nimbus/guest \
#     --file scripts/boot-soak.sh:/nimbus/boot-soak.sh -- sh /nimbus/boot-soak.sh 100
set -u
n=${1:-100}
G=/nimbus/guest
ok=0 failed=0 i=1
t0=$(date +%s)
while [ "$i" -le "$n" ]; do
	b0=$(date +%s)
	out=$(timeout 180 nimbus --kernel $G/vmlinuz --initramfs $G/initramfs \
		--cmdline "console=ttyS0 quiet loglevel=5 panic=-1" --cpus boot=2 --memory size=256M \
		--serial tty --console off 2>&1)
	rc=$?
	if [ "$rc" -eq 0 ] && echo "$out" | grep -q NIMBUS-GUEST-POWEROFF &&
		! echo "$out" | grep -qE 'WARNING:|BUG:|Oops|XSAVE consistency|Call Trace'; then
		ok=$((ok + 1))
	else
		failed=$((failed + 1))
		# nimbus exits 0 on timeout's SIGTERM: a hung guest shows as a
		# boot of about 180 s.
		echo "SOAK boot $i failed after $(($(date +%s) - b0)) s: exit status $rc, $(echo "$out" | wc -l) lines of output; the last:"
		echo "$out" | tr -d '\r' | tail -15 | sed 's/^/  /'
	fi
	[ $((i % 10)) -eq 0 ] && echo "SOAK $i boots, $failed failed, $(( ($(date +%s) - t0) / i )) s per boot"
	i=$((i + 1))
done
echo "SOAK result: $n boots, $ok ok, $failed failed, $(( ($(date +%s) - t0) / n )) s per boot"
