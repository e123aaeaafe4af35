package devices_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nimbus-vmm/nimbus/internal/guestimage"
	"github.com/nimbus-vmm/nimbus/internal/guestimage/guesttest"
	"github.com/nimbus-vmm/nimbus/internal/testproc"
	"github.com/nimbus-vmm/nimbus/pkg/client"
)

// These tests drive the real nimbus and nimbus-remote binaries (the
// sandbox puts them in NIMBUS_BIN_DIR), so the CLI's --disk parsing and
// the API's cold vm.add-disk are covered up to the guest.

// startNimbus runs bin/nimbus with args; the test's cleanup kills it if it
// is still running and waits for it.
func startNimbus(t *testing.T, a *guesttest.Assets, args ...string) *testproc.Proc {
	t.Helper()
	return testproc.Start(t, filepath.Join(binDir(t, a), "nimbus"), args...)
}

func binDir(t *testing.T, a *guesttest.Assets) string {
	t.Helper()
	if a.BinDir == "" {
		t.Fatal("no Nimbus binaries: run under nimbus-sandbox test (NIMBUS_BIN_DIR)")
	}
	return a.BinDir
}

// waitFor polls cond every 100 ms until it holds or ctx ends.
func waitFor(ctx context.Context, cond func() bool) bool {
	for !cond() {
		select {
		case <-ctx.Done():
			return false
		case <-time.After(100 * time.Millisecond):
		}
	}
	return true
}

func readFile(p string) string {
	b, _ := os.ReadFile(p)
	return string(b)
}

// diskScript prints every virtio disk's serial, read-only flag and the
// first 40 bytes the host wrote, then writes the guest's pattern to vda
// block 16.
const diskScript = `
echo "== serials"
for b in /sys/block/vd*; do echo "$(basename $b) $(cat $b/serial) ro=$(cat $b/ro) $(dd if=/dev/$(basename $b) bs=4096 count=1 iflag=direct 2>/dev/null | head -c 40)"; done
echo "== guestwrite"
echo guest-wrote-this | dd of=/dev/vda bs=4096 seek=16 conv=sync oflag=direct 2>&1 | tail -1
[ -b /dev/vdc ] && echo guest-wrote-qcow2 | dd of=/dev/vdc bs=4096 seek=16 conv=sync oflag=direct 2>&1 | tail -1
[ -b /dev/vdc ] && blkdiscard -o 0 -l 65536 /dev/vdc && echo "discarded vdc 0+64k"
echo "== end"
`

// checkDisks checks diskScript's output against the disks given in order
// and the guest's write in the first one.
func checkDisks(t *testing.T, out string, serials []string, ro []bool, pats [][]byte, paths []string) {
	t.Helper()
	var want []string
	for i, s := range serials {
		r := "0"
		if ro[i] {
			r = "1"
		}
		want = append(want, "vd"+string(rune('a'+i))+" "+s+" ro="+r+" "+string(pats[i][:40]))
	}
	if got := section(out, "serials"); strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("guest disks:\n%q\nwant\n%q", got, want)
	}
	img, err := os.ReadFile(paths[0])
	if err != nil {
		t.Fatal(err)
	}
	if got := img[16*4096 : 16*4096+17]; string(got) != "guest-wrote-this\n" {
		t.Errorf("host image at 64 KiB: %q, want the guest's write", got)
	}
}

