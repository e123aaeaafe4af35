package vm_test

import (
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nimbus-vmm/nimbus/internal/boot"
	"github.com/nimbus-vmm/nimbus/internal/cli"
	"github.com/nimbus-vmm/nimbus/internal/config"
	"github.com/nimbus-vmm/nimbus/internal/devices/console"
	"github.com/nimbus-vmm/nimbus/internal/guestimage"
	"github.com/nimbus-vmm/nimbus/internal/guestimage/guesttest"
	"github.com/nimbus-vmm/nimbus/internal/kvm"
	"github.com/nimbus-vmm/nimbus/internal/kvm/kvmtest"
	"github.com/nimbus-vmm/nimbus/internal/testproc"
	"github.com/nimbus-vmm/nimbus/internal/vm"
	"github.com/nimbus-vmm/nimbus/internal/vmm"
)

func testConfig(kernel, initramfs, cmdline string) *config.VmConfig {
	cfg := config.DefaultVmConfig()
	cfg.Payload = &config.PayloadConfig{Kernel: kernel, Initramfs: initramfs, Cmdline: cmdline}
	cfg.Serial = config.SerialConfig{Mode: config.ConsoleNull}
	cfg.Console = config.ConsoleConfig{Mode: config.ConsoleOff}
	return &cfg
}

func fdCount(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// TestNoKVM checks the error where /dev/kvm is missing (the unit tier).
func TestNoKVM(t *testing.T) {
	if kvm.Available() {
		t.Skip("/dev/kvm exists")
	}
	_, err := vm.New(testConfig("/nonexistent", "", ""), nil, make(chan vmm.MachineExit, 1), nil)
	if !errors.Is(err, vm.ErrNoKVM) || !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("err = %v, want ErrNoKVM wrapping ENOENT", err)
	}
	want := []string{"KVM is not available", "open /dev/kvm", "no such file or directory"}
	if got := cli.ErrorChain(err); !slices.Equal(got, want) {
		t.Fatalf("error chain %q, want %q", got, want)
	}
}

// TestBadPayload: a missing kernel and a non-kernel file fail in New with a
// clear error and leave no fd behind.
func TestBadPayload(t *testing.T) {
	kvmtest.Require(t)
	junk := filepath.Join(t.TempDir(), "junk")
	if err := os.WriteFile(junk, []byte(strings.Repeat("not a kernel\n", 1000)), 0o644); err != nil {
		t.Fatal(err)
	}
	before := fdCount(t)
	for _, k := range []string{"/nonexistent/vmlinuz", junk} {
		_, err := vm.New(testConfig(k, "", ""), nil, make(chan vmm.MachineExit, 1), nil)
		ok := errors.Is(err, os.ErrNotExist) && strings.Contains(err.Error(), k) || errors.Is(err, boot.ErrInvalidKernel)
		if !errors.Is(err, vm.ErrSetup) || !ok {
			t.Errorf("kernel %s: err = %v", k, err)
		}
		t.Logf("kernel %s: %v", k, err)
	}
	if after := fdCount(t); after != before {
		t.Fatalf("fds: %d before, %d after failed New", before, after)
	}
}

// TestBootGuest boots the Debian kernel (bzImage) with 2 vCPUs to
// userspace, with the serial port in file mode, pauses and resumes it, and
// checks that the guest's poweroff arrives as ExitPoweroff and that
// Shutdown leaks neither goroutines nor fds.
func TestBootGuest(t *testing.T) {
	a := guesttest.Require(t)
	initrd := a.ImageFile(t, guestimage.Options{Script: "echo vm-test-script-ran"})
	serialOut := filepath.Join(t.TempDir(), "serial.log")
	cfg := testConfig(a.Kernel, initrd, "console=ttyS0 earlyprintk=serial panic=-1")
	cfg.Cpus.BootVcpus, cfg.Cpus.MaxVcpus = 2, 2
	cfg.Memory.Size = 512 << 20
	cfg.Serial = config.SerialConfig{Mode: config.ConsoleFile, File: serialOut}

	goBefore, fdBefore := runtime.NumGoroutine(), fdCount(t)
	exits := make(chan vmm.MachineExit, 1)
	start := time.Now()
	cons, err := console.OpenDevices(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer cons.Close()
	m, err := vm.New(cfg, cons, exits, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Boot(); err != nil {
		m.Shutdown()
		t.Fatal(err)
	}
	// Pause and resume early: the kernel must still come up.
	if err := m.Pause(); err != nil {
		t.Fatal(err)
	}
	if err := m.Resume(); err != nil {
		t.Fatal(err)
	}
	var exit vmm.MachineExit
	select {
	case exit = <-exits:
	case <-time.After(150 * time.Second): // a hang guard: nested boots take 20-60 s
	}
	took := time.Since(start)
	out, _ := os.ReadFile(serialOut)
	if err := m.Shutdown(); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if err := cons.Close(); err != nil {
		t.Errorf("closing the consoles: %v", err)
	}
	c := guestimage.ParseConsole(string(out))
	if exit.Reason != vmm.ExitPoweroff || !c.Up || !c.Poweroff {
		t.Fatalf("exit %+v after %v; parsed %+v; serial:\n%s", exit, took, c, out)
	}
	t.Logf("guest %s cpus=%d mem=%dkB, New to poweroff %.2fs", c.Kernel, c.CPUs, c.MemKB, took.Seconds())
	if c.CPUs != 2 {
		t.Errorf("guest saw %d cpus, want 2", c.CPUs)
	}
	if len(c.Warnings) > 0 {
		t.Errorf("guest kernel warnings: %q", c.Warnings)
	}
	if c.MemKB < 400<<10 || c.MemKB > 512<<10 {
		t.Errorf("guest MemTotal %d kB for 512 MiB", c.MemKB)
	}
	if len(c.Results) == 0 || !strings.Contains(c.Results[0].Output, "vm-test-script-ran") {
		t.Errorf("results %+v", c.Results)
	}
	if fd := fdCount(t); fd != fdBefore {
		t.Errorf("fds: %d before, %d after Shutdown", fdBefore, fd)
	}
	// vCPU threads end with their goroutines (allow the runtime a moment),
	// and none was ever the main thread, whose name is the process's.
	vcpuThreads := func() (vcpus []string) {
		names, _ := testproc.ThreadNames(os.Getpid())
		for _, n := range names {
			if strings.HasPrefix(n, "vcpu") {
				vcpus = append(vcpus, n)
			}
		}
		return vcpus
	}
	for i := 0; i < 100 && len(vcpuThreads()) > 0; i++ {
		time.Sleep(10 * time.Millisecond)
	}
	if v := vcpuThreads(); len(v) > 0 {
		t.Errorf("vCPU threads left after Shutdown: %v", v)
	}
	// vCPU goroutines end with their threads; allow a moment for the runtime.
	for i := 0; i < 50 && runtime.NumGoroutine() > goBefore; i++ {
		time.Sleep(10 * time.Millisecond)
	}
	if g := runtime.NumGoroutine(); g > goBefore {
		t.Errorf("goroutines: %d before, %d after Shutdown", goBefore, g)
	}
}

type logWriter struct{ t *testing.T }

func (w logWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(logWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}
