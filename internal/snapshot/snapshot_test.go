package snapshot

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestDir(t *testing.T) {
	dir := t.TempDir()
	if got, err := Dir("file://" + dir); err != nil || got != dir {
		t.Fatalf("Dir = %q, %v", got, err)
	}
	for _, c := range []struct{ url, want string }{
		{dir, "Could not extract path from URL: " + dir},
		{"file://" + dir + "/missing", fmt.Sprintf("Destination is not a directory: %q", dir+"/missing")},
	} {
		_, err := Dir(c.url)
		if !errors.Is(err, ErrURL) || !strings.HasPrefix(err.Error(), c.want) {
			t.Errorf("Dir(%q) = %v, want %q", c.url, err, c.want)
		}
	}
}

func TestStateTree(t *testing.T) {
	dir := t.TempDir()
	type vmState struct{ Version int }
	root, err := New(vmState{Version: 3})
	if err != nil {
		t.Fatal(err)
	}
	child, _ := New(map[string]int{"a": 1})
	root.Add("cpu-manager", child)
	if err := WriteState(dir, root); err != nil {
		t.Fatal(err)
	}
	// Upstream's shape: the state is a JSON string inside the JSON.
	raw, _ := os.ReadFile(filepath.Join(dir, StateFile))
	if want := `{"snapshots":{"cpu-manager":{"snapshots":{},"snapshot_data":{"state":"{\"a\":1}"}}},"snapshot_data":{"state":"{\"Version\":3}"}}`; string(raw) != want {
		t.Errorf("state.json = %s\nwant %s", raw, want)
	}
	if err := WriteState(dir, root); err == nil {
		t.Error("a second WriteState overwrote state.json")
	}
	got, err := ReadState(dir)
	if err != nil {
		t.Fatal(err)
	}
	var v vmState
	if err := got.Decode(&v); err != nil || v.Version != 3 {
		t.Errorf("Decode = %+v, %v", v, err)
	}
	if _, err := got.Child("device-manager"); !errors.Is(err, ErrFormat) {
		t.Errorf("missing child: %v", err)
	}
}

// fakeRAM is guest RAM at gpa 0 and 1 MiB, as two host mappings.
type fakeRAM map[uint64][]byte

func (r fakeRAM) Slice(gpa, n uint64) ([]byte, error) {
	b, ok := r[gpa]
	if !ok || uint64(len(b)) < n {
		return nil, fmt.Errorf("no RAM at %#x", gpa)
	}
	return b[:n], nil
}

func anon(t *testing.T, n int) []byte {
	b, err := unix.Mmap(-1, 0, n, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Munmap(b) })
	return b
}

func TestMemoryRoundTrip(t *testing.T) {
	dir := t.TempDir()
	const size = 4 << 20
	src := fakeRAM{0: anon(t, size), 1 << 20: anon(t, size)}
	// Data in a few pages; a touched page of zeros; most pages untouched.
	copy(src[0][5*pageSize:], "hello")
	src[0][3<<20] = 0 // resident, all zero
	copy(src[1<<20][size-3:], "end")
	table := RangeTable{Data: []Range{{GPA: 0, Length: size}, {GPA: 1 << 20, Length: size}}}
	written, err := WriteMemory(dir, table, src)
	if err != nil {
		t.Fatal(err)
	}
	if written != 2*pageSize {
		t.Errorf("wrote %d bytes, want the 2 pages with data", written)
	}
	fi, _ := os.Stat(filepath.Join(dir, MemoryFile))
	if fi.Size() != 2*size {
		t.Errorf("memory-ranges is %d bytes, want %d", fi.Size(), 2*size)
	}
	dst := fakeRAM{0: anon(t, size), 1 << 20: anon(t, size)}
	if err := ReadMemory(dir, table, dst, false); err != nil {
		t.Fatal(err)
	}
	for gpa := range src {
		if !bytes.Equal(src[gpa], dst[gpa]) {
			t.Errorf("range %#x differs after the round trip", gpa)
		}
	}
	short := RangeTable{Data: []Range{{GPA: 0, Length: size}}}
	if err := ReadMemory(dir, short, dst, false); !errors.Is(err, ErrFormat) {
		t.Errorf("size mismatch: %v", err)
	}
}

// mapRAM maps files like memory.MapPrivate does, into fakeRAM.
type mapRAM struct{ fakeRAM }

func (m mapRAM) MapPrivate(gpa, size uint64, f *os.File, off int64) error {
	b, err := unix.Mmap(int(f.Fd()), off, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE)
	if err != nil {
		return err
	}
	m.fakeRAM[gpa] = b
	return nil
}

func TestMapMemory(t *testing.T) {
	dir := t.TempDir()
	src := fakeRAM{0: anon(t, 1<<20), 1 << 20: anon(t, 1<<20)}
	copy(src[1<<20][4096:], "mapped")
	table := RangeTable{Data: []Range{{GPA: 0, Length: 1 << 20}, {GPA: 1 << 20, Length: 1 << 20}}}
	if _, err := WriteMemory(dir, table, src); err != nil {
		t.Fatal(err)
	}
	dst := mapRAM{fakeRAM{}}
	if err := MapMemory(dir, table, dst); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(dst.fakeRAM[1<<20], src[1<<20]) || !bytes.Equal(dst.fakeRAM[0], src[0]) {
		t.Fatal("mapped RAM differs from the snapshot")
	}
}
