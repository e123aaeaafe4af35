package boot

import "encoding/binary"

// PVH boot ABI structures, xen/include/public/arch-x86/hvm/start_info.h.

// StartInfoMagic is XEN_HVM_START_MAGIC_VALUE.
const StartInfoMagic = 0x336ec578

// Sizes of the packed PVH structures.
const (
	StartInfoSize    = 56
	ModlistEntrySize = 32
	MemmapEntrySize  = 24
)

// StartInfo is struct hvm_start_info (version 1, with the memory map).
type StartInfo struct {
	Magic         uint32
	Version       uint32
	Flags         uint32
	NrModules     uint32
	ModlistPaddr  uint64
	CmdlinePaddr  uint64
	RSDPPaddr     uint64
	MemmapPaddr   uint64
	MemmapEntries uint32
}

// MarshalBinary encodes the 56-byte structure (the trailing reserved word is zero).
func (s *StartInfo) MarshalBinary() ([]byte, error) {
	b := make([]byte, StartInfoSize)
	le := binary.LittleEndian
	le.PutUint32(b[0:], s.Magic)
	le.PutUint32(b[4:], s.Version)
	le.PutUint32(b[8:], s.Flags)
	le.PutUint32(b[12:], s.NrModules)
	le.PutUint64(b[16:], s.ModlistPaddr)
	le.PutUint64(b[24:], s.CmdlinePaddr)
	le.PutUint64(b[32:], s.RSDPPaddr)
	le.PutUint64(b[40:], s.MemmapPaddr)
	le.PutUint32(b[48:], s.MemmapEntries)
	return b, nil
}

// ModlistEntry is struct hvm_modlist_entry.
type ModlistEntry struct {
	Paddr        uint64
	Size         uint64
	CmdlinePaddr uint64
}

// MarshalBinary encodes the 32-byte structure.
func (m ModlistEntry) MarshalBinary() ([]byte, error) {
	b := make([]byte, ModlistEntrySize)
	binary.LittleEndian.PutUint64(b[0:], m.Paddr)
	binary.LittleEndian.PutUint64(b[8:], m.Size)
	binary.LittleEndian.PutUint64(b[16:], m.CmdlinePaddr)
	return b, nil
}

// MemmapEntry is struct hvm_memmap_table_entry; Type uses the e820 values.
type MemmapEntry struct {
	Addr uint64
	Size uint64
	Type uint32
}

// MarshalBinary encodes the 24-byte structure.
func (m MemmapEntry) MarshalBinary() ([]byte, error) {
	b := make([]byte, MemmapEntrySize)
	binary.LittleEndian.PutUint64(b[0:], m.Addr)
	binary.LittleEndian.PutUint64(b[8:], m.Size)
	binary.LittleEndian.PutUint32(b[16:], m.Type)
	return b, nil
}
