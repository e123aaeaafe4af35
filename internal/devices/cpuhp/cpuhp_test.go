package cpuhp

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
	"github.com/nimbus-vmm/nimbus/internal/devices/pcihp"
)

type ejectLog struct {
	mu  sync.Mutex
	got []int
}

func (l *ejectLog) eject(cpu int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.got = append(l.got, cpu)
}

func newQuiet(t *testing.T, n int, eject func(int)) *Device {
	t.Helper()
	d, err := New(n, eject)
	if err != nil {
		t.Fatal(err)
	}
	d.SetLogger(slog.New(slog.NewTextHandler(io.Discard, nil)))
	return d
}

func le32(v uint32) []byte { return []byte{byte(v), byte(v >> 8), byte(v >> 16), byte(v >> 24)} }

// TestAccesses walks the guest's side of a hot-add and a hot-remove (what
// CSCN, CSTA and CEJ0 do) with byte-exact reads, following upstream's
// BusDevice impl.
func TestAccesses(t *testing.T) {
	log := &ejectLog{}
	d := newQuiet(t, 4, log.eject)
	for cpu := 0; cpu < 2; cpu++ {
		if err := d.SetPresent(cpu, true); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.Insert(2); err != nil {
		t.Fatal(err)
	}
	if err := d.Remove(1); err != nil {
		t.Fatal(err)
	}
	type access struct {
		what   string
		write  bool
		offset uint64
		data   []byte
		want   []byte
	}
	poison := func(n int) []byte { return bytes.Repeat([]byte{0xa5}, n) }
	for _, a := range []access{
		{what: "selection", offset: SelectionOffset, data: poison(4), want: le32(0)},
		{what: "status cpu0", offset: StatusOffset, data: poison(1), want: []byte{StatusEnabled}},
		// Wrong widths and unknown offsets read as zeros.
		{what: "selection 1 byte", offset: SelectionOffset, data: poison(1), want: []byte{0}},
		{what: "selection 8 bytes", offset: SelectionOffset, data: poison(8), want: make([]byte, 8)},
		{what: "status 4 bytes", offset: StatusOffset, data: poison(4), want: make([]byte, 4)},
		{what: "CCMD (offset 5)", offset: 5, data: poison(1), want: []byte{0}},
		{what: "CDAT (offset 8)", offset: 8, data: poison(4), want: make([]byte, 4)},
		{what: "select 1 with 2 bytes (ignored)", write: true, offset: SelectionOffset, data: []byte{1, 0}},
		{what: "still 0", offset: SelectionOffset, data: poison(4), want: le32(0)},
		{what: "select 1", write: true, offset: SelectionOffset, data: le32(1)},
		{what: "selection 1", offset: SelectionOffset, data: poison(4), want: le32(1)},
		{what: "status cpu1", offset: StatusOffset, data: poison(1), want: []byte{StatusEnabled | StatusRemoving}},
		// Acknowledging with a 4-byte write is ignored.
		{what: "ack CRMV 4 bytes", write: true, offset: StatusOffset, data: le32(StatusRemoving)},
		{what: "status cpu1 unchanged", offset: StatusOffset, data: poison(1), want: []byte{StatusEnabled | StatusRemoving}},
		{what: "ack CRMV", write: true, offset: StatusOffset, data: []byte{StatusRemoving}},
		{what: "status cpu1 acked", offset: StatusOffset, data: poison(1), want: []byte{StatusEnabled}},
		{what: "CEJ0 cpu1", write: true, offset: StatusOffset, data: []byte{StatusEject}},
		{what: "status cpu1 ejected", offset: StatusOffset, data: poison(1), want: []byte{0}},
		{what: "CEJ0 cpu1 again (absent: no callback)", write: true, offset: StatusOffset, data: []byte{StatusEject}},
		{what: "select 2", write: true, offset: SelectionOffset, data: le32(2)},
		{what: "status cpu2", offset: StatusOffset, data: poison(1), want: []byte{StatusEnabled | StatusInserting}},
		// Writing CPEN (bit 0) changes nothing.
		{what: "write CPEN", write: true, offset: StatusOffset, data: []byte{StatusEnabled}},
		{what: "status cpu2 unchanged", offset: StatusOffset, data: poison(1), want: []byte{StatusEnabled | StatusInserting}},
		{what: "ack CINS", write: true, offset: StatusOffset, data: []byte{StatusInserting}},
		{what: "status cpu2 acked", offset: StatusOffset, data: poison(1), want: []byte{StatusEnabled}},
		{what: "status cpu3 (absent)", write: true, offset: SelectionOffset, data: le32(3)},
		{what: "status cpu3", offset: StatusOffset, data: poison(1), want: []byte{0}},
		// Out of range: selection is stored, status reads 0, writes ignored.
		{what: "select 4", write: true, offset: SelectionOffset, data: le32(4)},
		{what: "selection 4", offset: SelectionOffset, data: poison(4), want: le32(4)},
		{what: "status cpu4", offset: StatusOffset, data: poison(1), want: []byte{0}},
		{what: "CEJ0 cpu4", write: true, offset: StatusOffset, data: []byte{StatusEject}},
		{what: "write offset 8", write: true, offset: 8, data: le32(0xffff_ffff)},
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
	if fmt.Sprint(log.got) != "[1]" {
		t.Errorf("ejections = %v, want [1]", log.got)
	}
	for cpu, want := range []uint8{StatusEnabled, 0, StatusEnabled, 0} {
		if got := d.Status(cpu); got != want {
			t.Errorf("Status(%d) = %#x, want %#x", cpu, got, want)
		}
	}
}

// TestAckAndEjectInOneWrite: every bit of a status write is acted on.
func TestAckAndEjectInOneWrite(t *testing.T) {
	log := &ejectLog{}
	d := newQuiet(t, 1, log.eject)
	if err := d.Insert(0); err != nil {
		t.Fatal(err)
	}
	if err := d.Remove(0); err != nil {
		t.Fatal(err)
	}
	d.Write(Base, StatusOffset, []byte{StatusInserting | StatusRemoving | StatusEject})
	if got := d.Status(0); got != 0 || fmt.Sprint(log.got) != "[0]" {
		t.Errorf("status %#x, ejections %v; want 0, [0]", got, log.got)
	}
	// Nil callback: only marks absent.
	d = newQuiet(t, 1, nil)
	_ = d.SetPresent(0, true)
	d.Write(Base, StatusOffset, []byte{StatusEject})
	if d.Status(0) != 0 {
		t.Error("nil eject: vCPU still present")
	}
}

func TestRejectsBadCPUs(t *testing.T) {
	for _, n := range []int{0, -1, MaxCPUs + 1} {
		if _, err := New(n, nil); !errors.Is(err, ErrRange) {
			t.Errorf("New(%d) err = %v, want ErrRange", n, err)
		}
	}
	if _, err := New(MaxCPUs, nil); err != nil {
		t.Errorf("New(MaxCPUs): %v", err)
	}
	d := newQuiet(t, 2, nil)
	for _, cpu := range []int{-1, 2} {
		for name, f := range map[string]func(int) error{
			"Insert":     d.Insert,
			"Remove":     d.Remove,
			"SetPresent": func(c int) error { return d.SetPresent(c, true) },
		} {
			if err := f(cpu); !errors.Is(err, ErrRange) {
				t.Errorf("%s(%d) = %v, want ErrRange", name, cpu, err)
			}
		}
		if d.Status(cpu) != 0 {
			t.Errorf("Status(%d) != 0", cpu)
		}
	}
}

func TestEjectMayReenter(t *testing.T) {
	var d *Device
	d = newQuiet(t, 2, func(cpu int) {
		if err := d.Insert(cpu + 1); err != nil {
			t.Error(err)
		}
	})
	_ = d.SetPresent(0, true)
	d.Write(Base, StatusOffset, []byte{StatusEject})
	if d.Status(1) != StatusEnabled|StatusInserting {
		t.Errorf("Status(1) = %#x after re-entrant Insert", d.Status(1))
	}
}

func TestLogsIgnoredAccesses(t *testing.T) {
	var out bytes.Buffer
	d, _ := New(1, nil)
	d.SetLogger(slog.New(slog.NewTextHandler(&out, nil)))
	d.Read(Base, StatusOffset, make([]byte, 2))
	d.Write(Base, 6, []byte{1})
	d.Write(Base, SelectionOffset, le32(9))
	d.Read(Base, StatusOffset, make([]byte, 1))
	for _, s := range []string{"invalid sized read of CPU status register", "unexpected offset", "offset=0x6", "out of range vCPU id", "cpu=9"} {
		if !bytes.Contains(out.Bytes(), []byte(s)) {
			t.Errorf("log lacks %q:\n%s", s, out.String())
		}
	}
}

func TestOnMMIOBus(t *testing.T) {
	d := newQuiet(t, 2, nil)
	b := bus.NewMMIO()
	if err := b.Insert(d, Base, Size); err != nil {
		t.Fatal(err)
	}
	// The neighbouring blocks fit beside it.
	if err := b.Insert(pcihp.New(nil), pcihp.Base, pcihp.Size); err != nil {
		t.Fatal(err)
	}
	if err := b.Insert(ged.New(nil), ged.Base, ged.Size); err != nil {
		t.Fatal(err)
	}
	_ = d.Insert(1)
	if !b.Write(Base+SelectionOffset, le32(1)) {
		t.Fatal("no device at Base")
	}
	st := []byte{0}
	if !b.Read(Base+StatusOffset, st) || st[0] != StatusEnabled|StatusInserting {
		t.Fatalf("bus status read = %#x", st[0])
	}
	if b.Read(Base+Size, make([]byte, 1)) {
		t.Fatal("block does not end at Base+Size")
	}
}

func TestConcurrentAccess(t *testing.T) {
	d := newQuiet(t, 8, func(int) {})
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		for i := 0; i < 1000; i++ {
			_ = d.Insert(i % 8)
			_ = d.Remove(i % 8)
		}
	}()
	go func() {
		defer wg.Done()
		b := []byte{0}
		for i := 0; i < 1000; i++ {
			d.Write(Base, SelectionOffset, le32(uint32(i%8)))
			d.Read(Base, StatusOffset, b)
			d.Write(Base, StatusOffset, []byte{StatusInserting | StatusRemoving | StatusEject})
		}
	}()
	wg.Wait()
}

func TestBaseIsInTheFreeGap(t *testing.T) {
	lo := uint64(x86.KVMIdentityMapStart + x86.KVMIdentityMapSize)
	if Base < lo || Base+Size > x86.IOAPICStart {
		t.Fatalf("[%#x, %#x) is outside the free gap [%#x, %#x)", Base, Base+Size, lo, uint64(x86.IOAPICStart))
	}
	if Base%4096 != 0 {
		t.Fatalf("Base %#x is not page-aligned", Base)
	}
}
