package pci

import (
	"fmt"
	"math/bits"
	"sort"
	"sync"

	"github.com/nimbus-vmm/nimbus/internal/arch/x86"
)

// Window geometry as upstream's device_manager.rs sets it up.
const (
	// Mem32Alignment aligns each segment's share of the 32-bit window
	// (create_mmio_allocators(..., 4 << 10)).
	Mem32Alignment = 4 << 10
	// Mem64Alignment aligns each segment's share of the 64-bit window (4 GiB).
	Mem64Alignment = 4 << 30
	// ECAMSizePerSegment is one bus of ECAM (PCI_MMIO_CONFIG_SIZE_PER_SEGMENT):
	// upstream's segments each have only bus 0.
	ECAMSizePerSegment = 4096 * 256
	// ConfigIOPort is the configuration mechanism #1 address port.
	ConfigIOPort = 0xcf8
	// ConfigIOSize covers CONFIG_ADDRESS and CONFIG_DATA.
	ConfigIOSize = 8
)

// ECAMBase is the MMCONFIG base of segment seg (upstream pci_segment.rs:
// PCI_MMCONFIG_START + PCI_MMIO_CONFIG_SIZE_PER_SEGMENT * id).
func ECAMBase(seg uint16) uint64 {
	return x86.PCIMMConfigStart + ECAMSizePerSegment*uint64(seg)
}

// SplitWindows divides [start, end] (inclusive) among PCI segments in
// proportion to their aperture weights, each share aligned relative to
// start, exactly as upstream's create_mmio_allocators: the last segment
// takes everything left, so no address near the top is lost to the
// rounding. weights has one entry per segment (default 1). For the
// 32-bit window upstream passes Window32 and 4 KiB alignment; for the
// 64-bit window the memory manager's device area and 4 GiB alignment.
// Where upstream panics (a window too small for one aligned unit per
// weight) this fails with ErrInvalid.
func SplitWindows(start, end uint64, weights []uint32, alignment uint64) ([]x86.Region, error) {
	var total uint64
	for _, w := range weights {
		total += uint64(w)
	}
	if end < start || total == 0 || alignment == 0 {
		return nil, fmt.Errorf("split MMIO window [%#x, %#x] by %v: %w", start, end, weights, ErrInvalid)
	}
	unit := (end - start + 1) / (alignment * total) * alignment
	out := make([]x86.Region, 0, len(weights))
	var i uint64
	for k, w := range weights {
		r := x86.Region{Start: start + i*unit, Size: unit * uint64(w)}
		if k == len(weights)-1 {
			r.Size = end - r.Start + 1
		}
		if r.Size == 0 {
			return nil, fmt.Errorf("split MMIO window [%#x, %#x] by %v: segment %d gets nothing: %w", start, end, weights, k, ErrInvalid)
		}
		out = append(out, r)
		i += uint64(w)
	}
	return out, nil
}

// Window32 returns the 32-bit device window upstream splits between
// segments, [start, end] inclusive: the 640 MiB below MMCONFIG.
func Window32() (start, end uint64) {
	return x86.Mem32BitReservedStart, x86.Mem32BitReservedStart + x86.Mem32BitDevicesSize - 1
}

// Allocator hands out aligned ranges of one MMIO window top-down, like
// upstream's vm-allocator AddressAllocator (new ranges accumulate at the
// end of the window). It is safe for concurrent use.
type Allocator struct {
	mu     sync.Mutex
	window x86.Region
	used   []x86.Region // sorted by Start
}

// NewAllocator manages window; a zero-size window allocates nothing.
func NewAllocator(window x86.Region) *Allocator { return &Allocator{window: window} }

// Window returns the managed range.
func (a *Allocator) Window() x86.Region { return a.window }

// Allocate reserves size bytes aligned to align (a power of two, at
// least 1) at the highest free address.
func (a *Allocator) Allocate(size, align uint64) (uint64, error) {
	if size == 0 || align == 0 || bits.OnesCount64(align) != 1 {
		return 0, fmt.Errorf("allocate %#x aligned %#x: %w", size, align, ErrInvalid)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	// Walk the gaps from the top of the window down.
	hi := a.window.End() // exclusive end of the current gap
	for i := len(a.used); i >= 0; i-- {
		lo := a.window.Start
		if i > 0 {
			lo = a.used[i-1].End()
		}
		if hi >= size && hi-size >= lo {
			base := (hi - size) &^ (align - 1)
			if base >= lo {
				a.insert(x86.Region{Start: base, Size: size})
				return base, nil
			}
		}
		if i > 0 {
			hi = a.used[i-1].Start
		}
	}
	return 0, fmt.Errorf("allocate %#x aligned %#x in [%#x, %#x): %w", size, align, a.window.Start, a.window.End(), ErrNoSpace)
}

// AllocateAt reserves [base, base+size), e.g. to restore a BAR where it was.
func (a *Allocator) AllocateAt(base, size uint64) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if size == 0 || !a.window.Contains(base, size) {
		return fmt.Errorf("allocate [%#x, +%#x) outside [%#x, %#x): %w", base, size, a.window.Start, a.window.End(), ErrNoSpace)
	}
	r := x86.Region{Start: base, Size: size}
	for _, u := range a.used {
		if u.Start < r.End() && r.Start < u.End() {
			return fmt.Errorf("allocate [%#x, +%#x) overlaps [%#x, +%#x): %w", base, size, u.Start, u.Size, ErrNoSpace)
		}
	}
	a.insert(r)
	return nil
}

func (a *Allocator) insert(r x86.Region) {
	i := sort.Search(len(a.used), func(i int) bool { return a.used[i].Start > r.Start })
	a.used = append(a.used, x86.Region{})
	copy(a.used[i+1:], a.used[i:])
	a.used[i] = r
}

// Free releases the allocation starting at base.
func (a *Allocator) Free(base uint64) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	for i, u := range a.used {
		if u.Start == base {
			a.used = append(a.used[:i], a.used[i+1:]...)
			return nil
		}
	}
	return fmt.Errorf("free %#x: %w", base, ErrNotFound)
}
