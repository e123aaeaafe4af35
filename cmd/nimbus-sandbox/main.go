// Command nimbus-sandbox runs commands and Go test binaries where KVM
// boots stock guests: on the host where it has hardware KVM, otherwise
// inside a QEMU TCG guest with nested KVM (see internal/sandbox).
//
//	nimbus-sandbox [--file HOST:GUEST]... [--env K=V]... [--timeout D] [--mode auto|qemu|host] -- CMD ARGS...
//	nimbus-sandbox test [-run REGEX] [-timeout D] [-pkg-timeout D] [-stall D] [-rerun-failed] [-qemu] [-mode M] [-env K=V]... PKG...
//	nimbus-sandbox kernel
//	nimbus-sandbox image -o DIR [-script SH] [-stay]
//	nimbus-sandbox debian
//
// The first form exits with the command's status (125 if the sandbox
// itself failed). `test` exits 1 if any package failed. `kernel` fetches
// the Debian kernel into the build cache and prints its paths. `image`
// writes DIR/vmlinuz (a link to the cached kernel) and DIR/initramfs (a
// guestimage test guest with the default virtio modules), for demos.
// `debian` builds the Debian disk image once (internal/debimage) and prints
// its directory.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/nimbus-vmm/nimbus/internal/debimage"
	"github.com/nimbus-vmm/nimbus/internal/guestimage"
	"github.com/nimbus-vmm/nimbus/internal/sandbox"
)

// exitSandboxFailure is the status when the command's own status is
// unknown, as with env(1) and timeout(1).
const exitSandboxFailure = 125

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

type modeFlag struct{ m *sandbox.Mode }

func (f modeFlag) String() string {
	if f.m == nil {
		return "auto"
	}
	return f.m.String()
}

func (f modeFlag) Set(v string) error {
	switch v {
	case "auto":
		*f.m = sandbox.Auto
	case "qemu":
		*f.m = sandbox.QEMU
	case "host":
		*f.m = sandbox.Host
	default:
		return fmt.Errorf("mode must be auto, qemu or host")
	}
	return nil
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		switch args[0] {
		case "test":
			return runTests(ctx, args[1:], stdout, stderr)
		case "kernel":
			return runKernel(ctx, stdout, stderr)
		case "hold-kvm":
			// Inside the sandbox: see sandbox.HoldKVM.
			if err := sandbox.HoldKVM(ctx, stdout); err != nil {
				fmt.Fprintf(stderr, "nimbus-sandbox hold-kvm: %v\n", err)
				return 1
			}
			return 0
		case "image":
			return runImage(ctx, args[1:], stdout, stderr)
		case "debian":
			return runDebian(ctx, stdout, stderr)
		}
	}
	fs := flag.NewFlagSet("nimbus-sandbox", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var files, env listFlag
	cfg := sandbox.Config{Stdout: stdout, Log: stderr}
	fs.Var(&files, "file", "ship HOST:GUEST into the sandbox (repeatable)")
	fs.Var(&env, "env", "set K=V for the command (repeatable)")
	fs.DurationVar(&cfg.Timeout, "timeout", 10*time.Minute, "kill the sandbox after this long")
	fs.DurationVar(&cfg.Stall, "stall", 0, "kill the sandbox after this long without console output (0: never)")
	fs.StringVar(&cfg.Dir, "dir", "/", "working directory (a guest path)")
	fs.Var(modeFlag{&cfg.Mode}, "mode", "auto (host where it has hardware KVM, else qemu), qemu or host")
	fs.BoolVar(&cfg.WithQEMU, "qemu", false, "make the host's QEMU available to the command as $"+sandbox.EnvQEMU)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: nimbus-sandbox [flags] -- CMD ARGS...\n       nimbus-sandbox test [-run REGEX] [-qemu] PKG...\n       nimbus-sandbox kernel\n       nimbus-sandbox debian\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg.Args = fs.Args()
	if len(cfg.Args) == 0 {
		fs.Usage()
		return 2
	}
	for _, f := range files {
		h, g, ok := strings.Cut(f, ":")
		if !ok || h == "" || !strings.HasPrefix(g, "/") {
			fmt.Fprintf(stderr, "nimbus-sandbox: --file %q: want HOST:GUEST with an absolute GUEST path\n", f)
			return 2
		}
		cfg.Files = append(cfg.Files, sandbox.File{Host: h, Guest: g})
	}
	cfg.Env = env
	res, err := sandbox.Run(ctx, cfg)
	if err != nil {
		fmt.Fprintf(stderr, "nimbus-sandbox: %v\n", err)
		return exitSandboxFailure
	}
	return res.ExitStatus
}

