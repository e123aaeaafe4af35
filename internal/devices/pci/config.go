package pci

import (
	"encoding/binary"
	"fmt"
	"math/bits"
	"sync"
)

// Type-0 configuration header layout (PCI Local Bus Specification 3.0
// §6.1, Linux include/uapi/linux/pci_regs.h), as 32-bit register indexes.
const (
	// NumRegs is the number of 32-bit registers of conventional config space (256 bytes).
	NumRegs = 64

	regID            = 0  // device id << 16 | vendor id
	regCommandStatus = 1  // status << 16 | command
	regClass         = 2  // class << 24 | subclass << 16 | prog-if << 8 | revision
	regHeader        = 3  // BIST | header type | latency | cache line size
	regBAR0          = 4  // BAR0..BAR5 are registers 4..9
	regSubsystem     = 11 // subsystem id << 16 | subsystem vendor id
	regCapPtr        = 13 // capabilities pointer (byte 0x34)
	regInterrupt     = 15 // max_lat, min_gnt, interrupt pin, interrupt line

	// NumBARs is the number of BAR registers in a type-0 header.
	NumBARs = 6

	statusCapList  = 0x0010 << 16 // PCI_STATUS_CAP_LIST in the status half
	capListHead    = 0x34
	firstCapOffset = 0x40
	capMaxOffset   = 192 // upstream's CAPABILITY_MAX_OFFSET
	barMemTypeMask = 0xf
	barMem64       = 0x4 // PCI_BASE_ADDRESS_MEM_TYPE_64
	barPrefetch    = 0x8 // PCI_BASE_ADDRESS_MEM_PREFETCH
	barIOSpace     = 0x1 // PCI_BASE_ADDRESS_SPACE_IO
	barMemAddrMask = 0xffff_fff0
	barIOAddrMask  = 0xffff_fffc
	allOnes32      = 0xffff_ffff
)

// Capability IDs (pci_regs.h PCI_CAP_ID_*).
const (
	CapVendorSpecific = 0x09
	CapMSIX           = 0x11
)

// Class codes used by Nimbus (PCI Code and ID Assignment Specification).
const (
	ClassMassStorage    = 0x01
	ClassNetwork        = 0x02
	ClassBridge         = 0x06
	ClassOther          = 0xff
	SubclassHostBridge  = 0x00
	SubclassEthernet    = 0x00
	SubclassMassStorage = 0x80 // "other mass storage", upstream's PciMassStorageSubclass::MassStorage
)

// Header holds the identity fields of a type-0 header.
type Header struct {
	VendorID, DeviceID             uint16
	Revision                       uint8
	Class, Subclass, ProgIF        uint8
	SubsystemVendorID, SubsystemID uint16
}

// BARType is a BAR's address space, named as upstream's PciBarType
// serializes in vm.info's device_tree.
type BARType int

const (
	// BARMem32 is a 32-bit memory BAR.
	BARMem32 BARType = iota
	// BARMem64 is a 64-bit memory BAR; it takes two BAR registers.
	BARMem64
	// BARIO is an I/O-port BAR.
	BARIO
)

// String returns upstream's PciBarType name.
func (t BARType) String() string {
	switch t {
	case BARMem32:
		return "Mmio32"
	case BARMem64:
		return "Mmio64"
	case BARIO:
		return "Io"
	}
	return "unknown"
}

// MarshalText serializes the type as upstream does ("Mmio64").
func (t BARType) MarshalText() ([]byte, error) { return []byte(t.String()), nil }

// BAR describes one base address region of a function.
type BAR struct {
	Index        int // register index 0..5 (the low register of a 64-bit BAR)
	Base         uint64
	Size         uint64 // a power of two
	Type         BARType
	Prefetchable bool
	// Align is the minimum placement alignment; the allocator uses
	// max(Size, Align). Upstream aligns virtio BARs to 8 MiB.
	Align uint64
}

// BARMove reports that the guest reprogrammed a BAR's address.
type BARMove struct {
	Index    int
	Old, New uint64
	Size     uint64
	Type     BARType
}

type barState struct {
	BAR
	used  bool
	upper bool // the high register of a 64-bit BAR
}

// ConfigSpace is a function's 256-byte type-0 configuration space with
// upstream's semantics (pci/src/configuration.rs): each register has a
// mask of guest-writable bits, BAR registers hold ~(size-1) as writable
// bits so an all-ones write reads back the size mask, and capabilities are
// chained from 0x40 on dword boundaries. It is safe for concurrent use.
type ConfigSpace struct {
	mu       sync.Mutex
	regs     [NumRegs]uint32
	writable [NumRegs]uint32
	bars     [NumBARs]barState
	lastCap  int // offset of the last capability, 0 if none
	lastLen  int
}

