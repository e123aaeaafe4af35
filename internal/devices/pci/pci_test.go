package pci

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"testing"

	"github.com/nimbus-vmm/nimbus/internal/arch/x86"
	"github.com/nimbus-vmm/nimbus/internal/devices/bus"
)

// testFn is a function with a 64-bit prefetchable BAR0 and a 32-bit BAR2.
type testFn struct {
	*ConfigSpace
	reads []uint64
}

func (f *testFn) Read(base, off uint64, data []byte) {
	f.reads = append(f.reads, base+off)
	fill(data, 0xab)
}
func (f *testFn) Write(_, _ uint64, _ []byte) {}

func newTestFn(t *testing.T) *testFn {
	t.Helper()
	c := NewConfigSpace(Header{VendorID: 0x1af4, DeviceID: 0x1042, Revision: 1, Class: 1, Subclass: 0x80,
		SubsystemVendorID: 0x1af4, SubsystemID: 0x1042})
	if err := c.AddBAR(BAR{Index: 0, Size: 0x80000, Type: BARMem64, Prefetchable: true, Align: 8 << 20}); err != nil {
		t.Fatal(err)
	}
	if err := c.AddBAR(BAR{Index: 2, Size: 0x1000, Type: BARMem32}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.AddCapability(CapVendorSpecific, []byte{14, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.AddCapability(CapMSIX, []byte{1, 0, 0, 0, 0, 0, 0, 0, 0, 0}); err != nil {
		t.Fatal(err)
	}
	return &testFn{ConfigSpace: c}
}

type rig struct {
	root      *Root
	pio, mmio *bus.Bus
}

func newRig(t *testing.T) *rig {
	t.Helper()
	s32, e32 := Window32()
	w32, err := SplitWindows(s32, e32, []uint32{1}, Mem32Alignment)
	if err != nil {
		t.Fatal(err)
	}
	mmio := bus.NewMMIO()
	root, _ := NewRoot(RootConfig{MMIO: mmio, Window32: NewAllocator(w32[0]),
		Window64: NewAllocator(x86.Region{Start: 1 << 36, Size: 1 << 36})})
	pio := bus.NewIO()
	if err := pio.Insert(root.ConfigIO(), ConfigIOPort, ConfigIOSize); err != nil {
		t.Fatal(err)
	}
	if err := mmio.Insert(root.ConfigMMIO(), ECAMBase(0), ECAMSizePerSegment); err != nil {
		t.Fatal(err)
	}
	return &rig{root: root, pio: pio, mmio: mmio}
}

func cfgAddr(dev, fn, off int) uint32 {
	return 0x8000_0000 | uint32(dev)<<11 | uint32(fn)<<8 | uint32(off&0xfc)
}

// ioRead reads n bytes of config space at off through 0xcf8/0xcfc.
func (r *rig) ioRead(dev, fn, off, n int) uint32 {
	var a [4]byte
	binary.LittleEndian.PutUint32(a[:], cfgAddr(dev, fn, off))
	r.pio.Write(ConfigIOPort, a[:])
	d := make([]byte, n)
	r.pio.Read(ConfigIOPort+4+uint64(off%4), d)
	var b [4]byte
	copy(b[:], d)
	return binary.LittleEndian.Uint32(b[:])
}

func (r *rig) ioWrite(dev, off int, v uint32, n int) {
	var a [4]byte
	binary.LittleEndian.PutUint32(a[:], cfgAddr(dev, 0, off))
	r.pio.Write(ConfigIOPort, a[:])
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], v)
	r.pio.Write(ConfigIOPort+4+uint64(off%4), b[:n])
}

func (r *rig) ecamRead(busNum, dev, fn, off, n int) uint32 {
	d := make([]byte, 4)
	r.mmio.Read(ECAMBase(0)+uint64(busNum)<<20+uint64(dev)<<15+uint64(fn)<<12+uint64(off), d[:n])
	return binary.LittleEndian.Uint32(d)
}

func (r *rig) ecamWrite(dev, off int, v uint32) {
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], v)
	r.mmio.Write(ECAMBase(0)+uint64(dev)<<15+uint64(off), b[:])
}

