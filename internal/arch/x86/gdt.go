package x86

import (
	"encoding/binary"

	"github.com/nimbus-vmm/nimbus/internal/kvm"
)

// GDT descriptor encoding, following the kernel's
// arch/x86/include/asm/segment.h GDT_ENTRY() macro as upstream's gdt.rs does.

// GDTEntry packs a segment descriptor: flags holds the access byte in bits
// 0-7 and the G/DB/L/AVL nibble in bits 12-15 (e.g. 0xa09b = 64-bit code).
func GDTEntry(flags uint16, base, limit uint32) uint64 {
	return (uint64(base)&0xff000000)<<(56-24) |
		(uint64(flags)&0x0000f0ff)<<40 |
		(uint64(limit)&0x000f0000)<<(48-16) |
		(uint64(base)&0x00ffffff)<<16 |
		uint64(limit)&0x0000ffff
}

// SegmentFromGDT decodes a descriptor into the kvm_segment the selector at
// table index idx loads. The limit is scaled by 4 KiB when G is set, as KVM
// expects byte-granular limits.
func SegmentFromGDT(entry uint64, idx uint8) kvm.Segment {
	s := kvm.Segment{
		Base:     (entry&0xff00000000000000)>>32 | (entry&0x000000ff00000000)>>16 | (entry&0x00000000ffff0000)>>16,
		Limit:    uint32((entry&0x000f000000000000)>>32 | entry&0xffff),
		Selector: uint16(idx) * 8,
		Type:     uint8(entry >> 40 & 0xf),
		S:        uint8(entry >> 44 & 1),
		DPL:      uint8(entry >> 45 & 3),
		Present:  uint8(entry >> 47 & 1),
		AVL:      uint8(entry >> 52 & 1),
		L:        uint8(entry >> 53 & 1),
		DB:       uint8(entry >> 54 & 1),
		G:        uint8(entry >> 55 & 1),
	}
	if s.G == 1 {
		s.Limit = s.Limit<<12 | 0xfff
	}
	if s.Present == 0 {
		s.Unusable = 1
	}
	return s
}

// GDT64 is the boot GDT for the Linux 64-bit boot protocol: null, 64-bit
// code, data, TSS (upstream's configure_segments_and_sregs for LinuxBoot).
var GDT64 = [4]uint64{
	GDTEntry(0, 0, 0),
	GDTEntry(0xa09b, 0, 0xfffff),
	GDTEntry(0xc093, 0, 0xfffff),
	GDTEntry(0x808b, 0, 0xfffff),
}

// GDT32 is the boot GDT for the PVH entry, which starts in flat 32-bit
// protected mode with paging off (upstream's current regs.rs).
var GDT32 = [4]uint64{
	GDTEntry(0, 0, 0),
	GDTEntry(0xc09b, 0, 0xffffffff),
	GDTEntry(0xc093, 0, 0xffffffff),
	GDTEntry(0x008b, 0, 0x67),
}

// GDTBytes serializes descriptors little-endian, as they sit in memory.
func GDTBytes(entries []uint64) []byte {
	b := make([]byte, 8*len(entries))
	for i, e := range entries {
		binary.LittleEndian.PutUint64(b[8*i:], e)
	}
	return b
}
