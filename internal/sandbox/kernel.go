package sandbox

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/nimbus-vmm/nimbus/internal/cachedir"
	"github.com/nimbus-vmm/nimbus/internal/guestimage"
)

// Error categories.
var (
	// ErrMissingTool: QEMU, busybox or an apt tool is not installed.
	ErrMissingTool = errors.New("sandbox: missing tool")
	// ErrKernel: the Debian kernel could not be resolved, fetched or unpacked.
	ErrKernel = errors.New("sandbox: kernel")
	// ErrBoot: the sandbox guest did not run the command to completion.
	ErrBoot = errors.New("sandbox: boot")
	// ErrTimeout: the run exceeded its timeout and QEMU was killed.
	ErrTimeout = errors.New("sandbox: timeout")
	// ErrStalled: the sandbox stopped making progress (its console went
	// silent, or Config.Check gave up on it) and QEMU was killed.
	ErrStalled = errors.New("sandbox: stalled")
)

// KernelMetaPackage is the Debian package whose dependency names the
// current versioned kernel package.
const KernelMetaPackage = "linux-image-amd64"

// Kernel is an unpacked Debian kernel.
type Kernel struct {
	Image      string // bzImage (vmlinuz)
	ModulesDir string // lib/modules/<Version>, with a modules.dep
	Version    string // uname -r, e.g. 6.1.0-56-amd64
}

// EnsureKernel returns the Debian kernel cached under cacheDir/kernel,
// fetching it first if needed: the versioned package that linux-image-amd64
// depends on is fetched with `apt-get download` and unpacked with
// `dpkg-deb -x` (it is never installed on the host), and a modules.dep is
// generated since the package ships none. Concurrent callers (parallel test
// packages) serialize on a lock file.
func EnsureKernel(ctx context.Context, cacheDir string) (*Kernel, error) {
	kdir := filepath.Join(cacheDir, "kernel")
	unlock, err := cachedir.Lock(kdir)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrKernel, err)
	}
	defer unlock()

	// A cached kernel is used as is, so runs work offline once fetched.
	if cur, err := os.ReadFile(filepath.Join(kdir, "current")); err == nil {
		if k, err := findKernel(filepath.Join(kdir, strings.TrimSpace(string(cur)))); err == nil {
			return k, nil
		}
	}
	pkg, err := resolveKernelPackage(ctx)
	if err != nil {
		return nil, err
	}
	dst := filepath.Join(kdir, pkg)
	if k, err := findKernel(dst); err == nil {
		return k, os.WriteFile(filepath.Join(kdir, "current"), []byte(pkg+"\n"), 0o644)
	}
	tmp, err := os.MkdirTemp(kdir, "fetch-")
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrKernel, err)
	}
	defer os.RemoveAll(tmp)
	if err := run(ctx, tmp, "apt-get", "download", "-q", pkg); err != nil {
		return nil, fmt.Errorf("%w: apt-get download %s (run scripts/install-deps.sh, which runs apt-get update): %w", ErrKernel, pkg, err)
	}
	debs, _ := filepath.Glob(filepath.Join(tmp, pkg+"_*.deb"))
	if len(debs) != 1 {
		return nil, fmt.Errorf("%w: apt-get download %s left %d .deb files", ErrKernel, pkg, len(debs))
	}
	root := filepath.Join(tmp, "root")
	if err := run(ctx, tmp, "dpkg-deb", "-x", debs[0], root); err != nil {
		return nil, fmt.Errorf("%w: unpacking %s: %w", ErrKernel, debs[0], err)
	}
	k, err := findKernel(root)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(filepath.Join(k.ModulesDir, "modules.dep")); err != nil {
		ix, err := guestimage.LoadModuleIndex(k.ModulesDir)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrKernel, err)
		}
		var dep bytes.Buffer
		if err := ix.WriteAllModulesDep(&dep); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrKernel, err)
		}
		if err := os.WriteFile(filepath.Join(k.ModulesDir, "modules.dep"), dep.Bytes(), 0o644); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrKernel, err)
		}
	}
	os.RemoveAll(dst)
	if err := os.Rename(root, dst); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrKernel, err)
	}
	if err := os.WriteFile(filepath.Join(kdir, "current"), []byte(pkg+"\n"), 0o644); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrKernel, err)
	}
	return findKernel(dst)
}

// findKernel locates boot/vmlinuz-V and lib/modules/V under an unpacked
// package root. A directory under cacheDir/kernel named for the package is
// complete: it is renamed there only after modules.dep was written.
func findKernel(root string) (*Kernel, error) {
	imgs, _ := filepath.Glob(filepath.Join(root, "boot", "vmlinuz-*"))
	if len(imgs) != 1 {
		return nil, fmt.Errorf("%w: %d kernel images under %s/boot", ErrKernel, len(imgs), root)
	}
	ver := strings.TrimPrefix(filepath.Base(imgs[0]), "vmlinuz-")
	for _, lib := range []string{"lib", "usr/lib"} { // Debian 13 moves modules to /usr/lib
		md := filepath.Join(root, lib, "modules", ver)
		if fi, err := os.Stat(md); err == nil && fi.IsDir() {
			return &Kernel{Image: imgs[0], ModulesDir: md, Version: ver}, nil
		}
	}
	return nil, fmt.Errorf("%w: no modules for %s under %s", ErrKernel, ver, root)
}

// resolveKernelPackage asks apt which versioned package linux-image-amd64
// depends on.
func resolveKernelPackage(ctx context.Context) (string, error) {
	if _, err := exec.LookPath("apt-cache"); err != nil {
		return "", fmt.Errorf("%w: apt-cache not found; the sandbox kernel comes from Debian's %s package", ErrMissingTool, KernelMetaPackage)
	}
	out, err := exec.CommandContext(ctx, "apt-cache", "depends", KernelMetaPackage).Output()
	if err != nil {
		return "", fmt.Errorf("%w: apt-cache depends %s failed (run scripts/install-deps.sh, which runs apt-get update): %w", ErrKernel, KernelMetaPackage, err)
	}
	pkg := parseKernelDepends(out)
	if pkg == "" {
		return "", fmt.Errorf("%w: package %s not known to apt or has no linux-image-* dependency (run apt-get update)", ErrKernel, KernelMetaPackage)
	}
	return pkg, nil
}

// parseKernelDepends picks the linux-image-* dependency out of
// `apt-cache depends` output.
func parseKernelDepends(out []byte) string {
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 2 && f[0] == "Depends:" && strings.HasPrefix(f[1], "linux-image-") {
			return f[1]
		}
	}
	return ""
}

func run(ctx context.Context, dir, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		if errors.Is(err, exec.ErrNotFound) {
			return fmt.Errorf("%w: %s: %w", ErrMissingTool, name, err)
		}
		return fmt.Errorf("%w: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}
