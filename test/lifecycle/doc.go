// Package lifecycle holds end-to-end tests of the VM lifecycle against the
// real nimbus binary ($NIMBUS_BIN_DIR) booting a real Linux guest under
// KVM: pause/resume, API reboot and shutdown/boot, guest poweroff with and
// without --no-shutdown, guest reboot, the ACPI power button, delete while
// running, SIGTERM, and boot/shutdown cycles without thread, fd or RSS
// growth. Each test asserts on the guest's serial output and the API
// state. They skip without /dev/kvm (guesttest.Require); run them with
// `go run ./cmd/nimbus-sandbox test -qemu ./test/lifecycle`. The package
// has no non-test code.
package lifecycle
