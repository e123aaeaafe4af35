// Package virtiotest is a fake guest for virtio device tests: flat guest
// memory, a driver that builds split virtqueues in it, and an Interrupt
// that records signals. It needs no KVM.
package virtiotest

import (
	"encoding/binary"
	"fmt"
	"sync"

	"github.com/nimbus-vmm/nimbus/internal/memory"
	"github.com/nimbus-vmm/nimbus/internal/virtio"
)

// Mem is flat guest RAM from guest-physical 0, implementing
// virtio.GuestMemory with memory.Memory's error rules. Every access (and
// every Driver operation) holds a mutex: it stands for the ordering the
// real ring protocol gets from barriers, and makes the hand-off of
// buffers between the test's driver and the device goroutine visible to
// the race detector.
type Mem struct {
	mu sync.Mutex
	B  []byte
}

var _ virtio.GuestMemory = (*Mem)(nil)

// NewMem returns size bytes of zeroed guest RAM.
func NewMem(size int) *Mem { return &Mem{B: make([]byte, size)} }

func bad(gpa uint64, n int) error {
	return fmt.Errorf("guest address %#x (+%d): %w", gpa, n, memory.ErrBadAddress)
}

// Slice implements virtio.GuestMemory.
func (m *Mem) Slice(gpa, n uint64) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.slice(gpa, n)
}

func (m *Mem) slice(gpa, n uint64) ([]byte, error) {
	if gpa > uint64(len(m.B)) || n > uint64(len(m.B))-gpa {
		return nil, bad(gpa, int(min(n, 1<<31)))
	}
	return m.B[gpa : gpa+n : gpa+n], nil
}

// ReadAt implements virtio.GuestMemory.
func (m *Mem) ReadAt(p []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if off < 0 || uint64(off) >= uint64(len(m.B)) {
		return 0, bad(uint64(off), len(p))
	}
	n := copy(p, m.B[off:])
	if n < len(p) {
		return n, bad(uint64(off)+uint64(n), len(p)-n)
	}
	return n, nil
}

// WriteAt implements virtio.GuestMemory.
func (m *Mem) WriteAt(p []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if off < 0 || uint64(off) >= uint64(len(m.B)) {
		return 0, bad(uint64(off), len(p))
	}
	n := copy(m.B[off:], p)
	if n < len(p) {
		return n, bad(uint64(off)+uint64(n), len(p)-n)
	}
	return n, nil
}

// ReadU16 implements virtio.GuestMemory.
func (m *Mem) ReadU16(gpa uint64) (uint16, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	b, err := m.slice(gpa, 2)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint16(b), nil
}

// ReadU32 implements virtio.GuestMemory.
func (m *Mem) ReadU32(gpa uint64) (uint32, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	b, err := m.slice(gpa, 4)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint32(b), nil
}

// ReadU64 implements virtio.GuestMemory.
func (m *Mem) ReadU64(gpa uint64) (uint64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	b, err := m.slice(gpa, 8)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint64(b), nil
}

// WriteU16 implements virtio.GuestMemory.
func (m *Mem) WriteU16(gpa uint64, v uint16) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	b, err := m.slice(gpa, 2)
	if err != nil {
		return err
	}
	binary.LittleEndian.PutUint16(b, v)
	return nil
}

// WriteU32 implements virtio.GuestMemory.
func (m *Mem) WriteU32(gpa uint64, v uint32) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	b, err := m.slice(gpa, 4)
	if err != nil {
		return err
	}
	binary.LittleEndian.PutUint32(b, v)
	return nil
}

// Interrupt records signals; tests wait on Signals.
type Interrupt struct {
	mu         sync.Mutex
	counts     map[int]int
	configs    int
	resetCause error
	// Signals receives the queue index of every Signal (buffered; drops
	// when full, the counts stay exact).
	Signals chan int
}

// NewInterrupt returns an Interrupt with a 1024-deep Signals channel.
func NewInterrupt() *Interrupt {
	return &Interrupt{counts: map[int]int{}, Signals: make(chan int, 1024)}
}

// Signal implements virtio.Interrupt.
func (i *Interrupt) Signal(q int) error {
	i.mu.Lock()
	i.counts[q]++
	i.mu.Unlock()
	select {
	case i.Signals <- q:
	default:
	}
	return nil
}

// ConfigChanged implements virtio.Interrupt.
func (i *Interrupt) ConfigChanged() error {
	i.mu.Lock()
	i.configs++
	i.mu.Unlock()
	return nil
}

// NeedsReset implements virtio.Interrupt.
func (i *Interrupt) NeedsReset(reason error) {
	i.mu.Lock()
	i.resetCause = reason
	i.configs++
	i.mu.Unlock()
}

// Count is the number of signals of queue q.
func (i *Interrupt) Count(q int) int {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.counts[q]
}

// Configs counts configuration change notifications (NeedsReset's too).
func (i *Interrupt) Configs() int {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.configs
}

// ResetCause is the reason passed to NeedsReset, or nil.
func (i *Interrupt) ResetCause() error {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.resetCause
}
