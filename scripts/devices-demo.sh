#!/bin/sh
# A VM with a virtio disk and a virtio network card, booted (a) by the CLI
# and (b) through the API with nimbus-remote. Run it where /dev/kvm works,
# e.g. in the sandbox:  make devices-demo
# Expects nimbus, nimbus-remote in /nimbus/bin and the guest kernel and
# initramfs in /nimbus/guest (make devices-demo puts them there). The
# guest's embedded script (DEVICES_DEMO_SCRIPT in the Makefile) shows vda
# (serial, a direct write and read back) and eth0 (address, ping of the
# tap's host side 192.168.249.1).
set -u
# The tap and its address live in a network namespace of the demo's own,
# never in the machine's (in the QEMU sandbox and on a host alike).
if [ "${NIMBUS_DEMO_NETNS:-}" != 1 ]; then
	NIMBUS_DEMO_NETNS=1 exec unshare -n -- sh "$0" "$@"
fi
ip link set lo up
B=/nimbus/bin; G=/nimbus/guest; S=/tmp/nimbus.sock; R="$B/nimbus-remote --api-socket $S"
DISK=/tmp/disk.img; TAP=ndemo0; MAC=52:54:00:de:0d:01
run() { echo "\$ $*"; "$@"; }
# Just the JSON field values we show, since the sandbox has no jq.
info_state() { $R info | sed -n 's/.*"state":"\([A-Za-z]*\)".*/state: \1/p'; }

# An 8 MiB raw image whose first bytes the host wrote.
dd if=/dev/zero of=$DISK bs=1M count=8 2>/dev/null
printf 'written-by-the-host' | dd of=$DISK conv=notrunc 2>/dev/null

echo "=== (a) booted by the CLI"
run $B/nimbus --kernel $G/vmlinuz --initramfs $G/initramfs --cmdline "console=ttyS0 quiet" \
  --cpus boot=2 --memory size=512M \
  --disk path=$DISK,serial=demo-disk-0 \
  --net tap=$TAP,ip=192.168.249.1,mask=255.255.255.0,mac=$MAC \
  --serial tty --console off
echo "nimbus exited with status $?"
echo "host reads block 1 of $DISK: $(dd if=$DISK bs=4096 skip=1 count=1 2>/dev/null | tr -d '\000')"
ip link show $TAP >/dev/null 2>&1 && echo "$TAP still exists" || echo "$TAP is gone with nimbus"

echo
echo "=== (b) the same VM through the API"
$B/nimbus --api-socket $S &
pid=$!
while [ ! -S $S ]; do sleep 0.1; done
# nimbus.stay=1: the guest stays up after its script, for info and counters.
cat > /tmp/vm.json <<JSON
{"cpus":{"boot_vcpus":2,"max_vcpus":2},"memory":{"size":536870912},
 "payload":{"kernel":"$G/vmlinuz","initramfs":"$G/initramfs","cmdline":"console=ttyS0 quiet nimbus.stay=1"},
 "serial":{"mode":"File","file":"/tmp/serial.log"},"console":{"mode":"Off"}}
JSON
run $R create /tmp/vm.json; info_state
run $R add-disk path=$DISK,serial=demo-disk-1
run $R add-net tap=$TAP,ip=192.168.249.1,mask=255.255.255.0,mac=$MAC
run $R boot; info_state
until grep -q 'NIMBUS-GUEST-STAYING-UP\|NIMBUS-GUEST-POWEROFF' /tmp/serial.log 2>/dev/null; do sleep 0.5; done
echo "--- guest serial (/tmp/serial.log)"
sed -n '/NIMBUS-GUEST-UP/,$p' /tmp/serial.log | tr -d '\r'
echo "---"
echo "host side: $(ip -4 addr show $TAP | grep inet)"
run $R info
echo
run $R counters
echo
run $R shutdown-vmm
wait $pid; echo "nimbus exited with status $?"
