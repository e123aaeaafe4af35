package bus

import (
	"errors"
	"fmt"
	"sync"
	"testing"
)

// recorder remembers the last access so tests can check base and offset.
type recorder struct {
	mu          sync.Mutex
	base, off   uint64
	wrote       []byte
	fill        byte
	reads, wrts int
}

func (r *recorder) Read(base, offset uint64, data []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.base, r.off = base, offset
	for i := range data {
		data[i] = r.fill
	}
	r.reads++
}

func (r *recorder) Write(base, offset uint64, data []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.base, r.off = base, offset
	r.wrote = append(r.wrote[:0], data...)
	r.wrts++
}

func TestInsertRejectsOverlap(t *testing.T) {
	b := NewIO()
	if err := b.Insert(&recorder{}, 0x3f8, 8); err != nil {
		t.Fatal(err)
	}
	cases := []struct{ base, len uint64 }{
		{0x3f8, 8}, {0x3f0, 9}, {0x3ff, 1}, {0x3f9, 2}, {0x3f0, 0x100},
	}
	for _, c := range cases {
		err := b.Insert(&recorder{}, c.base, c.len)
		if !errors.Is(err, ErrOverlap) {
			t.Errorf("Insert(%#x,%#x) = %v, want ErrOverlap", c.base, c.len, err)
		}
	}
	// Touching ranges on either side are fine.
	if err := b.Insert(&recorder{}, 0x3f0, 8); err != nil {
		t.Errorf("adjacent below: %v", err)
	}
	if err := b.Insert(&recorder{}, 0x400, 1); err != nil {
		t.Errorf("adjacent above: %v", err)
	}
	want := []Range{{0x3f0, 8}, {0x3f8, 8}, {0x400, 1}}
	if got := fmt.Sprint(b.Ranges()); got != fmt.Sprint(want) {
		t.Errorf("Ranges = %v, want %v", got, want)
	}
}

func TestInsertRejectsBadRanges(t *testing.T) {
	b := NewIO()
	if err := b.Insert(&recorder{}, 0x10, 0); !errors.Is(err, ErrZeroLength) {
		t.Errorf("zero length: %v", err)
	}
	if err := b.Insert(&recorder{}, 0xfffe, 3); !errors.Is(err, ErrOutOfSpace) {
		t.Errorf("past 0xffff: %v", err)
	}
	if err := b.Insert(&recorder{}, 0xffff, 1); err != nil {
		t.Errorf("last port: %v", err)
	}
	m := NewMMIO()
	if err := m.Insert(&recorder{}, ^uint64(0)-1, 3); !errors.Is(err, ErrOutOfSpace) {
		t.Errorf("mmio wrap: %v", err)
	}
	if err := m.Insert(&recorder{}, ^uint64(0)-1, 2); err != nil {
		t.Errorf("mmio top: %v", err)
	}
	if err := b.Insert(nil, 0x20, 1); !errors.Is(err, ErrNilDevice) {
		t.Errorf("nil device: err = %v, want ErrNilDevice", err)
	}
}

func TestDispatchBaseAndOffset(t *testing.T) {
	b := NewMMIO()
	lo, hi := &recorder{fill: 0xaa}, &recorder{fill: 0x55}
	if err := b.Insert(lo, 0xd000_0000, 0x1000); err != nil {
		t.Fatal(err)
	}
	if err := b.Insert(hi, 0xd000_2000, 0x1000); err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 4)
	if !b.Read(0xd000_0ffc, data) || lo.base != 0xd000_0000 || lo.off != 0xffc || data[0] != 0xaa {
		t.Errorf("read lo: base %#x off %#x data %x", lo.base, lo.off, data)
	}
	if !b.Write(0xd000_2010, []byte{1, 2}) || hi.base != 0xd000_2000 || hi.off != 0x10 || string(hi.wrote) != "\x01\x02" {
		t.Errorf("write hi: base %#x off %#x wrote %x", hi.base, hi.off, hi.wrote)
	}
	// The gap between the two devices is unmapped: all-ones, not dispatched.
	if b.Read(0xd000_1000, data) || fmt.Sprintf("%x", data) != "ffffffff" {
		t.Errorf("gap read = %x", data)
	}
	if b.Write(0xd000_1fff, []byte{9}) {
		t.Error("gap write dispatched")
	}
	if r, w := b.UnhandledAccesses(); r != 1 || w != 1 {
		t.Errorf("unhandled = %d/%d, want 1/1", r, w)
	}
	if lo.reads != 1 || lo.wrts != 0 || hi.reads != 0 || hi.wrts != 1 {
		t.Errorf("access counts lo %d/%d hi %d/%d", lo.reads, lo.wrts, hi.reads, hi.wrts)
	}
}

