// Package e2e boots real Linux guests through the nimbus binary, as users
// and orchestrators do: the CLI with a bzImage and with a PVH vmlinux, and
// the REST API. Each test is a nested guest boot (20-45 s in the QEMU
// sandbox), so every test checks several things per boot. Run them with
// `make test-kvm` (they are in KVM_TEST_PKGS); elsewhere they skip.
package e2e