func TestHostBridgeBytes(t *testing.T) {
	r := newRig(t)
	want := []uint32{0x0d57_8086, 0, 0x0600_0000, 0}
	for i, w := range want {
		if got := r.ioRead(0, 0, i*4, 4); got != w {
			t.Errorf("io reg %d = %#08x, want %#08x", i, got, w)
		}
		if got := r.ecamRead(0, 0, 0, i*4, 4); got != w {
			t.Errorf("ecam reg %d = %#08x, want %#08x", i, got, w)
		}
	}
	// Byte and word reads at every offset of the id register.
	for off, w := range []uint32{0x86, 0x80, 0x57, 0x0d} {
		if got := r.ioRead(0, 0, off, 1); got != w {
			t.Errorf("io byte %d = %#x, want %#x", off, got, w)
		}
	}
	if got := r.ioRead(0, 0, 2, 2); got != 0x0d57 {
		t.Errorf("io word at 2 = %#x", got)
	}
	if got := r.ecamRead(0, 0, 0, 2, 2); got != 0x0d57 {
		t.Errorf("ecam word at 2 = %#x", got)
	}
}

func TestUnknownFunctionsReadAllOnes(t *testing.T) {
	r := newRig(t)
	for _, c := range []struct{ dev, fn int }{{1, 0}, {31, 0}, {0, 1}, {0, 7}} {
		if got := r.ioRead(c.dev, c.fn, 0, 4); got != 0xffff_ffff {
			t.Errorf("io %d.%d = %#x", c.dev, c.fn, got)
		}
		if got := r.ecamRead(0, c.dev, c.fn, 0, 4); got != 0xffff_ffff {
			t.Errorf("ecam %d.%d = %#x", c.dev, c.fn, got)
		}
	}
	if got := r.ecamRead(1, 0, 0, 0, 4); got != 0xffff_ffff {
		t.Errorf("ecam bus 1 = %#x", got)
	}
	// Extended config space of a present function.
	if got := r.ecamRead(0, 0, 0, 0x100, 4); got != 0xffff_ffff {
		t.Errorf("ecam 0x100 = %#x", got)
	}
	// CONFIG_ADDRESS with the enable bit clear.
	r.pio.Write(ConfigIOPort, []byte{0, 0, 0, 0})
	d := make([]byte, 4)
	r.pio.Read(ConfigIOPort+4, d)
	if binary.LittleEndian.Uint32(d) != 0xffff_ffff {
		t.Errorf("disabled read % x", d)
	}
}

func TestConfigAddressLatch(t *testing.T) {
	r := newRig(t)
	r.pio.Write(ConfigIOPort, []byte{0x78, 0x56, 0x34, 0x12})
	r.pio.Write(ConfigIOPort+2, []byte{0xcd, 0xab})
	r.pio.Write(ConfigIOPort+1, []byte{0xee})
	d := make([]byte, 4)
	r.pio.Read(ConfigIOPort, d)
	if got := binary.LittleEndian.Uint32(d); got != 0xabcd_ee78 {
		t.Errorf("latch %#x", got)
	}
	b := make([]byte, 1)
	r.pio.Read(ConfigIOPort+3, b)
	if b[0] != 0xab {
		t.Errorf("latch byte 3 %#x", b[0])
	}
}