func TestRemove(t *testing.T) {
	b := NewIO()
	d := &recorder{}
	if err := b.Insert(d, 0x70, 2); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Remove(0x71); !errors.Is(err, ErrNoRange) {
		t.Errorf("remove mid-range: %v", err)
	}
	got, err := b.Remove(0x70)
	if err != nil || got != Device(d) {
		t.Fatalf("Remove = %v, %v", got, err)
	}
	if _, _, _, ok := b.Lookup(0x70); ok {
		t.Error("range still mapped after Remove")
	}
	if err := b.Insert(&recorder{}, 0x70, 2); err != nil {
		t.Errorf("reinsert: %v", err)
	}
}

func TestDispatchAllocationFree(t *testing.T) {
	b := NewIO()
	for i := uint64(0); i < 16; i++ {
		if err := b.Insert(&recorder{}, 0x100+i*0x10, 8); err != nil {
			t.Fatal(err)
		}
	}
	data := make([]byte, 1)
	allocs := testing.AllocsPerRun(100, func() {
		b.Read(0x154, data)
		b.Write(0x1a0, data)
		b.Read(0x9000, data)
	})
	if allocs != 0 {
		t.Errorf("dispatch allocates %.1f times per run", allocs)
	}
}

// TestConcurrentDispatchAndInsert is for the race detector: readers never
// see a half-built table.
func TestConcurrentDispatchAndInsert(t *testing.T) {
	b := NewMMIO()
	stable := &recorder{fill: 7}
	if err := b.Insert(stable, 0, 0x10); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for v := 0; v < 4; v++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			data := make([]byte, 1)
			for {
				select {
				case <-stop:
					return
				default:
				}
				if !b.Read(0x8, data) || data[0] != 7 {
					t.Errorf("stable device lost: %v", data)
					return
				}
			}
		}()
	}
	for i := uint64(1); i <= 200; i++ {
		if err := b.Insert(&recorder{}, i*0x100, 0x10); err != nil {
			t.Error(err)
		}
		if i%2 == 0 {
			if _, err := b.Remove(i * 0x100); err != nil {
				t.Error(err)
			}
		}
	}
	close(stop)
	wg.Wait()
}

func FuzzBus(f *testing.F) {
	f.Add([]byte{0, 0x10, 1, 2, 3, 4, 5, 6, 7, 8})
	f.Fuzz(func(t *testing.T, ops []byte) {
		b := NewIO()
		data := make([]byte, 8)
		for len(ops) >= 4 {
			op, addr, n := ops[0]%4, uint64(ops[1])<<8|uint64(ops[2]), uint64(ops[3])
			ops = ops[4:]
			switch op {
			case 0:
				_ = b.Insert(&recorder{}, addr, n)
			case 1:
				_, _ = b.Remove(addr)
			case 2:
				b.Read(addr, data[:1+n%8])
			case 3:
				b.Write(addr, data[:1+n%8])
			}
		}
		// Invariant: sorted and non-overlapping.
		rs := b.Ranges()
		for i := 1; i < len(rs); i++ {
			if rs[i-1].End() >= rs[i].Base {
				t.Fatalf("ranges overlap or unsorted: %v", rs)
			}
		}
	})
}

func BenchmarkDispatch(b *testing.B) {
	for _, n := range []int{4, 64} {
		bus := NewIO()
		for i := 0; i < n; i++ {
			if err := bus.Insert(&nopDevice{}, uint64(i)*0x100, 8); err != nil {
				b.Fatal(err)
			}
		}
		target := uint64(n/2)*0x100 + 3
		b.Run(fmt.Sprintf("read/%d-devices", n), func(b *testing.B) {
			data := make([]byte, 1)
			b.ReportAllocs()
			for b.Loop() {
				bus.Read(target, data)
			}
		})
		b.Run(fmt.Sprintf("parallel-write/%d-devices", n), func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				data := make([]byte, 1)
				for pb.Next() {
					bus.Write(target, data)
				}
			})
		})
	}
}

type nopDevice struct{}

func (nopDevice) Read(base, offset uint64, data []byte)  {}
func (nopDevice) Write(base, offset uint64, data []byte) {}
