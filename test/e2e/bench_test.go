package e2e_test

import (
	"bufio"
	"context"
	"flag"
	"io"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nimbus-vmm/nimbus/internal/config"
	"github.com/nimbus-vmm/nimbus/internal/guestimage"
	"github.com/nimbus-vmm/nimbus/internal/guestimage/guesttest"
)

// benchRounds is how many times each VMM boots, alternating, because
// nested timings are noisy (go-vmm-notes.md 4.1).
const benchRounds = 3

// bootRun is one measured boot.
type bootRun struct {
	toUserspace time.Duration // process start to the guest's first userspace line
	toExit      time.Duration // process start to process exit
	guestUptime float64       // guest /proc/uptime at userspace: the kernel's own time
}

// timedBoot runs name+args, timestamps the NIMBUS-GUEST-UP line and reads
// the guest's uptime from the embedded script's output.
func timedBoot(t *testing.T, name string, args ...string) bootRun {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), guestTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var r bootRun
	var out strings.Builder
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			line := sc.Text()
			out.WriteString(line + "\n")
			if r.toUserspace == 0 && strings.Contains(line, "NIMBUS-GUEST-UP") {
				r.toUserspace = time.Since(start)
			}
			if f, ok := strings.CutPrefix(strings.TrimSpace(line), "UPTIME "); ok {
				r.guestUptime, _ = strconv.ParseFloat(strings.Fields(f)[0], 64)
			}
		}
	}()
	err := cmd.Wait()
	r.toExit = time.Since(start)
	pw.Close()
	<-scanned
	if err != nil || r.toUserspace == 0 {
		t.Fatalf("%s: %v; output:\n%s", name, err, out.String())
	}
	return r
}

// TestBootTimes is the boot benchmark (make bench-boot). It runs only when
// selected by name (-run TestBootTimes) because it boots 2*benchRounds
// guests. It prints, per VMM: process start to the guest's first
// userspace line, to process exit, and the guest kernel's own time
// (/proc/uptime when init runs); and Nimbus's own share up to the first
// vCPU entry, measured in-process (vm.New + Boot).
func TestBootTimes(t *testing.T) {
	if f := flag.Lookup("test.run"); f == nil || !strings.Contains(f.Value.String(), "TestBootTimes") {
		t.Skip("boot benchmark: run with -run TestBootTimes (make bench-boot)")
	}
	a := guesttest.Require(t)
	initrd := a.ImageFile(t, guestimage.Options{Script: "echo UPTIME $(cat /proc/uptime)"})
	cmdline := "console=ttyS0 rdinit=/init panic=-1 reboot=t quiet"

	// Nimbus's own share, in-process: config to first KVM_RUN.
	var setup []time.Duration
	for range benchRounds {
		setup = append(setup, guesttest.TimeToFirstEntry(t, config.PayloadConfig{Kernel: a.Kernel, Initramfs: initrd, Cmdline: cmdline}, 256<<20))
	}

	var nimbus, qemu []bootRun
	for range benchRounds {
		nimbus = append(nimbus, timedBoot(t, nimbusBin(t, a), "--kernel", a.Kernel, "--initramfs", initrd,
			"--cmdline", cmdline, "--serial", "tty", "--console", "off", "--memory", "size=256M", "--cpus", "boot=1"))
		if a.QEMU != "" {
			qemu = append(qemu, timedBoot(t, a.QEMU, "-M", "microvm", "-accel", "kvm", "-cpu", "host", "-m", "256M", "-smp", "1",
				"-nographic", "-no-reboot", "-kernel", a.Kernel, "-initrd", initrd, "-append", cmdline))
		}
	}
	report := func(name string, runs []bootRun) (userspace time.Duration) {
		for i, r := range runs {
			t.Logf("%-6s run %d: start->userspace %6.2fs  start->exit %6.2fs  guest kernel %5.2fs  outside the guest kernel %5.2fs",
				name, i+1, r.toUserspace.Seconds(), r.toExit.Seconds(), r.guestUptime, r.toUserspace.Seconds()-r.guestUptime)
			userspace += r.toUserspace
		}
		if len(runs) > 0 {
			userspace /= time.Duration(len(runs))
		}
		return userspace
	}
	for i, d := range setup {
		t.Logf("nimbus run %d: in-process vm.New+Boot -> first vCPU entry %v", i+1, d.Round(time.Microsecond))
	}
	n := report("nimbus", nimbus)
	q := report("qemu", qemu)
	if q > 0 {
		t.Logf("mean start->userspace: nimbus %.2fs, qemu microvm %.2fs, ratio nimbus/qemu %.2f", n.Seconds(), q.Seconds(), n.Seconds()/q.Seconds())
	} else {
		t.Logf("mean start->userspace: nimbus %.2fs (no QEMU for a ratio)", n.Seconds())
	}
}
