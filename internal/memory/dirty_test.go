package memory

import (
	"bytes"
	"errors"
	"math"
	"os"
	"slices"
	"testing"

	"github.com/nimbus-vmm/nimbus/internal/kvm"
)

// logVM is a DirtyLogger whose KVM log says the pages in logged are dirty.
type logVM struct {
	fakeVM
	logged map[uint32][]uint64 // slot -> pages
}

func (l *logVM) DirtyLog(slot uint32, bitmap []uint64) error {
	for _, p := range l.logged[slot] {
		bitmap[p/64] |= 1 << (p % 64)
	}
	delete(l.logged, slot)
	return nil
}

func TestDirtyRanges(t *testing.T) {
	m := newMem(t, Zone{Size: 4 * mib})
	vm := &logVM{fakeVM: fakeVM{fail: -1}}
	if _, err := m.Register(vm, 0, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := m.DirtyRanges(vm, false); err == nil {
		t.Fatal("DirtyRanges with logging off succeeded")
	}
	if m.DirtyLogging() {
		t.Fatal("dirty logging on before StartDirtyLog")
	}
	if err := m.StartDirtyLog(vm); err != nil {
		t.Fatal(err)
	}
	if !m.DirtyLogging() {
		t.Fatal("dirty logging off after StartDirtyLog")
	}
	if last := vm.slots[len(vm.slots)-1]; last.Flags&kvm.MemLogDirtyPages == 0 {
		t.Fatalf("slot registered again without dirty logging: %+v", last)
	}
	// vCPU writes (KVM's log): pages 63-65, a run across a bitmap word.
	vm.logged = map[uint32][]uint64{0: {63, 64, 65, 1023}}
	// VMM writes: a copy across pages 2-3, a scalar on page 10.
	if _, err := m.WriteAt(make([]byte, PageSize), 2*PageSize+8); err != nil {
		t.Fatal(err)
	}
	if err := m.WriteU32(10*PageSize, 1); err != nil {
		t.Fatal(err)
	}
	// A device buffer: only the final round counts it.
	if _, err := m.Slice(20*PageSize, 2*PageSize); err != nil {
		t.Fatal(err)
	}
	got, err := m.DirtyRanges(vm, false)
	if err != nil {
		t.Fatal(err)
	}
	want := []Region{{2 * PageSize, 2 * PageSize}, {10 * PageSize, PageSize}, {63 * PageSize, 3 * PageSize}, {1023 * PageSize, PageSize}}
	if !slices.Equal(got, want) {
		t.Fatalf("round 1: %v, want %v", got, want)
	}
	if got, _ := m.DirtyRanges(vm, false); len(got) != 0 {
		t.Fatalf("round 2 (nothing written): %v", got)
	}
	if got, _ := m.DirtyRanges(vm, true); !slices.Equal(got, []Region{{20 * PageSize, 2 * PageSize}}) {
		t.Fatalf("final round: %v, want the sliced pages", got)
	}
	if err := m.StopDirtyLog(vm); err != nil {
		t.Fatal(err)
	}
	if last := vm.slots[len(vm.slots)-1]; last.Flags&kvm.MemLogDirtyPages != 0 {
		t.Fatalf("dirty logging still on: %+v", last)
	}
}

func TestResidentRanges(t *testing.T) {
	t.Run("private", func(t *testing.T) { residentRanges(t, newMem(t, Zone{Size: 4 * mib})) })
	t.Run("shared", func(t *testing.T) { residentRanges(t, newMem(t, Zone{Size: 4 * mib, Options: Options{Shared: true}})) })
}

func residentRanges(t *testing.T, m *Memory) {
	for _, p := range []uint64{1, 2, 3, 600} {
		if err := m.WriteU8(p*PageSize, 1); err != nil {
			t.Fatal(err)
		}
	}
	got, err := m.ResidentRanges()
	if err != nil {
		t.Fatal(err)
	}
	if want := []Region{{PageSize, 3 * PageSize}, {600 * PageSize, PageSize}}; !slices.Equal(got, want) {
		t.Fatalf("resident %v, want %v", got, want)
	}
}

func TestMapPrivate(t *testing.T) {
	m := newMem(t, Zone{Size: 4 * mib})
	f, err := os.CreateTemp(t.TempDir(), "ram")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	page := bytes.Repeat([]byte{7}, PageSize)
	if _, err := f.WriteAt(page, 3*PageSize); err != nil || f.Truncate(4*mib) != nil {
		t.Fatal(err)
	}
	if err := m.MapPrivate(0, 4*mib, f, 0); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, PageSize)
	if _, err := m.ReadAt(got, 3*PageSize); err != nil || !bytes.Equal(got, page) {
		t.Fatalf("read through the mapping: %v %v", got[:4], err)
	}
	if err := m.WriteU8(3*PageSize, 9); err != nil {
		t.Fatal(err)
	}
	if _, err := f.ReadAt(got, 3*PageSize); err != nil || got[0] != 7 {
		t.Fatalf("a guest write reached the file: %v", got[0])
	}
	// Untouched pages read the file: they all count as populated.
	if rs, _ := m.ResidentRanges(); !slices.Equal(rs, []Region{{0, 4 * mib}}) {
		t.Fatalf("resident ranges of a file-backed region: %v", rs)
	}
	// A size that wraps gpa+size around (found by fuzzing) or a gpa past
	// the region is not under guest RAM.
	for _, c := range [][2]uint64{{PageSize, math.MaxUint64 - PageSize + 1}, {8 * mib, PageSize}} {
		if err := m.MapPrivate(c[0], c[1], f, 0); !errors.Is(err, ErrBadAddress) {
			t.Fatalf("MapPrivate(%#x, %#x): %v", c[0], c[1], err)
		}
	}
	if err := newMem(t, Zone{Size: 4 * mib, Options: Options{Shared: true}}).MapPrivate(0, 4*mib, f, 0); err == nil {
		t.Fatal("MapPrivate under shared memory succeeded")
	}
}
