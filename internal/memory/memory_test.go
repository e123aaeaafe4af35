package memory

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/nimbus-vmm/nimbus/internal/kvm"
)

const (
	mib = 1 << 20
	gib = 1 << 30
)

func TestLayout(t *testing.T) {
	for _, c := range []struct {
		size uint64
		want []Region
	}{
		{gib, []Region{{0, gib}}},
		{3 * gib, []Region{{0, 3 * gib}}},
		{3*gib + PageSize, []Region{{0, 3 * gib}, {4 * gib, PageSize}}},
		{8 * gib, []Region{{0, 3 * gib}, {4 * gib, 5 * gib}}},
	} {
		got := Layout(c.size)
		if fmt.Sprint(got) != fmt.Sprint(c.want) {
			t.Errorf("Layout(%#x) = %v, want %v", c.size, got, c.want)
		}
	}
}

func newMem(t testing.TB, zones ...Zone) *Memory {
	t.Helper()
	m, err := NewZones(zones)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func TestZonesLayoutAndSharedBacking(t *testing.T) {
	m := newMem(t, Zone{ID: "a", Size: 2 * gib}, Zone{ID: "b", Size: 2 * gib, Options: Options{Shared: true}})
	regs := m.Regions()
	want := []struct {
		r    Region
		zone string
		off  uint64
	}{{Region{0, 2 * gib}, "a", 0}, {Region{2 * gib, gib}, "b", 0}, {Region{4 * gib, gib}, "b", gib}}
	if len(regs) != len(want) {
		t.Fatalf("regions %+v", regs)
	}
	for i, w := range want {
		if regs[i].Region != w.r || regs[i].Zone != w.zone || regs[i].FileOffset != w.off {
			t.Errorf("region %d = %+v, want %v zone %s offset %#x", i, regs[i], w.r, w.zone, w.off)
		}
	}
	if regs[0].FD != -1 || regs[1].FD < 0 || regs[1].FD != regs[2].FD {
		t.Fatalf("fds %d %d %d", regs[0].FD, regs[1].FD, regs[2].FD)
	}
	if m.Size() != 4*gib {
		t.Fatalf("size %#x", m.Size())
	}
	// Guest address 4 GiB is byte 1 GiB of zone b's memfd.
	if err := m.WriteU64(4*gib, 0x0123456789abcdef); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 8)
	if _, err := unix.Pread(regs[2].FD, b, int64(gib)); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b, []byte{0xef, 0xcd, 0xab, 0x89, 0x67, 0x45, 0x23, 0x01}) {
		t.Fatalf("memfd bytes % x", b)
	}
}

func TestBounds(t *testing.T) {
	m := newMem(t, Zone{Size: 5 * gib}) // [0,3G) and [4G,6G)
	buf := make([]byte, 8)
	for _, c := range []struct {
		name string
		gpa  int64
		n    int // bytes ReadAt must return
		ok   bool
	}{
		{"start", 0, 8, true},
		{"below hole", 3*gib - 8, 8, true},
		{"into hole", 3*gib - 4, 4, false},
		{"in hole", 3*gib + 100, 0, false},
		{"high ram", 4 * gib, 8, true},
		{"end of ram", 6*gib - 8, 8, true},
		{"past end", 6*gib - 1, 1, false},
		{"far", 1 << 62, 0, false},
		{"max", 1<<63 - 1, 0, false},
		{"negative", -1, 0, false},
	} {
		n, err := m.ReadAt(buf, c.gpa)
		if n != c.n || (err == nil) != c.ok || (err != nil && !errors.Is(err, ErrBadAddress)) {
			t.Errorf("%s: ReadAt(%#x) = %d, %v; want %d ok=%v", c.name, c.gpa, n, err, c.n, c.ok)
		}
		wn, werr := m.WriteAt(buf, c.gpa)
		if wn != n || (werr == nil) != (err == nil) {
			t.Errorf("%s: WriteAt = %d, %v; ReadAt = %d, %v", c.name, wn, werr, n, err)
		}
		if c.gpa >= 0 {
			_, err := m.ReadU64(uint64(c.gpa))
			if (err == nil) != c.ok {
				t.Errorf("%s: ReadU64: %v", c.name, err)
			}
			_, err = m.Slice(uint64(c.gpa), 8)
			if (err == nil) != c.ok {
				t.Errorf("%s: Slice: %v", c.name, err)
			}
		}
	}
	if _, err := m.Slice(^uint64(0), 2); !errors.Is(err, ErrBadAddress) {
		t.Fatalf("Slice at 2^64-1: %v", err)
	}
	if _, err := m.Slice(0, ^uint64(0)); !errors.Is(err, ErrBadAddress) {
		t.Fatalf("Slice of 2^64-1 bytes: %v", err)
	}
}

