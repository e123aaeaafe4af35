#!/bin/sh
# Counts how often a plain guest boot fails where nimbus runs: N boots of
# the demo guest (make demo's image, /nimbus/guest) in a row, each watched
# for a serial console that stops growing. Run in the sandbox:
#
#   make nested-boots [BOOTS=12] [NIMBUS_ARGS='--cpus boot=2']
#
# For a boot that stalls it prints the guest's last lines and, from the L1
# kernel's kvm tracepoints, 0.3 s of exits: the nested-paging failure under
# QEMU's TCG shows as one NPF, emulation and injected #PF in a loop. $QEMU_TOO
# also boots the same guest under QEMU/KVM (q35, virtio-rng-pci) for a
# baseline. Ends with "boots: N ok: K" per VMM; exits 0 either way.
N=${N:-12}
STALL=${STALL:-20}
T=/sys/kernel/tracing
mount -t tracefs none $T 2>/dev/null
ok_n=0; ok_q=0; i=0
run() { # $1: nimbus|qemu, $2: serial file
	if [ "$1" = qemu ]; then
		$NIMBUS_QEMU -M q35 -nic none -device virtio-rng-pci -accel kvm -cpu host -m 256M -smp 1 \
			-display none -no-reboot -serial file:"$2" -kernel /nimbus/guest/vmlinuz \
			-initrd /nimbus/guest/initramfs -append "console=ttyS0 panic=-1 reboot=t" >/tmp/vmm.log 2>&1 &
	else
		/nimbus/bin/nimbus -v --kernel /nimbus/guest/vmlinuz --initramfs /nimbus/guest/initramfs \
			--cmdline "console=ttyS0" --memory size=256M --serial file="$2" --console off \
			$NIMBUS_ARGS >/tmp/vmm.log 2>&1 &
	fi
	pid=$!; last=-1; same=0; t=0; : >"$2"
	while kill -0 $pid 2>/dev/null; do
		sleep 2; t=$((t+2))
		sz=$(wc -c <"$2" 2>/dev/null)
		if [ "$sz" = "$last" ]; then same=$((same+2)); else same=0; fi
		last=$sz
		if [ $same -ge "$STALL" ] || [ $t -ge 180 ]; then
			echo "boot $i ($1): console silent for ${same}s after $sz bytes; last lines:"
			tail -5 "$2" | sed 's/^/  | /'
			if [ -d $T/events/kvm ]; then
				echo >$T/trace; echo 1 >$T/events/kvm/enable; sleep 0.3; echo 0 >$T/events/kvm/enable
				echo "  kvm events in 0.3 s:"; grep -o 'kvm_[a-z_]*:' $T/trace | sort | uniq -c | sort -rn | head -6 | sed 's/^/  /'
				grep -m2 'kvm_exit:' $T/trace | sed 's/^ */  /' | cut -c1-200
			fi
			kill -9 $pid
			break
		fi
	done
	wait $pid 2>/dev/null; rc=$?
	grep -q "Hello from" "$2" && return 0
	echo "boot $i ($1): no guest line; exit status $rc; the VMM's last lines:"
	tail -5 /tmp/vmm.log | sed 's/^/  | /'
	return 1
}
while [ $i -lt "$N" ]; do
	if run nimbus /tmp/serial.nimbus; then ok_n=$((ok_n+1)); fi
	if [ -n "$QEMU_TOO" ] && run qemu /tmp/serial.qemu; then ok_q=$((ok_q+1)); fi
	i=$((i+1))
done
echo "nimbus boots: $N ok: $ok_n (GOMAXPROCS=${GOMAXPROCS:-unset})"
[ -n "$QEMU_TOO" ] && echo "qemu boots: $N ok: $ok_q"
exit 0
