// Package sandbox runs commands where KVM boots stock guests: on the host
// when it has hardware KVM (internal/hostkvm), otherwise inside a QEMU TCG
// guest (-cpu max emulates AMD SVM) running Debian's kernel with the KVM
// modules loaded, which gives a nested /dev/kvm. Either way the command
// sees the shipped files at their guest paths (on the host, through a
// private mount namespace). It also keeps the cache of that kernel (EnsureKernel) and
// defines the environment variables that KVM and end-to-end tests read.
//
// `nimbus-sandbox test PKG...` (RunTests) lays the sandbox out as
//
//	/nimbus/tests/<pkg>.test     test binaries, run with -test.v in
//	/nimbus/src/<import path>    (holding the package's testdata/)
//	/nimbus/bin                  $NIMBUS_BIN_DIR: nimbus, nimbus-remote, ...
//	/nimbus/guest/vmlinuz        $NIMBUS_GUEST_KERNEL
//	/nimbus/guest/modules        $NIMBUS_GUEST_MODULES (guestimage.DefaultModules, OptionalModules + deps)
//	/nimbus/guest/busybox        $NIMBUS_BUSYBOX
//	/usr/bin/qemu-system-x86_64  $NIMBUS_QEMU (with -qemu)
//	/nimbus/tools/virtiofsd      $NIMBUS_VIRTIOFSD (EnsureVirtiofsd)
//	/nimbus/guest/CLOUDHV.fd     $NIMBUS_FIRMWARE (when install-deps fetched it)
//	/nimbus/guest/esp.img        $NIMBUS_UEFI_ESP (BuildESP: GRUB on FAT)
//
// with NIMBUS_REQUIRE_KVM=1, the same paths in both modes. Tests get these
// through internal/guestimage/guesttest.Require.
package sandbox

import (
	"errors"
	"os"
	"path/filepath"
)

// Environment variables set for commands run in the sandbox (and, pointing
// at the build cache, by `nimbus-sandbox test` on hosts with /dev/kvm).
const (
	// EnvQEMUCPU, read on the host, replaces the sandbox's -cpu model
	// ("max"), for experiments with what TCG emulates.
	EnvQEMUCPU = "NIMBUS_SANDBOX_CPU"
	// EnvQEMUAccel replaces the sandbox's -accel ("tcg").
	EnvQEMUAccel = "NIMBUS_SANDBOX_ACCEL"
	// EnvQEMUSMP replaces the sandbox's vCPU count (2).
	EnvQEMUSMP = "NIMBUS_SANDBOX_SMP"
	// EnvQEMUAffinity, a taskset -c list, runs the command and all it
	// starts on those sandbox CPUs only (default, or "all": every CPU).
	// Pinned to CPU 0 (against unpinned the same evening), a guest with
	// two vCPUs booted in 90 s instead of 46, network tests took 1.2-1.5
	// times as long, one-vCPU boots no longer (guesttest.PinToOneCPU
	// pins the tests that need it).
	EnvQEMUAffinity = "NIMBUS_SANDBOX_AFFINITY"
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
	// EnvFirmware is Cloud Hypervisor's UEFI firmware (Debian's
	// CLOUDHV.fd), when scripts/install-deps.sh fetched it.
	EnvFirmware = "NIMBUS_FIRMWARE"
	// EnvDirectDir names a directory on a file system that takes O_DIRECT
	// (the sandbox guest's ext4 scratch; set by hand elsewhere when the
	// temporary directory is a tmpfs older than Linux 6.6).
	EnvDirectDir = "NIMBUS_DIRECT_DIR"
	// EnvInSandbox=1 is set inside the QEMU sandbox guest.
	EnvInSandbox = "NIMBUS_IN_SANDBOX"
	// EnvCacheDir overrides the build cache directory (default build/cache
	// at the module root).
	EnvCacheDir = "NIMBUS_CACHE_DIR"
)

// RequireKVM reports whether NIMBUS_REQUIRE_KVM=1: tests that need KVM must
// then fail instead of skipping.
func RequireKVM() bool { return os.Getenv(EnvRequireKVM) == "1" }

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