func TestScalarsAndSlices(t *testing.T) {
	m := newMem(t, Zone{Size: 16 * PageSize})
	checks := []error{m.WriteU8(0x10, 0xaa), m.WriteU16(0x11, 0xbbcc), m.WriteU32(0x13, 0x11223344), m.WriteU64(0x17, 0x0102030405060708)}
	for _, err := range checks {
		if err != nil {
			t.Fatal(err)
		}
	}
	s, err := m.Slice(0x10, 15)
	if err != nil {
		t.Fatal(err)
	}
	want := []byte{0xaa, 0xcc, 0xbb, 0x44, 0x33, 0x22, 0x11, 8, 7, 6, 5, 4, 3, 2, 1}
	if !bytes.Equal(s, want) {
		t.Fatalf("bytes % x, want % x", s, want)
	}
	if cap(s) != 15 {
		t.Fatalf("Slice capacity %d lets callers grow past the range", cap(s))
	}
	u8, _ := m.ReadU8(0x10)
	u16, _ := m.ReadU16(0x11)
	u32, _ := m.ReadU32(0x13)
	u64, _ := m.ReadU64(0x17)
	if u8 != 0xaa || u16 != 0xbbcc || u32 != 0x11223344 || u64 != 0x0102030405060708 {
		t.Fatalf("read back %#x %#x %#x %#x", u8, u16, u32, u64)
	}
	if err := m.WriteU32(16*PageSize-2, 1); !errors.Is(err, ErrBadAddress) {
		t.Fatalf("straddling write: %v", err)
	}
}

func TestAccessSpansAdjacentZones(t *testing.T) {
	m := newMem(t, Zone{ID: "a", Size: mib}, Zone{ID: "b", Size: mib})
	p := []byte("across the zone boundary")
	if n, err := m.WriteAt(p, mib-5); n != len(p) || err != nil {
		t.Fatalf("WriteAt = %d, %v", n, err)
	}
	got := make([]byte, len(p))
	if n, err := m.ReadAt(got, mib-5); n != len(p) || err != nil || !bytes.Equal(got, p) {
		t.Fatalf("ReadAt = %d, %v, %q", n, err, got)
	}
	if _, err := m.Slice(mib-5, uint64(len(p))); !errors.Is(err, ErrBadAddress) {
		t.Fatalf("Slice across mappings: %v", err)
	}
}

type fakeVM struct {
	slots []kvm.UserspaceMemoryRegion
	fail  int
}

func (f *fakeVM) SetUserMemoryRegion(r kvm.UserspaceMemoryRegion) error {
	if len(f.slots) == f.fail {
		return errors.New("boom")
	}
	f.slots = append(f.slots, r)
	return nil
}

