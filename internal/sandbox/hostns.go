package sandbox

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"
)

// In host mode the command runs in a private mount namespace whose root is
// a tmpfs: every top-level entry of the host's / is bind-mounted (or, for
// symlinks, copied) into it, each shipped file is bind-mounted at its
// guest path, and the command is chrooted there. So the same command
// string works on the host and in the QEMU guest, and nothing is created
// in the host's own filesystems.

// hostMount is one bind mount of the new root.
type hostMount struct {
	host, guest string
	dir         bool
	// mkpoint: the mount point must be created in the new root's tmpfs
	// (not inside a host directory or a shipped one).
	mkpoint bool
}

// planHostMounts checks cfg.Files against the host's / and returns the
// top-level host entries to replicate and the shipped mounts, parents
// before children. A guest path inside a host directory (or inside a
// shipped directory) must already exist there: its mount point cannot be
// made without writing to that directory.
func planHostMounts(files []File, top []os.DirEntry) (keep []string, mounts []hostMount, err error) {
	shadow := map[string]bool{}
	for _, f := range files {
		g := path.Clean(f.Guest)
		if g == "/" {
			return nil, nil, fmt.Errorf("%w: cannot ship %s to /", ErrBoot, f.Host)
		}
		abs, err := filepath.Abs(f.Host)
		if err != nil {
			return nil, nil, fmt.Errorf("%w: %w", ErrBoot, err)
		}
		fi, err := os.Stat(abs)
		if err != nil {
			return nil, nil, fmt.Errorf("%w: %w", ErrBoot, err)
		}
		mounts = append(mounts, hostMount{host: abs, guest: g, dir: fi.IsDir()})
		if strings.Count(g, "/") == 1 {
			shadow[g[1:]] = true // shipped whole: the host's entry is not replicated
		}
	}
	sort.SliceStable(mounts, func(i, j int) bool {
		return strings.Count(mounts[i].guest, "/") < strings.Count(mounts[j].guest, "/")
	})
	hostTop := map[string]bool{}
	for _, e := range top {
		if !shadow[e.Name()] {
			keep = append(keep, e.Name())
			hostTop[e.Name()] = true
		}
	}
	for i := range mounts {
		m := &mounts[i]
		// What holds the mount point: an earlier shipped directory, a
		// replicated host entry, or the tmpfs.
		var under string
		for _, p := range mounts[:i] {
			if p.dir && strings.HasPrefix(m.guest, p.guest+"/") {
				under = filepath.Join(p.host, strings.TrimPrefix(m.guest, p.guest))
			}
		}
		if under == "" && hostTop[strings.SplitN(m.guest[1:], "/", 2)[0]] {
			under = m.guest
		}
		if under == "" {
			m.mkpoint = true
			continue
		}
		if _, err := os.Stat(under); err != nil {
			return nil, nil, fmt.Errorf("%w: guest path %s lies in host directory %s, where %s does not exist: host mode ships files only to new paths or over existing ones",
				ErrBoot, m.guest, path.Dir(m.guest), under)
		}
	}
	return keep, mounts, nil
}

// hostNSScript is the shell script that builds the new root at root and
// chroots into it to run "$@" in dir.
func hostNSScript(root string, top []os.DirEntry, keep []string, mounts []hostMount, dir string) string {
	var s strings.Builder
	s.WriteString("set -e\n")
	fmt.Fprintf(&s, "R=%s\nmount -t tmpfs -o mode=0755 nimbus-sandbox \"$R\"\n", quote(root))
	kinds := map[string]os.DirEntry{}
	for _, e := range top {
		kinds[e.Name()] = e
	}
	for _, name := range keep {
		e := kinds[name]
		src, dst := quote("/"+name), "\"$R\"/"+quote(name)
		switch {
		case e.Type()&os.ModeSymlink != 0:
			fmt.Fprintf(&s, "cp -P %s %s\n", src, dst)
		case e.IsDir():
			fmt.Fprintf(&s, "mkdir %s\nmount --rbind %s %s\n", dst, src, dst)
		default:
			fmt.Fprintf(&s, ": >%s\nmount --bind %s %s\n", dst, src, dst)
		}
	}
	for _, m := range mounts {
		dst := "\"$R\"" + quote(m.guest)
		if m.mkpoint {
			fmt.Fprintf(&s, "mkdir -p \"$R\"%s\n", quote(path.Dir(m.guest)))
			if m.dir {
				fmt.Fprintf(&s, "mkdir -p %s\n", dst)
			} else {
				fmt.Fprintf(&s, ": >%s\n", dst)
			}
		}
		fmt.Fprintf(&s, "mount --bind %s %s\n", quote(m.host), dst)
	}
	// fd 3 tells runHost that the root is built: a failure before this
	// line is the sandbox's, not the command's.
	s.WriteString("echo ready >&3\nexec 3>&-\n")
	fmt.Fprintf(&s, "exec chroot \"$R\" /bin/sh -c 'cd \"$0\" && exec \"$@\"' %s \"$@\"\n", quote(dir))
	return s.String()
}

// runHost runs the command on this machine in a private mount namespace
// holding the shipped files at their guest paths (see above).
func runHost(ctx context.Context, cfg Config) (*Result, error) {
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("%w: host mode needs root, for the mount namespace that holds the shipped files", ErrBoot)
	}
	top, err := os.ReadDir("/")
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBoot, err)
	}
	keep, mounts, err := planHostMounts(cfg.Files, top)
	if err != nil {
		return nil, err
	}
	root, err := os.MkdirTemp("", "nimbus-sandbox-root-")
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBoot, err)
	}
	// The mounts vanish with the namespace; only the empty directory stays.
	defer os.Remove(root)
	script := hostNSScript(root, top, keep, mounts, cfg.Dir)
	cmd := exec.CommandContext(ctx, "/bin/sh", append([]string{"-c", script, "nimbus-sandbox"}, cfg.Args...)...)
	// Go makes the new namespace's mounts private (MS_REC|MS_PRIVATE on
	// /) before the script runs, so none of them propagates to the host.
	cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS}
	cmd.Env = append(os.Environ(), "PATH="+guestBinDir+":"+os.Getenv("PATH"))
	cmd.Env = append(cmd.Env, cfg.Env...)
	cmd.Stdout = cfg.Stdout
	cmd.Stderr = cfg.Stdout
	cmd.WaitDelay = 5 * time.Second
	ready, readyW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBoot, err)
	}
	defer ready.Close()
	cmd.ExtraFiles = []*os.File{readyW}
	start := time.Now()
	err = cmd.Start()
	readyW.Close()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBoot, err)
	}
	mark, _ := io.ReadAll(ready)
	err = cmd.Wait()
	res := &Result{Mode: Host, CommandTime: time.Since(start)}
	var ee *exec.ExitError
	switch {
	case string(mark) != "ready\n":
		return nil, fmt.Errorf("%w: building the host-mode mount namespace failed (%v)", ErrBoot, err)
	case ctx.Err() != nil:
		return nil, fmt.Errorf("%w after %v: %w", ErrTimeout, cfg.Timeout, ctx.Err())
	case errors.As(err, &ee):
		res.ExitStatus = ee.ExitCode()
	case err != nil:
		return nil, fmt.Errorf("%w: %w", ErrBoot, err)
	}
	fmt.Fprintf(cfg.Log, "nimbus-sandbox: host: command %.2fs, exit status %d\n", res.CommandTime.Seconds(), res.ExitStatus)
	return res, nil
}
