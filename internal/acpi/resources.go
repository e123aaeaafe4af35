package acpi

import (
	"encoding/binary"
	"fmt"
)

// Resource data descriptors, ACPI 6.5 section 6.4.

// Resource is one descriptor inside a ResourceTemplate.
type Resource interface {
	appendResource(b []byte) ([]byte, error)
}

type resourceTemplate []Resource

// ResourceTemplate is ASL ResourceTemplate(){descriptors}: a Buffer holding
// the descriptors and an End Tag with a zero checksum.
func ResourceTemplate(descs ...Resource) Term { return resourceTemplate(descs) }

func (rt resourceTemplate) AppendAML(b []byte) ([]byte, error) {
	var data []byte
	var err error
	for _, d := range rt {
		if data, err = d.appendResource(data); err != nil {
			return nil, err
		}
	}
	data = append(data, 0x79, 0) // End Tag, checksum 0 = "valid"
	return Buffer(data).AppendAML(b)
}

var le = binary.LittleEndian

// IO is the small I/O Port Descriptor (6.4.2.5) with 16-bit decode.
type IO struct {
	Min, Max      uint16
	Align, Length uint8
}

func (d IO) appendResource(b []byte) ([]byte, error) {
	b = append(b, 0x47, 1)
	b = le.AppendUint16(b, d.Min)
	b = le.AppendUint16(b, d.Max)
	return append(b, d.Align, d.Length), nil
}

// Interrupt is the Extended Interrupt Descriptor (6.4.3.6) for one GSI.
type Interrupt struct {
	Consumer, Edge, ActiveLow, Shared bool
	Number                            uint32
}

func bit(v bool, n uint) byte {
	if v {
		return 1 << n
	}
	return 0
}

func (d Interrupt) appendResource(b []byte) ([]byte, error) {
	b = append(b, 0x89)
	b = le.AppendUint16(b, 6)
	b = append(b, bit(d.Shared, 3)|bit(d.ActiveLow, 2)|bit(d.Edge, 1)|bit(d.Consumer, 0), 1)
	return le.AppendUint32(b, d.Number), nil
}

// Memory32Fixed is the 32-bit Fixed Memory Range Descriptor (6.4.3.4).
type Memory32Fixed struct {
	ReadWrite    bool
	Base, Length uint32
}

func (d Memory32Fixed) appendResource(b []byte) ([]byte, error) {
	b = append(b, 0x86)
	b = le.AppendUint16(b, 9)
	b = append(b, bit(d.ReadWrite, 0))
	b = le.AppendUint32(b, d.Base)
	return le.AppendUint32(b, d.Length), nil
}

// Address space resource types (6.4.3.5).
const (
	spaceMemory = 0
	spaceIO     = 1
	spaceBus    = 2
)

// Memory cacheability for address space descriptors' type-specific flags.
const (
	NotCacheable   = 0
	Cacheable      = 1
	WriteCombining = 2
	Prefetchable   = 3
)

// AddressSpace is a Word/DWord/QWord Address Space Descriptor (6.4.3.5)
// with MinFixed, MaxFixed, PosDecode and zero granularity and translation,
// as acpi_tables emits them. Width is 16, 32 or 64.
type AddressSpace struct {
	Width     int
	Type      uint8 // spaceMemory, spaceIO, spaceBus
	TypeFlags uint8
	Min, Max  uint64
}

// WordBusNumber is ASL WordBusNumber for buses [min, max].
func WordBusNumber(min, max uint16) AddressSpace {
	return AddressSpace{Width: 16, Type: spaceBus, Min: uint64(min), Max: uint64(max)}
}

// WordIO is ASL WordIO with EntireRange for ports [min, max].
func WordIO(min, max uint16) AddressSpace {
	return AddressSpace{Width: 16, Type: spaceIO, TypeFlags: 3, Min: uint64(min), Max: uint64(max)}
}

// DWordMemory is ASL DWordMemory for [min, max].
func DWordMemory(cacheable uint8, readWrite bool, min, max uint32) AddressSpace {
	return AddressSpace{Width: 32, Type: spaceMemory, TypeFlags: cacheable<<1 | bit(readWrite, 0), Min: uint64(min), Max: uint64(max)}
}

// QWordMemory is ASL QWordMemory for [min, max].
func QWordMemory(cacheable uint8, readWrite bool, min, max uint64) AddressSpace {
	return AddressSpace{Width: 64, Type: spaceMemory, TypeFlags: cacheable<<1 | bit(readWrite, 0), Min: min, Max: max}
}

func (d AddressSpace) appendResource(b []byte) ([]byte, error) {
	if d.Max < d.Min {
		return nil, fmt.Errorf("%w: address space [%#x, %#x] is empty", ErrAML, d.Min, d.Max)
	}
	var tag byte
	var size int
	switch d.Width {
	case 16:
		tag, size = 0x88, 2
	case 32:
		tag, size = 0x87, 4
	case 64:
		tag, size = 0x8a, 8
	default:
		return nil, fmt.Errorf("%w: address space width %d", ErrAML, d.Width)
	}
	if size < 8 && d.Max >= 1<<(8*size) {
		return nil, fmt.Errorf("%w: %#x does not fit a %d-bit descriptor", ErrAML, d.Max, d.Width)
	}
	b = append(b, tag)
	b = le.AppendUint16(b, uint16(3+5*size))
	b = append(b, d.Type, 1<<2|1<<3, d.TypeFlags) // MinFixed | MaxFixed
	for _, v := range []uint64{0, d.Min, d.Max, 0, d.Max - d.Min + 1} {
		for i := 0; i < size; i++ {
			b = append(b, byte(v>>(8*i)))
		}
	}
	return b, nil
}
