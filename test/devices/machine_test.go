package devices_test

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nimbus-vmm/nimbus/internal/config"
	"github.com/nimbus-vmm/nimbus/internal/devices/console"
	"github.com/nimbus-vmm/nimbus/internal/guestimage"
	"github.com/nimbus-vmm/nimbus/internal/guestimage/guesttest"
	"github.com/nimbus-vmm/nimbus/internal/vm"
	"github.com/nimbus-vmm/nimbus/internal/vmm"
)

// guestTimeout bounds one nested boot to poweroff.
const guestTimeout = 150 * time.Second

const diskSize = 8 << 20

// pattern is n bytes of a recognizable, position-dependent pattern.
func pattern(tag string, n int) []byte {
	var b bytes.Buffer
	for i := 0; b.Len() < n; i++ {
		b.WriteString(tag + "-" + strconv.Itoa(i) + ";")
	}
	return b.Bytes()[:n]
}

func writeDisk(t *testing.T, name string, at int64, data []byte) string {
	t.Helper()
	return writeDiskIn(t, t.TempDir(), name, at, data)
}

// writeDiskIn is writeDisk in dir.
func writeDiskIn(t *testing.T, dir, name string, at int64, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(diskSize); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(data, at); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return p
}

func fdCount(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

type logWriter struct{ t *testing.T }

func (w logWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// guestScript is the in-guest half of TestMachineDevices. Sections start
// with "== name" so the host can pick them apart.
const guestScript = `
echo "== pci"
for d in /sys/bus/pci/devices/*; do echo "$(basename $d) $(cat $d/vendor) $(cat $d/device)"; done
echo "== serials"
for b in vda vdb; do echo "$b $(cat /sys/block/$b/serial) ro=$(cat /sys/block/$b/ro) size=$(cat /sys/block/$b/size)"; done
echo "== hostpattern"
dd if=/dev/vda bs=4096 count=1 iflag=direct 2>/dev/null | head -c 40; echo
echo "== guestwrite"
dd if=/nimbus/pat of=/dev/vda bs=4096 seek=16 count=2 oflag=direct 2>&1 | tail -1
echo "== rodisk"
if dd if=/nimbus/pat of=/dev/vdb bs=4096 count=1 oflag=direct 2>/dev/null; then echo ro-write-succeeded; else echo ro-write-refused; fi
dd if=/dev/vdb bs=4096 count=1 iflag=direct 2>/dev/null | head -c 40; echo
echo "== rng"
cat /sys/class/misc/hw_random/rng_current
dd if=/dev/hwrng bs=32 count=1 2>/dev/null | od -An -tx1 | tr -d ' \n'; echo
echo "== hvc"
echo "hello-from-hvc0" > /dev/hvc0
echo "== end"
`

// section returns the lines after "== name" up to the next section.
func section(out, name string) []string {
	_, rest, ok := strings.Cut(out, "== "+name+"\n")
	if !ok {
		return nil
	}
	body, _, _ := strings.Cut(rest, "== ")
	var lines []string
	for _, l := range strings.Split(body, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			lines = append(lines, l)
		}
	}
	return lines
}

// TestMachineDevices boots the Debian guest on internal/vm with two disks
// (one read-only, both with serials), the rng and a virtio-console in file
// mode, and checks both directions of disk data, the read-only refusal,
// the serials, the PCI layout (console 00:01, disks 00:02-03, rng 00:04),
// /dev/hwrng, hvc0 output in the console file, vm.counters against the
// guest's direct I/O, device_tree, and no goroutine or fd leak.
func TestMachineDevices(t *testing.T) {
	a := guesttest.Require(t)
	guestPat := pattern("GUEST", 8192)
	initrd := a.ImageFile(t, guestimage.Options{
		Script: guestScript,
		Files:  []guestimage.File{{Host: writeTemp(t, "pat", guestPat), Guest: "/nimbus/pat"}},
	})
	hostPat := pattern("HOST", 4096)
	disk0 := writeDisk(t, "disk0.img", 0, hostPat)
	roPat := pattern("READONLY", 4096)
	disk1 := writeDisk(t, "disk1.img", 0, roPat)
	dir := t.TempDir()
	serialOut, consoleOut := filepath.Join(dir, "serial.log"), filepath.Join(dir, "console.log")

	cfg := config.DefaultVmConfig()
	cfg.Payload = &config.PayloadConfig{Kernel: a.Kernel, Initramfs: initrd,
		Cmdline: "console=ttyS0 panic=-1 quiet"} // quiet: no kernel warnings inside the sections
	cfg.Memory.Size = 512 << 20
	cfg.Serial = config.SerialConfig{Mode: config.ConsoleFile, File: serialOut}
	cfg.Console = config.ConsoleConfig{Mode: config.ConsoleFile, File: consoleOut}
	cfg.Disks = []config.DiskConfig{
		{Path: disk0, Serial: "nimbus-serial-0"},
		{Path: disk1, Serial: "nimbus-ro-1", Readonly: true},
	}
	cfg.AssignDeviceIDs()

	goBefore, fdBefore := runtime.NumGoroutine(), fdCount(t)
	exits := make(chan vmm.MachineExit, 1)
	cons, err := console.OpenDevices(&cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer cons.Close()
	m, err := vm.New(&cfg, cons, exits, slog.New(slog.NewTextHandler(logWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo})))
	if err != nil {
		t.Fatal(err)
	}
	tree := m.DeviceTree()
	if err := m.Boot(); err != nil {
		m.Shutdown()
		t.Fatal(err)
	}
	// A pause and resume early on: devices and vCPUs must come back.
	if err := m.Pause(); err != nil {
		t.Fatal(err)
	}
	if err := m.Resume(); err != nil {
		t.Fatal(err)
	}
	var exit vmm.MachineExit
	select {
	case exit = <-exits:
	case <-time.After(guestTimeout):
	}
	counters := m.Counters()
	if err := m.Shutdown(); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if err := cons.Close(); err != nil {
		t.Errorf("closing the consoles: %v", err)
	}
	out, _ := os.ReadFile(serialOut)
	c := guestimage.ParseConsole(string(out))
	if exit.Reason != vmm.ExitPoweroff || !c.Up || !c.Poweroff || len(c.Results) == 0 {
		t.Fatalf("exit %+v; parsed %+v; serial:\n%s", exit, c, out)
	}
	g := c.Results[0].Output
	t.Logf("guest output:\n%s", g)

	// PCI layout as upstream: host bridge, console, disks, rng.
	wantPCI := []string{
		"0000:00:00.0 0x8086 0x0d57",
		"0000:00:01.0 0x1af4 0x1043",
		"0000:00:02.0 0x1af4 0x1042",
		"0000:00:03.0 0x1af4 0x1042",
		"0000:00:04.0 0x1af4 0x1044",
	}
	if got := section(g, "pci"); strings.Join(got, "|") != strings.Join(wantPCI, "|") {
		t.Errorf("guest PCI devices %q, want %q", got, wantPCI)
	}
	wantSerials := []string{"vda nimbus-serial-0 ro=0 size=16384", "vdb nimbus-ro-1 ro=1 size=16384"}
	if got := section(g, "serials"); strings.Join(got, "|") != strings.Join(wantSerials, "|") {
		t.Errorf("disks %q, want %q", got, wantSerials)
	}
	if got := section(g, "hostpattern"); len(got) != 1 || got[0] != string(hostPat[:40]) {
		t.Errorf("guest read %q from vda, want %q", got, hostPat[:40])
	}
	if got := section(g, "rodisk"); len(got) != 2 || got[0] != "ro-write-refused" || got[1] != string(roPat[:40]) {
		t.Errorf("read-only disk: %q", got)
	}
	if got := section(g, "rng"); len(got) != 2 || got[0] != "virtio_rng.0" || len(got[1]) != 64 || strings.Trim(got[1], "0") == "" {
		t.Errorf("rng: %q", got)
	}
	// The guest's write landed in the host file at 64 KiB.
	img, err := os.ReadFile(disk0)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(img[16*4096:18*4096], guestPat) {
		t.Errorf("host image at 64 KiB: %q..., want the guest's pattern", img[16*4096:16*4096+40])
	}
	if ro, _ := os.ReadFile(disk1); !bytes.Equal(ro[:4096], roPat) {
		t.Errorf("read-only image changed")
	}
	if con, _ := os.ReadFile(consoleOut); !bytes.Contains(con, []byte("hello-from-hvc0")) {
		t.Errorf("console file lacks hvc0 output:\n%s", con)
	}

	// Counters: the guest's direct writes are exactly 2 x 4 KiB on vda
	// and none on the read-only disk; reads at least the direct read.
	d0, d1 := counters["_disk0"], counters["_disk1"]
	t.Logf("counters %v", counters)
	if d0["write_bytes"] != 8192 || d0["write_ops"] != 2 && d0["write_ops"] != 1 {
		t.Errorf("_disk0 writes: %d bytes in %d ops, want 8192 bytes", d0["write_bytes"], d0["write_ops"])
	}
	if d0["read_bytes"] < 4096 || d0["read_ops"] < 1 || d1["write_bytes"] != 0 || d1["read_bytes"] < 4096 {
		t.Errorf("counters %v", counters)
	}
	if _, ok := counters["__rng"]; ok {
		t.Errorf("rng has counters: %v", counters)
	}

	// device_tree: transport nodes with BDFs and a BAR each; 32-bit BARs
	// for disks, 64-bit for the others.
	checkNode := func(id, bdf, barType string) {
		t.Helper()
		tid := "_virtio-pci-" + id
		n, tn := tree[id], tree[tid]
		if n == nil || tn == nil {
			t.Errorf("device_tree lacks %s or %s", id, tid)
			return
		}
		if n.Parent == nil || *n.Parent != tid || len(tn.Children) != 1 || tn.Children[0] != id {
			t.Errorf("%s: parent/children wrong: %+v %+v", id, n, tn)
		}
		if tn.PciBDF == nil || *tn.PciBDF != bdf {
			t.Errorf("%s: pci_bdf %v, want %s", tid, tn.PciBDF, bdf)
		}
		j, _ := json.Marshal(tn.Resources)
		if len(tn.Resources) != 1 || !strings.Contains(string(j), `"type_":"`+barType+`"`) || !strings.Contains(string(j), `"size":524288`) {
			t.Errorf("%s resources %s", tid, j)
		}
	}
	checkNode("__console", "0000:00:01.0", "Mmio64")
	checkNode("_disk0", "0000:00:02.0", "Mmio32")
	checkNode("_disk1", "0000:00:03.0", "Mmio32")
	checkNode("__rng", "0000:00:04.0", "Mmio64")

	if fd := fdCount(t); fd != fdBefore {
		t.Errorf("fds: %d before, %d after Shutdown", fdBefore, fd)
	}
	for i := 0; i < 50 && runtime.NumGoroutine() > goBefore; i++ {
		time.Sleep(10 * time.Millisecond)
	}
	if g := runtime.NumGoroutine(); g > goBefore {
		buf := make([]byte, 1<<16)
		t.Errorf("goroutines: %d before, %d after Shutdown\n%s", goBefore, g, buf[:runtime.Stack(buf, true)])
	}
}

func writeTemp(t *testing.T, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}
