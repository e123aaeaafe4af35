package acpi

import (
	"encoding/binary"
	"fmt"

	"github.com/nimbus-vmm/nimbus/internal/devices/pci"
)

// Table identity, as upstream writes it (OEM "CLOUDH", creator from the
// acpi_tables crate).
const (
	oemID           = "CLOUDH"
	creatorID       = "RVAT"
	creatorRevision = 0x01000000 // acpi_tables stores bytes [0, 0, 0, 1]
	headerSize      = 36
)

// Checksum returns the byte that makes b sum to zero.
func Checksum(b []byte) byte {
	var s byte
	for _, c := range b {
		s += c
	}
	return -s
}

// SDT is a system description table: the 36-byte header (ACPI 6.5 5.2.6)
// and the body after it.
type SDT struct {
	Signature  string // 4 characters
	Revision   uint8
	OEMTableID string // 8 characters, space padded
	Body       []byte
}

// MarshalBinary encodes header and body with the length and checksum set.
func (t *SDT) MarshalBinary() ([]byte, error) {
	if len(t.Signature) != 4 || len(t.OEMTableID) > 8 {
		return nil, fmt.Errorf("table %q/%q: bad signature or OEM table id", t.Signature, t.OEMTableID)
	}
	b := make([]byte, headerSize, headerSize+len(t.Body))
	copy(b, t.Signature)
	binary.LittleEndian.PutUint32(b[4:], uint32(headerSize+len(t.Body)))
	b[8] = t.Revision
	copy(b[10:], oemID)
	copy(b[16:], fmt.Sprintf("%-8s", t.OEMTableID))
	binary.LittleEndian.PutUint32(b[24:], 1) // OEM revision
	copy(b[28:], creatorID)
	binary.LittleEndian.PutUint32(b[32:], creatorRevision)
	b = append(b, t.Body...)
	b[9] = Checksum(b)
	return b, nil
}

// GAS is a Generic Address Structure (ACPI 6.5 5.2.3.2).
type GAS struct {
	SpaceID    uint8 // 0 memory, 1 I/O
	BitWidth   uint8
	BitOffset  uint8
	AccessSize uint8 // 1 byte, 2 word, 3 dword, 4 qword
	Address    uint64
}

// IOPort returns the GAS of an I/O register of width bytes (1, 2 or 4).
func IOPort(port uint16, width uint8) GAS {
	access := map[uint8]uint8{1: 1, 2: 2, 4: 3}[width]
	return GAS{SpaceID: 1, BitWidth: 8 * width, AccessSize: access, Address: uint64(port)}
}

func (g GAS) put(b []byte) {
	b[0], b[1], b[2], b[3] = g.SpaceID, g.BitWidth, g.BitOffset, g.AccessSize
	binary.LittleEndian.PutUint64(b[4:], g.Address)
}

// RSDP encodes the 36-byte ACPI 2.0+ Root System Description Pointer
// (5.2.5.3) pointing at the XSDT.
func RSDP(xsdtAddr uint64) []byte {
	b := make([]byte, 36)
	copy(b, "RSD PTR ")
	copy(b[9:], oemID)
	b[15] = 2 // revision
	binary.LittleEndian.PutUint32(b[20:], 36)
	binary.LittleEndian.PutUint64(b[24:], xsdtAddr)
	b[8] = Checksum(b[:20])
	b[32] = Checksum(b)
	return b
}

// XSDT lists the other tables' addresses (5.2.8).
func XSDT(tables []uint64) *SDT {
	body := make([]byte, 8*len(tables))
	for i, a := range tables {
		binary.LittleEndian.PutUint64(body[8*i:], a)
	}
	return &SDT{Signature: "XSDT", Revision: 1, OEMTableID: "CHXSDT", Body: body}
}

// Platform I/O registers upstream's ACPI devices use.
const (
	// ShutdownPort is the ACPI shutdown/reset device: sleep control and
	// status registers and the reset register.
	ShutdownPort = 0x600
	// PMTimerPort is the ACPI PM timer.
	PMTimerPort = 0x608
	// ResetValue is written to the reset register to reboot.
	ResetValue = 1
)

// FADT flags (5.2.9, table 5.10).
const (
	fadtTmrValExt     = 1 << 8
	fadtResetRegSup   = 1 << 10
	fadtHWReducedACPI = 1 << 20
)

