package lifecycle

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nimbus-vmm/nimbus/internal/sandbox"
)

// pmemModules: virtio_pmem gives the nvdimm region, nd_pmem the block
// device /dev/pmemN, ext4 the DAX-capable file system.
var pmemModules = []string{"virtio_pmem", "nd_pmem", "crc32c_generic", "ext4"}

// hostTool finds a host program a test runs; without it the test skips,
// or fails where the sandbox promised every tool.
func hostTool(t *testing.T, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv(sandbox.EnvRequireKVM) == "1" {
			t.Fatalf("%s missing (Debian package %s; scripts/install-deps.sh installs it)", name, pkg)
		}
		t.Skipf("%s missing (Debian package %s)", name, pkg)
	}
	return p
}

// ext4Image makes a 64 MiB ext4 image with 4 KiB blocks (DAX needs the
// page size) holding hello.txt.
func ext4Image(t *testing.T, dir, name, hello string) string {
	t.Helper()
	mkfs := hostTool(t, "mkfs.ext4", "e2fsprogs")
	src := filepath.Join(dir, name+".d")
	os.MkdirAll(src, 0o755)
	os.WriteFile(filepath.Join(src, "hello.txt"), []byte(hello+"\n"), 0o644)
	img := filepath.Join(dir, name)
	if err := os.WriteFile(img, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 64<<20); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(mkfs, "-q", "-F", "-b", "4096", "-d", src, img).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v\n%s", err, out)
	}
	return img
}

// debugfsCat reads a file out of an ext4 image on the host.
func debugfsCat(t *testing.T, img, path string) string {
	t.Helper()
	out, err := exec.Command(hostTool(t, "debugfs", "e2fsprogs"), "-R", "cat "+path, img).Output()
	if err != nil {
		t.Fatalf("debugfs cat %s: %v", path, err)
	}
	return string(out)
}

func fileSum(t *testing.T, p string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

// pmemScript mounts /dev/pmem<n> with DAX, reports what it reads and
// whether DAX is on, writes a file and unmounts.
func pmemScript(n int) string {
	return fmt.Sprintf(`
while [ ! -b /dev/pmem%[1]d ]; do sleep 0.2; done
mkdir -p /mnt%[1]d
if mount -t ext4 -o dax /dev/pmem%[1]d /mnt%[1]d; then
  echo "PMEM%[1]d-READ=$(cat /mnt%[1]d/hello.txt)"
  grep -q "/mnt%[1]d ext4 .*dax" /proc/mounts && echo "PMEM%[1]d-DAX"
  echo "written by the guest into pmem%[1]d" > /mnt%[1]d/guest.txt
  sync
  umount /mnt%[1]d
else
  echo "PMEM%[1]d-MOUNT-FAILED"; dmesg | tail -5
fi
echo "PMEM%[1]d-DONE"
`, n)
}

// TestPmem: virtio-pmem in a real guest. A cold-plugged image appears as
// /dev/pmem0, mounts as ext4 with DAX, reads the host's file and its
// write reaches the image (read back on the host with debugfs); a second
// image added with vm.add-pmem and discard_writes=on appears as
// /dev/pmem1, and the guest's write to it never reaches its file.
func TestPmem(t *testing.T) {
	g := newGuest(t, pmemModules...)
	dir := t.TempDir()
	img0 := ext4Image(t, dir, "rw.img", "cold-plugged")
	img1 := ext4Image(t, dir, "ro.img", "hot-plugged")
	sum1 := fileSum(t, img1)

	p := g.start(t, cmdline(false, pmemScript(0)+pmemScript(1)),
		"--memory", "size=512M", "--pmem", "file="+img0+",id=pm0")
	p.waitOutput("pmem0 done", 0, bootTimeout, "PMEM0-DONE")
	out := p.output()
	if !strings.Contains(out, "PMEM0-READ=cold-plugged") || !strings.Contains(out, "PMEM0-DAX") {
		t.Fatalf("cold-plugged pmem: guest did not read it through a DAX mount:\n%s", out)
	}
	began := time.Now()
	p.do("vm.add-pmem", func(ctx context.Context) error {
		info, err := p.api.AddPmem(ctx, []byte(fmt.Sprintf(`{"file":%q,"discard_writes":true}`, img1)))
		if err == nil && !strings.HasPrefix(info.ID, "_pmem") {
			err = fmt.Errorf("reply %+v, want a generated _pmem id", info)
		}
		return err
	})
	p.waitOutput("pmem1 done", 0, bootTimeout, "PMEM1-DONE")
	t.Logf("vm.add-pmem to the guest's DAX mount done: %v", time.Since(began).Round(time.Millisecond))
	out = p.output()
	if !strings.Contains(out, "PMEM1-READ=hot-plugged") || !strings.Contains(out, "PMEM1-DAX") {
		t.Fatalf("hot-plugged pmem: guest did not read it through a DAX mount:\n%s", out)
	}
	if code := p.waitExit(exitTimeout); code != 0 {
		t.Fatalf("exit status %d", code)
	}
	if got := debugfsCat(t, img0, "/guest.txt"); got != "written by the guest into pmem0\n" {
		t.Errorf("the guest's write did not reach %s: %q", img0, got)
	}
	if fileSum(t, img1) != sum1 {
		t.Errorf("discard_writes=on: the guest's write reached %s", img1)
	}
	if got := debugfsCat(t, img1, "/hello.txt"); !bytes.Equal([]byte(got), []byte("hot-plugged\n")) {
		t.Errorf("%s changed: hello.txt %q", img1, got)
	}
}