func TestRegister(t *testing.T) {
	m := newMem(t, Zone{Size: 3*gib + 2*mib})
	vm := &fakeVM{fail: -1}
	next, err := m.Register(vm, 2, kvm.MemLogDirtyPages)
	if err != nil || next != 4 {
		t.Fatalf("Register = %d, %v", next, err)
	}
	regs := m.Regions()
	low, _ := m.Slice(0, 1)
	high, _ := m.Slice(4*gib, 1)
	want := []kvm.UserspaceMemoryRegion{
		{Slot: 2, Flags: kvm.MemLogDirtyPages, GuestPhysAddr: 0, MemorySize: 3 * gib, UserspaceAddr: hostAddr(low)},
		{Slot: 3, Flags: kvm.MemLogDirtyPages, GuestPhysAddr: 4 * gib, MemorySize: 2 * mib, UserspaceAddr: hostAddr(high)},
	}
	if fmt.Sprint(vm.slots) != fmt.Sprint(want) {
		t.Fatalf("slots %+v\nwant  %+v", vm.slots, want)
	}
	if regs[1].Slot != 3 || regs[1].HostAddr != hostAddr(low)+3*gib {
		t.Fatalf("region info %+v", regs[1])
	}
	if _, err := m.Register(&fakeVM{fail: 1}, 0, 0); err == nil || !strings.Contains(err.Error(), "boom") {
		t.Fatalf("failing registrar: %v", err)
	}
}

// TestPlug: hot-added RAM gets the slot after Register's with its flags,
// becomes readable only once registered, and refuses overlaps; a failing
// registration leaves nothing behind.
func TestPlug(t *testing.T) {
	m := newMem(t, Zone{Size: 64 * mib})
	vm := &fakeVM{fail: -1}
	if _, err := m.Register(vm, 0, kvm.MemLogDirtyPages); err != nil {
		t.Fatal(err)
	}
	if _, err := m.ReadU8(4 * gib); !errors.Is(err, ErrBadAddress) {
		t.Fatalf("read before plug: %v", err)
	}
	info, err := m.Plug(vm, "hp0", 4*gib, 128*mib, Options{Shared: true})
	if err != nil {
		t.Fatal(err)
	}
	if info.Slot != 1 || info.GPA != 4*gib || info.Size != 128*mib || info.Zone != "hp0" || info.FD < 0 {
		t.Fatalf("plugged %+v", info)
	}
	want := kvm.UserspaceMemoryRegion{Slot: 1, Flags: kvm.MemLogDirtyPages, GuestPhysAddr: 4 * gib, MemorySize: 128 * mib, UserspaceAddr: info.HostAddr}
	if len(vm.slots) != 2 || vm.slots[1] != want {
		t.Fatalf("slots %+v, want the second %+v", vm.slots, want)
	}
	if err := m.WriteU32(4*gib+128*mib-4, 0xfeedface); err != nil {
		t.Fatal(err)
	}
	if v, err := m.ReadU32(4*gib + 128*mib - 4); err != nil || v != 0xfeedface {
		t.Fatalf("read back %#x, %v", v, err)
	}
	if m.Size() != 192*mib || len(m.Regions()) != 2 {
		t.Fatalf("size %#x, regions %+v", m.Size(), m.Regions())
	}
	if _, err := m.Plug(vm, "hp1", 4*gib+64*mib, 128*mib, Options{}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("overlapping plug: %v", err)
	}
	if _, err := m.Plug(&fakeVM{fail: 0}, "hp1", 8*gib, 128*mib, Options{}); err == nil {
		t.Fatal("plug with a failing registrar succeeded")
	}
	if _, err := m.ReadU8(8 * gib); !errors.Is(err, ErrBadAddress) || m.Size() != 192*mib {
		t.Fatalf("failed plug left RAM behind: %v, size %#x", err, m.Size())
	}
	if info, err := m.Plug(vm, "hp1", 8*gib, 128*mib, Options{}); err != nil || info.Slot != 2 {
		t.Fatalf("second plug: %+v, %v", info, err)
	}
}

func TestInvalidOptions(t *testing.T) {
	for _, z := range []Zone{
		{Size: 0},
		{Size: PageSize + 1},
		{Size: 4 * mib, Options: Options{Hugepages: true, HugepageSize: 3 * mib}},
		{Size: 3 * mib, Options: Options{Hugepages: true}},
	} {
		if _, err := NewZones([]Zone{z}); !errors.Is(err, ErrInvalid) {
			t.Errorf("%+v: %v, want ErrInvalid", z, err)
		}
	}
	if _, err := NewZones(nil); !errors.Is(err, ErrInvalid) {
		t.Errorf("no zones: %v", err)
	}
	// A failing later zone releases the earlier ones.
	if _, err := NewZones([]Zone{{Size: mib}, {Size: 1}}); !errors.Is(err, ErrInvalid) {
		t.Errorf("second zone invalid: %v", err)
	}
}

