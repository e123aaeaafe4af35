// Package devices boots real Linux guests with virtio-pci devices (disks,
// rng, virtio-console) and checks what the guest and the host each see:
// data written on one side read back on the other, read-only disks,
// serials, /dev/hwrng, hvc0 output, vm.counters and the device_tree; disks
// given to the nimbus binary by --disk and by nimbus-remote's cold add-disk;
// and a guest that misprograms a device's rings (the VMM survives, the
// device reports DEVICE_NEEDS_RESET). Each test is one nested boot; run them with `make test-kvm` or
// `go run ./cmd/nimbus-sandbox test -qemu ./test/devices`.
package devices
