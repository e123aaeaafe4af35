// Package guesttest gives KVM and end-to-end tests what they need to boot
// a real Linux guest: the guest kernel, its modules, busybox and the Nimbus
// binaries, located from the sandbox's environment variables (set by
// `nimbus-sandbox test`) or, on a host with /dev/kvm, from the build cache.
package guesttest

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/nimbus-vmm/nimbus/internal/directio"
	"github.com/nimbus-vmm/nimbus/internal/guestimage"
	"github.com/nimbus-vmm/nimbus/internal/hostkvm"
	"github.com/nimbus-vmm/nimbus/internal/sandbox"
)

// Assets are host paths usable from the running test.
type Assets struct {
	Kernel     string // bzImage
	ModulesDir string // modules directory with modules.dep
	Busybox    string // static busybox
	BinDir     string // nimbus, nimbus-remote; "" if unknown
	QEMU       string // qemu-system-x86_64; "" if not available
}

// RequireKVM skips the test unless this machine's KVM boots stock Linux
// guests (hardware KVM, see internal/hostkvm: not PVM), or fails it when
// NIMBUS_REQUIRE_KVM=1 (as inside the sandbox).
func RequireKVM(t testing.TB) {
	t.Helper()
	r := hostkvm.Host()
	if r.BootsStockGuests() {
		return
	}
	if sandbox.RequireKVM() {
		t.Fatalf("%s=1, but %s: stock guests do not boot here", sandbox.EnvRequireKVM, r)
	}
	t.Skipf("%s: stock guests do not boot here; `make test-kvm` (nimbus-sandbox test) runs this in the QEMU sandbox", r)
}

// Missing ends a test that lacks something it needs: a failure where the
// sandbox promised everything (NIMBUS_REQUIRE_KVM=1, so that CI cannot
// pass by skipping), a skip elsewhere.
func Missing(t testing.TB, format string, args ...any) {
	t.Helper()
	if sandbox.RequireKVM() {
		t.Fatalf(format, args...)
	}
	t.Skipf(format, args...)
}

// Require calls RequireKVM and locates the assets: from NIMBUS_GUEST_KERNEL,
// NIMBUS_GUEST_MODULES, NIMBUS_BUSYBOX, NIMBUS_BIN_DIR and NIMBUS_QEMU when
// set, otherwise from the build cache (fetching the Debian kernel).
func Require(t testing.TB) *Assets {
	t.Helper()
	RequireKVM(t)
	a := &Assets{
		Kernel:     os.Getenv(sandbox.EnvGuestKernel),
		ModulesDir: os.Getenv(sandbox.EnvGuestModules),
		Busybox:    os.Getenv(sandbox.EnvBusybox),
		BinDir:     os.Getenv(sandbox.EnvBinDir),
		QEMU:       os.Getenv(sandbox.EnvQEMU),
	}
	if a.Kernel == "" || a.ModulesDir == "" {
		dir, err := sandbox.DefaultCacheDir()
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		k, err := sandbox.EnsureKernel(ctx, dir)
		if err != nil {
			t.Fatal(err)
		}
		a.Kernel, a.ModulesDir = k.Image, k.ModulesDir
	}
	if a.Busybox == "" {
		a.Busybox = "/bin/busybox"
	}
	if a.QEMU == "" && !sandbox.RequireKVM() {
		a.QEMU, _ = exec.LookPath("qemu-system-x86_64")
	}
	if a.BinDir == "" {
		if root, err := sandbox.ModuleRoot(); err == nil {
			if _, err := os.Stat(filepath.Join(root, "bin", "nimbus")); err == nil {
				a.BinDir = filepath.Join(root, "bin")
			}
		}
	}
	return a
}

// Image builds a guest initramfs from opts, filling in Busybox, the module
// index and (when opts.ModuleNames is nil) guestimage.DefaultModules.
func (a *Assets) Image(t testing.TB, opts guestimage.Options) []byte {
	t.Helper()
	if opts.Busybox == "" {
		opts.Busybox = a.Busybox
	}
	if opts.ModuleNames == nil {
		opts.ModuleNames = guestimage.DefaultModules
	}
	if opts.Modules == nil {
		ix, err := guestimage.LoadModuleIndex(a.ModulesDir)
		if err != nil {
			t.Fatal(err)
		}
		opts.Modules = ix
	}
	img, err := guestimage.Build(opts)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// ImageFile is Image written to a file in t.TempDir().
func (a *Assets) ImageFile(t testing.TB, opts guestimage.Options) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "initramfs")
	if err := os.WriteFile(p, a.Image(t, opts), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// DirectDir is a fresh directory, removed after the test, on a file system
// that takes O_DIRECT (for disks with direct=on): the test's temporary
// directory when it does, else one under $NIMBUS_DIRECT_DIR (the sandbox's
// ext4 scratch).
func DirectDir(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	if takesDirect(dir) {
		return dir
	}
	base := os.Getenv(sandbox.EnvDirectDir)
	if base == "" {
		Missing(t, "%s refuses O_DIRECT and %s is not set", dir, sandbox.EnvDirectDir)
	}
	dir, err := os.MkdirTemp(base, "direct")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if !takesDirect(dir) {
		t.Fatalf("%s=%s refuses O_DIRECT", sandbox.EnvDirectDir, base)
	}
	return dir
}

func takesDirect(dir string) bool {
	f, err := directio.OpenFile(filepath.Join(dir, ".direct-probe"), os.O_CREATE|os.O_RDWR)
	if err != nil {
		return false
	}
	f.Close()
	os.Remove(f.Name())
	return true
}
