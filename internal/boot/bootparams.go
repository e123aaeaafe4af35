package boot

import (
	"bytes"
	"encoding/binary"
	"fmt"
)

// Linux x86 boot protocol (Documentation/arch/x86/boot.rst) constants.
const (
	setupHeaderOffset = 0x1f1
	bootFlagMagic     = 0xaa55
	hdrSMagic         = 0x53726448 // "HdrS"
	loaderTypeOther   = 0xff       // type_of_loader "undefined" loader
	loadedHigh        = 1 << 0     // loadflags: protected-mode code at 0x100000
	xlfKernel64       = 1 << 0     // xloadflags: has the 64-bit entry at +0x200
	// ZeroPageSize is sizeof(struct boot_params).
	ZeroPageSize = 4096
	// MaxE820Entries is E820_MAX_ENTRIES_ZEROPAGE.
	MaxE820Entries = 128
	// offsets inside struct boot_params (arch/x86/include/uapi/asm/bootparam.h)
	bpACPIRSDPAddr = 0x070
	bpE820Entries  = 0x1e8
	bpE820Table    = 0x2d0
)

// SetupHeader is struct setup_header (bootparam.h), located at 0x1f1 in
// both the bzImage and the zero page; field order and sizes are exact, and
// encoding/binary adds no padding, so it marshals to the packed 123 bytes.
type SetupHeader struct {
	SetupSects          uint8
	RootFlags           uint16
	SysSize             uint32
	RAMSize             uint16
	VidMode             uint16
	RootDev             uint16
	BootFlag            uint16
	Jump                uint16
	Header              uint32
	Version             uint16
	RealmodeSwtch       uint32
	StartSysSeg         uint16
	KernelVersion       uint16
	TypeOfLoader        uint8
	LoadFlags           uint8
	SetupMoveSize       uint16
	Code32Start         uint32
	RamdiskImage        uint32
	RamdiskSize         uint32
	BootsectKludge      uint32
	HeapEndPtr          uint16
	ExtLoaderVer        uint8
	ExtLoaderType       uint8
	CmdLinePtr          uint32
	InitrdAddrMax       uint32
	KernelAlignment     uint32
	RelocatableKernel   uint8
	MinAlignment        uint8
	XLoadFlags          uint16
	CmdlineSize         uint32
	HardwareSubarch     uint32
	HardwareSubarchData uint64
	PayloadOffset       uint32
	PayloadLength       uint32
	SetupData           uint64
	PrefAddress         uint64
	InitSize            uint32
	HandoverOffset      uint32
	KernelInfoOffset    uint32
}

// SetupHeaderSize is the packed size of SetupHeader (0x26c - 0x1f1).
const SetupHeaderSize = 0x7b

// MarshalBinary encodes the header little-endian, packed.
func (h *SetupHeader) MarshalBinary() ([]byte, error) {
	var buf bytes.Buffer
	buf.Grow(SetupHeaderSize)
	if err := binary.Write(&buf, binary.LittleEndian, h); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// UnmarshalBinary decodes the header from its packed form.
func (h *SetupHeader) UnmarshalBinary(b []byte) error {
	if len(b) < SetupHeaderSize {
		return fmt.Errorf("setup header: %d bytes, want %d: %w", len(b), SetupHeaderSize, ErrInvalidKernel)
	}
	return binary.Read(bytes.NewReader(b[:SetupHeaderSize]), binary.LittleEndian, h)
}

// BootParams holds the zero page fields a loader fills in; everything else
// in struct boot_params stays zero.
type BootParams struct {
	ACPIRSDPAddr uint64
	E820         []E820Entry
	Hdr          SetupHeader
}

// MarshalBinary encodes the 4 KiB zero page.
func (p *BootParams) MarshalBinary() ([]byte, error) {
	if len(p.E820) > MaxE820Entries {
		return nil, fmt.Errorf("%d e820 entries, at most %d fit in the zero page: %w", len(p.E820), MaxE820Entries, ErrLayout)
	}
	b := make([]byte, ZeroPageSize)
	binary.LittleEndian.PutUint64(b[bpACPIRSDPAddr:], p.ACPIRSDPAddr)
	b[bpE820Entries] = uint8(len(p.E820))
	for i, e := range p.E820 {
		eb, _ := e.MarshalBinary()
		copy(b[bpE820Table+i*E820EntrySize:], eb)
	}
	hb, err := p.Hdr.MarshalBinary()
	if err != nil {
		return nil, err
	}
	copy(b[setupHeaderOffset:], hb)
	return b, nil
}
