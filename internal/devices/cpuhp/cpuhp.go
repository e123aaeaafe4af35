// Package cpuhp is the ACPI CPU hotplug register block that Cloud
// Hypervisor exposes to x86-64 guests: upstream's AcpiCpuHotplugController
// (vmm/src/cpu.rs, `impl BusDevice for AcpiCpuHotplugController`, which
// shares CpuManager's vCPU states), CPU_MANAGER_ACPI_SIZE (0xc) bytes:
//
//	offset 0x0  CPU_SELECTION  32-bit: the vCPU the status register refers to
//	offset 0x4  CPU_STATUS     8-bit, for the selected vCPU:
//	            bit 0 CPU_ENABLE     read: the vCPU is present (running)
//	            bit 1 CPU_INSERTING  read: hot-added, not yet acknowledged; write 1: acknowledge
//	            bit 2 CPU_REMOVING   read: removal requested, not yet acknowledged; write 1: acknowledge
//	            bit 3 CPU_EJECT      write 1: eject the vCPU
//
// The AML (internal/acpi, CPUHotplug) also names a CCMD byte at 0x5 and a
// CDAT dword at 0x8 in its Fields; upstream decodes neither, and neither
// does this device.
//
// Hot-add: the VMM starts the vCPU, calls Insert and raises the GED's
// CPUDevicesChanged notification; the guest's \_SB_.CPUS.CSCN walks every
// vCPU, finds CPU_INSERTING, Notify()s the processor device (Device Check)
// and acknowledges. Hot-remove: the VMM calls Remove and notifies; CSCN
// finds CPU_REMOVING, sends an Eject Request and acknowledges; when the
// guest has offlined the vCPU its _EJ0 writes CPU_EJECT, which marks the
// vCPU absent and calls the eject callback so that the VMM stops it.
package cpuhp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sync"
)

// Placement: upstream allocates the block from the platform MMIO area;
// Nimbus puts it at a fixed address (see internal/devices/ged and
// internal/devices/pcihp), the page after the PCI hotplug block
// (pcihp.Base 0xfeb0_1000), in the same free gap below the IOAPIC.
const (
	Base = 0xfeb0_2000
	Size = 0xc // CPU_MANAGER_ACPI_SIZE
)

// Register offsets (CPU_SELECTION_OFFSET, CPU_STATUS_OFFSET) and status
// bits (CPU_ENABLE_FLAG ... CPU_EJECT_FLAG).
const (
	SelectionOffset = 0x0
	StatusOffset    = 0x4

	StatusEnabled   = 1 << 0
	StatusInserting = 1 << 1
	StatusRemoving  = 1 << 2
	StatusEject     = 1 << 3
)

// MaxCPUs bounds the vCPU count: the AML names processor devices C000 to
// CFFF.
const MaxCPUs = 0x1000

// ErrRange reports a vCPU index outside the device.
var ErrRange = errors.New("cpu hotplug: vCPU out of range")

type cpuState struct {
	present, inserting, removing bool
}

// Device is the register block. It is safe for concurrent use: vCPU
// threads call Read and Write while the control loop calls Insert, Remove
// and SetPresent.
type Device struct {
	eject func(cpu int)

	mu       sync.Mutex
	log      *slog.Logger
	cpus     []cpuState
	selected uint32 // upstream's selected_cpu; any value may be written
}

// New returns the block for maxCPUs vCPUs (1 to MaxCPUs), none of them
// present: mark the boot vCPUs with SetPresent. eject is called when the
// guest writes CPU_EJECT for a present vCPU, after the vCPU has been
// marked absent, on the vCPU thread that wrote it and with no lock of the
// Device held. Upstream stops and joins the vCPU thread right there; eject
// must not block (hand the work to the control loop, which stops the vCPU
// asynchronously); it may call the Device's methods. A nil eject only
// marks the vCPU absent.
func New(maxCPUs int, eject func(cpu int)) (*Device, error) {
	if maxCPUs < 1 || maxCPUs > MaxCPUs {
		return nil, fmt.Errorf("%w: %d vCPUs (1 to %d)", ErrRange, maxCPUs, MaxCPUs)
	}
	return &Device{eject: eject, log: slog.Default(), cpus: make([]cpuState, maxCPUs)}, nil
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

func (d *Device) state(cpu int) (*cpuState, error) {
	if cpu < 0 || cpu >= len(d.cpus) {
		return nil, fmt.Errorf("%w: vCPU %d of %d", ErrRange, cpu, len(d.cpus))
	}
	return &d.cpus[cpu], nil
}

// SetPresent sets whether cpu is running, without an insertion event:
// upstream's VcpuState::active (a vCPU thread exists). Use it for the boot
// vCPUs.
func (d *Device) SetPresent(cpu int, present bool) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	s, err := d.state(cpu)
	if err != nil {
		return err
	}
	s.present = present
	return nil
}

