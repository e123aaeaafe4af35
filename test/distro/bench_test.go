package distro

import (
	"context"
	"flag"
	"fmt"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/nimbus-vmm/nimbus/internal/debimage"
	"github.com/nimbus-vmm/nimbus/internal/guestimage/guesttest"
	"github.com/nimbus-vmm/nimbus/internal/testproc"
)

// Boot milestones on the serial console, in order.
var milestones = []struct{ name, text string }{
	{"kernel", "Linux version "},
	{"systemd", "Welcome to Debian"},
	{"multi-user", "Reached target multi-user.target"},
	{"login", debimage.Hostname + " login: "},
}

// TestDebianBootTimes is the distribution boot benchmark (make
// bench-debian): the Debian image from a fresh raw copy each boot, with
// the same kernel, initramfs, command line, 2 vCPUs and 1 GiB, under
// Nimbus, QEMU/KVM q35 (virtio-blk-pci) and QEMU/KVM microvm
// (virtio-mmio), alternating, rounds times; it prints the median time
// from process start to each milestone on the serial console. It asserts
// nothing and runs only when selected by name.
func TestDebianBootTimes(t *testing.T) {
	if f := flag.Lookup("test.run"); f == nil || !strings.Contains(f.Value.String(), "TestDebianBootTimes") {
		t.Skip("Debian boot benchmark: run with -run TestDebianBootTimes (make bench-debian)")
	}
	img := image(t)
	a := guesttest.Require(t)
	if a.QEMU == "" {
		t.Fatal("no QEMU to compare with (run the sandbox with -qemu)")
	}
	const rounds = 3
	kernel, initrd := filepath.Join(img, debimage.KernelFile), filepath.Join(img, debimage.InitrdFile)
	cmdline := "root=/dev/vda rw console=ttyS0"
	vmms := []struct {
		name string
		cmd  func(disk string) []string
	}{
		{"nimbus", func(disk string) []string {
			return []string{filepath.Join(a.BinDir, "nimbus"), "--kernel", kernel, "--initramfs", initrd, "--cmdline", cmdline,
				"--disk", "path=" + disk, "--cpus", "boot=2", "--memory", "size=1G", "--serial", "tty", "--console", "off"}
		}},
		{"qemu-q35", func(disk string) []string {
			return []string{a.QEMU, "-M", "q35", "-accel", "kvm", "-cpu", "host", "-m", "1G", "-smp", "2", "-nographic", "-no-reboot",
				"-nic", "none", "-kernel", kernel, "-initrd", initrd, "-append", cmdline,
				"-drive", "file=" + disk + ",if=none,id=d0,format=raw", "-device", "virtio-blk-pci,drive=d0"}
		}},
		{"qemu-microvm", func(disk string) []string {
			return []string{a.QEMU, "-M", "microvm", "-accel", "kvm", "-cpu", "host", "-m", "1G", "-smp", "2", "-nographic", "-no-reboot",
				"-nic", "none", "-kernel", kernel, "-initrd", initrd, "-append", cmdline,
				"-drive", "file=" + disk + ",if=none,id=d0,format=raw", "-device", "virtio-blk-device,drive=d0"}
		}},
	}
	times := map[string]map[string][]time.Duration{}
	for round := 0; round < rounds; round++ {
		for _, v := range vmms {
			disk := filepath.Join(t.TempDir(), "debian.raw")
			testproc.Tool(t, "qemu-img", "convert", "-f", "qcow2", "-O", "raw", filepath.Join(img, debimage.QCOW2File), disk)
			got, err := timeBoot(v.cmd(disk))
			if err != nil {
				t.Logf("%s round %d: %v", v.name, round+1, err)
				continue
			}
			if times[v.name] == nil {
				times[v.name] = map[string][]time.Duration{}
			}
			for m, d := range got {
				times[v.name][m] = append(times[v.name][m], d)
			}
		}
	}
	for _, v := range vmms {
		var line []string
		for _, m := range milestones {
			ds := times[v.name][m.name]
			if len(ds) == 0 {
				line = append(line, m.name+" n/a")
				continue
			}
			sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
			line = append(line, fmt.Sprintf("%s %.1fs", m.name, ds[len(ds)/2].Seconds()))
		}
		t.Logf("%-12s (median of %d): %s", v.name, len(times[v.name]["login"]), strings.Join(line, ", "))
	}
}

// timeBoot runs argv until the login prompt and returns when each
// milestone appeared; the process is killed at the prompt.
func timeBoot(argv []string) (map[string]time.Duration, error) {
	ctx, cancel := context.WithTimeout(context.Background(), bootTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stderr = cmd.Stdout
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	defer cmd.Wait()
	defer cmd.Process.Kill()
	got := map[string]time.Duration{}
	chunks, done := make(chan string), make(chan struct{})
	defer close(done) // before the kill and wait deferred above
	go func() {       // ends at the kill (the pipe closes) or when done
		defer close(chunks)
		buf := make([]byte, 4096)
		for {
			n, err := out.Read(buf)
			if n > 0 {
				select {
				case chunks <- string(buf[:n]):
				case <-done:
					return
				}
			}
			if err != nil {
				return
			}
		}
	}()
	// Milestones in any order (the getty may print before systemd
	// reports the target); the prompt ends no line.
	var pending strings.Builder
	var loginAt time.Time
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for len(got) < len(milestones) && (loginAt.IsZero() || time.Since(loginAt) < 10*time.Second) {
		select {
		case c, ok := <-chunks:
			if !ok {
				return got, fmt.Errorf("console ended with %d of %d milestones", len(got), len(milestones))
			}
			pending.WriteString(c)
		case <-tick.C:
		case <-ctx.Done():
			return got, fmt.Errorf("%d of %d milestones: %w", len(got), len(milestones), ctx.Err())
		}
		text := plain(pending.String())
		for _, m := range milestones {
			if _, ok := got[m.name]; !ok && strings.Contains(text, m.text) {
				got[m.name] = time.Since(start)
			}
		}
		if _, ok := got["login"]; ok && loginAt.IsZero() {
			loginAt = time.Now()
		}
		if i := strings.LastIndexByte(pending.String(), '\n'); i >= 0 && len(pending.String()) > 1<<16 {
			rest := pending.String()[i+1:]
			pending.Reset()
			pending.WriteString(rest)
		}
	}
	return got, nil
}
