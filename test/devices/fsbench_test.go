package devices_test

import (
	"context"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/nimbus-vmm/nimbus/internal/guestimage"
	"github.com/nimbus-vmm/nimbus/internal/guestimage/guesttest"
)

// fsBenchScript mounts the virtio-fs tag "bench" and prints BENCH lines
// (benchScript's format): small files created, read and removed, one
// 64 MiB file written and read back.
const fsBenchScript = `
now() { cut -d' ' -f1 /proc/uptime; }
run() { name=$1 bytes=$2 ops=$3; shift 3; s=$(now); "$@" 2>/dev/null; e=$(now); echo "BENCH $name $(awk "BEGIN{print $e-$s}") $bytes $ops"; }
mkdir -p /mnt && mount -t virtiofs bench /mnt || { echo MOUNT-FAILED; exit 1; }
mk() { i=0; while [ $i -lt 500 ]; do echo "small file $i" > /mnt/f$i; i=$((i+1)); done; }
rd() { cat /mnt/f* > /dev/null; }
rmf() { rm -f /mnt/f*; }
run small-create 0 500 mk
run small-read 0 500 rd
run small-unlink 0 500 rmf
run large-write-1M 67108864 64 dd if=/dev/zero of=/mnt/big bs=1M count=64 conv=fsync
echo 3 > /proc/sys/vm/drop_caches
run large-read-1M 67108864 64 dd if=/mnt/big of=/dev/null bs=1M
umount /mnt
`

// TestFsBench is the virtio-fs benchmark (make bench-fs): the same
// workloads against the same Debian virtiofsd (a fresh one per run) under
// Nimbus and under QEMU/KVM (q35, vhost-user-fs-pci, memfd RAM). It
// asserts nothing and runs only when selected by name.
func TestFsBench(t *testing.T) {
	if f := flag.Lookup("test.run"); f == nil || !strings.Contains(f.Value.String(), "TestFsBench") {
		t.Skip("virtio-fs benchmark: run with -run TestFsBench (make bench-fs)")
	}
	a := guesttest.Require(t)
	initrd := a.ImageFile(t, guestimage.Options{Script: fsBenchScript,
		ModuleNames: slices.Concat(guestimage.DefaultModules, []string{"virtiofs"})})
	dir, err := os.MkdirTemp("", "nimbus-fsb")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	cmdline := "console=ttyS0 panic=-1 quiet"
	run := func(name string, args func(sock string) []string) map[string]benchResult {
		share := filepath.Join(dir, name)
		os.MkdirAll(share, 0o755)
		v := guesttest.StartVirtiofsd(t, filepath.Join(dir, name+".sock"), share)
		ctx, cancel := context.WithTimeout(context.Background(), 2*guestTimeout)
		defer cancel()
		out, err := exec.CommandContext(ctx, args(v.Sock)[0], args(v.Sock)[1:]...).CombinedOutput()
		r := parseBench(string(out))
		if err != nil || len(r) == 0 {
			t.Fatalf("%s: %v; output:\n%s", name, err, out)
		}
		return r
	}
	if a.BinDir == "" {
		t.Fatal("no Nimbus binaries (NIMBUS_BIN_DIR)")
	}
	nimbus := run("nimbus", func(sock string) []string {
		return []string{filepath.Join(a.BinDir, "nimbus"), "--kernel", a.Kernel, "--initramfs", initrd, "--cmdline", cmdline,
			"--serial", "tty", "--console", "off", "--memory", "size=512M,shared=on",
			"--fs", "tag=bench,socket=" + sock + ",num_queues=1,queue_size=1024"}
	})
	var qemu map[string]benchResult
	if a.QEMU != "" {
		qemu = run("qemu", func(sock string) []string {
			return []string{a.QEMU, "-M", "q35", "-accel", "kvm", "-cpu", "host", "-m", "512M", "-smp", "1",
				"-nographic", "-no-reboot", "-nic", "none",
				"-object", "memory-backend-memfd,id=mem,size=512M,share=on", "-numa", "node,memdev=mem",
				"-chardev", "socket,id=vfs,path=" + sock, "-device", "vhost-user-fs-pci,chardev=vfs,tag=bench,queue-size=1024",
				"-kernel", a.Kernel, "-initrd", initrd, "-append", cmdline}
		})
	}
	logBench(t, []string{"small-create", "small-read", "small-unlink", "large-write-1M", "large-read-1M"}, nimbus, qemu,
		func(r benchResult) string {
			s := strconv.FormatFloat(r.ops/r.secs, 'f', 0, 64) + " ops/s"
			if r.bytes > 0 {
				s += " " + strconv.FormatFloat(r.bytes/r.secs/(1<<20), 'f', 1, 64) + " MiB/s"
			}
			return s
		})
}
