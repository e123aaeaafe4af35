package sandbox

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/nimbus-vmm/nimbus/internal/cachedir"
)

// EnvVirtiofsd is Debian's virtiofsd where the command runs, for the
// virtio-fs tests.
const EnvVirtiofsd = "NIMBUS_VIRTIOFSD"

// ErrVirtiofsd: no Debian virtiofsd could be found or fetched.
var ErrVirtiofsd = errors.New("sandbox: virtiofsd unavailable")

// Where Debian puts virtiofsd: the virtiofsd package (trixie on, the Rust
// daemon), or the release's own qemu-system-common (bookworm's QEMU 7.2,
// the C daemon; QEMU 8 dropped it, so the backports QEMU that
// install-deps.sh installs has none).
var virtiofsdPaths = []string{"/usr/libexec/virtiofsd", "/usr/lib/qemu/virtiofsd"}

// EnsureVirtiofsd returns a Debian virtiofsd: the host's if installed,
// else one unpacked under cacheDir/virtiofsd from the package `apt-get
// download` fetches (never installed): virtiofsd, or where the release has
// no such package, the release suite's qemu-system-common (selected as
// qemu-system-common/<codename>, so the backports one that replaced it on
// the host is not taken).
func EnsureVirtiofsd(ctx context.Context, cacheDir string) (string, error) {
	for _, p := range virtiofsdPaths {
		if fileExists(p) {
			return p, nil
		}
	}
	dir := filepath.Join(cacheDir, "virtiofsd")
	unlock, err := cachedir.Lock(dir)
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrVirtiofsd, err)
	}
	defer unlock()
	root := filepath.Join(dir, "root")
	if p, ok := findVirtiofsd(root); ok {
		return p, nil
	}
	pkgs := []string{"virtiofsd"}
	if c := releaseCodename(); c != "" {
		pkgs = append(pkgs, "qemu-system-common/"+c)
	}
	var errs []error
	for _, pkg := range pkgs {
		// A fresh directory per package: a failed download may leave files.
		tmp, err := os.MkdirTemp(dir, "fetch-")
		if err != nil {
			return "", fmt.Errorf("%w: %w", ErrVirtiofsd, err)
		}
		defer os.RemoveAll(tmp)
		if err := run(ctx, tmp, "apt-get", "download", "-q", pkg); err != nil {
			errs = append(errs, fmt.Errorf("apt-get download %s: %w", pkg, err))
			continue
		}
		debs, _ := filepath.Glob(filepath.Join(tmp, "*.deb"))
		if len(debs) != 1 {
			return "", fmt.Errorf("%w: apt-get download %s left %d .deb files", ErrVirtiofsd, pkg, len(debs))
		}
		unpacked := filepath.Join(tmp, "root")
		if err := run(ctx, tmp, "dpkg-deb", "-x", debs[0], unpacked); err != nil {
			return "", fmt.Errorf("%w: unpacking %s: %w", ErrVirtiofsd, debs[0], err)
		}
		if _, ok := findVirtiofsd(unpacked); !ok {
			return "", fmt.Errorf("%w: %s has no virtiofsd", ErrVirtiofsd, debs[0])
		}
		os.RemoveAll(root) // an earlier, incomplete unpack
		if err := os.Rename(unpacked, root); err != nil {
			return "", fmt.Errorf("%w: %w", ErrVirtiofsd, err)
		}
		p, _ := findVirtiofsd(root)
		return p, nil
	}
	return "", fmt.Errorf("%w (run scripts/install-deps.sh, which runs apt-get update): %w", ErrVirtiofsd, errors.Join(errs...))
}

// guestVirtiofsd is where the sandbox puts virtiofsd ($NIMBUS_VIRTIOFSD).
const guestVirtiofsd = "/nimbus/tools/virtiofsd"

// virtiofsdFiles ships EnsureVirtiofsd's daemon at guestVirtiofsd, with
// its libraries in the QEMU sandbox (on the host they are the host's).
func virtiofsdFiles(ctx context.Context, cacheDir string, mode Mode) ([]File, error) {
	bin, err := EnsureVirtiofsd(ctx, cacheDir)
	if err != nil {
		return nil, err
	}
	if mode == Host {
		return []File{{Host: bin, Guest: guestVirtiofsd}}, nil
	}
	return binaryFiles(bin, guestVirtiofsd)
}

func findVirtiofsd(root string) (string, bool) {
	for _, p := range virtiofsdPaths {
		if full := filepath.Join(root, p); fileExists(full) {
			return full, true
		}
	}
	return "", false
}

// releaseCodename is VERSION_CODENAME from /etc/os-release.
func releaseCodename() string {
	f, err := os.Open("/etc/os-release")
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VERSION_CODENAME="); ok {
			return strings.Trim(v, `"`)
		}
	}
	return ""
}

func fileExists(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular()
}