func runTests(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("nimbus-sandbox test", flag.ContinueOnError)
	fs.SetOutput(stderr)
	tc := sandbox.TestConfig{Stdout: stdout, Log: stderr}
	fs.StringVar(&tc.Run, "run", "", "run only tests matching this regexp (-test.run)")
	fs.DurationVar(&tc.Timeout, "timeout", 20*time.Minute, "bound for the whole run, fresh boots after a dead sandbox included")
	fs.DurationVar(&tc.PkgTimeout, "pkg-timeout", 10*time.Minute, "each test binary's -test.timeout")
	fs.BoolVar(&tc.Rerun, "rerun-failed", false, "stop a boot at the first failed test and go on in a fresh boot: the failed test again (four tries), then what had not run")
	fs.DurationVar(&tc.Stall, "stall", 4*time.Minute, "treat the sandbox as dead after this long without console output (negative: never)")
	fs.BoolVar(&tc.WithQEMU, "qemu", false, "ship the host's QEMU into the sandbox for reference guests ("+sandbox.EnvQEMU+")")
	fs.Var(modeFlag{&tc.Mode}, "mode", "auto, qemu or host")
	fs.IntVar(&tc.Tries, "tries", sandbox.MaxReruns+1, "with -rerun-failed, how many tries a failing test gets, each in a fresh boot")
	fs.BoolVar(&tc.Debian, "debian", false, "ship the Debian disk image (built on first use with debootstrap) as $"+sandbox.EnvDebian)
	var env listFlag
	fs.Var(&env, "env", "set K=V for the test binaries (repeatable)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	tc.Packages = fs.Args()
	tc.Env = env
	if len(tc.Packages) == 0 {
		fmt.Fprintln(stderr, "usage: nimbus-sandbox test [-run REGEX] [-qemu] PKG...")
		return 2
	}
	start := time.Now()
	sum, err := sandbox.RunTests(ctx, tc)
	fmt.Fprintf(stderr, "nimbus-sandbox: test run took %.1fs\n", time.Since(start).Seconds())
	if err != nil {
		fmt.Fprintf(stderr, "nimbus-sandbox: %v\n", err)
		return 1
	}
	if sum.Failed > 0 {
		return 1
	}
	return 0
}

func runKernel(ctx context.Context, stdout, stderr io.Writer) int {
	dir, err := sandbox.DefaultCacheDir()
	if err == nil {
		var k *sandbox.Kernel
		if k, err = sandbox.EnsureKernel(ctx, dir); err == nil {
			fmt.Fprintf(stdout, "version %s\nimage %s\nmodules %s\n", k.Version, k.Image, k.ModulesDir)
			return 0
		}
	}
	fmt.Fprintf(stderr, "nimbus-sandbox: %v\n", err)
	if errors.Is(err, sandbox.ErrMissingTool) {
		return exitSandboxFailure
	}
	return 1
}

// runDebian builds (once) the Debian disk image and prints its directory.
func runDebian(ctx context.Context, stdout, stderr io.Writer) int {
	dir, err := sandbox.DefaultCacheDir()
	if err == nil {
		var img *debimage.Image
		if img, err = sandbox.EnsureDebian(ctx, dir, stderr); err == nil {
			fmt.Fprintln(stdout, img.Dir)
			return 0
		}
	}
	fmt.Fprintf(stderr, "nimbus-sandbox: %v\n", err)
	return 1
}

func runImage(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("nimbus-sandbox image", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("o", "", "output directory (required)")
	script := fs.String("script", "", "shell script the guest runs after boot")
	stay := fs.Bool("stay", false, "keep the guest up instead of powering off")
	uefi := fs.String("uefi", "", "also write DIR/disk.img, a GPT disk for UEFI firmware: an EFI system partition with GRUB and an ext4 boot partition with the kernel and initramfs, booted with this command line")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *out == "" {
		fmt.Fprintln(stderr, "usage: nimbus-sandbox image -o DIR [-script SH] [-stay] [-uefi CMDLINE]")
		return 2
	}
	if err := writeImage(ctx, *out, *script, *stay); err != nil {
		fmt.Fprintf(stderr, "nimbus-sandbox: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "%s\n%s\n", filepath.Join(*out, "vmlinuz"), filepath.Join(*out, "initramfs"))
	if *uefi != "" {
		esp, disk := filepath.Join(*out, "esp.img"), filepath.Join(*out, "disk.img")
		err := sandbox.BuildESP(ctx, esp)
		if err == nil {
			err = sandbox.BuildUEFIDisk(ctx, disk, esp, filepath.Join(*out, "vmlinuz"), filepath.Join(*out, "initramfs"), *uefi)
		}
		os.Remove(esp)
		if err != nil {
			fmt.Fprintf(stderr, "nimbus-sandbox: %v\n", err)
			return 1
		}
		fmt.Fprintln(stdout, disk)
	}
	return 0
}

func writeImage(ctx context.Context, dir, script string, stay bool) error {
	cache, err := sandbox.DefaultCacheDir()
	if err != nil {
		return err
	}
	k, err := sandbox.EnsureKernel(ctx, cache)
	if err != nil {
		return err
	}
	ix, err := guestimage.LoadModuleIndex(k.ModulesDir)
	if err != nil {
		return err
	}
	img, err := guestimage.Build(guestimage.Options{Busybox: "/bin/busybox", Modules: ix,
		ModuleNames: guestimage.DefaultModules, Script: script, StayUp: stay, Compression: guestimage.Gzip})
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "initramfs"), img, 0o644); err != nil {
		return err
	}
	link := filepath.Join(dir, "vmlinuz")
	os.Remove(link)
	return os.Symlink(k.Image, link)
}
