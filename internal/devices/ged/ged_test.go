package ged

import (
	"errors"
	"sync"
	"testing"

	"github.com/nimbus-vmm/nimbus/internal/arch/x86"
	"github.com/nimbus-vmm/nimbus/internal/devices"
	"github.com/nimbus-vmm/nimbus/internal/devices/bus"
)

type countIRQ struct {
	mu  sync.Mutex
	n   int
	err error
}

func (c *countIRQ) Trigger() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n++
	return c.err
}

func read(t *testing.T, d *Device) byte {
	t.Helper()
	b := []byte{0xaa}
	d.Read(Base, 0, b)
	return b[0]
}

func TestNotifyReadClears(t *testing.T) {
	irq := &countIRQ{}
	d := New(irq)
	if got := read(t, d); got != 0 {
		t.Fatalf("idle read = %#x, want 0", got)
	}
	if err := d.PowerButton(); err != nil {
		t.Fatal(err)
	}
	if irq.n != 1 {
		t.Fatalf("IRQ triggered %d times, want 1", irq.n)
	}
	if got := read(t, d); got != 0x08 {
		t.Fatalf("read after power button = %#x, want 0x08", got)
	}
	if got := read(t, d); got != 0 {
		t.Fatalf("second read = %#x, want 0 (read clears)", got)
	}
}

func TestNotifyAccumulatesBits(t *testing.T) {
	irq := &countIRQ{}
	d := New(irq)
	for _, n := range []Notification{CPUDevicesChanged, PCIDevicesChanged, PowerButtonChanged} {
		if err := d.Notify(n); err != nil {
			t.Fatal(err)
		}
	}
	if irq.n != 3 {
		t.Fatalf("IRQ triggered %d times, want 3", irq.n)
	}
	if got := d.Pending(); got != 0x0d {
		t.Fatalf("Pending = %#x, want 0x0d", got)
	}
	// Offset is ignored, as upstream.
	b := []byte{0}
	d.Read(Base, 7, b)
	if b[0] != 0x0d {
		t.Fatalf("read = %#x, want 0x0d", b[0])
	}
	if d.Pending() != 0 {
		t.Fatalf("Pending after read = %#x, want 0", d.Pending())
	}
}

func TestWideReadIsZeroAndKeepsBits(t *testing.T) {
	d := New(&countIRQ{})
	if err := d.Notify(MemoryDevicesChanged); err != nil {
		t.Fatal(err)
	}
	b := []byte{1, 2, 3, 4}
	d.Read(Base, 0, b)
	if b[0]|b[1]|b[2]|b[3] != 0 {
		t.Fatalf("4-byte read = % x, want zeros", b)
	}
	if got := read(t, d); got != 0x02 {
		t.Fatalf("byte read after wide read = %#x, want 0x02", got)
	}
}

func TestWriteIgnored(t *testing.T) {
	d := New(&countIRQ{})
	if err := d.PowerButton(); err != nil {
		t.Fatal(err)
	}
	d.Write(Base, 0, []byte{0xff})
	if got := read(t, d); got != 0x08 {
		t.Fatalf("read after write = %#x, want 0x08", got)
	}
}

func TestTriggerErrorKeepsBits(t *testing.T) {
	boom := errors.New("boom")
	d := New(&countIRQ{err: boom})
	err := d.PowerButton()
	if !errors.Is(err, ErrNotify) || !errors.Is(err, boom) {
		t.Fatalf("err = %v, want ErrNotify wrapping boom", err)
	}
	if d.Pending() != PowerButtonChanged {
		t.Fatalf("Pending = %#x, want the bit kept", d.Pending())
	}
	if err := New(nil).PowerButton(); !errors.Is(err, ErrNotify) {
		t.Fatalf("nil IRQ: err = %v, want ErrNotify", err)
	}
}

func TestOnMMIOBus(t *testing.T) {
	var fired int
	d := New(devices.IRQFunc(func() error { fired++; return nil }))
	b := bus.NewMMIO()
	if err := b.Insert(d, Base, Size); err != nil {
		t.Fatal(err)
	}
	if err := d.PowerButton(); err != nil {
		t.Fatal(err)
	}
	data := []byte{0}
	if !b.Read(Base, data) {
		t.Fatal("no device at Base")
	}
	if data[0] != 0x08 || fired != 1 {
		t.Fatalf("bus read = %#x, fired %d; want 0x08, 1", data[0], fired)
	}
}

func TestConcurrentNotifyRead(t *testing.T) {
	d := New(devices.IRQFunc(func() error { return nil }))
	var wg sync.WaitGroup
	const n = 1000
	var seen [2]Notification
	wg.Add(2)
	go func() {
		defer wg.Done()
		for i := 0; i < n; i++ {
			_ = d.Notify(PowerButtonChanged)
		}
	}()
	go func() {
		defer wg.Done()
		for i := 0; i < n; i++ {
			b := []byte{0}
			d.Read(Base, 0, b)
			seen[0] |= Notification(b[0])
		}
	}()
	wg.Wait()
	seen[1] = d.Pending()
	if (seen[0]|seen[1])&^PowerButtonChanged != 0 || seen[0]|seen[1] != PowerButtonChanged {
		t.Fatalf("saw %#x / pending %#x, want only and at least the power-button bit", seen[0], seen[1])
	}
}

func TestBaseIsInTheFreeGap(t *testing.T) {
	// Between the last fixed region below the IOAPIC and the IOAPIC itself,
	// and clear of the 32-bit PCI window and MMCONFIG.
	lo := uint64(x86.KVMIdentityMapStart + x86.KVMIdentityMapSize)
	if Base < lo || Base+Size > x86.IOAPICStart {
		t.Fatalf("GED [%#x, %#x) is outside the free gap [%#x, %#x)", Base, Base+Size, lo, uint64(x86.IOAPICStart))
	}
}
