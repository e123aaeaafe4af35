package x86

import "encoding/binary"

// Page-table entry bits (Intel SDM vol. 3, 4.5 "4-level paging").
const (
	ptepresent  = 1 << 0
	ptewritable = 1 << 1
	ptehuge     = 1 << 7 // PS: a 2 MiB page in a PD entry
)

// PageTables returns the three 4 KiB tables upstream writes at PML4Start,
// PDPTEStart and PDEStart: one PML4 entry, one PDPT entry and 512 2 MiB
// pages, identity-mapping [0, 1 GiB). The Linux 64-bit boot protocol only
// needs the kernel, zero page and command line mapped, all below 1 GiB.
func PageTables() []byte {
	b := make([]byte, 3*4096)
	binary.LittleEndian.PutUint64(b[0:], PDPTEStart|presentRW)
	binary.LittleEndian.PutUint64(b[4096:], PDEStart|presentRW)
	for i := uint64(0); i < 512; i++ {
		binary.LittleEndian.PutUint64(b[8192+8*i:], i<<21|presentRW|ptehuge)
	}
	return b
}

const presentRW = ptepresent | ptewritable
