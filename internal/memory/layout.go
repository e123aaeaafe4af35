// Package memory provides guest RAM for x86-64 VMs: the guest-physical
// layout, the host mappings behind it, their registration as KVM memory
// slots, and the one bounds-checked accessor every device uses.
package memory

import "fmt"

// Guest-physical layout, as upstream Cloud Hypervisor's
// arch/src/x86_64/layout.rs: RAM from 0 up to the 32-bit device hole at
// 3 GiB; the hole (32-bit PCI BARs, MMCONFIG, IOAPIC, LAPIC, ...) up to
// 4 GiB; RAM above that continues at 4 GiB.
const (
	// Hole32Start is MEM_32BIT_RESERVED_START.
	Hole32Start = 0xc000_0000
	// Hole32End is the end of the hole: 4 GiB.
	Hole32End = 1 << 32
	// HighRAMStart is RAM_64BIT_START, where RAM resumes above the hole.
	HighRAMStart = Hole32End
)

// PageSize is the base page size; region sizes and addresses are
// multiples of it.
const PageSize = 4096

// Region is a range of guest-physical RAM.
type Region struct {
	GPA  uint64 // first guest-physical address
	Size uint64 // bytes
}

// End returns the first address after the region.
func (r Region) End() uint64 { return r.GPA + r.Size }

func (r Region) String() string { return fmt.Sprintf("[%#x-%#x)", r.GPA, r.End()) }

// Layout returns the RAM regions of a guest with size bytes of memory:
// one region below the 32-bit hole and, when size exceeds 3 GiB, a second
// one from 4 GiB.
func Layout(size uint64) []Region {
	regions, _ := layoutFrom(0, size)
	return regions
}

// layoutFrom places size bytes of RAM starting at guest address start,
// skipping the 32-bit hole, and returns the regions and the next free
// address. Zones are laid out one after another this way.
func layoutFrom(start, size uint64) ([]Region, uint64) {
	var out []Region
	if start < Hole32Start && size > 0 {
		n := min(size, Hole32Start-start)
		out = append(out, Region{GPA: start, Size: n})
		start += n
		size -= n
		if start == Hole32Start {
			start = HighRAMStart
		}
	}
	if start >= Hole32Start && start < HighRAMStart {
		start = HighRAMStart
	}
	if size > 0 {
		out = append(out, Region{GPA: start, Size: size})
		start += size
	}
	return out, start
}
