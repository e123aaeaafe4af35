// Package distro boots a real distribution under Nimbus: debootstrap's
// Debian with systemd (internal/debimage) from a raw and a qcow2 disk,
// logged into on the serial console and on a virtio-console through
// ptys as a person would, and powered off from inside. Its tests need the
// image the sandbox ships with `nimbus-sandbox test -debian`.
package distro
