package guestimage_test

import (
	"bytes"
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/nimbus-vmm/nimbus/internal/guestimage"
	"github.com/nimbus-vmm/nimbus/internal/guestimage/guesttest"
	"github.com/nimbus-vmm/nimbus/internal/sandbox"
)

// TestBootUnderQEMUKVM proves a built image boots: QEMU with KVM (nested in
// the sandbox) runs the Debian kernel with it, and the guest prints its
// markers, runs the embedded and command-line scripts and powers off. The
// logged time is the "QEMU with KVM" reference for Nimbus benchmarks.
func TestBootUnderQEMUKVM(t *testing.T) {
	a := guesttest.Require(t)
	if a.QEMU == "" {
		guesttest.Missing(t, "no QEMU: install qemu-system-x86; in the sandbox run nimbus-sandbox test with -qemu (%s unset)", sandbox.EnvQEMU)
	}
	initrd := a.ImageFile(t, guestimage.Options{
		Script:      "echo hello-from-embedded; exit 4",
		Compression: guestimage.Gzip,
	})
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, a.QEMU, "-M", "microvm", "-accel", "kvm", "-cpu", "host", "-m", "256M", "-smp", "1",
		"-nographic", "-no-reboot", "-kernel", a.Kernel, "-initrd", initrd,
		"-append", "console=ttyS0 rdinit=/init panic=-1 reboot=t quiet "+guestimage.RunParam("cat /proc/cmdline >/dev/null; echo from-cmdline; ls /sys/bus/virtio/drivers"))
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err := cmd.Run()
	took := time.Since(start)
	c := guestimage.ParseConsole(out.String())
	if err != nil || !c.Up || !c.Poweroff {
		t.Fatalf("qemu: %v after %v; parsed %+v; console:\n%s", err, took, c, out.String())
	}
	t.Logf("QEMU/KVM microvm reference: guest %s cpus=%d mem=%dkB, boot to poweroff %.2fs", c.Kernel, c.CPUs, c.MemKB, took.Seconds())
	if len(c.Errors) > 0 {
		t.Errorf("guest init errors: %v", c.Errors)
	}
	// Not asserted: QEMU starts XCR0 at its reset value, so under a QEMU
	// TCG sandbox that misses XSETBV its guest warns (see x86.GuestXCR0).
	if len(c.Warnings) > 0 {
		t.Logf("reference guest kernel warnings: %q", c.Warnings)
	}
	if len(c.Results) != 2 {
		t.Fatalf("results %+v, wanted embedded and cmdline1", c.Results)
	}
	if r := c.Results[0]; r.Name != "embedded" || r.Status != 4 || !strings.Contains(r.Output, "hello-from-embedded") {
		t.Fatalf("embedded result %+v", r)
	}
	if r := c.Results[1]; r.Name != "cmdline1" || r.Status != 0 || !strings.Contains(r.Output, "from-cmdline") || !strings.Contains(r.Output, "virtio_blk") {
		t.Fatalf("cmdline result %+v", r)
	}
}
