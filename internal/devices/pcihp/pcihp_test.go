package pcihp

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"

	"github.com/nimbus-vmm/nimbus/internal/arch/x86"
	"github.com/nimbus-vmm/nimbus/internal/devices/bus"
	"github.com/nimbus-vmm/nimbus/internal/devices/ged"
)

type ejection struct {
	seg  uint16
	slot int
}

type ejectLog struct {
	mu  sync.Mutex
	got []ejection
}

func (l *ejectLog) eject(seg uint16, slot int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.got = append(l.got, ejection{seg, slot})
}

func quiet(d *Device) *Device {
	d.SetLogger(slog.New(slog.NewTextHandler(io.Discard, nil)))
	return d
}

func le32(v uint32) []byte { return []byte{byte(v), byte(v >> 8), byte(v >> 16), byte(v >> 24)} }

// TestAccesses drives one device through a sequence of accesses and checks
// every byte read back. Expected values follow upstream's BusDevice impl.
func TestAccesses(t *testing.T) {
	log := &ejectLog{}
	d := quiet(New(log.eject))
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(d.Plug(0, 3))
	must(d.Plug(0, 31))
	must(d.Unplug(0, 5))

	type access struct {
		what   string
		write  bool
		offset uint64
		data   []byte // written, or the buffer's initial content for a read
		want   []byte // bytes after a read
	}
	poison := func(n int) []byte { return bytes.Repeat([]byte{0xa5}, n) }
	for _, a := range []access{
		// Bad widths leave the bitmaps alone and read as zeros.
		{what: "PCIU 1 byte", offset: PCIUOffset, data: poison(1), want: []byte{0}},
		{what: "PCIU 2 bytes", offset: PCIUOffset, data: poison(2), want: []byte{0, 0}},
		{what: "PCIU 8 bytes", offset: PCIUOffset, data: poison(8), want: make([]byte, 8)},
		// Misaligned or unknown offsets: ignored, zeros.
		{what: "offset 1", offset: 1, data: poison(4), want: make([]byte, 4)},
		{what: "offset 2 (inside PCIU)", offset: 2, data: poison(2), want: []byte{0, 0}},
		{what: "offset 0x10 (past the end)", offset: 0x10, data: poison(4), want: make([]byte, 4)},
		// PCIU: bits 3 and 31, then cleared.
		{what: "PCIU", offset: PCIUOffset, data: poison(4), want: le32(1<<3 | 1<<31)},
		{what: "PCIU again", offset: PCIUOffset, data: poison(4), want: le32(0)},
		// PCID: bit 5, then cleared.
		{what: "PCID", offset: PCIDOffset, data: poison(4), want: le32(1 << 5)},
		{what: "PCID again", offset: PCIDOffset, data: poison(4), want: le32(0)},
		{what: "B0EJ", offset: B0EJOffset, data: poison(4), want: le32(0)},
		{what: "PSEG", offset: PSEGOffset, data: poison(4), want: le32(0)},
		// Writes upstream does not decode.
		{what: "write PCIU", write: true, offset: PCIUOffset, data: le32(0xffff_ffff)},
		{what: "write PCID", write: true, offset: PCIDOffset, data: le32(0xffff_ffff)},
		{what: "write offset 0x9", write: true, offset: 0x9, data: []byte{1}},
		{what: "write B0EJ 1 byte", write: true, offset: B0EJOffset, data: []byte{0xff}},
		{what: "write B0EJ 2 bytes", write: true, offset: B0EJOffset, data: []byte{0xff, 0xff}},
		{what: "write PSEG 1 byte", write: true, offset: PSEGOffset, data: []byte{0}},
		// Only segment 0 exists: selecting 1 is ignored.
		{what: "write PSEG 1", write: true, offset: PSEGOffset, data: le32(1)},
		{what: "PSEG after bad select", offset: PSEGOffset, data: poison(4), want: le32(0)},
		{what: "PCIU after ignored writes", offset: PCIUOffset, data: poison(4), want: le32(0)},
		// Ejection, lowest slot first.
		{what: "write B0EJ", write: true, offset: B0EJOffset, data: le32(1<<31 | 1<<5 | 1)},
		{what: "B0EJ after eject", offset: B0EJOffset, data: poison(4), want: le32(0)},
	} {
		buf := append([]byte(nil), a.data...)
		if a.write {
			d.Write(Base, a.offset, buf)
			continue
		}
		d.Read(Base, a.offset, buf)
		if !bytes.Equal(buf, a.want) {
			t.Errorf("%s: read % x, want % x", a.what, buf, a.want)
		}
	}
	want := []ejection{{0, 0}, {0, 5}, {0, 31}}
	if fmt.Sprint(log.got) != fmt.Sprint(want) {
		t.Errorf("ejections = %v, want %v", log.got, want)
	}
}

