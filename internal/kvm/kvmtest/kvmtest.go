// Package kvmtest gates tests that need real KVM.
//
// Every KVM test calls Require. Without /dev/kvm the test is skipped,
// unless the environment sets NIMBUS_REQUIRE_KVM=1 (the QEMU sandbox
// does), in which case it fails: a sandbox run that silently skips its
// KVM tests would prove nothing.
package kvmtest

import (
	"os"
	"testing"

	"github.com/nimbus-vmm/nimbus/internal/hostkvm"
	"github.com/nimbus-vmm/nimbus/internal/kvm"
)

// RequireEnv is the environment variable that turns a missing /dev/kvm
// from a skip into a failure.
const RequireEnv = "NIMBUS_REQUIRE_KVM"

// Required reports whether KVM tests must run (RequireEnv is "1").
func Required() bool { return os.Getenv(RequireEnv) == "1" }

// Require opens /dev/kvm for the test and closes it at cleanup. If KVM is
// unusable it skips the test, or fails it when Required.
func Require(t testing.TB) *kvm.System {
	t.Helper()
	return require(t, kvm.Open)
}

func require(t testing.TB, open func() (*kvm.System, error)) *kvm.System {
	t.Helper()
	sys, err := open()
	if err != nil {
		if Required() {
			t.Fatalf("%s=1 but KVM is unusable: %v", RequireEnv, err)
		}
		t.Skipf("skipping: KVM is unusable (%v); set %s=1 to make this a failure", err, RequireEnv)
	}
	t.Cleanup(func() { sys.Close() })
	return sys
}

// RequireCaps is Require plus a capability check: a missing capability
// skips (or, when Required, fails) naming it.
func RequireCaps(t testing.TB, caps ...kvm.Cap) *kvm.System {
	t.Helper()
	sys := Require(t)
	if err := sys.RequireCaps(caps...); err != nil {
		if Required() {
			t.Fatalf("%s=1 but %v", RequireEnv, err)
		}
		t.Skipf("skipping: %v", err)
	}
	return sys
}

// NewVM creates a VM closed at cleanup.
func NewVM(t testing.TB, sys *kvm.System) *kvm.VM {
	t.Helper()
	vm, err := sys.CreateVM()
	if err != nil {
		t.Fatalf("CreateVM: %v", err)
	}
	t.Cleanup(func() { vm.Close() })
	return vm
}

// RequireStockGuests is Require for tests whose guest does what only a
// hardware-assisted KVM gets right (a triple fault, a stock kernel): on
// software KVM such as PVM, where the basic ioctl tests do pass, it skips
// with the host's classification (internal/hostkvm), or fails when Required.
func RequireStockGuests(t testing.TB) *kvm.System {
	t.Helper()
	sys := Require(t)
	if r := hostkvm.Host(); !r.BootsStockGuests() {
		if Required() {
			t.Fatalf("%s=1, but %s", RequireEnv, r)
		}
		t.Skipf("skipping: %s; `make test-kvm` runs this in the QEMU sandbox", r)
	}
	return sys
}