// Insert marks cpu present and inserting, as upstream's
// activate_vcpus(inserting: true) does for a hot-added vCPU. The caller
// starts the vCPU and then raises the GED's CPUDevicesChanged notification.
func (d *Device) Insert(cpu int) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	s, err := d.state(cpu)
	if err != nil {
		return err
	}
	s.present, s.inserting = true, true
	return nil
}

// Remove marks cpu for removal, as upstream's mark_vcpus_for_removal: the
// vCPU keeps running until the guest ejects it. The caller then raises the
// GED's CPUDevicesChanged notification.
func (d *Device) Remove(cpu int) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	s, err := d.state(cpu)
	if err != nil {
		return err
	}
	s.removing = true
	return nil
}

// Status returns cpu's CPU_STATUS bits as the guest would read them (0 for
// an index outside the device).
func (d *Device) Status(cpu int) uint8 {
	d.mu.Lock()
	defer d.mu.Unlock()
	if cpu < 0 || cpu >= len(d.cpus) {
		return 0
	}
	return d.cpus[cpu].status()
}

func (s cpuState) status() uint8 {
	var v uint8
	if s.present {
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

// Read implements bus.Device. As upstream, the buffer is zeroed first
// (Linux does not zero it), CPU_SELECTION answers 4-byte reads and
// CPU_STATUS 1-byte reads (0 if the selected vCPU is out of range); other
// widths and offsets are logged and read as zeros.
func (d *Device) Read(base, offset uint64, data []byte) {
	clear(data)
	d.mu.Lock()
	defer d.mu.Unlock()
	switch offset {
	case SelectionOffset:
		if len(data) != 4 {
			d.log.Warn("cpu hotplug: invalid sized read of CPU selection register", "len", len(data))
			return
		}
		binary.LittleEndian.PutUint32(data, d.selected)
	case StatusOffset:
		if len(data) != 1 {
			d.log.Warn("cpu hotplug: invalid sized read of CPU status register", "len", len(data))
			return
		}
		if d.selected >= uint32(len(d.cpus)) {
			d.log.Warn("cpu hotplug: out of range vCPU id", "cpu", d.selected)
			return
		}
		data[0] = d.cpus[d.selected].status()
	default:
		d.log.Warn("cpu hotplug: unexpected offset", "offset", fmt.Sprintf("%#x", offset), "len", len(data))
	}
}

// Write implements bus.Device. A 4-byte CPU_SELECTION write selects a vCPU
// (any value; an out-of-range one makes status accesses no-ops). A 1-byte
// CPU_STATUS write acknowledges CPU_INSERTING and CPU_REMOVING for the bits
// set, and CPU_EJECT ejects the vCPU if it is present. Other widths and
// offsets are logged and ignored.
func (d *Device) Write(base, offset uint64, data []byte) {
	d.mu.Lock()
	switch offset {
	case SelectionOffset:
		if len(data) != 4 {
			d.log.Warn("cpu hotplug: invalid sized write of CPU selection register", "len", len(data))
		} else {
			d.selected = binary.LittleEndian.Uint32(data)
		}
		d.mu.Unlock()
		return
	case StatusOffset:
	default:
		d.log.Warn("cpu hotplug: unexpected offset", "offset", fmt.Sprintf("%#x", offset), "len", len(data))
		d.mu.Unlock()
		return
	}
	if len(data) != 1 {
		d.log.Warn("cpu hotplug: invalid sized write of CPU status register", "len", len(data))
		d.mu.Unlock()
		return
	}
	if d.selected >= uint32(len(d.cpus)) {
		d.log.Warn("cpu hotplug: out of range vCPU id", "cpu", d.selected)
		d.mu.Unlock()
		return
	}
	cpu := int(d.selected)
	s := &d.cpus[cpu]
	v := data[0]
	if v&StatusInserting != 0 {
		s.inserting = false
	}
	if v&StatusRemoving != 0 {
		s.removing = false
	}
	// Upstream's remove_vcpu stops and joins the thread if there is one and
	// does nothing otherwise; the vCPU is no longer active afterwards.
	ejected := v&StatusEject != 0 && s.present
	if ejected {
		s.present = false
	}
	eject, log := d.eject, d.log
	d.mu.Unlock()
	if ejected {
		log.Info("cpu hotplug: removing vCPU", "cpu", cpu)
		if eject != nil {
			eject(cpu)
		}
	}
}

// Max is the number of vCPUs the block describes (max_vcpus).
func (d *Device) Max() int { return len(d.cpus) }
