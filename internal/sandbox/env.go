// Package sandbox runs commands where KVM works: directly on the host when
// /dev/kvm exists, otherwise inside a QEMU TCG guest (-cpu max emulates AMD
// SVM) running Debian's kernel with the KVM modules loaded, which gives a
// nested /dev/kvm. It also keeps the cache of that kernel (EnsureKernel) and
// defines the environment variables that KVM and end-to-end tests read.
//
// `nimbus-sandbox test PKG...` (RunTests) lays the sandbox out as
//
//	/nimbus/tests/<pkg>.test     test binaries, run with -test.v in
//	/nimbus/src/<import path>    (holding the package's testdata/)
//	/nimbus/bin                  $NIMBUS_BIN_DIR: nimbus, nimbus-remote, ...
//	/nimbus/guest/vmlinuz        $NIMBUS_GUEST_KERNEL
//	/nimbus/guest/modules        $NIMBUS_GUEST_MODULES (guestimage.DefaultModules + deps)
//	/nimbus/guest/busybox        $NIMBUS_BUSYBOX
//	/usr/bin/qemu-system-x86_64  $NIMBUS_QEMU (with -qemu)
//
// with NIMBUS_REQUIRE_KVM=1. On a host with /dev/kvm the same variables
// point at the build cache (build/sandbox/run-*, build/cache) instead. Tests get
// these through internal/guestimage/guesttest.Require.
package sandbox

import (
	"errors"
	"os"
	"path/filepath"
)

// Environment variables set for commands run in the sandbox (and, pointing
// at the build cache, by `nimbus-sandbox test` on hosts with /dev/kvm).
const (
	// EnvRequireKVM=1 turns a test's "skip: no /dev/kvm" into a failure.
	EnvRequireKVM = "NIMBUS_REQUIRE_KVM"
	// EnvBinDir is the directory holding the nimbus and nimbus-remote binaries.
	EnvBinDir = "NIMBUS_BIN_DIR"
	// EnvGuestKernel is the guest kernel image (Debian's bzImage).
	EnvGuestKernel = "NIMBUS_GUEST_KERNEL"
	// EnvGuestModules is the guest modules directory (with modules.dep),
	// pruned to the modules guest images load.
	EnvGuestModules = "NIMBUS_GUEST_MODULES"
	// EnvBusybox is a static busybox for guest images.
	EnvBusybox = "NIMBUS_BUSYBOX"
	// EnvQEMU is a qemu-system-x86_64 usable where the command runs (set
	// only when one is available there), for reference runs under QEMU/KVM.
	EnvQEMU = "NIMBUS_QEMU"
	// EnvInSandbox=1 is set inside the QEMU sandbox guest.
	EnvInSandbox = "NIMBUS_IN_SANDBOX"
	// EnvSandboxRoot is where guest paths live: "/" in the QEMU sandbox, a
	// temporary directory when the command runs on the host.
	EnvSandboxRoot = "NIMBUS_SANDBOX_ROOT"
	// EnvCacheDir overrides the build cache directory (default build/cache
	// at the module root).
	EnvCacheDir = "NIMBUS_CACHE_DIR"
)

// RequireKVM reports whether NIMBUS_REQUIRE_KVM=1: tests that need KVM must
// then fail instead of skipping.
func RequireKVM() bool { return os.Getenv(EnvRequireKVM) == "1" }

// HaveKVM reports whether /dev/kvm can be opened for reading and writing.
func HaveKVM() bool {
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if err != nil {
		return false
	}
	f.Close()
	return true
}

// DefaultCacheDir returns $NIMBUS_CACHE_DIR, or build/cache under the
// directory holding go.mod, searched upwards from the working directory.
func DefaultCacheDir() (string, error) {
	if d := os.Getenv(EnvCacheDir); d != "" {
		return filepath.Abs(d)
	}
	root, err := ModuleRoot()
	if err != nil {
		return "", err
	}
	return filepath.Join(root, "build", "cache"), nil
}

// ModuleRoot finds the directory holding go.mod, upwards from the working
// directory.
func ModuleRoot() (string, error) {
	d, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d, nil
		}
		p := filepath.Dir(d)
		if p == d {
			return "", errors.New("sandbox: no go.mod above the working directory; set " + EnvCacheDir)
		}
		d = p
	}
}
