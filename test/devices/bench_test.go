package devices_test

import (
	"context"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/nimbus-vmm/nimbus/internal/guestimage"
	"github.com/nimbus-vmm/nimbus/internal/guestimage/guesttest"
	"github.com/nimbus-vmm/nimbus/internal/testproc"
)

// benchScript runs each disk workload with O_DIRECT on /dev/vda and
// prints "BENCH <name> <seconds> <bytes> <ops>". Random I/O is one dd per
// request (busybox has no fio), so it includes a fork+exec per request on
// both VMMs alike.
const benchScript = `
now() { cut -d' ' -f1 /proc/uptime; }
run() { name=$1 bytes=$2 ops=$3; shift 3; s=$(now); "$@" 2>/dev/null; e=$(now); echo "BENCH $name $(awk "BEGIN{print $e-$s}") $bytes $ops"; }
run seq-write-1M 67108864 64 dd if=/dev/zero of=/dev/vda bs=1M count=64 oflag=direct
run seq-read-1M 67108864 64 dd if=/dev/vda of=/dev/null bs=1M count=64 iflag=direct
run seq-write-4k 16777216 4096 dd if=/dev/zero of=/dev/vda bs=4096 count=4096 oflag=direct
run seq-read-4k 16777216 4096 dd if=/dev/vda of=/dev/null bs=4096 count=4096 iflag=direct
awk 'BEGIN{srand(7); for(i=0;i<300;i++) print int(rand()*16384)}' > /tmp/off
rr() { for o in $(cat /tmp/off); do dd if=/dev/vda of=/dev/null bs=4096 count=1 skip=$o iflag=direct; done; }
rw() { for o in $(cat /tmp/off); do dd if=/dev/zero of=/dev/vda bs=4096 count=1 seek=$o oflag=direct; done; }
run rand-read-4k 1228800 300 rr
run rand-write-4k 1228800 300 rw
`

type benchResult struct {
	secs       float64
	bytes, ops float64
}

func parseBench(out string) map[string]benchResult {
	res := map[string]benchResult{}
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(strings.TrimSpace(l))
		if len(f) != 5 || f[0] != "BENCH" {
			continue
		}
		s, _ := strconv.ParseFloat(f[2], 64)
		b, _ := strconv.ParseFloat(f[3], 64)
		o, _ := strconv.ParseFloat(f[4], 64)
		res[f[1]] = benchResult{s, b, o}
	}
	return res
}

// TestDiskBench is the virtio-blk benchmark (make bench-devices): the same
// dd workloads in the guest under Nimbus and under QEMU/KVM (q35,
// virtio-blk-pci, host page cache as Nimbus's default), printing IOPS and
// MiB/s and the Nimbus/QEMU ratio, on a raw file and on a qcow2 image. It
// asserts nothing and runs only when selected by name.
func TestDiskBench(t *testing.T) {
	if f := flag.Lookup("test.run"); f == nil || !strings.Contains(f.Value.String(), "TestDiskBench") {
		t.Skip("disk benchmark: run with -run TestDiskBench (make bench-devices)")
	}
	a := guesttest.Require(t)
	initrd := a.ImageFile(t, guestimage.Options{Script: benchScript})
	// The same workloads on a raw file and on a fresh qcow2 image (whose
	// clusters are allocated as the writes come), each under both VMMs.
	dir := t.TempDir()
	raw := filepath.Join(dir, "bench.img")
	if err := os.WriteFile(raw, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(raw, 64<<20); err != nil {
		t.Fatal(err)
	}
	qcow := filepath.Join(dir, "bench.qcow2")
	testproc.Tool(t, "qemu-img", "create", "-q", "-f", "qcow2", qcow, "64M")
	cmdline := "console=ttyS0 panic=-1 quiet"
	run := func(name string, args ...string) map[string]benchResult {
		ctx, cancel := context.WithTimeout(context.Background(), 2*guestTimeout)
		defer cancel()
		out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
		r := parseBench(string(out))
		if err != nil || len(r) == 0 {
			t.Fatalf("%s: %v; output:\n%s", name, err, out)
		}
		return r
	}
	if a.BinDir == "" {
		t.Fatal("no Nimbus binaries (NIMBUS_BIN_DIR)")
	}
	for _, img := range []struct{ path, format string }{{raw, "raw"}, {qcow, "qcow2"}} {
		nimbus := run(filepath.Join(a.BinDir, "nimbus"), "--kernel", a.Kernel, "--initramfs", initrd, "--cmdline", cmdline,
			"--serial", "tty", "--console", "off", "--memory", "size=512M", "--disk", "path="+img.path+",image_type="+img.format)
		var qemu map[string]benchResult
		if a.QEMU != "" {
			qemu = run(a.QEMU, "-M", "q35", "-accel", "kvm", "-cpu", "host", "-m", "512M", "-smp", "1", "-nographic", "-no-reboot", "-nic", "none",
				"-kernel", a.Kernel, "-initrd", initrd, "-append", cmdline,
				"-drive", "file="+img.path+",if=none,id=d0,format="+img.format, "-device", "virtio-blk-pci,drive=d0")
		}
		t.Logf("%s image:", img.format)
		logBench(t, []string{"seq-write-1M", "seq-read-1M", "seq-write-4k", "seq-read-4k", "rand-read-4k", "rand-write-4k"}, nimbus, qemu,
			func(r benchResult) string {
				return strconv.FormatFloat(r.ops/r.secs, 'f', 0, 64) + " IOPS " + strconv.FormatFloat(r.bytes/r.secs/(1<<20), 'f', 1, 64) + " MiB/s"
			})
	}
}

// logBench logs each workload's Nimbus figure (rate formats one), QEMU's
// when there is one, and the throughput ratio.
func logBench(t *testing.T, names []string, nimbus, qemu map[string]benchResult, rate func(benchResult) string) {
	line := func(r benchResult) string {
		if r.secs <= 0 {
			return "n/a"
		}
		return rate(r)
	}
	for _, name := range names {
		n := nimbus[name]
		msg := name + ": nimbus " + line(n)
		if q, ok := qemu[name]; ok {
			msg += " | qemu " + line(q)
			if q.secs > 0 && n.secs > 0 {
				msg += " | nimbus/qemu throughput " + strconv.FormatFloat(q.secs/n.secs, 'f', 2, 64)
			}
		}
		t.Log(msg)
	}
}
