package e2e_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nimbus-vmm/nimbus/internal/boot"
	"github.com/nimbus-vmm/nimbus/internal/guestimage"
	"github.com/nimbus-vmm/nimbus/internal/guestimage/guesttest"
	"github.com/nimbus-vmm/nimbus/pkg/client"
)

// guestTimeout bounds one nested boot to poweroff.
const guestTimeout = 4 * time.Minute

const baseCmdline = "console=ttyS0 panic=-1 quiet"

func nimbusBin(t *testing.T, a *guesttest.Assets) string {
	t.Helper()
	if a.BinDir == "" {
		t.Fatal("no Nimbus binaries: run under nimbus-sandbox test (NIMBUS_BIN_DIR)")
	}
	return filepath.Join(a.BinDir, "nimbus")
}

// runCLI runs nimbus with args until it exits and returns stdout+stderr.
func runCLI(t *testing.T, bin string, args ...string) (string, time.Duration, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), guestTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err := cmd.Run()
	return out.String(), time.Since(start), err
}

// TestCLIBzImage boots the Debian bzImage from the command line with the
// serial port on the terminal: the guest's markers and a command-line
// script's output reach stdout, and nimbus exits 0 after the guest
// powers off.
func TestCLIBzImage(t *testing.T) {
	a := guesttest.Require(t)
	initrd := a.ImageFile(t, guestimage.Options{})
	out, took, err := runCLI(t, nimbusBin(t, a), "--kernel", a.Kernel, "--initramfs", initrd,
		"--cmdline", baseCmdline+" "+guestimage.RunParam("echo cli-bzimage-$((6*7))"),
		"--serial", "tty", "--console", "off", "--memory", "size=256M")
	c := guestimage.ParseConsole(out)
	if err != nil || !c.Up || !c.Poweroff {
		t.Fatalf("nimbus: %v after %v; parsed %+v; output:\n%s", err, took, c, out)
	}
	t.Logf("bzImage via CLI: guest %s cpus=%d mem=%dkB, process start to exit %.2fs", c.Kernel, c.CPUs, c.MemKB, took.Seconds())
	if len(c.Warnings) > 0 {
		t.Errorf("guest kernel warnings: %q", c.Warnings)
	}
	if c.CPUs != 1 || c.MemKB > 256<<10 || c.MemKB < 128<<10 {
		t.Errorf("guest saw cpus=%d mem=%dkB for 1 vCPU, 256 MiB", c.CPUs, c.MemKB)
	}
	if len(c.Results) != 1 || !strings.Contains(c.Results[0].Output, "cli-bzimage-42") {
		t.Errorf("results %+v", c.Results)
	}
}

// TestCLIPVH boots the same kernel's ELF vmlinux through its PVH entry,
// with the serial console captured by file=.
func TestCLIPVH(t *testing.T) {
	a := guesttest.Require(t)
	bz, err := os.ReadFile(a.Kernel)
	if err != nil {
		t.Fatal(err)
	}
	elf, err := boot.ExtractVmlinux(bz)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	vmlinux, serialLog := filepath.Join(dir, "vmlinux"), filepath.Join(dir, "serial.log")
	if err := os.WriteFile(vmlinux, elf, 0o644); err != nil {
		t.Fatal(err)
	}
	initrd := a.ImageFile(t, guestimage.Options{Script: "echo pvh-script-ran"})
	out, took, err := runCLI(t, nimbusBin(t, a), "--kernel", vmlinux, "--initramfs", initrd,
		"--cmdline", baseCmdline, "--serial", "file="+serialLog, "--console", "off", "--cpus", "boot=1")
	log, _ := os.ReadFile(serialLog)
	c := guestimage.ParseConsole(string(log))
	if err != nil || !c.Up || !c.Poweroff {
		t.Fatalf("nimbus: %v after %v; output:\n%s\nparsed %+v; serial:\n%s", err, took, out, c, log)
	}
	t.Logf("PVH via CLI: guest %s cpus=%d mem=%dkB, process start to exit %.2fs", c.Kernel, c.CPUs, c.MemKB, took.Seconds())
	if len(c.Warnings) > 0 {
		t.Errorf("guest kernel warnings: %q", c.Warnings)
	}
	if strings.Contains(out, "NIMBUS-GUEST-UP") {
		t.Error("guest console reached stdout although the serial port goes to a file")
	}
	if len(c.Results) != 1 || !strings.Contains(c.Results[0].Output, "pvh-script-ran") {
		t.Errorf("results %+v", c.Results)
	}
}