func TestAddAllocatesAndMapsBARs(t *testing.T) {
	r := newRig(t)
	f := newTestFn(t)
	bdf, err := r.root.Add(f, AnySlot)
	if err != nil {
		t.Fatal(err)
	}
	if bdf.String() != "0000:00:01.0" {
		t.Errorf("bdf %s", bdf)
	}
	bars := f.BARs()
	want := []BAR{
		{Index: 0, Base: 2<<36 - 8<<20, Size: 0x80000, Type: BARMem64, Prefetchable: true, Align: 8 << 20},
		{Index: 2, Base: 0xe800_0000 - 0x1000, Size: 0x1000, Type: BARMem32},
	}
	if !reflect.DeepEqual(bars, want) {
		t.Fatalf("BARs %+v\nwant %+v", bars, want)
	}
	// The registers show the addresses and type bits.
	if got := r.ioRead(1, 0, 0x10, 4); got != uint32(want[0].Base)|0xc {
		t.Errorf("BAR0 %#x", got)
	}
	if got := r.ioRead(1, 0, 0x14, 4); got != uint32(want[0].Base>>32) {
		t.Errorf("BAR1 %#x", got)
	}
	if got := r.ioRead(1, 0, 0x18, 4); got != 0xe7ff_f000 {
		t.Errorf("BAR2 %#x", got)
	}
	// BAR accesses reach the function.
	d := make([]byte, 4)
	if !r.mmio.Read(want[0].Base+0x10, d) || d[0] != 0xab {
		t.Errorf("BAR0 access % x", d)
	}
	if !r.mmio.Read(want[1].Base+4, d) {
		t.Error("BAR2 not mapped")
	}
	if !reflect.DeepEqual(f.reads, []uint64{want[0].Base + 0x10, want[1].Base + 4}) {
		t.Errorf("reads %#x", f.reads)
	}
	// device_tree description.
	js, _ := json.Marshal(BARResources(f))
	wantJS := fmt.Sprintf(`[{"PciBar":{"index":0,"base":%d,"size":524288,"type_":"Mmio64","prefetchable":true}},{"PciBar":{"index":2,"base":%d,"size":4096,"type_":"Mmio32","prefetchable":false}}]`, want[0].Base, want[1].Base)
	if string(js) != wantJS {
		t.Errorf("resources %s\nwant %s", js, wantJS)
	}
	// Hide (the guest's eject): absent in config space, BARs unmapped, the
	// slot still taken; then Remove unmaps and frees, and the next device
	// gets the same addresses and slot.
	if err := r.root.Hide(1); err != nil {
		t.Fatal(err)
	}
	if got := r.ioRead(1, 0, 0, 4); got != 0xffff_ffff {
		t.Errorf("hidden function's ID %#x", got)
	}
	if r.mmio.Read(want[0].Base, d) {
		t.Error("hidden function's BAR0 still mapped")
	}
	if bdf, err := r.root.Add(newTestFn(t), AnySlot); err != nil || bdf.Device == 1 {
		t.Errorf("add while slot 1 is hidden: %v, %v", bdf, err)
	} else if _, err := r.root.Remove(int(bdf.Device)); err != nil {
		t.Fatal(err)
	}
	if _, err := r.root.Remove(1); err != nil {
		t.Fatal(err)
	}
	if r.mmio.Read(want[0].Base, d) {
		t.Error("BAR0 still mapped")
	}
	g := newTestFn(t)
	if bdf, err := r.root.Add(g, AnySlot); err != nil || bdf.Device != 1 || g.BARs()[0].Base != want[0].Base {
		t.Errorf("re-add: %v %v %+v", bdf, err, g.BARs())
	}
}

func TestBARSizingProbe(t *testing.T) {
	r := newRig(t)
	f := newTestFn(t)
	if _, err := r.root.Add(f, 5); err != nil {
		t.Fatal(err)
	}
	base := f.BARs()[0].Base
	// Linux's __pci_read_base on a 64-bit BAR.
	r.ioWrite(5, 0x10, 0xffff_ffff, 4)
	if got := r.ioRead(5, 0, 0x10, 4); got != 0xfff8_000c {
		t.Errorf("BAR0 size probe %#x", got)
	}
	r.ioWrite(5, 0x14, 0xffff_ffff, 4)
	if got := r.ioRead(5, 0, 0x14, 4); got != 0xffff_ffff {
		t.Errorf("BAR1 size probe %#x", got)
	}
	r.ioWrite(5, 0x10, uint32(base), 4)
	r.ioWrite(5, 0x14, uint32(base>>32), 4)
	if f.BARs()[0].Base != base || r.root.MoveError() != nil {
		t.Errorf("probe moved the BAR: %#x %v", f.BARs()[0].Base, r.root.MoveError())
	}
	// 32-bit BAR via ECAM.
	r.ecamWrite(5, 0x18, 0xffff_ffff)
	if got := r.ecamRead(0, 5, 0, 0x18, 4); got != 0xffff_f000 {
		t.Errorf("BAR2 size probe %#x", got)
	}
	// Unused BARs stay zero.
	r.ecamWrite(5, 0x20, 0xffff_ffff)
	if got := r.ecamRead(0, 5, 0, 0x20, 4); got != 0 {
		t.Errorf("unused BAR4 %#x", got)
	}
	// Read-only identity.
	r.ioWrite(5, 0, 0, 4)
	if got := r.ioRead(5, 0, 0, 4); got != 0x1042_1af4 {
		t.Errorf("id after write %#x", got)
	}
	// Command is writable, status is not.
	r.ioWrite(5, 4, 0xffff_0006, 4)
	if got := r.ioRead(5, 0, 4, 4); got != 0x0010_0006 {
		t.Errorf("command/status %#x", got)
	}
}