func TestPrefault(t *testing.T) {
	const size = 4 * mib
	// Check the lazy mapping before creating the eager one: with THP
	// "always", populating a neighbouring mapping the kernel merged with it
	// can fault a huge page that spills into it.
	lazy := newMem(t, Zone{Size: size})
	l, _ := lazy.Slice(0, size)
	if n := resident(t, l); n != 0 {
		t.Fatalf("%d pages resident without prefault", n)
	}
	eager := newMem(t, Zone{Size: size, Options: Options{Prefault: true}})
	e, _ := eager.Slice(0, size)
	if n := resident(t, e); n != size/PageSize {
		t.Fatalf("%d of %d pages resident with prefault", n, size/PageSize)
	}
}

// smaps returns the /proc/self/smaps fields of the mapping containing
// addr (the kernel may have merged it with a neighbour of equal flags):
// "VmFlags:" -> "rd wr ...".
func smaps(t *testing.T, addr uint64) map[string]string {
	t.Helper()
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		t.Skipf("no smaps: %v", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	in := false
	fields := map[string]string{}
	for sc.Scan() {
		line := sc.Text()
		if rng, _, _ := strings.Cut(line, " "); !strings.HasSuffix(rng, ":") {
			if start, end, ok := strings.Cut(rng, "-"); ok {
				lo, err1 := strconv.ParseUint(start, 16, 64)
				hi, err2 := strconv.ParseUint(end, 16, 64)
				in = err1 == nil && err2 == nil && lo <= addr && addr < hi
				continue
			}
		}
		if in {
			k, v, _ := strings.Cut(line, " ")
			fields[k] = strings.TrimSuffix(strings.TrimSpace(v), " kB")
		}
	}
	if len(fields) == 0 {
		t.Fatalf("mapping %#x not in smaps", addr)
	}
	return fields
}

func vmFlags(t *testing.T, addr uint64) []string {
	return strings.Fields(smaps(t, addr)["VmFlags:"])
}

func has(flags []string, f string) bool {
	for _, x := range flags {
		if x == f {
			return true
		}
	}
	return false
}

func TestMappingFlags(t *testing.T) {
	thp := newMem(t, Zone{Size: 4 * mib, Options: Options{THP: true}})
	plain := newMem(t, Zone{Size: 4 * mib, Options: Options{Reserve: true, Shared: true}})
	tf := vmFlags(t, thp.Regions()[0].HostAddr)
	pf := vmFlags(t, plain.Regions()[0].HostAddr)
	if _, err := os.Stat("/sys/kernel/mm/transparent_hugepage"); err == nil && !has(tf, "hg") {
		t.Errorf("THP mapping flags %v lack hg (MADV_HUGEPAGE)", tf)
	}
	if !has(tf, "nr") || has(pf, "nr") {
		t.Errorf("MAP_NORESERVE flags: default %v, reserve %v", tf, pf)
	}
	if !has(pf, "sh") || has(tf, "sh") {
		t.Errorf("shared flags: shared %v, private %v", pf, tf)
	}
}

func freeHugepages(t *testing.T) uint64 {
	b, err := os.ReadFile("/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages")
	if err != nil {
		return 0
	}
	n, _ := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	return n
}

func TestHugepages(t *testing.T) {
	for _, shared := range []bool{false, true} {
		z := Zone{Size: 4 * mib, Options: Options{Hugepages: true, HugepageSize: 2 * mib, Shared: shared}}
		m, err := NewZones([]Zone{z})
		if freeHugepages(t) >= 2 || err == nil {
			if err != nil {
				t.Fatalf("shared=%v with free hugepages: %v", shared, err)
			}
			b, _ := m.Slice(0, 4*mib)
			b[0], b[2*mib] = 1, 2 // the pages exist: no SIGBUS
			if !has(vmFlags(t, m.Regions()[0].HostAddr), "ht") {
				t.Errorf("shared=%v: mapping is not hugetlb", shared)
			}
			m.Close()
			continue
		}
		// No hugepages reserved on this host: creation must fail cleanly
		// rather than SIGBUS on first touch.
		if !errors.Is(err, ErrMap) {
			t.Fatalf("shared=%v without hugepages: %v, want ErrMap", shared, err)
		}
	}
}

func TestClose(t *testing.T) {
	m, err := New(mib, Options{Shared: true})
	if err != nil {
		t.Fatal(err)
	}
	fd := m.Regions()[0].FD
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := m.ReadU8(0); !errors.Is(err, ErrBadAddress) {
		t.Fatalf("read after close: %v", err)
	}
	if len(m.Regions()) != 0 || m.Size() != 0 {
		t.Fatal("regions survive Close")
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); !errors.Is(err, unix.EBADF) {
		t.Fatalf("memfd still open after Close: %v", err)
	}
	if err := m.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

// TestDiscard: discarded RAM reads back as zeros, private or memfd-backed,
// and the bytes around it are kept; a range outside one region is refused.
func TestDiscard(t *testing.T) {
	for _, shared := range []bool{false, true} {
		m := newMem(t, Zone{Size: 4 * mib, Options: Options{Shared: shared}})
		for a := uint64(0); a < 4*mib; a += PageSize {
			if err := m.WriteU32(a, 0xabcd0000|uint32(a>>12)); err != nil {
				t.Fatal(err)
			}
		}
		if err := m.Discard(mib, 2*mib); err != nil {
			t.Fatalf("shared=%v: %v", shared, err)
		}
		for _, c := range []struct {
			gpa  uint64
			want uint32
		}{{mib - PageSize, 0xabcd0000 | uint32((mib-PageSize)>>12)}, {mib, 0}, {3*mib - PageSize, 0}, {3 * mib, 0xabcd0000 | uint32(3*mib>>12)}} {
			if v, err := m.ReadU32(c.gpa); err != nil || v != c.want {
				t.Errorf("shared=%v: %#x reads %#x, %v; want %#x", shared, c.gpa, v, err, c.want)
			}
		}
		if shared {
			var st unix.Stat_t
			if err := unix.Fstat(m.Regions()[0].FD, &st); err != nil || uint64(st.Blocks)*512 > 2*mib+64<<10 {
				t.Errorf("memfd still holds %d bytes after the discard (%v)", st.Blocks*512, err)
			}
		}
		if err := m.Discard(3*mib, 2*mib); !errors.Is(err, ErrBadAddress) {
			t.Errorf("discard past the end: %v", err)
		}
	}
}

// TestDiscardAcrossRegions: a range over two adjacent regions (two zones
// back to back, or hot-added RAM right after boot RAM) is discarded in
// both; one reaching into a gap is refused.
func TestDiscardAcrossRegions(t *testing.T) {
	m := newMem(t, Zone{ID: "a", Size: mib}, Zone{ID: "b", Size: mib, Options: Options{Shared: true}})
	for _, a := range []uint64{mib - PageSize, mib} {
		if err := m.WriteU32(a, 0xdeadbeef); err != nil {
			t.Fatal(err)
		}
	}
	if err := m.Discard(mib-PageSize, 2*PageSize); err != nil {
		t.Fatal(err)
	}
	for _, a := range []uint64{mib - PageSize, mib} {
		if v, err := m.ReadU32(a); err != nil || v != 0 {
			t.Errorf("%#x reads %#x, %v after the discard", a, v, err)
		}
	}
	if err := m.Discard(2*mib-PageSize, 2*PageSize); !errors.Is(err, ErrBadAddress) {
		t.Errorf("discard into the end of RAM: %v", err)
	}
}
