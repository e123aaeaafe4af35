package lifecycle

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nimbus-vmm/nimbus/internal/guestimage/guesttest"
)

// virtiofsFiles is the small-file workload: a git checkout's worth of
// files in a tree, written by the guest, read back by the host.
const virtiofsFiles = 1000

// fsScript mounts tag (retrying while a hot-added device comes up),
// reports hello.txt, writes guest.txt and, with tree, the small-file
// workload; then unmounts.
func fsScript(tag string, tree bool) string {
	s := fmt.Sprintf(`
mkdir -p /mnt/%[1]s
i=0; until mount -t virtiofs %[1]s /mnt/%[1]s 2>/dev/null; do i=$((i+1)); [ $i -gt 600 ] && break; sleep 0.2; done
echo "FS-%[1]s-READ=$(cat /mnt/%[1]s/hello.txt)"
echo "written by the guest into %[1]s" > /mnt/%[1]s/guest.txt
`, tag)
	if tree {
		s += fmt.Sprintf(`
t0=$(date +%%s)
d=0; while [ $d -lt 10 ]; do mkdir -p /mnt/%[1]s/tree/d$d; d=$((d+1)); done
n=0; while [ $n -lt %[2]d ]; do echo "file $n" > /mnt/%[1]s/tree/d$((n%%10))/f$n; n=$((n+1)); done
echo "FS-%[1]s-SUM=$(cat /mnt/%[1]s/tree/d*/f* | md5sum | cut -d' ' -f1) in $(( $(date +%%s) - t0 ))s"
`, tag, virtiofsFiles)
	}
	return s + fmt.Sprintf("sync; umount /mnt/%[1]s && echo FS-%[1]s-DONE\n", tag)
}

// rebootScript, first at every boot: after the reboot (a "rebooted" file in
// kataShared) it reads both shares again and powers off; otherwise it does
// nothing. rebootLast, last at the first boot, leaves that file and
// reboots the guest.
const (
	rebootScript = `
mkdir -p /mnt/r /mnt/h
if mount -t virtiofs kataShared /mnt/r && [ -e /mnt/r/rebooted ]; then
  echo "FS-REBOOT-READ=$(cat /mnt/r/hello.txt)"
  mount -t virtiofs hot /mnt/h && echo "FS-REBOOT-HOT=$(cat /mnt/h/hello.txt)" && umount /mnt/h
  echo "after the reboot" > /mnt/r/reboot.txt; sync; umount /mnt/r
  poweroff -f
fi
umount /mnt/r 2>/dev/null
`
	rebootLast = `
mount -t virtiofs kataShared /mnt/r && touch /mnt/r/rebooted && sync && umount /mnt/r && echo FS-REBOOTING && reboot -f
`
)

