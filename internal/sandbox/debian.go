package sandbox

import (
	"context"
	"fmt"
	"io"

	"github.com/nimbus-vmm/nimbus/internal/debimage"
	"github.com/nimbus-vmm/nimbus/internal/guestimage"
)

// EnvDebian is the directory holding the Debian disk image (debimage's
// debian.qcow2, vmlinuz and initrd.img) for the distribution tests.
const EnvDebian = "NIMBUS_DEBIAN"

// EnsureDebian returns the Debian disk image cached under cacheDir, built
// first if needed with the sandbox's kernel
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
	suite := releaseCodename()
	if suite == "" {
		return nil, fmt.Errorf("%w: no VERSION_CODENAME in /etc/os-release: the image is built from the host's suite", debimage.ErrImage)
	}
	return debimage.Ensure(ctx, debimage.Options{CacheDir: cacheDir, Busybox: "/bin/busybox", Log: log, Suite: suite,
		Kernel: debimage.Kernel{Image: k.Image, Version: k.Version, Modules: ix}})
}