func TestGuestMovesBAR(t *testing.T) {
	var moves []BARMove
	r := newRig(t)
	r.root.cfg.BARMoved = func(_ BDF, _ Function, m BARMove) { moves = append(moves, m) }
	f := newTestFn(t)
	if _, err := r.root.Add(f, AnySlot); err != nil {
		t.Fatal(err)
	}
	old := f.BARs()[1].Base
	r.ioWrite(1, 0x18, 0xd000_0000, 4)
	if len(moves) != 1 || moves[0] != (BARMove{Index: 2, Old: old, New: 0xd000_0000, Size: 0x1000, Type: BARMem32}) {
		t.Fatalf("moves %+v", moves)
	}
	d := make([]byte, 4)
	if r.mmio.Read(old, d) || !r.mmio.Read(0xd000_0000, d) {
		t.Error("bus mapping not moved")
	}
	// vm.info's device tree lists the BARs from BARResources: the new base.
	if res := BARResources(f); len(res) != 2 || res[1].PciBar.Index != 2 || res[1].PciBar.Base != 0xd000_0000 {
		t.Errorf("BARResources after the move: %+v %+v", res[0].PciBar, res[len(res)-1].PciBar)
	}
	// A 64-bit BAR moves on its high half.
	r.ioWrite(1, 0x10, 0x0080_0000, 4)
	if len(moves) != 1 {
		t.Fatalf("moved on low write: %+v", moves)
	}
	r.ioWrite(1, 0x14, 0x20, 4)
	if len(moves) != 2 || moves[1].New != 0x20_0080_0000 {
		t.Fatalf("moves %+v", moves)
	}
}

func TestSlotAllocation(t *testing.T) {
	r := newRig(t)
	if s, _ := r.root.AllocateSlot(3); s != 3 {
		t.Fatal(s)
	}
	if _, err := r.root.AllocateSlot(3); !errors.Is(err, ErrSlotInUse) {
		t.Errorf("reuse: %v", err)
	}
	if _, err := r.root.AllocateSlot(0); !errors.Is(err, ErrSlotInUse) {
		t.Errorf("host bridge slot: %v", err)
	}
	if _, err := r.root.AllocateSlot(32); !errors.Is(err, ErrInvalid) {
		t.Errorf("slot 32: %v", err)
	}
	var got []int
	for {
		s, err := r.root.AllocateSlot(AnySlot)
		if err != nil {
			if !errors.Is(err, ErrNoSlot) {
				t.Fatal(err)
			}
			break
		}
		got = append(got, s)
	}
	if len(got) != 30 || got[0] != 1 || got[1] != 2 || got[2] != 4 || got[29] != 31 {
		t.Errorf("slots %v", got)
	}
}

func TestAllocatorMatchesUpstream(t *testing.T) {
	// vm-allocator's own tests.
	a := NewAllocator(x86.Region{Start: 0x1000, Size: 0x10000})
	for _, c := range []struct{ size, align, want uint64 }{{0x110, 0x100, 0x10e00}, {0x100, 0x100, 0x10d00}, {0x10, 0x100, 0x10c00}} {
		if got, err := a.Allocate(c.size, c.align); err != nil || got != c.want {
			t.Errorf("Allocate(%#x, %#x) = %#x, %v; want %#x", c.size, c.align, got, err, c.want)
		}
	}
	b := NewAllocator(x86.Region{Start: 0x1000, Size: 0x1000})
	if got, _ := b.Allocate(0x800, 0x100); got != 0x1800 {
		t.Errorf("%#x", got)
	}
	if _, err := b.Allocate(0x900, 0x100); !errors.Is(err, ErrNoSpace) {
		t.Errorf("%v", err)
	}
	if got, _ := b.Allocate(0x400, 0x100); got != 0x1400 {
		t.Errorf("%#x", got)
	}
	if err := b.AllocateAt(0x1300, 0x200); !errors.Is(err, ErrNoSpace) {
		t.Errorf("overlap: %v", err)
	}
	if err := b.Free(0x1800); err != nil {
		t.Fatal(err)
	}
	if err := b.AllocateAt(0x1800, 0x800); err != nil {
		t.Error(err)
	}
}

