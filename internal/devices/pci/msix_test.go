package pci

import (
	"encoding/binary"
	"errors"
	"reflect"
	"testing"
)

type call struct {
	Op     string
	Vector int
	Addr   uint64
	Data   uint32
	Masked bool
}

type fakeRouter struct{ calls []call }

func (r *fakeRouter) Route(v int, addr uint64, data uint32, masked bool) error {
	r.calls = append(r.calls, call{"route", v, addr, data, masked})
	return nil
}

func (r *fakeRouter) Trigger(v int) error {
	r.calls = append(r.calls, call{Op: "trigger", Vector: v})
	return nil
}

func (r *fakeRouter) take() []call { c := r.calls; r.calls = nil; return c }

func le32(v uint32) []byte { b := make([]byte, 4); binary.LittleEndian.PutUint32(b, v); return b }

func TestMSIXCapabilityBytes(t *testing.T) {
	m, _ := NewMSIX(3, &fakeRouter{})
	got := m.Capability(0, 0x8000, 0, 0x48000)
	want := []byte{0x02, 0x00, 0x00, 0x80, 0x00, 0x00, 0x00, 0x80, 0x04, 0x00}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("cap % x", got)
	}
	if m.TableSize() != 48 || m.PBASize() != 8 {
		t.Errorf("sizes %d %d", m.TableSize(), m.PBASize())
	}
	if _, err := NewMSIX(2049, &fakeRouter{}); !errors.Is(err, ErrInvalid) {
		t.Errorf("2049 vectors: %v", err)
	}
}

func TestMSIXRoutingMaskingPending(t *testing.T) {
	r := &fakeRouter{}
	m, _ := NewMSIX(2, r)
	// Reset state: all vectors masked, MSI-X off.
	d := make([]byte, 4)
	m.ReadTable(12, d)
	if binary.LittleEndian.Uint32(d) != 1 {
		t.Errorf("vector 0 control after reset % x", d)
	}
	// Linux programs the entry while MSI-X is still disabled: no routes yet.
	m.WriteTable(16+0, le32(0xfee0_1000))
	m.WriteTable(16+4, le32(0))
	m.WriteTable(16+8, le32(0x4041))
	if c := r.take(); len(c) != 0 {
		t.Errorf("routes while disabled: %+v", c)
	}
	// Signals while disabled are dropped.
	if err := m.Signal(1); err != nil || m.Pending(1) {
		t.Errorf("signal while disabled: %v pending=%v", err, m.Pending(1))
	}
	// Enable with the function masked, then unmask: routes for all vectors once.
	m.SetControl(msixCtlEnable | msixCtlMaskAll)
	if c := r.take(); len(c) != 0 {
		t.Errorf("routes while function masked: %+v", c)
	}
	m.SetControl(msixCtlEnable)
	want := []call{{"route", 0, 0, 0, true}, {"route", 1, 0xfee0_1000, 0x4041, true}}
	if c := r.take(); !reflect.DeepEqual(c, want) {
		t.Errorf("enable routes %+v", c)
	}
	// Vector 1 is still masked: a signal sets its pending bit.
	if err := m.Signal(1); err != nil {
		t.Fatal(err)
	}
	pba := make([]byte, 8)
	m.ReadPBA(0, pba)
	if pba[0] != 2 || len(r.take()) != 0 {
		t.Errorf("PBA % x", pba)
	}
	// Unmasking re-routes and delivers the pending message.
	m.WriteTable(16+12, le32(0))
	want = []call{{"route", 1, 0xfee0_1000, 0x4041, false}, {Op: "trigger", Vector: 1}}
	if c := r.take(); !reflect.DeepEqual(c, want) {
		t.Errorf("unmask %+v", c)
	}
	if m.Pending(1) {
		t.Error("pending bit not cleared")
	}
	// Unmasked: a signal triggers directly.
	_ = m.Signal(1)
	if c := r.take(); !reflect.DeepEqual(c, []call{{Op: "trigger", Vector: 1}}) {
		t.Errorf("signal %+v", c)
	}
	// Function mask: pending, then delivered on function unmask.
	m.SetControl(msixCtlEnable | msixCtlMaskAll)
	r.take()
	_ = m.Signal(1)
	if !m.Pending(1) {
		t.Error("not pending under function mask")
	}
	m.SetControl(msixCtlEnable)
	c := r.take()
	if len(c) != 3 || c[2] != (call{Op: "trigger", Vector: 1}) {
		t.Errorf("function unmask %+v", c)
	}
	// A rewrite of an unchanged entry does not re-route.
	m.WriteTable(16+8, le32(0x4041))
	if c := r.take(); len(c) != 0 {
		t.Errorf("unchanged entry routed %+v", c)
	}
	// 8-byte access; misaligned and narrow writes are ignored.
	m.WriteTable(16, []byte{0, 0x20, 0xe0, 0xfe, 0, 0, 0, 0})
	if e, _ := m.Entry(1); e.AddrLo != 0xfee0_2000 {
		t.Errorf("qword write %+v", e)
	}
	m.WriteTable(18, le32(0))
	m.WriteTable(16, []byte{1, 2})
	if e, _ := m.Entry(1); e.AddrLo != 0xfee0_2000 {
		t.Errorf("bad-width write applied %+v", e)
	}
	out := make([]byte, 4)
	m.ReadTable(32, out)
	if binary.LittleEndian.Uint32(out) != 0xffff_ffff {
		t.Errorf("read past table % x", out)
	}
	if err := m.Signal(2); !errors.Is(err, ErrInvalid) {
		t.Errorf("signal out of range: %v", err)
	}
}

