package memory

import (
	"fmt"
	"math/bits"
	"sync/atomic"

	"github.com/nimbus-vmm/nimbus/internal/kvm"
)

// Dirty logging for live migration. KVM logs the pages vCPUs write
// (KVM_MEM_LOG_DIRTY_PAGES); the VMM's own writes into guest RAM (used
// rings, request data of emulated devices) never reach that log, so the
// accessors record them here, as upstream's vm-memory bitmap does.

// dirtyBits is one region's record of the VMM's writes: written holds
// pages written through the copying accessors, collected every round;
// sliced the pages handed out by Slice, which a device may write until
// its request ends, collected only in the final round.
type dirtyBits struct {
	written, sliced []atomic.Uint64
}

func newDirtyBits(size uint64) *dirtyBits {
	words := (size/PageSize + 63) / 64
	return &dirtyBits{written: make([]atomic.Uint64, words), sliced: make([]atomic.Uint64, words)}
}

func markPages(b []atomic.Uint64, off, n uint64) {
	if n == 0 {
		return
	}
	for p := off / PageSize; p <= (off+n-1)/PageSize; p++ {
		b[p/64].Or(1 << (p % 64))
	}
}

func (r *region) markWritten(off, n uint64) {
	if r.log != nil {
		markPages(r.log.written, off, n)
	}
}

func (r *region) markSliced(off, n uint64) {
	if r.log != nil {
		markPages(r.log.sliced, off, n)
	}
}

// DirtyLogger reads and clears a memory slot's KVM dirty log; *kvm.VM
// implements it.
type DirtyLogger interface {
	SlotRegistrar
	DirtyLog(slot uint32, bitmap []uint64) error
}

// StartDirtyLog turns dirty logging on: every slot is registered again
// with KVM_MEM_LOG_DIRTY_PAGES and the VMM's writes are recorded. The
// caller makes sure no device holds a slice from before (devices paused).
func (m *Memory) StartDirtyLog(vm SlotRegistrar) error {
	return m.setDirtyLog(vm, true)
}

// DirtyLogging reports whether dirty logging is on.
func (m *Memory) DirtyLogging() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.flags&kvm.MemLogDirtyPages != 0
}

// StopDirtyLog turns dirty logging off again.
func (m *Memory) StopDirtyLog(vm SlotRegistrar) error {
	return m.setDirtyLog(vm, false)
}

func (m *Memory) setDirtyLog(vm SlotRegistrar, on bool) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	flags := m.flags &^ kvm.MemLogDirtyPages
	if on {
		flags |= kvm.MemLogDirtyPages
	}
	next := append([]region(nil), m.list()...)
	for i := range next {
		r := &next[i]
		err := vm.SetUserMemoryRegion(kvm.UserspaceMemoryRegion{
			Slot: r.Slot, Flags: flags, GuestPhysAddr: r.GPA, MemorySize: r.Size, UserspaceAddr: r.HostAddr,
		})
		if err != nil {
			return fmt.Errorf("dirty logging on guest RAM %v: %w", r.Region, err)
		}
		r.log = nil
		if on {
			r.log = newDirtyBits(r.Size)
		}
	}
	m.flags = flags
	m.regions.Store(&next)
	return nil
}

// DirtyRanges returns the guest RAM written since dirty logging started
// or since the last call, and clears that record: KVM's log of each slot
// together with the VMM's writes; with final (devices paused) also every
// page handed out by Slice since logging started. Adjacent dirty pages
// come as one range, in GPA order.
func (m *Memory) DirtyRanges(vm DirtyLogger, final bool) ([]Region, error) {
	var out []Region
	for _, r := range m.list() {
		if r.log == nil {
			return nil, fmt.Errorf("dirty logging is off: %w", ErrInvalid)
		}
		words := len(r.log.written)
		kvmBits := make([]uint64, words)
		if err := vm.DirtyLog(r.Slot, kvmBits); err != nil {
			return nil, fmt.Errorf("dirty log of guest RAM %v: %w", r.Region, err)
		}
		from, pages := len(out), r.Size/PageSize
		for w := range words {
			v := kvmBits[w] | r.log.written[w].Swap(0)
			if final {
				v |= r.log.sliced[w].Swap(0)
			}
			for ; v != 0; v &= v - 1 {
				// The last word may cover pages past the region.
				if p := uint64(w)*64 + uint64(bits.TrailingZeros64(v)); p < pages {
					out = addPage(out, from, r.GPA+p*PageSize)
				}
			}
		}
	}
	return out, nil
}

// ResidentRanges are the runs of guest RAM pages that may hold data
// (Populated): what a migration's first round sends. Pages that never
// existed read as zeros, as the destination's fresh RAM does.
func (m *Memory) ResidentRanges() ([]Region, error) {
	const chunk = 2 << 20
	var out []Region
	vec := make([]byte, chunk/PageSize)
	for _, r := range m.list() {
		from := len(out)
		for c := uint64(0); c < r.Size; c += chunk {
			n := min(chunk, r.Size-c)
			pages := int((n + PageSize - 1) / PageSize)
			if err := m.Populated(r.GPA+c, n, vec); err != nil {
				return nil, fmt.Errorf("guest RAM %v: %w", r.Region, err)
			}
			for p := range pages {
				if vec[p]&1 != 0 {
					out = addPage(out, from, r.GPA+c+uint64(p)*PageSize)
				}
			}
		}
	}
	return out, nil
}

// addPage appends the page at gpa to rs, growing the last range when it
// ends there. Ranges from index from on are the current region's: a
// range never spans two regions (two host mappings).
func addPage(rs []Region, from int, gpa uint64) []Region {
	if n := len(rs); n > from && rs[n-1].End() == gpa {
		rs[n-1].Size += PageSize
		return rs
	}
	return append(rs, Region{GPA: gpa, Size: PageSize})
}
