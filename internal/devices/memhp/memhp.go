// Package memhp is the ACPI memory hotplug register block that Cloud
// Hypervisor exposes to x86-64 guests with memory.hotplug_method=acpi and
// a hotplug_size: upstream's MemoryManager as a bus device
// (vmm/src/memory_manager.rs, `impl BusDevice for MemoryManager`),
// MEMORY_MANAGER_ACPI_SIZE (0x18) bytes over Slots DIMM slots:
//
//	offset 0x00  write: SELECTION (byte 0: the slot the other registers refer to)
//	             read:  BASE low 32 bits of the selected slot (4-byte reads)
//	offset 0x04  read:  BASE high 32 bits
//	offset 0x08  read:  LENGTH low 32 bits
//	offset 0x0c  read:  LENGTH high 32 bits
//	offset 0x14  STATUS, any width, byte 0:
//	             bit 0 ENABLE     read: the slot holds RAM
//	             bit 1 INSERTING  read: plugged, not yet acknowledged; write 1: acknowledge
//	             bit 2 REMOVING   read: removal requested; write 1: acknowledge
//	             bit 3 EJECT      write 1: eject (not supported, as upstream: logged)
//
// Hot-add: the VMM maps and registers the RAM, calls Plug and raises the
// GED's MemoryDevicesChanged notification; the guest's \_SB_.MHPC.MSCN
// walks the slots, finds INSERTING, Notify()s the slot's PNP0C80 device,
// whose _CRS reads BASE and LENGTH, and acknowledges. Slots are used in
// order and never freed (upstream does not unplug ACPI memory).
package memhp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sync"
)

// Placement: upstream allocates the block from the platform MMIO area;
// Nimbus puts it at a fixed address, the page after the CPU hotplug block
// (cpuhp.Base 0xfeb0_2000), in the same free gap below the IOAPIC (see
// internal/devices/ged and internal/devices/pcihp).
const (
	Base = 0xfeb0_3000
	Size = 0x18 // MEMORY_MANAGER_ACPI_SIZE
)

// Slots is upstream's HOTPLUG_COUNT: DIMM slots M000 to M007.
const Slots = 8

// Register offsets and status bits (upstream's *_OFFSET and *_FLAG).
const (
	SelectionOffset  = 0x0
	BaseLowOffset    = 0x0
	BaseHighOffset   = 0x4
	LengthLowOffset  = 0x8
	LengthHighOffset = 0xc
	StatusOffset     = 0x14

	StatusEnabled   = 1 << 0
	StatusInserting = 1 << 1
	StatusRemoving  = 1 << 2
	StatusEject     = 1 << 3
)

// Errors of Plug, with upstream's texts (mm.rs Error::NoSlotAvailable).
var ErrNoSlot = errors.New("No ACPI slot available")

type slot struct {
	base, length                uint64
	active, inserting, removing bool
}

// Device is the register block. It is safe for concurrent use: vCPU
// threads call Read and Write while the control loop calls Plug.
type Device struct {
	mu       sync.Mutex
	log      *slog.Logger
	slots    [Slots]slot
	next     int // upstream's next_hotplug_slot
	selected int // upstream's selected_slot
}

// New returns the block with every slot empty, logging ignored accesses
// to log (nil: slog.Default).
func New(log *slog.Logger) *Device {
	if log == nil {
		log = slog.Default()
	}
	return &Device{log: log}
}

// Free returns how many slots are still empty.
func (d *Device) Free() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return Slots - d.next
}

// Plug puts RAM [base, base+length) in the next free slot, enabled and
// inserting (upstream's hotplug_ram_region), and returns the slot. The
// caller has mapped the RAM and raises the GED notification next.
func (d *Device) Plug(base, length uint64) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.next >= Slots {
		return 0, ErrNoSlot
	}
	if length == 0 || base+length < base {
		return 0, fmt.Errorf("memory hotplug: empty or wrapping range %#x+%#x", base, length)
	}
	n := d.next
	d.slots[n] = slot{base: base, length: length, active: true, inserting: true}
	d.next++
	return n, nil
}

// Status returns slot n's STATUS bits as the guest would read them.
func (d *Device) Status(n int) uint8 {
	d.mu.Lock()
	defer d.mu.Unlock()
	if n < 0 || n >= Slots {
		return 0
	}
	return d.slots[n].status()
}

func (s slot) status() uint8 {
	var v uint8
	if s.active {
		v |= StatusEnabled
	}
	if s.inserting {
		v |= StatusInserting
	}
	if s.removing {
		v |= StatusRemoving
	}
	return v
}

// Read implements bus.Device. BASE and LENGTH answer 4-byte reads, STATUS
// any width; other widths and offsets, and a selected slot out of range,
// are logged and read as zeros (upstream leaves the buffer as it was,
// which under KVM is whatever the kvm_run page held).
func (d *Device) Read(base, offset uint64, data []byte) {
	clear(data)
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.selected >= Slots {
		d.log.Warn("memory hotplug: out of range memory slot", "slot", d.selected)
		return
	}
	s := d.slots[d.selected]
	var v uint64
	switch offset {
	case BaseLowOffset, BaseHighOffset, LengthLowOffset, LengthHighOffset:
		if len(data) != 4 {
			d.log.Warn("memory hotplug: invalid sized read", "offset", fmt.Sprintf("%#x", offset), "len", len(data))
			return
		}
		v = s.base
		if offset >= LengthLowOffset {
			v = s.length
		}
		if offset == BaseHighOffset || offset == LengthHighOffset {
			v >>= 32
		}
		binary.LittleEndian.PutUint32(data, uint32(v))
	case StatusOffset:
		if len(data) > 0 {
			data[0] = s.status()
		}
	default:
		d.log.Warn("memory hotplug: unexpected offset", "offset", fmt.Sprintf("%#x", offset), "len", len(data))
	}
}

// Write implements bus.Device: byte 0 of a SELECTION write selects a
// slot; a STATUS write acknowledges INSERTING and REMOVING for the bits
// set. EJECT is logged and ignored, as upstream.
func (d *Device) Write(base, offset uint64, data []byte) {
	if len(data) == 0 {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	switch offset {
	case SelectionOffset:
		d.selected = int(data[0])
	case StatusOffset:
		if d.selected >= Slots {
			d.log.Warn("memory hotplug: out of range memory slot", "slot", d.selected)
			return
		}
		s := &d.slots[d.selected]
		if data[0]&StatusInserting != 0 {
			s.inserting = false
		}
		if data[0]&StatusRemoving != 0 {
			s.removing = false
		}
		if data[0]&StatusEject != 0 {
			d.log.Warn("memory hotplug: ejection of memory not currently supported", "slot", d.selected)
		}
	default:
		d.log.Warn("memory hotplug: unexpected offset", "offset", fmt.Sprintf("%#x", offset), "len", len(data))
	}
}