func FuzzMSIX(f *testing.F) {
	f.Add([]byte{1, 2, 3, 4, 5, 6, 7, 8, 9})
	f.Fuzz(func(t *testing.T, ops []byte) {
		m, _ := NewMSIX(3, &fakeRouter{})
		for len(ops) >= 4 {
			op, off, w := ops[0]%5, uint64(ops[1]), []int{1, 2, 4, 8}[ops[2]%4]
			d := make([]byte, w)
			copy(d, ops[3:])
			ops = ops[4:]
			switch op {
			case 0:
				m.WriteTable(off, d)
			case 1:
				m.ReadTable(off, d)
			case 2:
				m.ReadPBA(off, d)
			case 3:
				m.SetControl(uint16(off) << 8)
			case 4:
				_ = m.Signal(int(off % 4))
			}
		}
	})
}

type notifyRouter struct {
	fakeRouter
	handed []int
}

func (r *notifyRouter) Notifier(v int) (int, bool) {
	r.handed = append(r.handed, v)
	return 100 + v, true
}

// TestMSIXNotifier: a vector's eventfd comes from the router, and its
// route is pushed again at once, so the router applies its masked-vector
// handling to the handed-out eventfd; without MSINotifier there is none.
func TestMSIXNotifier(t *testing.T) {
	if _, ok := (func() *MSIX { m, _ := NewMSIX(2, &fakeRouter{}); return m })().Notifier(0); ok {
		t.Fatal("a router without eventfds handed one out")
	}
	r := &notifyRouter{}
	m, _ := NewMSIX(2, r)
	fd, ok := m.Notifier(1)
	if !ok || fd != 101 || !reflect.DeepEqual(r.handed, []int{1}) {
		t.Fatalf("Notifier(1) = %d, %v; handed %v", fd, ok, r.handed)
	}
	if got := r.take(); !reflect.DeepEqual(got, []call{{Op: "route", Vector: 1, Masked: true}}) {
		t.Fatalf("router calls %+v: want vector 1 routed again, masked", got)
	}
	if _, ok := m.Notifier(2); ok {
		t.Fatal("Notifier for a vector past the table")
	}
}