// NewConfigSpace returns a type-0 configuration space with the given identity.
func NewConfigSpace(h Header) *ConfigSpace {
	c := &ConfigSpace{}
	c.regs[regID] = uint32(h.DeviceID)<<16 | uint32(h.VendorID)
	c.writable[regCommandStatus] = 0x0000_ffff // command r/w, status r/o
	c.regs[regClass] = uint32(h.Class)<<24 | uint32(h.Subclass)<<16 | uint32(h.ProgIF)<<8 | uint32(h.Revision)
	c.writable[regHeader] = 0x0000_00ff // cache line size
	c.writable[regInterrupt] = 0x0000_00ff
	c.regs[regSubsystem] = uint32(h.SubsystemID)<<16 | uint32(h.SubsystemVendorID)
	return c
}

// AddBAR declares a BAR. Base may be zero and set later with PlaceBAR.
func (c *ConfigSpace) AddBAR(b BAR) error {
	if b.Index < 0 || b.Index >= NumBARs {
		return fmt.Errorf("BAR %d: index out of range: %w", b.Index, ErrInvalid)
	}
	if b.Size == 0 || bits.OnesCount64(b.Size) != 1 {
		return fmt.Errorf("BAR %d: size %#x not a power of two: %w", b.Index, b.Size, ErrInvalid)
	}
	minSize := uint64(16)
	if b.Type == BARIO {
		minSize = 4
	}
	if b.Size < minSize {
		return fmt.Errorf("BAR %d: size %#x below the %d-byte minimum: %w", b.Index, b.Size, minSize, ErrInvalid)
	}
	if b.Base&(b.Size-1) != 0 {
		return fmt.Errorf("BAR %d: base %#x not aligned to its size: %w", b.Index, b.Base, ErrInvalid)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.bars[b.Index].used {
		return fmt.Errorf("BAR %d already used: %w", b.Index, ErrInvalid)
	}
	switch b.Type {
	case BARMem64:
		if b.Index+1 >= NumBARs || c.bars[b.Index+1].used {
			return fmt.Errorf("64-bit BAR %d needs a free register after it: %w", b.Index, ErrInvalid)
		}
	case BARMem32, BARIO:
		if b.Size > 1<<31 || b.Base+b.Size > 1<<32 {
			return fmt.Errorf("BAR %d: [%#x, +%#x) above 4 GiB: %w", b.Index, b.Base, b.Size, ErrInvalid)
		}
		if b.Prefetchable && b.Type == BARIO {
			return fmt.Errorf("BAR %d: an I/O BAR cannot be prefetchable: %w", b.Index, ErrInvalid)
		}
	default:
		return fmt.Errorf("BAR %d: unknown type %d: %w", b.Index, b.Type, ErrInvalid)
	}
	c.bars[b.Index] = barState{BAR: b, used: true}
	r := regBAR0 + b.Index
	if b.Type == BARMem64 {
		c.bars[b.Index+1] = barState{used: true, upper: true}
		c.writable[r+1] = uint32(^(b.Size - 1) >> 32)
	}
	mask := uint32(barMemAddrMask)
	if b.Type == BARIO {
		mask = barIOAddrMask
	}
	c.writable[r] = uint32(^(b.Size - 1)) & mask
	c.setBARRegs(b.Index)
	return nil
}

// barFlags are the read-only low bits of a BAR register.
func (b *BAR) flags() uint32 {
	switch b.Type {
	case BARIO:
		return barIOSpace
	case BARMem64:
		if b.Prefetchable {
			return barMem64 | barPrefetch
		}
		return barMem64
	}
	if b.Prefetchable {
		return barPrefetch
	}
	return 0
}

func (c *ConfigSpace) setBARRegs(i int) {
	b := &c.bars[i].BAR
	r := regBAR0 + i
	c.regs[r] = uint32(b.Base)&c.writable[r] | b.flags()
	if b.Type == BARMem64 {
		c.regs[r+1] = uint32(b.Base >> 32)
	}
}

// PlaceBAR sets BAR index's address, as firmware would; the VMM calls it
// after allocating the BAR.
func (c *ConfigSpace) PlaceBAR(index int, base uint64) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if index < 0 || index >= NumBARs || !c.bars[index].used || c.bars[index].upper {
		return fmt.Errorf("place BAR %d: no such BAR: %w", index, ErrInvalid)
	}
	b := &c.bars[index].BAR
	if base&(b.Size-1) != 0 || (b.Type != BARMem64 && base+b.Size > 1<<32) {
		return fmt.Errorf("place BAR %d at %#x (size %#x): %w", index, base, b.Size, ErrInvalid)
	}
	b.Base = base
	c.setBARRegs(index)
	return nil
}

