package kvm

import (
	"encoding/binary"
	"fmt"
)

// Architecture-independent structs from <linux/kvm.h>. Field order, sizes
// and padding match the C structs exactly (checked in abi_unsafe_test.go),
// so a pointer to one is passed to the kernel as is.

// Memory region flags (KVM_MEM_*).
const (
	MemLogDirtyPages = 1 << 0
	MemReadonly      = 1 << 1
)

// UserspaceMemoryRegion mirrors struct kvm_userspace_memory_region.
type UserspaceMemoryRegion struct {
	Slot          uint32
	Flags         uint32
	GuestPhysAddr uint64
	MemorySize    uint64 // bytes; 0 deletes the slot
	UserspaceAddr uint64 // host virtual address of the backing memory
}

// irqLevel mirrors struct kvm_irq_level.
type irqLevel struct {
	IRQ   uint32 // union { irq; status }
	Level uint32
}

// PitConfig mirrors struct kvm_pit_config.
type PitConfig struct {
	Flags uint32
	_     [15]uint32
}

// PitSpeakerDummy is KVM_PIT_SPEAKER_DUMMY: emulate port 0x61 as a dummy
// speaker.
const PitSpeakerDummy = 1

// IRQFD flags (KVM_IRQFD_FLAG_*).
const (
	IRQFDDeassign = 1 << 0
	IRQFDResample = 1 << 1
)

// IRQFD mirrors struct kvm_irqfd.
type IRQFD struct {
	FD         uint32
	GSI        uint32
	Flags      uint32
	ResampleFD uint32
	_          [16]uint8
}

// IOEventFD flags (KVM_IOEVENTFD_FLAG_*).
const (
	IOEventFDDatamatch = 1 << 0
	IOEventFDPIO       = 1 << 1
	IOEventFDDeassign  = 1 << 2
)

// IOEventFD mirrors struct kvm_ioeventfd.
type IOEventFD struct {
	Datamatch uint64
	Addr      uint64 // port (with IOEventFDPIO) or guest-physical address
	Len       uint32 // 1, 2, 4 or 8; 0 matches any length
	FD        int32
	Flags     uint32
	_         [36]uint8
}

// ClockData mirrors struct kvm_clock_data (Linux 5.17+ layout; older
// kernels treat the realtime/host_tsc words as padding).
type ClockData struct {
	Clock    uint64 // kvmclock nanoseconds
	Flags    uint32
	_        uint32
	Realtime uint64
	HostTSC  uint64
	_        [4]uint32
}

// MSI flags.
const MSIValidDevID = 1 << 0

// MSI mirrors struct kvm_msi.
type MSI struct {
	AddressLo uint32
	AddressHi uint32
	Data      uint32
	Flags     uint32
	DevID     uint32
	_         [12]uint8
}

// EnableCap mirrors struct kvm_enable_cap.
type EnableCap struct {
	Cap   Cap
	Flags uint32
	Args  [4]uint64
	_     [64]uint8
}

// dirtyLog mirrors struct kvm_dirty_log; Bitmap is a user pointer.
type dirtyLog struct {
	Slot   uint32
	_      uint32
	Bitmap uint64
}

// GSI routing entry types (KVM_IRQ_ROUTING_*).
const (
	IRQRoutingIRQChip = 1
	IRQRoutingMSI     = 2
)

// In-kernel irqchip ids for IRQ routing (KVM_IRQCHIP_*).
const (
	IRQChipPICMaster = 0
	IRQChipPICSlave  = 1
	IRQChipIOAPIC    = 2
)

// IRQRoutingEntry mirrors struct kvm_irq_routing_entry (48 bytes). U holds
// the union as 32-bit words: for IRQRoutingIRQChip {irqchip, pin}; for
// IRQRoutingMSI {address_lo, address_hi, data, devid}.
type IRQRoutingEntry struct {
	GSI   uint32
	Type  uint32
	Flags uint32
	_     uint32
	U     [8]uint32
}

// IRQChipRoute returns a routing entry sending gsi to pin of an in-kernel
// irqchip.
func IRQChipRoute(gsi, chip, pin uint32) IRQRoutingEntry {
	return IRQRoutingEntry{GSI: gsi, Type: IRQRoutingIRQChip, U: [8]uint32{chip, pin}}
}

// MSIRoute returns a routing entry sending gsi as an MSI message.
func MSIRoute(gsi uint32, addr uint64, data uint32) IRQRoutingEntry {
	return IRQRoutingEntry{GSI: gsi, Type: IRQRoutingMSI, U: [8]uint32{uint32(addr), uint32(addr >> 32), data}}
}

const sizeofIRQRoutingEntry = 48

// IRQRouting is the table set by KVM_SET_GSI_ROUTING (struct
// kvm_irq_routing with its trailing entries).
type IRQRouting []IRQRoutingEntry

// MarshalBinary encodes the header {nr, flags} followed by the entries.
func (r IRQRouting) MarshalBinary() ([]byte, error) {
	b := make([]byte, sizeofIRQRouting+len(r)*sizeofIRQRoutingEntry)
	le := binary.LittleEndian
	le.PutUint32(b[0:], uint32(len(r)))
	for i, e := range r {
		o := b[sizeofIRQRouting+i*sizeofIRQRoutingEntry:]
		le.PutUint32(o[0:], e.GSI)
		le.PutUint32(o[4:], e.Type)
		le.PutUint32(o[8:], e.Flags)
		for j, w := range e.U {
			le.PutUint32(o[16+4*j:], w)
		}
	}
	return b, nil
}

// MSREntry mirrors struct kvm_msr_entry.
type MSREntry struct {
	Index uint32
	_     uint32
	Data  uint64
}

const sizeofMSREntry = 16

// MSRs is the payload of KVM_GET_MSRS/KVM_SET_MSRS (struct kvm_msrs with
// its trailing entries).
type MSRs []MSREntry

// MarshalBinary encodes the header {nmsrs, pad} followed by the entries.
func (m MSRs) MarshalBinary() ([]byte, error) {
	b := make([]byte, sizeofMSRs+len(m)*sizeofMSREntry)
	le := binary.LittleEndian
	le.PutUint32(b, uint32(len(m)))
	for i, e := range m {
		o := b[sizeofMSRs+i*sizeofMSREntry:]
		le.PutUint32(o[0:], e.Index)
		le.PutUint64(o[8:], e.Data)
	}
	return b, nil
}

// UnmarshalBinary decodes a struct kvm_msrs; it keeps the first nmsrs
// entries.
func (m *MSRs) UnmarshalBinary(b []byte) error {
	if len(b) < sizeofMSRs {
		return fmt.Errorf("kvm_msrs: %d bytes: %w", len(b), ErrInvalidArgument)
	}
	n := int(binary.LittleEndian.Uint32(b))
	if len(b) < sizeofMSRs+n*sizeofMSREntry {
		return fmt.Errorf("kvm_msrs: %d entries in %d bytes: %w", n, len(b), ErrInvalidArgument)
	}
	out := make(MSRs, n)
	for i := range out {
		o := b[sizeofMSRs+i*sizeofMSREntry:]
		out[i] = MSREntry{Index: binary.LittleEndian.Uint32(o), Data: binary.LittleEndian.Uint64(o[8:])}
	}
	*m = out
	return nil
}