func TestSegments(t *testing.T) {
	log := &ejectLog{}
	d, err := NewSegments(3, log.eject)
	if err != nil {
		t.Fatal(err)
	}
	quiet(d)
	if err := d.Plug(2, 7); err != nil {
		t.Fatal(err)
	}
	if err := d.Unplug(1, 9); err != nil {
		t.Fatal(err)
	}
	read := func(off uint64) uint32 {
		b := make([]byte, 4)
		d.Read(Base, off, b)
		return uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
	}
	// Segment 0 selected: nothing pending there.
	if u, dn := read(PCIUOffset), read(PCIDOffset); u != 0 || dn != 0 {
		t.Errorf("segment 0: PCIU %#x PCID %#x, want 0 0", u, dn)
	}
	d.Write(Base, PSEGOffset, le32(2))
	if got := read(PSEGOffset); got != 2 || d.Selected() != 2 {
		t.Errorf("PSEG = %d (Selected %d), want 2", got, d.Selected())
	}
	if u, dn := read(PCIUOffset), read(PCIDOffset); u != 1<<7 || dn != 0 {
		t.Errorf("segment 2: PCIU %#x PCID %#x, want %#x 0", u, dn, 1<<7)
	}
	if u, dn := d.Pending(1); u != 0 || dn != 1<<9 {
		t.Errorf("segment 1 pending %#x %#x, before its read", u, dn)
	}
	d.Write(Base, PSEGOffset, le32(3)) // out of range: stays on 2
	if d.Selected() != 2 {
		t.Errorf("Selected = %d after out-of-range PSEG, want 2", d.Selected())
	}
	d.Write(Base, PSEGOffset, le32(1<<16|1)) // would truncate to 1: ignored
	if d.Selected() != 2 {
		t.Errorf("Selected = %d after PSEG 0x10001, want 2", d.Selected())
	}
	d.Write(Base, PSEGOffset, le32(1))
	if dn := read(PCIDOffset); dn != 1<<9 {
		t.Errorf("segment 1 PCID = %#x", dn)
	}
	d.Write(Base, B0EJOffset, le32(1<<9))
	if fmt.Sprint(log.got) != fmt.Sprint([]ejection{{1, 9}}) {
		t.Errorf("ejections = %v", log.got)
	}
	if _, err := NewSegments(0, nil); !errors.Is(err, ErrRange) {
		t.Errorf("0 segments: err = %v", err)
	}
	if _, err := NewSegments(1<<16+1, nil); !errors.Is(err, ErrRange) {
		t.Errorf("65537 segments: err = %v", err)
	}
}

func TestPlugRejectsBadSlots(t *testing.T) {
	d := New(nil)
	for _, c := range []struct {
		seg  uint16
		slot int
	}{{0, -1}, {0, 32}, {1, 0}, {0xffff, 3}} {
		if err := d.Plug(c.seg, c.slot); !errors.Is(err, ErrRange) {
			t.Errorf("Plug(%d, %d) = %v, want ErrRange", c.seg, c.slot, err)
		}
		if err := d.Unplug(c.seg, c.slot); !errors.Is(err, ErrRange) {
			t.Errorf("Unplug(%d, %d) = %v, want ErrRange", c.seg, c.slot, err)
		}
	}
	if u, dn := d.Pending(0); u != 0 || dn != 0 {
		t.Errorf("pending %#x %#x after rejected calls", u, dn)
	}
	if u, dn := d.Pending(7); u != 0 || dn != 0 {
		t.Errorf("Pending of a missing segment = %#x %#x", u, dn)
	}
	// A nil eject callback ignores ejections.
	quiet(d).Write(Base, B0EJOffset, le32(1))
}