// TestCLIDisks boots `nimbus --disk path=…,serial=…,direct=on path=…,serial=…,readonly=on
// path=….qcow2,…,direct=on` (the CLI's multi-value --disk; O_DIRECT on the
// raw file and on the qcow2 image) and checks the guest sees
// the disks in order with their serials, read-only flag and host data
// (the qcow2 one made by qemu-img convert), that its writes and a discard
// reach the host images (the qcow2 one read back by qemu-img, which finds
// it clean),
// and that the guest's poweroff ends nimbus with status 0.
func TestCLIDisks(t *testing.T) {
	a := guesttest.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), guestTimeout)
	defer cancel()
	initrd := a.ImageFile(t, guestimage.Options{Script: diskScript})
	pats := [][]byte{pattern("CLI0", 4096), pattern("CLI1", 4096), pattern("CLI2", 4096)}
	direct := guesttest.DirectDir(t)
	paths := []string{writeDiskIn(t, direct, "cli0.img", 0, pats[0]), writeDisk(t, "cli1.img", 0, pats[1])}
	qcow := filepath.Join(direct, "cli2.qcow2")
	qemuImg(t, "convert", "-f", "raw", "-O", "qcow2", writeDisk(t, "cli2.raw", 0, pats[2]), qcow)
	serial := filepath.Join(t.TempDir(), "serial.log")
	p := startNimbus(t, a, "--kernel", a.Kernel, "--initramfs", initrd,
		"--cmdline", "console=ttyS0 panic=-1 quiet", "--cpus", "boot=2", "--memory", "size=512M",
		"--disk", "path="+paths[0]+",serial=cli-disk-0,direct=on", "path="+paths[1]+",serial=cli-disk-1,readonly=on",
		"path="+qcow+",serial=cli-disk-2,image_type=qcow2,direct=on",
		"--serial", "file="+serial, "--console", "off")
	exited, err := p.Wait(ctx)
	if !exited || err != nil {
		t.Fatalf("nimbus: exited %v, err %v; output:\n%s\nserial:\n%s", exited, err, p.Output(), readFile(serial))
	}
	c := guestimage.ParseConsole(readFile(serial))
	if !c.Up || !c.Poweroff || len(c.Results) == 0 || c.Results[0].Status != 0 {
		t.Fatalf("guest %+v; serial:\n%s", c, readFile(serial))
	}
	t.Logf("guest output:\n%s", c.Results[0].Output)
	checkDisks(t, c.Results[0].Output, []string{"cli-disk-0", "cli-disk-1", "cli-disk-2"}, []bool{false, true, false}, pats, paths)
	if ro, _ := os.ReadFile(paths[1]); !bytes.Equal(ro[:4096], pats[1]) {
		t.Error("the read-only image changed")
	}
	qemuImg(t, "check", "-q", qcow)
	back := filepath.Join(t.TempDir(), "back.raw")
	qemuImg(t, "convert", "-f", "qcow2", "-O", "raw", qcow, back)
	b, _ := os.ReadFile(back)
	if len(b) != diskSize {
		t.Fatalf("qcow2 image read back by qemu-img: %d bytes, want %d", len(b), diskSize)
	}
	// The guest discarded the first 64 KiB cluster (its pattern) after
	// reading it, and wrote at 64 KiB.
	if !strings.Contains(c.Results[0].Output, "discarded vdc 0+64k") || !bytes.Equal(b[:4096], make([]byte, 4096)) ||
		string(b[16*4096:16*4096+18]) != "guest-wrote-qcow2\n" {
		t.Errorf("qcow2 image read back by qemu-img: %q at 0 (discarded), %q at 64 KiB", b[:16], b[16*4096:16*4096+18])
	}
}

