package sandbox

import (
	"context"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"

	"github.com/nimbus-vmm/nimbus/internal/hostkvm"
)

// guestBinDir is where the nimbus binaries are, first on the command's
// PATH, in both modes.
const guestBinDir = "/nimbus/bin"

// ResolveMode turns Auto into Host where this machine has hardware KVM
// (hostkvm), QEMU otherwise, and says on log which and why: the first
// line of every sandbox run.
func ResolveMode(m Mode, log io.Writer) Mode {
	r := hostkvm.Host()
	switch {
	case m == QEMU:
		fmt.Fprintf(log, "nimbus-sandbox: %s: using the QEMU sandbox (-mode qemu)\n", r)
	case m == Host && !r.BootsStockGuests():
		fmt.Fprintf(log, "nimbus-sandbox: %s: running on the host (-mode host), where stock guests will not boot\n", r)
	case m == Host:
		fmt.Fprintf(log, "nimbus-sandbox: %s: running on the host (-mode host)\n", r)
	case r.BootsStockGuests():
		m = Host
		fmt.Fprintf(log, "nimbus-sandbox: %s: running on the host\n", r)
	default:
		m = QEMU
		fmt.Fprintf(log, "nimbus-sandbox: %s: using the QEMU sandbox\n", r)
	}
	return m
}

// shipNimbus adds the nimbus binaries at guestBinDir to cfg.Files unless
// a file is shipped there already; see Config.NimbusBin. The returned
// function removes what it built.
func shipNimbus(ctx context.Context, cfg *Config) (func(), error) {
	for _, f := range cfg.Files {
		if path.Clean(f.Guest) == guestBinDir {
			return func() {}, nil
		}
	}
	if cfg.NimbusBin != "" {
		cfg.Files = append(cfg.Files, File{Host: cfg.NimbusBin, Guest: guestBinDir})
		return func() {}, nil
	}
	root, err := ModuleRoot()
	if err != nil {
		// Outside the source tree: the binaries beside this one, if any.
		if exe, err := os.Executable(); err == nil {
			if _, err := os.Stat(filepath.Join(filepath.Dir(exe), "nimbus")); err == nil {
				cfg.Files = append(cfg.Files, File{Host: filepath.Dir(exe), Guest: guestBinDir})
				return func() {}, nil
			}
		}
		fmt.Fprintf(cfg.Log, "nimbus-sandbox: no nimbus binaries to put on the command's PATH (%v)\n", err)
		return func() {}, nil
	}
	parent := filepath.Join(root, "build", "sandbox")
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBoot, err)
	}
	dir, err := os.MkdirTemp(parent, "bin-")
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBoot, err)
	}
	cleanup := func() { os.RemoveAll(dir) }
	if out, err := goCmd(ctx, root, "build", "-o", dir+"/", "./cmd/nimbus", "./cmd/nimbus-remote"); err != nil {
		cleanup()
		return nil, fmt.Errorf("%w: building the nimbus binaries for %s failed: %w\n%s", ErrBoot, guestBinDir, err, out)
	}
	cfg.Files = append(cfg.Files, File{Host: dir, Guest: guestBinDir})
	return cleanup, nil
}