func TestSplitWindows(t *testing.T) {
	s, e := Window32()
	got, _ := SplitWindows(s, e, []uint32{1}, Mem32Alignment)
	if !reflect.DeepEqual(got, []x86.Region{{Start: 0xc000_0000, Size: 640 << 20}}) {
		t.Errorf("one segment %+v", got)
	}
	got, _ = SplitWindows(s, e, []uint32{1, 3}, Mem32Alignment)
	if !reflect.DeepEqual(got, []x86.Region{{Start: 0xc000_0000, Size: 160 << 20}, {Start: 0xca00_0000, Size: 480 << 20}}) {
		t.Errorf("weights 1,3 %+v", got)
	}
	// Upstream's test_create_mmio_allocators values, and the 64-bit
	// window of a 46-bit guest split in two (the last takes the rest).
	for _, c := range []struct {
		start, end uint64
		weights    []uint32
		align      uint64
		want       []x86.Region
	}{
		{0x100000, 0x3fffff, []uint32{1}, 4 << 10, []x86.Region{{Start: 0x100000, Size: 0x300000}}},
		{0x100000, 0x3fffff, []uint32{1, 1}, 4 << 10, []x86.Region{{Start: 0x100000, Size: 0x180000}, {Start: 0x280000, Size: 0x180000}}},
		{0x100000, 0x3fffff, []uint32{2, 1}, 4 << 10, []x86.Region{{Start: 0x100000, Size: 0x200000}, {Start: 0x300000, Size: 0x100000}}},
		{0x1_0000_0000, 0x3fff_ffee_ffff, []uint32{1, 1}, Mem64Alignment,
			[]x86.Region{{Start: 0x1_0000_0000, Size: 0x1fff_0000_0000}, {Start: 0x2000_0000_0000, Size: 0x1fff_ffef_0000}}},
	} {
		got, err := SplitWindows(c.start, c.end, c.weights, c.align)
		if err != nil || !reflect.DeepEqual(got, c.want) {
			t.Errorf("SplitWindows(%#x, %#x, %v) = %+v, %v; want %+v", c.start, c.end, c.weights, got, err, c.want)
		}
	}
	if _, err := SplitWindows(0x1_0000_0000, 0x1_ffff_ffff, []uint32{1, 1}, Mem64Alignment); !errors.Is(err, ErrInvalid) {
		t.Errorf("a 4 GiB window split in two 4 GiB-aligned parts: %v", err)
	}
	if ECAMBase(2) != 0xe820_0000 {
		t.Errorf("ECAM base %#x", ECAMBase(2))
	}
}

func TestCapabilityChain(t *testing.T) {
	f := newTestFn(t)
	b := f.Bytes()
	if b[0x06]&0x10 == 0 || b[0x34] != 0x40 {
		t.Fatalf("status % x cap ptr %#x", b[4:8], b[0x34])
	}
	if !reflect.DeepEqual(b[0x40:0x50], []byte{0x09, 0x50, 14, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}) {
		t.Errorf("cap 0 % x", b[0x40:0x50])
	}
	if !reflect.DeepEqual(b[0x50:0x5c], []byte{0x11, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0}) {
		t.Errorf("cap 1 % x", b[0x50:0x5c])
	}
	if _, err := f.AddCapability(9, make([]byte, 200)); !errors.Is(err, ErrInvalid) {
		t.Errorf("oversized capability: %v", err)
	}
}

func TestBDF(t *testing.T) {
	for _, c := range []struct {
		b    BDF
		want string
	}{{BDF{Device: 3}, "0000:00:03.0"}, {BDF{Segment: 0x1f, Bus: 2, Device: 0x1e, Function: 7}, "001f:02:1e.7"}} {
		if c.b.String() != c.want {
			t.Errorf("%+v = %s", c.b, c.b)
		}
	}
	js, _ := json.Marshal(struct{ B BDF }{BDF{Device: 6}})
	if string(js) != `{"B":"0000:00:06.0"}` {
		t.Errorf("%s", js)
	}
}

func FuzzConfigAccess(f *testing.F) {
	f.Add([]byte{0, 0x80, 0, 0, 4, 1, 2, 3, 4, 5, 6})
	f.Fuzz(func(t *testing.T, ops []byte) {
		r := newRig(t)
		fn := newTestFn(t)
		if _, err := r.root.Add(fn, AnySlot); err != nil {
			t.Fatal(err)
		}
		for len(ops) >= 6 {
			kind, width := ops[0]%4, []int{1, 2, 4, 8}[ops[1]%4]
			addr := uint64(binary.LittleEndian.Uint32(ops[2:6]))
			ops = ops[6:]
			d := make([]byte, width)
			copy(d, ops)
			switch kind {
			case 0:
				r.pio.Write(ConfigIOPort+addr%8, d)
			case 1:
				r.pio.Read(ConfigIOPort+addr%8, d)
			case 2:
				r.mmio.Write(ECAMBase(0)+addr%ECAMSizePerSegment, d)
			case 3:
				r.mmio.Read(ECAMBase(0)+addr%ECAMSizePerSegment, d)
			}
		}
		if got := r.ecamRead(0, 0, 0, 0, 4); got != 0x0d57_8086 {
			t.Fatalf("host bridge id changed: %#x", got)
		}
	})
}
