package sandbox

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/nimbus-vmm/nimbus/internal/debimage"
	"github.com/nimbus-vmm/nimbus/internal/guestimage"
)

// EnvDebian is the directory holding the Debian disk image (debimage's
// debian.qcow2, vmlinuz and initrd.img) for the distribution tests.
const EnvDebian = "NIMBUS_DEBIAN"

// EnsureDebian returns the Debian disk image cached under cacheDir, built
// first if needed with the sandbox's kernel and BuildESP's GRUB
// (debimage.Ensure: debootstrap as root, about a minute).
func EnsureDebian(ctx context.Context, cacheDir string, log io.Writer) (*debimage.Image, error) {
	k, err := EnsureKernel(ctx, cacheDir)
	if err != nil {
		return nil, err
	}
	ix, err := guestimage.LoadModuleIndex(k.ModulesDir)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrKernel, err)
	}
	esp, err := os.CreateTemp(cacheDir, "esp-*.img")
	if err != nil {
		return nil, err
	}
	esp.Close()
	defer os.Remove(esp.Name())
	if err := BuildESP(ctx, esp.Name()); err != nil {
		return nil, err
	}
	return debimage.Ensure(ctx, debimage.Options{CacheDir: cacheDir, Busybox: "/bin/busybox", Log: log, ESP: esp.Name(),
		Kernel: debimage.Kernel{Image: k.Image, Version: k.Version, Modules: ix}})
}