// TestVirtioFs: vhost-user-fs against Debian's virtiofsd in a real guest,
// Kata's way (memory shared=on, two PCI segments, the device on segment 1,
// one request queue of 1024): the guest mounts the tag, reads the host's
// file, writes one the host reads, and writes and reads back a tree of a
// thousand small files, which the host checks one by one; a second share
// is added with vm.add-fs while the guest runs. The guest then reboots:
// Nimbus hands both daemons' connections to the rebuilt machine (each
// virtiofsd serves one front end and exits when it hangs up, so upstream
// cannot reboot such a guest unless something restarts them), and the
// guest mounts both shares again. Both daemons exit once Nimbus has gone.
// In the QEMU sandbox, Nimbus and virtiofsd share one CPU (PinToOneCPU).
func TestVirtioFs(t *testing.T) {
	g := newGuest(t, "virtiofs")
	guesttest.PinToOneCPU(t)
	dir, err := os.MkdirTemp("", "nimbus-fs")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	shares := map[string]string{}
	for _, tag := range []string{"kataShared", "hot"} {
		shares[tag] = filepath.Join(dir, tag)
		os.MkdirAll(shares[tag], 0o755)
		os.WriteFile(filepath.Join(shares[tag], "hello.txt"), []byte("from the host to "+tag+"\n"), 0o644)
	}
	cold := guesttest.StartVirtiofsd(t, filepath.Join(dir, "cold.Sock"), shares["kataShared"])
	p := g.start(t, cmdline(false, rebootScript+fsScript("kataShared", true)+fsScript("hot", false)+rebootLast),
		"--memory", "size=512M,shared=on", "--platform", "num_pci_segments=2",
		"--fs", "tag=kataShared,socket="+cold.Sock+",num_queues=1,queue_size=1024,pci_segment=1")
	p.waitOutput("the guest's small-file workload", 0, 4*time.Minute, "FS-kataShared-DONE")
	out := p.output()
	if !strings.Contains(out, "FS-kataShared-READ=from the host to kataShared") {
		t.Fatalf("the guest did not read the host's file:\n%s", out)
	}
	// Every file, checked on the host; the guest's md5sum of them all
	// (read back through virtio-fs, in its glob's order: the same as
	// ReadDir's within each directory) must match.
	sum := md5.New()
	for d := 0; d < 10; d++ {
		ents, err := os.ReadDir(filepath.Join(shares["kataShared"], "tree", fmt.Sprint("d", d)))
		if err != nil {
			t.Fatal(err)
		}
		if len(ents) != virtiofsFiles/10 {
			t.Fatalf("d%d holds %d files, want %d", d, len(ents), virtiofsFiles/10)
		}
		for _, e := range ents {
			b, err := os.ReadFile(filepath.Join(shares["kataShared"], "tree", fmt.Sprint("d", d), e.Name()))
			if err != nil {
				t.Fatal(err)
			}
			if string(b) != "file "+strings.TrimPrefix(e.Name(), "f")+"\n" {
				t.Fatalf("%s/%s holds %q", fmt.Sprint("d", d), e.Name(), b)
			}
			sum.Write(b)
		}
	}
	guestSum := lineAfter(out, "FS-kataShared-SUM=")
	if !strings.HasPrefix(guestSum, hex.EncodeToString(sum.Sum(nil))+" ") {
		t.Fatalf("the guest read back md5 %q, the host's files give %x", guestSum, sum.Sum(nil))
	}
	t.Logf("guest small-file workload (%d files written, read back): %s", virtiofsFiles, guestSum)
	if got, err := os.ReadFile(filepath.Join(shares["kataShared"], "guest.txt")); err != nil || string(got) != "written by the guest into kataShared\n" {
		t.Fatalf("the guest's file on the host: %q, %v", got, err)
	}
	hot := guesttest.StartVirtiofsd(t, filepath.Join(dir, "hot.Sock"), shares["hot"])
	began := time.Now()
	p.do("vm.add-fs", func(ctx context.Context) error {
		info, err := p.api.AddFs(ctx, []byte(fmt.Sprintf(`{"tag":"hot","socket":%q,"num_queues":1,"queue_size":1024}`, hot.Sock)))
		if err == nil && !strings.HasPrefix(info.ID, "_fs") {
			err = fmt.Errorf("reply %+v, want a generated _fs id", info)
		}
		return err
	})
	p.waitOutput("the hot-added share", 0, bootTimeout, "FS-hot-DONE")
	t.Logf("vm.add-fs to the guest's mount done: %v", time.Since(began).Round(time.Millisecond))
	if !strings.Contains(p.output(), "FS-hot-READ=from the host to hot") {
		t.Fatalf("the guest did not read the hot-added share:\n%s", p.output())
	}
	if got, err := os.ReadFile(filepath.Join(shares["hot"], "guest.txt")); err != nil || string(got) != "written by the guest into hot\n" {
		t.Fatalf("the guest's file in the hot-added share: %q, %v", got, err)
	}
	p.waitOutput("the guest's reads after its reboot", 0, bootTimeout, "FS-REBOOT-READ=")
	if code := p.waitExit(exitTimeout); code != 0 {
		t.Fatalf("exit status %d", code)
	}
	out = p.output()
	for _, want := range []string{"FS-REBOOT-READ=from the host to kataShared", "FS-REBOOT-HOT=from the host to hot"} {
		if !strings.Contains(out, want) {
			t.Fatalf("after the reboot the guest did not print %q:\n%s", want, out)
		}
	}
	if got, err := os.ReadFile(filepath.Join(shares["kataShared"], "reboot.txt")); err != nil || string(got) != "after the reboot\n" {
		t.Fatalf("the guest's file after the reboot: %q, %v", got, err)
	}
	if countEvents(p.events(), "vm rebooted") == 0 {
		t.Error("no vm rebooted event")
	}
	for _, v := range []*guesttest.Virtiofsd{cold, hot} {
		select {
		case <-v.Done():
		case <-time.After(apiTimeout):
			t.Errorf("virtiofsd %s still running after Nimbus exited", v.Sock)
		}
	}
}

// lineAfter is the rest of the line after marker in out.
func lineAfter(out, marker string) string {
	_, rest, ok := strings.Cut(out, marker)
	if !ok {
		return "(missing)"
	}
	line, _, _ := strings.Cut(rest, "\n")
	return strings.TrimSpace(line)
}
