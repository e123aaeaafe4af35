package x86

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Intel MultiProcessor Specification 1.4 structures, as Linux's
// arch/x86/include/asm/mpspec_def.h lays them out, filled in the way
// upstream's arch/src/x86_64/mptable.rs does.

// MP table entry types and flags (mpspec_def.h).
const (
	mpProcessor = 0
	mpBus       = 1
	mpIOAPIC    = 2
	mpIntSrc    = 3
	mpLintSrc   = 4

	cpuEnabled       = 1
	cpuBootProcessor = 2
	mpcAPICUsable    = 1

	mpINT    = 0
	mpNMI    = 1
	mpExtINT = 3

	apicVersion    = 0x14
	cpuStepping    = 0x600
	cpuFeatureAPIC = 0x200
	cpuFeatureFPU  = 0x001

	mpfIntelSize = 16
	mpcTableSize = 44
	mpcCPUSize   = 20
	mpcEntrySize = 8 // bus, ioapic, intsrc, lintsrc
)

// MaxMPCPUs is the xAPIC limit: 255 IDs, one taken by the IOAPIC.
const MaxMPCPUs = 254

// ErrMPTable reports an MP table that cannot be built or placed.
var ErrMPTable = errors.New("mp table")

// MPTableSize is the size of the table for n CPUs.
func MPTableSize(n int) int {
	return mpfIntelSize + mpcTableSize + mpcCPUSize*n + 2*mpcEntrySize + 16*mpcEntrySize + 2*mpcEntrySize
}

func checksum(b []byte) byte {
	var s byte
	for _, c := range b {
		s += c
	}
	return -s
}

// MPTable builds the floating pointer and configuration table for numCPUs
// processors, placed at base: APIC IDs 0..n-1, the ISA bus, the IOAPIC with
// ID n+1, ISA IRQs 0-15 routed 1:1 to IOAPIC pins (as KVM's default
// routing), ExtINT on LINT0 and NMI on LINT1.
func MPTable(base uint64, numCPUs int) ([]byte, error) {
	if numCPUs < 1 || numCPUs > MaxMPCPUs {
		return nil, fmt.Errorf("%w: %d CPUs, want 1..%d", ErrMPTable, numCPUs, MaxMPCPUs)
	}
	b := make([]byte, MPTableSize(numCPUs))
	le := binary.LittleEndian
	ioapicID := byte(numCPUs + 1)

	// MP floating pointer structure.
	copy(b[0:], "_MP_")
	le.PutUint32(b[4:], uint32(base+mpfIntelSize))
	b[8] = 1 // length in 16-byte units
	b[9] = 4 // spec revision 1.4
	b[10] = checksum(b[:mpfIntelSize])

	tbl := b[mpfIntelSize:]
	off := mpcTableSize
	for id := 0; id < numCPUs; id++ {
		e := tbl[off : off+mpcCPUSize]
		e[0] = mpProcessor
		e[1] = byte(id)
		e[2] = apicVersion
		e[3] = cpuEnabled
		if id == 0 {
			e[3] |= cpuBootProcessor
		}
		le.PutUint32(e[4:], cpuStepping)
		le.PutUint32(e[8:], cpuFeatureAPIC|cpuFeatureFPU)
		off += mpcCPUSize
	}
	e := tbl[off : off+8]
	e[0], e[1] = mpBus, 0
	copy(e[2:], "ISA   ")
	off += 8
	e = tbl[off : off+8]
	e[0], e[1], e[2], e[3] = mpIOAPIC, ioapicID, apicVersion, mpcAPICUsable
	le.PutUint32(e[4:], IOAPICStart)
	off += 8
	for irq := byte(0); irq < 16; irq++ {
		e = tbl[off : off+8]
		e[0], e[1] = mpIntSrc, mpINT // irqflag (e[2:4]) 0 = bus default
		e[4], e[5], e[6], e[7] = 0, irq, ioapicID, irq
		off += 8
	}
	e = tbl[off : off+8]
	e[0], e[1] = mpLintSrc, mpExtINT
	e[4], e[5], e[6], e[7] = 0, 0, 0, 0
	off += 8
	e = tbl[off : off+8]
	e[0], e[1] = mpLintSrc, mpNMI
	e[4], e[5], e[6], e[7] = 0, 0, 0xff, 1 // all local APICs, LINT1
	off += 8

	// Configuration table header.
	copy(tbl[0:], "PCMP")
	le.PutUint16(tbl[4:], uint16(off))
	tbl[6] = 4
	copy(tbl[8:], "FC      ")
	copy(tbl[16:], "000000000000")
	le.PutUint32(tbl[36:], APICStart)
	tbl[7] = checksum(tbl[:off])
	return b, nil
}

// WriteMPTable writes the MP table at MPTableStart. Unlike upstream, which
// only refuses tables reaching 1 MiB, it refuses tables that would run into
// the EBDA at 0xa0000 where the ACPI RSDP lives (more than 40 CPUs); with
// ACPI the guest does not need the MP table, so callers may ignore
// ErrMPTable then.
func WriteMPTable(mem io.WriterAt, numCPUs int) error {
	b, err := MPTable(MPTableStart, numCPUs)
	if err != nil {
		return err
	}
	if MPTableStart+uint64(len(b)) > EBDAStart {
		return fmt.Errorf("%w: %d CPUs need %d bytes, more than fit below %#x", ErrMPTable, numCPUs, len(b), EBDAStart)
	}
	return writeAt(mem, b, MPTableStart, "MP table")
}