// BARs returns the declared BARs, in index order, with their current addresses.
func (c *ConfigSpace) BARs() []BAR {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []BAR
	for i := range c.bars {
		if c.bars[i].used && !c.bars[i].upper {
			out = append(out, c.bars[i].BAR)
		}
	}
	return out
}

// BARAt returns the BAR whose range starts at base.
func (c *ConfigSpace) BARAt(base uint64) (BAR, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := range c.bars {
		if c.bars[i].used && !c.bars[i].upper && c.bars[i].Base == base {
			return c.bars[i].BAR, true
		}
	}
	return BAR{}, false
}

// AddCapability appends a capability to the list and returns its offset.
// body is the capability without its two-byte header (ID, next pointer),
// which is generated, as upstream's add_capability does.
func (c *ConfigSpace) AddCapability(id uint8, body []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	total := len(body) + 2
	off, tail := firstCapOffset, capListHead
	if c.lastCap != 0 {
		off, tail = (c.lastCap+c.lastLen+3)&^3, c.lastCap+1
	}
	if off+total > capMaxOffset {
		return 0, fmt.Errorf("capability %#x of %d bytes does not fit at %#x: %w", id, total, off, ErrInvalid)
	}
	c.regs[regCommandStatus] |= statusCapList
	c.setByte(tail, uint8(off))
	c.setByte(off, id)
	c.setByte(off+1, 0)
	for i, v := range body {
		c.setByte(off+2+i, v)
	}
	c.lastCap, c.lastLen = off, total
	return off, nil
}

// SetWritable marks bits of the register holding byte offset off as
// guest-writable (e.g. the MSI-X enable and function-mask bits).
func (c *ConfigSpace) SetWritable(off int, mask uint32) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if off >= 0 && off/4 < NumRegs {
		c.writable[off/4] |= mask
	}
}

// setByte writes a byte ignoring the writable mask (for the VMM's own setup).
func (c *ConfigSpace) setByte(off int, v uint8) {
	shift := uint(off%4) * 8
	r := &c.regs[off/4]
	*r = *r&^(0xff<<shift) | uint32(v)<<shift
}

// ReadConfig returns 32-bit register reg; registers outside the 256-byte
// space (the PCIe extended space ECAM exposes) read all-ones, as upstream.
func (c *ConfigSpace) ReadConfig(reg int) uint32 {
	if reg < 0 || reg >= NumRegs {
		return allOnes32
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.regs[reg]
}

// WriteConfig applies a guest write of len(data) (1, 2 or 4) bytes at
// byte offset within register reg, honouring the writable mask, and
// reports BARs the guest moved. Writes crossing the register are dropped.
func (c *ConfigSpace) WriteConfig(reg, offset int, data []byte) []BARMove {
	if reg < 0 || reg >= NumRegs || offset < 0 || offset+len(data) > 4 || len(data) == 0 || len(data) == 3 {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	var v uint32
	for i, b := range data {
		v |= uint32(b) << (8 * uint(i))
	}
	shift := uint(offset) * 8
	span := uint32(1<<(8*uint(len(data)))-1) << shift
	mask := span & c.writable[reg]
	c.regs[reg] = c.regs[reg]&^mask | (v<<shift)&mask
	if reg >= regBAR0 && reg < regBAR0+NumBARs {
		if m, ok := c.barWritten(reg-regBAR0, len(data) == 4 && v == allOnes32); ok {
			return []BARMove{m}
		}
	}
	return nil
}

// barWritten keeps a BAR register's read-only type bits and detects a
// reprogrammed address, as upstream's detect_bar_reprogramming: a sizing
// probe (all-ones) is not a move, and a 64-bit BAR moves on its high write.
func (c *ConfigSpace) barWritten(i int, probe bool) (BARMove, bool) {
	st := &c.bars[i]
	if !st.used {
		return BARMove{}, false
	}
	lo := i
	if st.upper {
		lo = i - 1
	}
	b := &c.bars[lo].BAR
	r := regBAR0 + lo
	c.regs[r] = c.regs[r]&c.writable[r] | b.flags()
	if probe || (b.Type == BARMem64 && !st.upper) {
		return BARMove{}, false
	}
	addr := uint64(c.regs[r] & c.writable[r])
	if b.Type == BARMem64 {
		addr |= uint64(c.regs[r+1]&c.writable[r+1]) << 32
	}
	if addr == b.Base {
		return BARMove{}, false
	}
	m := BARMove{Index: lo, Old: b.Base, New: addr, Size: b.Size, Type: b.Type}
	b.Base = addr
	return m, true
}

// Bytes returns a copy of the 256-byte configuration space, for tests and debugging.
func (c *ConfigSpace) Bytes() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]byte, NumRegs*4)
	for i, r := range c.regs {
		binary.LittleEndian.PutUint32(out[i*4:], r)
	}
	return out
}