// TestAPIBoot drives the VMM over its socket: a non-kernel payload fails
// vm.boot with a clear error and leaves the VM Created; after vm.delete a
// good config with 2 vCPUs and 384 MiB boots, vm.info says Running with
// the legacy devices, the guest sees its vCPUs, memory, cmdline and
// initramfs, the serial file captures the console, and the process exits
// after the guest powers off.
func TestAPIBoot(t *testing.T) {
	a := guesttest.Require(t)
	dir := t.TempDir()
	sock, serialLog, junk := filepath.Join(dir, "api.sock"), filepath.Join(dir, "serial.log"), filepath.Join(dir, "junk")
	if err := os.WriteFile(junk, bytes.Repeat([]byte("not a kernel "), 4096), 0o644); err != nil {
		t.Fatal(err)
	}
	initrd := a.ImageFile(t, guestimage.Options{Script: "echo api-embedded"})

	ctx, cancel := context.WithTimeout(context.Background(), guestTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, nimbusBin(t, a), "--api-socket", "path="+sock)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		cancel()
		<-exited
	}()
	c := client.New(sock)
	for i := 0; ; i++ {
		if _, err := c.Ping(ctx); err == nil {
			break
		} else if i > 500 {
			t.Fatalf("ping: %v; output:\n%s", err, out.String())
		}
		time.Sleep(10 * time.Millisecond)
	}

	body := func(kernel string) []byte {
		b, err := json.Marshal(map[string]any{
			"cpus":    map[string]any{"boot_vcpus": 2, "max_vcpus": 2},
			"memory":  map[string]any{"size": 384 << 20},
			"payload": map[string]any{"kernel": kernel, "initramfs": initrd, "cmdline": baseCmdline + " " + guestimage.RunParam("echo api-cmdline-ok")},
			"serial":  map[string]any{"mode": "File", "file": serialLog},
			"console": map[string]any{"mode": "Off"},
		})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	// A non-kernel file: a clear error, and the VMM still holds a Created VM.
	if err := c.Create(ctx, body(junk)); err != nil {
		t.Fatal(err)
	}
	err := c.Boot(ctx)
	var apiErr *client.APIError
	if !errors.As(err, &apiErr) || !strings.Contains(strings.Join(apiErr.Messages, "|"), "invalid kernel image") {
		t.Fatalf("boot with a non-kernel: %v", err)
	}
	t.Logf("boot with a non-kernel: %q", apiErr.Messages)
	if info, err := c.Info(ctx); err != nil || info.State != "Created" {
		t.Fatalf("info after the failed boot: %+v, %v", info, err)
	}
	if err := c.Delete(ctx); err != nil {
		t.Fatal(err)
	}

	if err := c.Create(ctx, body(a.Kernel)); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := c.Boot(ctx); err != nil {
		t.Fatalf("boot: %v; output:\n%s", err, out.String())
	}
	info, err := c.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State != "Running" || info.MemoryActualSize != 384<<20 {
		t.Errorf("info: state %s memory_actual_size %d", info.State, info.MemoryActualSize)
	}
	if s := info.DeviceTree["__serial"]; s == nil {
		t.Errorf("no __serial in the device tree %v", info.DeviceTree)
	} else if res, _ := json.Marshal(s.Resources); string(res) != `[{"PioAddressRange":{"base":1016,"size":8}},{"LegacyIrq":4}]` {
		t.Errorf("__serial resources %s", res)
	}

	select {
	case err := <-exited:
		exited <- err
		if err != nil {
			t.Errorf("nimbus exited with %v", err)
		}
	case <-ctx.Done():
		t.Fatalf("no guest poweroff in %v; output:\n%s", guestTimeout, out.String())
	}
	took := time.Since(start)
	log, _ := os.ReadFile(serialLog)
	g := guestimage.ParseConsole(string(log))
	if !g.Up || !g.Poweroff {
		t.Fatalf("parsed %+v; serial:\n%s\noutput:\n%s", g, log, out.String())
	}
	t.Logf("API boot: guest %s cpus=%d mem=%dkB, vm.boot to process exit %.2fs", g.Kernel, g.CPUs, g.MemKB, took.Seconds())
	if g.CPUs != 2 {
		t.Errorf("guest saw %d cpus, want 2", g.CPUs)
	}
	if g.MemKB < 300<<10 || g.MemKB > 384<<10 {
		t.Errorf("guest MemTotal %d kB for 384 MiB", g.MemKB)
	}
	if len(g.Results) != 2 || !strings.Contains(g.Results[0].Output, "api-embedded") || !strings.Contains(g.Results[1].Output, "api-cmdline-ok") {
		t.Errorf("results %+v", g.Results)
	}
}
