package boot

import (
	"encoding/binary"

	"github.com/nimbus-vmm/nimbus/internal/arch/x86"
)

// E820 entry types (Linux arch/x86/include/uapi/asm/e820.h values, also used
// by the PVH memory map per xen's hvm/start_info.h).
const (
	E820RAM      = 1
	E820Reserved = 2
)

// E820Entry is one BIOS e820 map entry, struct boot_e820_entry in
// arch/x86/include/uapi/asm/setup_data.h (packed, 20 bytes).
type E820Entry struct {
	Addr uint64
	Size uint64
	Type uint32
}

// E820EntrySize is the packed size of E820Entry.
const E820EntrySize = 20

// MarshalBinary encodes the entry as in the zero page.
func (e E820Entry) MarshalBinary() ([]byte, error) {
	b := make([]byte, E820EntrySize)
	binary.LittleEndian.PutUint64(b[0:], e.Addr)
	binary.LittleEndian.PutUint64(b[8:], e.Size)
	binary.LittleEndian.PutUint32(b[16:], e.Type)
	return b, nil
}

// MemoryMap is the guest's physical memory map as upstream reports it in
// both e820 and the PVH memmap: low RAM [0, 640 KiB), nothing for the EBDA
// and BIOS area up to 1 MiB, the rest of each RAM region, and the PCI
// MMCONFIG window as reserved.
func MemoryMap(ram []x86.Region) []E820Entry {
	var m []E820Entry
	for _, r := range ram {
		if r.Size == 0 {
			continue
		}
		if r.Start == 0 {
			m = append(m, E820Entry{0, min(r.Size, x86.EBDAStart), E820RAM})
			if r.End() > x86.HighRAMStart {
				m = append(m, E820Entry{x86.HighRAMStart, r.End() - x86.HighRAMStart, E820RAM})
			}
			continue
		}
		m = append(m, E820Entry{r.Start, r.Size, E820RAM})
	}
	return append(m, E820Entry{x86.PCIMMConfigStart, x86.PCIMMConfigSize, E820Reserved})
}