// TestEjectMayReenter: the callback runs without the device's lock, so it
// may plug or unplug (or read the registers) itself.
func TestEjectMayReenter(t *testing.T) {
	var d *Device
	d = New(func(seg uint16, slot int) {
		if err := d.Plug(seg, slot+1); err != nil {
			t.Error(err)
		}
	})
	quiet(d)
	d.Write(Base, B0EJOffset, le32(1<<4))
	if u, _ := d.Pending(0); u != 1<<5 {
		t.Errorf("PCIU = %#x, want slot 5 plugged by the callback", u)
	}
}

func TestLogsIgnoredAccesses(t *testing.T) {
	var out bytes.Buffer
	d := New(nil)
	d.SetLogger(slog.New(slog.NewTextHandler(&out, nil)))
	d.Read(Base, PCIUOffset, make([]byte, 2))
	d.Write(Base, 0x3, []byte{1})
	d.Write(Base, PSEGOffset, le32(4))
	for _, s := range []string{"unexpected read width", "register=PCIU", "write of unknown location", "offset=0x3", "segment selection out of range"} {
		if !bytes.Contains(out.Bytes(), []byte(s)) {
			t.Errorf("log lacks %q:\n%s", s, out.String())
		}
	}
}

func TestOnMMIOBus(t *testing.T) {
	log := &ejectLog{}
	d := quiet(New(log.eject))
	b := bus.NewMMIO()
	if err := b.Insert(d, Base, Size); err != nil {
		t.Fatal(err)
	}
	if err := d.Plug(0, 2); err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 4)
	if !b.Read(Base+PCIUOffset, data) || !bytes.Equal(data, le32(4)) {
		t.Fatalf("bus read PCIU = % x", data)
	}
	if !b.Write(Base+B0EJOffset, le32(4)) || len(log.got) != 1 {
		t.Fatalf("bus write B0EJ: ejections %v", log.got)
	}
	// The last register ends the block.
	if !b.Read(Base+Size-RegSize, data) || b.Read(Base+Size, data) {
		t.Fatal("block does not end at Base+Size")
	}
}

func TestConcurrentPlugRead(t *testing.T) {
	d := quiet(New(func(uint16, int) {}))
	const n = 1000
	var wg sync.WaitGroup
	var seen uint32
	wg.Add(2)
	go func() {
		defer wg.Done()
		for i := 0; i < n; i++ {
			_ = d.Plug(0, i%Slots)
			_ = d.Unplug(0, i%Slots)
		}
	}()
	go func() {
		defer wg.Done()
		b := make([]byte, 4)
		for i := 0; i < n; i++ {
			d.Read(Base, PCIUOffset, b)
			seen |= uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
			d.Write(Base, B0EJOffset, le32(1))
			d.Write(Base, PSEGOffset, le32(0))
		}
	}()
	wg.Wait()
	up, _ := d.Pending(0)
	if seen|up != 0xffff_ffff {
		t.Fatalf("lost plug bits: read %#x, pending %#x", seen, up)
	}
}

func TestBaseIsInTheFreeGap(t *testing.T) {
	lo := uint64(x86.KVMIdentityMapStart + x86.KVMIdentityMapSize)
	if Base < lo || Base+Size > x86.IOAPICStart {
		t.Fatalf("[%#x, %#x) is outside the free gap [%#x, %#x)", Base, Base+Size, lo, uint64(x86.IOAPICStart))
	}
	if Base < ged.Base+ged.Size && ged.Base < Base+Size {
		t.Fatalf("overlaps the GED register at %#x", ged.Base)
	}
	if Base%4096 != 0 {
		t.Fatalf("Base %#x is not page-aligned", Base)
	}
}
