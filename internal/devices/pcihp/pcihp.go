// Package pcihp is the ACPI PCI hotplug register block that Cloud
// Hypervisor exposes to guests: the BusDevice impl of upstream's
// DeviceManager (vmm/src/device_manager.rs, `impl BusDevice for
// DeviceManager`), DEVICE_MANAGER_ACPI_SIZE (0x10) bytes of four 32-bit
// little-endian registers:
//
//	offset 0x0  PCIU  read: slots plugged on the selected segment since the last read (then cleared)
//	offset 0x4  PCID  read: slots to be unplugged on the selected segment since the last read (then cleared)
//	offset 0x8  B0EJ  write: eject each set slot of the selected segment; reads as 0
//	offset 0xc  PSEG  read/write: the selected PCI segment
//
// The VMM calls Plug or Unplug, then raises the GED's PCIDevicesChanged
// notification (internal/devices/ged). The guest's GED handler calls
// \_SB_.PHPR.PSCN, which for each segment selects it in PSEG and has the
// bridge's PCNT method read PCIU and PCID and Notify each slot device
// (Device Check for PCIU bits, Eject Request for PCID bits). The guest's
// _EJ0 for a slot calls \_SB_.PHPR.PCEJ, which selects the segment and
// writes 1<<slot to B0EJ; that write calls the eject callback.
// internal/acpi (PCIHotplug) emits the matching AML.
//
// Only 4-byte accesses at exactly those offsets are handled, as upstream;
// anything else is logged and ignored (the AML's Field is DWordAcc).
package pcihp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math/bits"
	"sync"
)

// Placement. Upstream allocates the block from the platform MMIO area in
// the last MiB of the guest physical address space, so its address depends
// on the host's physical address width. Nimbus uses fixed addresses
// instead (see internal/devices/ged): Base is the page after the GED
// register (0xfeb0_0000, 1 byte), in the free gap of the 32-bit hole
// between the KVM identity-map page (0xf800_3000-0xf800_3fff) and the
// IOAPIC (0xfec0_0000); it is above the 32-bit PCI BAR window
// (0xc000_0000-0xe7ff_ffff) and MMCONFIG (0xe800_0000-0xf7ff_ffff), and a
// page of its own keeps the register blocks from ever sharing a page with
// another device.
const (
	Base = 0xfeb0_1000
	Size = 0x10 // DEVICE_MANAGER_ACPI_SIZE
)

// Register offsets and the one access width upstream accepts
// (PCIU_FIELD_OFFSET ... PSEG_FIELD_SIZE).
const (
	PCIUOffset = 0x0
	PCIDOffset = 0x4
	B0EJOffset = 0x8
	PSEGOffset = 0xc
	RegSize    = 4
)

// Slots is the number of device slots per segment (one bus, 32 devices).
const Slots = 32

// ErrRange reports a segment or slot outside the device.
var ErrRange = errors.New("pci hotplug slot out of range")

type segment struct {
	up, down uint32 // upstream's pci_devices_up / pci_devices_down
}

// Device is the register block. It is safe for concurrent use: vCPU
// threads call Read and Write while the control loop calls Plug and
// Unplug.
type Device struct {
	eject func(segment uint16, slot int)
	log   *slog.Logger

	mu       sync.Mutex
	segments []segment
	selected uint32 // upstream's selected_segment
}

// New returns the block for one PCI segment. eject is called, on the vCPU thread that wrote
// B0EJ and with no lock of the Device held, once per set bit of the
// written value, lowest slot first, with the segment selected at the time
// of the write: upstream's DeviceManager::eject_device. It must not block
// (hand the work to the control loop); it may call Plug and Unplug. A nil
// eject ignores ejections.
func New(eject func(segment uint16, slot int)) *Device {
	d, _ := NewSegments(1, eject)
	return d
}

// NewSegments is New for n PCI segments (1 to 65536); PSEG writes
// selecting a segment >= n are ignored, as upstream.
func NewSegments(n int, eject func(segment uint16, slot int)) (*Device, error) {
	if n < 1 || n > 1<<16 {
		return nil, fmt.Errorf("%w: %d segments", ErrRange, n)
	}
	return &Device{eject: eject, log: slog.Default(), segments: make([]segment, n)}, nil
}

// SetLogger replaces the logger (slog.Default by default) for ignored
// accesses and ejections.
func (d *Device) SetLogger(l *slog.Logger) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if l != nil {
		d.log = l
	}
}

func (d *Device) check(seg uint16, slot int) error {
	if int(seg) >= len(d.segments) || slot < 0 || slot >= Slots {
		return fmt.Errorf("%w: segment %d slot %d (%d segments, %d slots)", ErrRange, seg, slot, len(d.segments), Slots)
	}
	return nil
}

