package lifecycle

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nimbus-vmm/nimbus/internal/guestimage/guesttest"
	"github.com/nimbus-vmm/nimbus/test/guestbin/pattern"
)

const vhostBlkSize = 64 << 20

// storageDaemon is a running qemu-storage-daemon.
type storageDaemon struct {
	cmd  *exec.Cmd
	out  bytes.Buffer
	done chan struct{}
}

// stop ends the daemon (SIGTERM, as a service manager restarts it) and
// waits for it.
func (d *storageDaemon) stop() {
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(10 * time.Second):
		d.cmd.Process.Kill()
		<-d.done
	}
}

// startStorageDaemon exports img over vhost-user-blk on sock with
// Debian's qemu-storage-daemon, as a user of upstream's
// --disk vhost_user=on,socket= runs it.
func startStorageDaemon(t *testing.T, img, sock string) *storageDaemon {
	t.Helper()
	bin := hostTool(t, "qemu-storage-daemon", "qemu-utils")
	os.Remove(sock) // a killed daemon's socket
	d := &storageDaemon{done: make(chan struct{})}
	d.cmd = exec.Command(bin,
		"--blockdev", "driver=file,node-name=file0,filename="+img+",cache.direct=off",
		"--export", "type=vhost-user-blk,id=exp0,node-name=file0,addr.type=unix,addr.path="+sock+",writable=on,num-queues=2")
	d.cmd.Stdout, d.cmd.Stderr = &d.out, &d.out
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { d.cmd.Wait(); close(d.done) }()
	t.Cleanup(func() {
		d.stop()
		if t.Failed() {
			t.Logf("qemu-storage-daemon:\n%s", d.out.String())
		}
	})
	guesttest.WaitSocket(t, "qemu-storage-daemon", sock, d.done, d.out.String)
	return d
}

// TestVhostUserBlk: a disk served by qemu-storage-daemon over
// vhost-user-blk (two queues) beside the same image served in-process:
// the guest reads the host's bytes from both (md5 of the whole disk), and
// its write through the vhost-user disk lands in the host's file. The
// guest also times 4 KiB direct reads on each, a rough IOPS comparison
// for the note (no assertion on it).
func TestVhostUserBlk(t *testing.T) {
	g := newGuest(t)
	dir, err := os.MkdirTemp("", "nimbus-vub")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	img, local := filepath.Join(dir, "vhost.img"), filepath.Join(dir, "local.img")
	data, _ := io.ReadAll(pattern.N(vhostBlkSize))
	for _, p := range []string{img, local} {
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	sum := md5.Sum(data)
	sock := filepath.Join(dir, "blk.sock")
	startStorageDaemon(t, img, sock)
	const reads = 1024
	script := fmt.Sprintf(`
for d in vda vdb; do echo "SUM-$d=$(md5sum /dev/$d | cut -d' ' -f1)"; done
for d in vda vdb; do
  t0=$(cut -d' ' -f1 /proc/uptime)
  dd if=/dev/$d of=/dev/null bs=4096 count=%[1]d iflag=direct 2>/dev/null
  echo "READS-$d $t0 $(cut -d' ' -f1 /proc/uptime)"
done
yes nimbus-vhost-user | head -c 1048576 | dd of=/dev/vda bs=65536 seek=128 conv=fsync 2>/dev/null && echo WROTE
`, reads)
	p := g.start(t, cmdline(false, script),
		"--memory", "size=512M,shared=on", "--cpus", "boot=2",
		"--disk", "vhost_user=on,socket="+sock+",num_queues=2,queue_size=256", "path="+local)
	if code := p.waitExit(bootTimeout); code != 0 {
		t.Fatalf("exit status %d", code)
	}
	out := p.output()
	want := hex.EncodeToString(sum[:])
	for _, d := range []string{"vda", "vdb"} {
		if got := lineAfter(out, "SUM-"+d+"="); got != want {
			t.Errorf("%s: the guest read md5 %s, the image is %s", d, got, want)
		}
		var t0, t1 float64
		if _, err := fmt.Sscanf(lineAfter(out, "READS-"+d+" "), "%f %f", &t0, &t1); err == nil && t1 > t0 {
			t.Logf("%s: %d direct 4 KiB reads in %.2fs: %.0f IOPS (nested guest)", d, reads, t1-t0, reads/(t1-t0))
		}
	}
	if !strings.Contains(out, "WROTE") {
		t.Fatalf("the guest's write failed:\n%s", out)
	}
	got, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	wrote := bytes.Repeat([]byte("nimbus-vhost-user\n"), 1<<20/18+1)[:1<<20]
	if !bytes.Equal(got[8<<20:9<<20], wrote) {
		t.Errorf("the guest's write did not reach the image at 8 MiB")
	}
	if !bytes.Equal(got[:8<<20], data[:8<<20]) || !bytes.Equal(got[9<<20:], data[9<<20:]) {
		t.Errorf("bytes outside the write changed")
	}
}

// TestVhostUserBlkReconnect: the back end restarts while the VM is paused
// (a storage daemon upgraded under a running guest): Nimbus reconnects to
// the new daemon on the same socket and replays the device's setup, and
// after vm.resume the guest's reads go on; it is never told to reset.
func TestVhostUserBlkReconnect(t *testing.T) {
	g := newGuest(t)
	dir, err := os.MkdirTemp("", "nimbus-vur")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	img := filepath.Join(dir, "vhost.img")
	data, _ := io.ReadAll(pattern.N(8 << 20))
	if err := os.WriteFile(img, data, 0o644); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "blk.sock")
	qsd := startStorageDaemon(t, img, sock)
	script := `i=0; while [ $i -lt 3000 ]; do
  dd if=/dev/vda of=/dev/null bs=4096 count=1 skip=$((i % 2048)) iflag=direct 2>/dev/null && echo "READ $i"
  i=$((i+1)); sleep 0.1 2>/dev/null || usleep 100000
done
`
	p := g.start(t, cmdline(true, script), "--memory", "size=256M,shared=on",
		"--disk", "vhost_user=on,socket="+sock+",num_queues=1,queue_size=128")
	p.waitOutput("the guest's reads", 0, bootTimeout, "READ 3\n")
	p.do("vm.pause", p.api.Pause)
	qsd.stop()
	before := lastRead(p.output())
	startStorageDaemon(t, img, sock)
	// The device is back once the new daemon has a client.
	time.Sleep(time.Second)
	p.do("vm.resume", p.api.Resume)
	p.waitFor("reads after the restart", bootTimeout, func() bool { return lastRead(p.output()) >= before+10 })
	t.Logf("reads before the restart: %d, after: %d", before, lastRead(p.output()))
	if strings.Contains(p.processLog(), "needs a reset") {
		t.Errorf("the guest was told to reset the device:\n%s", p.processLog())
	}
	ctx, cancel := context.WithTimeout(context.Background(), apiTimeout)
	defer cancel()
	if err := p.api.ShutdownVMM(ctx); err != nil {
		t.Fatalf("vmm.shutdown: %v", err)
	}
}

// lastRead is the highest "READ n" the guest printed, or -1.
func lastRead(out string) int {
	n := -1
	for _, l := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), "READ "); ok {
			if i, err := strconv.Atoi(v); err == nil && i > n {
				n = i
			}
		}
	}
	return n
}
