package devmgr

import (
	"errors"
	"reflect"
	"testing"

	"github.com/nimbus-vmm/nimbus/internal/devices/bus"
	"github.com/nimbus-vmm/nimbus/internal/devices/pci"
)

type nopDev struct{}

func (nopDev) Read(_, _ uint64, d []byte)  {}
func (nopDev) Write(_, _ uint64, _ []byte) {}

// lc records pause/resume calls in a shared log.
type lc struct {
	name     string
	log      *[]string
	failWith error
}

func (l *lc) Pause() error {
	*l.log = append(*l.log, "pause "+l.name)
	return l.failWith
}
func (l *lc) Resume() error {
	*l.log = append(*l.log, "resume "+l.name)
	return nil
}

func TestAbortReleasesInReverse(t *testing.T) {
	m := New(bus.NewIO(), bus.NewMMIO())
	tx, err := m.Begin("dev", Legacy)
	if err != nil {
		t.Fatal(err)
	}
	var log []string
	if err := tx.PIO(nopDev{}, 0x100, 8); err != nil {
		t.Fatal(err)
	}
	tx.OnRelease("a", func() error { log = append(log, "a"); return nil })
	tx.OnRelease("b", func() error { log = append(log, "b"); return errors.New("b broke") })
	err = tx.Abort()
	if err == nil || err.Error() != "dev: release b: b broke" {
		t.Fatalf("Abort = %v", err)
	}
	if !reflect.DeepEqual(log, []string{"b", "a"}) {
		t.Fatalf("release order %v", log)
	}
	// The I/O range was given back: a new device can take it.
	if err := m.IO().Insert(nopDev{}, 0x100, 8); err != nil {
		t.Fatalf("range not released: %v", err)
	}
	if err := tx.Abort(); err != nil || m.Has("dev") {
		t.Fatalf("second Abort = %v, registered %v", err, m.Has("dev"))
	}
}

func TestCommitRemoveAndOwner(t *testing.T) {
	m := New(bus.NewIO(), bus.NewMMIO())
	released := 0
	tx, _ := m.Begin("_virtio-pci-_disk0", PCI)
	if err := tx.MMIO(nopDev{}, 0x1000, 0x100); err != nil {
		t.Fatal(err)
	}
	tx.OnRelease("slot", func() error { released++; return nil })
	tx.PCI(pci.BDF{Device: 3}, nil)
	tx.Child("_disk0", Virtio, nil)
	if err := tx.Commit("disk"); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Begin("_disk0", Virtio); !errors.Is(err, ErrDuplicateID) {
		t.Fatalf("Begin with a child's id = %v", err)
	}
	own, err := m.Owner("_disk0")
	if err != nil || own.ID != "_virtio-pci-_disk0" {
		t.Fatalf("Owner = %+v, %v", own, err)
	}
	if n, ok := m.BySlot(0, 3); !ok || n.ID != own.ID {
		t.Fatalf("BySlot = %+v, %v", n, ok)
	}
	if len(m.Nodes()) != 2 {
		t.Fatalf("Nodes = %+v", m.Nodes())
	}
	n, err := m.Remove("_disk0")
	if err != nil || n.ID != own.ID || released != 1 {
		t.Fatalf("Remove = %+v, %v (released %d)", n, err, released)
	}
	if m.Has("_disk0") || m.Has(own.ID) || len(m.Nodes()) != 0 {
		t.Fatal("nodes left after Remove")
	}
	if err := m.MMIO().Insert(nopDev{}, 0x1000, 0x100); err != nil {
		t.Fatalf("MMIO range not released: %v", err)
	}
	if _, err := m.Remove("_disk0"); !errors.Is(err, ErrUnknownID) {
		t.Fatalf("second Remove = %v", err)
	}
}

func TestPauseIsAllOrNothing(t *testing.T) {
	m := New(bus.NewIO(), bus.NewMMIO())
	var log []string
	for _, d := range []*lc{{name: "a", log: &log}, {name: "b", log: &log}, {name: "c", log: &log, failWith: errors.New("stuck")}, {name: "d", log: &log}} {
		tx, _ := m.Begin(d.name, Legacy)
		if err := tx.Commit(d); err != nil {
			t.Fatal(err)
		}
	}
	err := m.Pause()
	if !errors.Is(err, ErrPause) || err.Error() != "pausing devices failed: c: stuck" {
		t.Fatalf("Pause = %v", err)
	}
	want := []string{"pause a", "pause b", "pause c", "resume b", "resume a"}
	if !reflect.DeepEqual(log, want) {
		t.Fatalf("calls %v, want %v", log, want)
	}
}

func TestCloseReleasesEverythingLastFirst(t *testing.T) {
	m := New(bus.NewIO(), bus.NewMMIO())
	var log []string
	for _, id := range []string{"x", "y", "z"} {
		tx, _ := m.Begin(id, Legacy)
		tx.OnRelease(id, func() error { log = append(log, id); return nil })
		if err := tx.Commit(nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(log, []string{"z", "y", "x"}) || len(m.Nodes()) != 0 {
		t.Fatalf("Close order %v, nodes %v", log, m.Nodes())
	}
}

func TestGSIsAreReused(t *testing.T) {
	g := NewGSIs(24, 32)
	a, err := g.Allocate(3)
	if err != nil || a != 24 {
		t.Fatalf("Allocate(3) = %d, %v", a, err)
	}
	b, _ := g.Allocate(3)
	if b != 27 {
		t.Fatalf("second Allocate(3) = %d", b)
	}
	if _, err := g.Allocate(3); err == nil {
		t.Fatal("Allocate past the end succeeded")
	}
	if err := g.Free(a, 3); err != nil {
		t.Fatal(err)
	}
	if err := g.Free(a, 3); err == nil {
		t.Fatal("double Free succeeded")
	}
	if c, err := g.Allocate(2); err != nil || c != 24 {
		t.Fatalf("Allocate after Free = %d, %v", c, err)
	}
	if g.InUse() != 5 {
		t.Fatalf("InUse = %d", g.InUse())
	}
	if err := g.Free(40, 1); err == nil {
		t.Fatal("Free outside the range succeeded")
	}
}