// Plug marks slot on segment as newly plugged (sets its PCIU bit), as
// upstream's add_device paths do. The caller then raises the GED's
// PCIDevicesChanged notification.
func (d *Device) Plug(seg uint16, slot int) error {
	if err := d.check(seg, slot); err != nil {
		return err
	}
	d.mu.Lock()
	d.segments[seg].up |= 1 << slot
	d.mu.Unlock()
	return nil
}

// Unplug asks the guest to release slot on segment (sets its PCID bit), as
// upstream's remove_device does. The device goes away when the guest
// ejects it through B0EJ. The caller then raises the GED's
// PCIDevicesChanged notification.
func (d *Device) Unplug(seg uint16, slot int) error {
	if err := d.check(seg, slot); err != nil {
		return err
	}
	d.mu.Lock()
	d.segments[seg].down |= 1 << slot
	d.mu.Unlock()
	return nil
}

// Pending returns the PCIU and PCID bits of segment not yet read by the
// guest (zero for a segment the device does not have).
func (d *Device) Pending(seg uint16) (up, down uint32) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if int(seg) >= len(d.segments) {
		return 0, 0
	}
	s := d.segments[seg]
	return s.up, s.down
}

// Selected returns the segment PSEG selects.
func (d *Device) Selected() uint16 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return uint16(d.selected)
}

// Read implements bus.Device. PCIU and PCID return the selected segment's
// bitmap and clear it; B0EJ reads as zero; PSEG returns the selected
// segment. An access of another width or at another offset is logged and
// leaves the state alone, as upstream; upstream also leaves the buffer
// alone, Nimbus zeroes it (as internal/devices/ged does) so the guest never
// reads stale bytes.
func (d *Device) Read(base, offset uint64, data []byte) {
	d.mu.Lock()
	defer d.mu.Unlock()
	var reg string
	switch offset {
	case PCIUOffset, PCIDOffset, B0EJOffset, PSEGOffset:
		reg = regName(offset)
	default:
		clear(data)
		d.log.Error("pci hotplug: read of unknown location", "base", hex(base), "offset", hex(offset), "len", len(data))
		return
	}
	if len(data) != RegSize {
		clear(data)
		d.log.Warn("pci hotplug: unexpected read width", "register", reg, "len", len(data))
		return
	}
	var v uint32
	switch offset {
	case PCIUOffset:
		s := &d.segments[d.selected]
		v, s.up = s.up, 0
	case PCIDOffset:
		s := &d.segments[d.selected]
		v, s.down = s.down, 0
	case B0EJOffset:
		// Ejection happens during the write, so nothing is ever pending.
	case PSEGOffset:
		v = d.selected
	}
	binary.LittleEndian.PutUint32(data, v)
}

// Write implements bus.Device. B0EJ ejects each set slot of the selected
// segment (calling the eject callback); PSEG selects a segment, ignoring
// one the device does not have. Other widths and offsets (including PCIU
// and PCID, which upstream does not decode for writes) are logged and
// ignored.
func (d *Device) Write(base, offset uint64, data []byte) {
	d.mu.Lock()
	switch offset {
	case B0EJOffset, PSEGOffset:
	default:
		d.log.Error("pci hotplug: write of unknown location", "base", hex(base), "offset", hex(offset), "len", len(data))
		d.mu.Unlock()
		return
	}
	if len(data) != RegSize {
		d.log.Warn("pci hotplug: unexpected write width", "register", regName(offset), "len", len(data))
		d.mu.Unlock()
		return
	}
	v := binary.LittleEndian.Uint32(data)
	if offset == PSEGOffset {
		if int(v) >= len(d.segments) || v >= 1<<16 {
			d.log.Error("pci hotplug: segment selection out of range", "segment", v, "segments", len(d.segments))
		} else {
			d.selected = v
		}
		d.mu.Unlock()
		return
	}
	seg, eject, log := uint16(d.selected), d.eject, d.log
	d.mu.Unlock()
	for v != 0 {
		slot := bits.TrailingZeros32(v)
		v &^= 1 << slot
		log.Info("pci hotplug: ejecting device", "segment", seg, "slot", slot)
		if eject != nil {
			eject(seg, slot)
		}
	}
}

func regName(offset uint64) string {
	switch offset {
	case PCIUOffset:
		return "PCIU"
	case PCIDOffset:
		return "PCID"
	case B0EJOffset:
		return "B0EJ"
	case PSEGOffset:
		return "PSEG"
	}
	return "unknown"
}

func hex(v uint64) string { return fmt.Sprintf("%#x", v) }