// FADT is the revision 6.3 hardware-reduced Fixed ACPI Description Table
// (276 bytes) upstream writes: PM timer, reset register, sleep
// control/status registers, X_DSDT and the hypervisor vendor identity.
func FADT(dsdtAddr uint64) *SDT {
	body := make([]byte, 276-headerSize)
	at := func(off int) []byte { return body[off-headerSize:] }
	le := binary.LittleEndian
	le.PutUint32(at(76), PMTimerPort) // PM_TMR_BLK
	at(91)[0] = 4                     // PM_TMR_LEN
	le.PutUint32(at(112), fadtHWReducedACPI|fadtResetRegSup|fadtTmrValExt)
	IOPort(ShutdownPort, 1).put(at(116)) // RESET_REG
	at(128)[0] = ResetValue
	at(131)[0] = 3 // FADT minor version: 6.3
	le.PutUint64(at(140), dsdtAddr)
	IOPort(PMTimerPort, 4).put(at(208))  // X_PM_TMR_BLK
	IOPort(ShutdownPort, 1).put(at(244)) // SLEEP_CONTROL_REG
	IOPort(ShutdownPort, 1).put(at(256)) // SLEEP_STATUS_REG
	copy(at(268), "CLOUDHYP")
	return &SDT{Signature: "FACP", Revision: 6, OEMTableID: "CHFACP", Body: body}
}

// MADT structure types and flags (5.2.12).
const (
	madtLocalAPIC      = 0
	madtIOAPIC         = 1
	madtIntSrcOverride = 2
	madtLocalX2APIC    = 9
	madtEnabled        = 1 << 0
	madtOnlineCapable  = 1 << 1
	maxXAPICID         = 254
)

// MADT describes one local APIC per possible vCPU (enabled for the boot
// vCPUs, online-capable for the hot-pluggable rest), the IOAPIC with GSI
// base 0, and upstream's IRQ 4 -> GSI 4 source override. With x2apic, or
// when IDs exceed the xAPIC range, it uses Local x2APIC entries as current
// upstream does.
func MADT(bootCPUs, maxCPUs int, x2apic bool) (*SDT, error) {
	if bootCPUs < 1 || maxCPUs < bootCPUs {
		return nil, fmt.Errorf("MADT: %d boot of %d max vCPUs", bootCPUs, maxCPUs)
	}
	if maxCPUs-1 > maxXAPICID {
		x2apic = true
	}
	le := binary.LittleEndian
	body := le.AppendUint32(nil, APICAddress)
	body = le.AppendUint32(body, 0) // flags: no dual 8259
	for id := 0; id < maxCPUs; id++ {
		flags := uint32(madtOnlineCapable)
		if id < bootCPUs {
			flags = madtEnabled
		}
		if x2apic {
			body = append(body, madtLocalX2APIC, 16, 0, 0)
			body = le.AppendUint32(body, uint32(id))
			body = le.AppendUint32(body, flags)
			body = le.AppendUint32(body, uint32(id))
		} else {
			body = append(body, madtLocalAPIC, 8, byte(id), byte(id))
			body = le.AppendUint32(body, flags)
		}
	}
	body = append(body, madtIOAPIC, 12, 0, 0)
	body = le.AppendUint32(body, IOAPICAddress)
	body = le.AppendUint32(body, 0)
	body = append(body, madtIntSrcOverride, 10, 0, 4)
	body = le.AppendUint32(body, 4)
	body = le.AppendUint16(body, 0)
	return &SDT{Signature: "APIC", Revision: 5, OEMTableID: "CHMADT", Body: body}, nil
}

// MCFG describes the ECAM of segments 0 to n-1, bus 0 each, at
// consecutive MiBs of MMCONFIG, as upstream's create_mcfg_table (PCI
// Firmware spec 3.2, 4.1.2).
func MCFG(n int) *SDT {
	le := binary.LittleEndian
	body := make([]byte, 8) // reserved
	for seg := range n {
		body = le.AppendUint64(body, pci.ECAMBase(uint16(seg)))
		body = le.AppendUint16(body, uint16(seg))
		body = append(body, 0, 0) // start and end bus
		body = le.AppendUint32(body, 0)
	}
	return &SDT{Signature: "MCFG", Revision: 1, OEMTableID: "CHMCFG", Body: body}
}
