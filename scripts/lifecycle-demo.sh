#!/bin/sh
# The VM lifecycle with nimbus-remote against a real guest. Run it where
# /dev/kvm works, e.g. in the sandbox:  make lifecycle-demo
# Expects nimbus, nimbus-remote in /nimbus/bin and the guest kernel and
# initramfs in /nimbus/guest (make lifecycle-demo puts them there).
set -u
B=/nimbus/bin; G=/nimbus/guest; S=/tmp/nimbus.sock; R="$B/nimbus-remote --api-socket $S"
run() { echo "\$ $*"; "$@"; }
$B/nimbus --api-socket $S --event-monitor path=/tmp/events.json &
pid=$!
while [ ! -S $S ]; do sleep 0.1; done
cat > /tmp/vm.json <<JSON
{"cpus":{"boot_vcpus":2,"max_vcpus":2},"memory":{"size":268435456},
 "payload":{"kernel":"$G/vmlinuz","initramfs":"$G/initramfs","cmdline":"console=ttyS0 quiet"},
 "serial":{"mode":"File","file":"/tmp/serial.log"},"console":{"mode":"Off"}}
JSON
state() { $R info | sed -n 's/.*"state":"\([A-Za-z]*\)".*/state: \1/p'; }
run $R ping
run $R create /tmp/vm.json; state
run $R boot; state
until grep -q NIMBUS-GUEST-UP /tmp/serial.log 2>/dev/null; do sleep 0.5; done
echo "guest: $(grep NIMBUS-GUEST-UP /tmp/serial.log)"
run $R pause; state
run $R pause; echo "(a second pause fails, as upstream)"
run $R resume; state
run $R reboot; state
run $R shutdown; state
run $R boot; state
run $R delete; run $R info; echo "(info after delete: 404)"
run $R shutdown-vmm
wait $pid; echo "nimbus exited with status $?"
echo "events:"; grep '"event"' /tmp/events.json | tr -d ' ,' | tr '\n' ' '; echo
