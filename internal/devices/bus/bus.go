// Package bus dispatches guest port I/O and MMIO accesses to device models.
//
// A Bus maps sorted, non-overlapping address ranges to Devices, as
// Cloud Hypervisor's vm-device/src/bus.rs does. The same type serves the
// I/O-port space (NewIO, 64 KiB) and the MMIO space (NewMMIO, 64-bit).
//
// Dispatch is the vCPU exit hot path: it takes no lock and allocates
// nothing. The range table is an immutable sorted slice published through
// an atomic pointer; Insert and Remove (rare, serialized by a mutex) build a
// new slice and swap it in. Devices do their own locking.
package bus

import (
	"errors"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
)

// Device is a device model on a bus. base is the start of the range the
// device was inserted at and offset is the accessed address minus base, so
// one device type can sit at several bases. len(data) is the access width
// (1, 2, 4 or 8 bytes from KVM). Read fills data; neither may block for
// long, as they run on vCPU threads.
type Device interface {
	Read(base, offset uint64, data []byte)
	Write(base, offset uint64, data []byte)
}

// Error categories returned by Insert and Remove; match with errors.Is.
var (
	// ErrOverlap: the new range intersects a range already on the bus.
	ErrOverlap = errors.New("bus range overlaps an existing range")
	// ErrZeroLength: a range must cover at least one address.
	ErrZeroLength = errors.New("bus range has zero length")
	// ErrOutOfSpace: the range exceeds the bus address space.
	ErrOutOfSpace = errors.New("bus range outside the address space")
	// ErrNoRange: no range starts at the given base.
	ErrNoRange = errors.New("no bus range at this address")
	// ErrNilDevice: Insert was given a nil Device.
	ErrNilDevice = errors.New("nil bus device")
)

// Range is one registered address range.
type Range struct {
	Base uint64
	Len  uint64
}

// End is the last address covered by the range.
func (r Range) End() uint64 { return r.Base + r.Len - 1 }

func (r Range) contains(addr uint64) bool { return addr >= r.Base && addr-r.Base < r.Len }

func (r Range) overlaps(o Range) bool { return r.Base <= o.End() && o.Base <= r.End() }

type entry struct {
	Range
	dev Device
}

// Bus is one address space. The zero value is not usable; call NewIO or NewMMIO.
type Bus struct {
	name  string
	limit uint64 // last valid address

	mu      sync.Mutex              // serializes Insert/Remove
	entries atomic.Pointer[[]entry] // sorted by Base, never mutated once published

	unknownReads  atomic.Uint64
	unknownWrites atomic.Uint64
}

// NewIO returns an empty x86 I/O-port bus (addresses 0..0xffff).
func NewIO() *Bus { return newBus("pio", 0xffff) }

// NewMMIO returns an empty MMIO bus (the full 64-bit space).
func NewMMIO() *Bus { return newBus("mmio", ^uint64(0)) }

func newBus(name string, limit uint64) *Bus {
	b := &Bus{name: name, limit: limit}
	b.entries.Store(&[]entry{})
	return b
}

// Insert maps [base, base+length) to dev.
func (b *Bus) Insert(dev Device, base, length uint64) error {
	if dev == nil {
		return fmt.Errorf("%s bus: insert at %#x: %w", b.name, base, ErrNilDevice)
	}
	if length == 0 {
		return fmt.Errorf("%s bus: insert at %#x: %w", b.name, base, ErrZeroLength)
	}
	r := Range{Base: base, Len: length}
	if base > b.limit || length-1 > b.limit-base {
		return fmt.Errorf("%s bus: insert [%#x, +%#x): %w", b.name, base, length, ErrOutOfSpace)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	old := *b.entries.Load()
	i := sort.Search(len(old), func(i int) bool { return old[i].Base > base })
	// Only the neighbours can overlap in a sorted, non-overlapping table.
	for _, j := range [2]int{i - 1, i} {
		if j >= 0 && j < len(old) && old[j].overlaps(r) {
			return fmt.Errorf("%s bus: insert [%#x, %#x] overlaps [%#x, %#x]: %w",
				b.name, r.Base, r.End(), old[j].Base, old[j].End(), ErrOverlap)
		}
	}
	next := make([]entry, 0, len(old)+1)
	next = append(next, old[:i]...)
	next = append(next, entry{Range: r, dev: dev})
	next = append(next, old[i:]...)
	b.entries.Store(&next)
	return nil
}

// Remove unmaps the range starting at base and returns its device.
func (b *Bus) Remove(base uint64) (Device, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	old := *b.entries.Load()
	i := sort.Search(len(old), func(i int) bool { return old[i].Base >= base })
	if i == len(old) || old[i].Base != base {
		return nil, fmt.Errorf("%s bus: remove %#x: %w", b.name, base, ErrNoRange)
	}
	dev := old[i].dev
	next := make([]entry, 0, len(old)-1)
	next = append(next, old[:i]...)
	next = append(next, old[i+1:]...)
	b.entries.Store(&next)
	return dev, nil
}

// Lookup returns the device covering addr, the base of its range and the
// offset of addr within it.
func (b *Bus) Lookup(addr uint64) (dev Device, base, offset uint64, ok bool) {
	e := b.find(addr)
	if e == nil {
		return nil, 0, 0, false
	}
	return e.dev, e.Base, addr - e.Base, true
}

// find is a hand-rolled binary search: sort.Search takes a closure, which
// costs an indirect call per step on the hot path.
func (b *Bus) find(addr uint64) *entry {
	es := *b.entries.Load()
	lo, hi := 0, len(es)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if es[m].Base <= addr {
			lo = m + 1
		} else {
			hi = m
		}
	}
	if lo == 0 || !es[lo-1].contains(addr) {
		return nil
	}
	return &es[lo-1]
}

// Read dispatches a guest read at addr. With no device there, data is
// filled with all-ones (an open bus, as real hardware reads) and Read
// reports false.
func (b *Bus) Read(addr uint64, data []byte) bool {
	e := b.find(addr)
	if e == nil {
		for i := range data {
			data[i] = 0xff
		}
		b.unknownReads.Add(1)
		return false
	}
	e.dev.Read(e.Base, addr-e.Base, data)
	return true
}

// Write dispatches a guest write at addr. With no device there the write
// is dropped and Write reports false.
func (b *Bus) Write(addr uint64, data []byte) bool {
	e := b.find(addr)
	if e == nil {
		b.unknownWrites.Add(1)
		return false
	}
	e.dev.Write(e.Base, addr-e.Base, data)
	return true
}

// Ranges returns the current ranges in address order.
func (b *Bus) Ranges() []Range {
	es := *b.entries.Load()
	out := make([]Range, len(es))
	for i, e := range es {
		out[i] = e.Range
	}
	return out
}

// UnhandledAccesses reports how many reads and writes hit no device, for
// debug counters.
func (b *Bus) UnhandledAccesses() (reads, writes uint64) {
	return b.unknownReads.Load(), b.unknownWrites.Load()
}
