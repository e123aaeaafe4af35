package debimage

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestWriteGPTDisk: the ESP lands at 1 MiB and the partition after it,
// holes stay holes, and sfdisk reads back the two partitions.
func TestWriteGPTDisk(t *testing.T) {
	if _, err := exec.LookPath("sfdisk"); err != nil {
		t.Skip("no sfdisk (fdisk)")
	}
	dir := t.TempDir()
	esp, part, out := filepath.Join(dir, "esp"), filepath.Join(dir, "part"), filepath.Join(dir, "disk")
	os.WriteFile(esp, append([]byte("ESP!"), make([]byte, 1<<20-4)...), 0o644)
	f, _ := os.Create(part)
	f.Truncate(64 << 20)
	f.WriteAt([]byte("ROOT"), 0)
	f.WriteAt([]byte("DEEP"), 40<<20)
	f.Close()
	if err := WriteGPTDisk(context.Background(), out, esp, part, "root"); err != nil {
		t.Fatal(err)
	}
	disk, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if want := 1<<20 + 1<<20 + 64<<20 + 1<<20; len(disk) != want {
		t.Fatalf("disk is %d bytes, want %d", len(disk), want)
	}
	for off, want := range map[int]string{512: "EFI PART", 1 << 20: "ESP!", 2 << 20: "ROOT", 2<<20 + 40<<20: "DEEP"} {
		if got := string(disk[off : off+len(want)]); got != want {
			t.Errorf("at %#x: %q, want %q", off, got, want)
		}
	}
	if !bytes.Equal(disk[2<<20+4:2<<20+4096], make([]byte, 4092)) {
		t.Error("the partition's hole is not zero")
	}
	var st syscall.Stat_t
	if err := syscall.Stat(out, &st); err != nil || st.Blocks*512 > 8<<20 {
		t.Errorf("the 67 MiB disk holds %d KiB (%v): the partition's holes were written", st.Blocks/2, err)
	}
	tbl, err := exec.Command("sfdisk", "-d", out).CombinedOutput()
	if err != nil {
		t.Fatalf("sfdisk -d: %v\n%s", err, tbl)
	}
	for _, want := range []string{"start=        2048, size=        2048, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B", `start=        4096, size=      131072, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4`, `name="root"`} {
		if !strings.Contains(string(tbl), want) {
			t.Errorf("partition table lacks %q:\n%s", want, tbl)
		}
	}
}