// qemuImg runs qemu-img (the sandbox ships it from the host's qemu-utils).
func qemuImg(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("qemu-img", args...).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// misprogramScript takes the virtio-rng away from its driver and then,
// through /dev/mem on its BAR (busybox devmem; the region is free once
// unbound, as CONFIG_IO_STRICT_DEVMEM requires), drives the virtio-pci
// common configuration as a broken driver would: features accepted, queue 0
// enabled with all three rings at 508 GiB, far outside guest RAM, then
// DRIVER_OK. The device must refuse activation with DEVICE_NEEDS_RESET
// (status 0x4F), a reset must clear it, and the real driver must then bind
// and work again.
const misprogramScript = `
echo "== misprogram"
rng=
for d in /sys/bus/pci/devices/*; do [ "$(cat $d/device)" = 0x1044 ] && rng=$(basename $d); done
echo $rng > /sys/bus/pci/drivers/virtio-pci/unbind
set -- $(head -1 /sys/bus/pci/devices/$rng/resource)
bar=$(($1))
cc() { printf '0x%x' $((bar + $1)); }
devmem $(cc 0x14) 8 0
devmem $(cc 0x14) 8 1
devmem $(cc 0x14) 8 3
devmem $(cc 0x08) 32 1
devmem $(cc 0x0c) 32 1
devmem $(cc 0x14) 8 11
echo "features_ok $(devmem $(cc 0x14) 8)"
devmem $(cc 0x16) 16 0
for off in 32 40 48; do devmem $(cc $off) 32 0; devmem $(cc $((off + 4))) 32 0x7f; done
devmem $(cc 0x1c) 16 1
devmem $(cc 0x14) 8 15
echo "driver_ok $(devmem $(cc 0x14) 8)"
devmem $(cc 0x14) 8 0
echo "reset $(devmem $(cc 0x14) 8)"
echo $rng > /sys/bus/pci/drivers/virtio-pci/bind
echo "driver $(basename $(readlink /sys/bus/pci/devices/$rng/driver))"
echo "rng $(dd if=/dev/hwrng bs=16 count=1 2>/dev/null | od -An -tx1 | tr -d ' \n')"
echo "== disk-after"
dd if=/dev/vdb bs=4096 count=1 iflag=direct 2>/dev/null | head -c 40; echo
echo "== end"
`

// TestRemoteColdAddDiskAndMisprogrammedDevice starts `nimbus --api-socket`,
// then `nimbus-remote create`, two cold `add-disk` (the second read-only)
// and `boot`: the guest sees both disks with their serials. The guest then
// misprograms the virtio-rng with rings outside its RAM (misprogramScript):
// the device reports DEVICE_NEEDS_RESET instead of touching host memory,
// recovers after a reset and rebinding, the disks keep working, and the
// VMM keeps serving (vm.info Running, vm.counters) until vmm.shutdown, after
// which it exits with status 0. Last, vm.resize-disk grows the first disk
// under the running guest.
func TestRemoteColdAddDiskAndMisprogrammedDevice(t *testing.T) {
	a := guesttest.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), guestTimeout)
	defer cancel()
	initrd := a.ImageFile(t, guestimage.Options{Script: resizeWatchScript + diskScript + misprogramScript})
	pats := [][]byte{pattern("API0", 4096), pattern("API1", 4096)}
	paths := []string{writeDisk(t, "api0.img", 0, pats[0]), writeDisk(t, "api1.img", 0, pats[1])}
	dir := t.TempDir()
	sock, serial := filepath.Join(dir, "api.sock"), filepath.Join(dir, "serial.log")
	p := startNimbus(t, a, "--api-socket", "path="+sock)
	c := client.New(sock)
	if !waitFor(ctx, func() bool { _, err := c.Ping(ctx); return err == nil }) {
		t.Fatalf("no vmm.ping answer; output:\n%s", p.Output())
	}
	remote := func(args ...string) string {
		t.Helper()
		out, err := exec.CommandContext(ctx, filepath.Join(binDir(t, a), "nimbus-remote"),
			append([]string{"--api-socket", sock}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("nimbus-remote %s: %v\n%s\nnimbus output:\n%s", args[0], err, out, p.Output())
		}
		return string(out)
	}
	vmJSON, err := json.Marshal(map[string]any{
		"cpus":    map[string]any{"boot_vcpus": 2, "max_vcpus": 2},
		"memory":  map[string]any{"size": 512 << 20},
		"payload": map[string]any{"kernel": a.Kernel, "initramfs": initrd, "cmdline": "console=ttyS0 panic=-1 quiet " + guestimage.ParamStay + "=1"},
		"serial":  map[string]any{"mode": "File", "file": serial},
		"console": map[string]any{"mode": "Off"},
	})
	if err != nil {
		t.Fatal(err)
	}
	vmFile := filepath.Join(dir, "vm.json")
	if err := os.WriteFile(vmFile, vmJSON, 0o644); err != nil {
		t.Fatal(err)
	}
	remote("create", vmFile)
	remote("add-disk", "path="+paths[0]+",serial=api-disk-0")
	remote("add-disk", "path="+paths[1]+",serial=api-disk-1,readonly=on")
	remote("boot")
	if !waitFor(ctx, func() bool {
		s := readFile(serial)
		return strings.Contains(s, guestimage.MarkerStayUp) || strings.Contains(s, guestimage.MarkerPoweroff)
	}) {
		t.Fatalf("the guest did not finish its script; serial:\n%s\nnimbus output:\n%s", readFile(serial), p.Output())
	}
	con := guestimage.ParseConsole(readFile(serial))
	if !con.Up || len(con.Results) == 0 {
		t.Fatalf("guest %+v; serial:\n%s", con, readFile(serial))
	}
	g := con.Results[0].Output
	t.Logf("guest output:\n%s", g)
	checkDisks(t, g, []string{"api-disk-0", "api-disk-1"}, []bool{false, true}, pats, paths)

	mis := section(g, "misprogram")
	want := []string{"features_ok 0x0B", "driver_ok 0x4F", "reset 0x00", "driver virtio-pci"}
	if len(mis) != 5 || strings.Join(mis[:4], "|") != strings.Join(want, "|") {
		t.Errorf("misprogrammed rng: %q, want %q then the rng's bytes", mis, want)
	} else if rng := strings.TrimPrefix(mis[4], "rng "); len(rng) != 32 || strings.Trim(rng, "0") == "" {
		t.Errorf("rng after rebinding: %q", mis[4])
	}
	if got := section(g, "disk-after"); len(got) != 1 || got[0] != string(pats[1][:40]) {
		t.Errorf("vdb after the misprogramming: %q, want %q", got, pats[1][:40])
	}

	// The VMM still serves: the VM runs, its disks count the guest's I/O.
	if info := remote("info"); !strings.Contains(info, `"state":"Running"`) {
		t.Errorf("vm.info after the misprogramming: %s", info)
	}
	var counters map[string]map[string]uint64
	if err := json.Unmarshal([]byte(remote("counters")), &counters); err != nil {
		t.Fatalf("vm.counters: %v", err)
	}
	t.Logf("counters %v", counters)
	if d0, d1 := counters["_disk0"], counters["_disk1"]; d0["write_bytes"] != 4096 || d0["read_bytes"] < 4096 || d1["read_bytes"] < 8192 || d1["write_bytes"] != 0 {
		t.Errorf("disk counters %v: want one 4 KiB write on _disk0, two 4 KiB direct reads on _disk1", counters)
	}

	// vm.resize-disk on the running guest: the raw file grows, the
	// driver sees the new capacity and reads its last sector.
	remote("resize-disk", "--disk", "_disk0", "--size", "2M")
	if fi, err := os.Stat(paths[0]); err != nil || fi.Size() != 2<<20 {
		t.Errorf("image after resize-disk: %v, %v", fi, err)
	}
	if !waitFor(ctx, func() bool { return strings.Contains(readFile(serial), "resized-to 4096 512") }) {
		t.Errorf("the guest did not see vda grow to 4096 sectors; serial:\n%s", readFile(serial))
	}
	remote("shutdown-vmm")
	if exited, err := p.Wait(ctx); !exited || err != nil {
		t.Errorf("nimbus after shutdown-vmm: exited %v, err %v; output:\n%s", exited, err, p.Output())
	}
	t.Logf("nimbus output:\n%s", p.Output())
}

// resizeWatchScript waits in the background for vda's capacity to change
// (vm.resize-disk), then prints the new size in sectors and how many
// bytes a direct read of its last sector returned.
const resizeWatchScript = `
s0=$(cat /sys/block/vda/size)
( while [ "$(cat /sys/block/vda/size)" = "$s0" ]; do sleep 0.3; done
  n=$(cat /sys/block/vda/size)
  echo "resized-to $n $(dd if=/dev/vda bs=512 skip=$((n - 1)) count=1 iflag=direct 2>/dev/null | wc -c)" ) &
`
