// Package ged is the ACPI Generic Event Device notification register that
// Cloud Hypervisor exposes to x86-64 guests (devices/src/acpi.rs,
// AcpiGedDevice). The VMM sets notification bits and pulses the GED
// interrupt; the guest's GED driver (Linux drivers/acpi/evged.c) runs the
// DSDT's _EVT method, which reads the one-byte register at Base, which
// returns the pending bits and clears them, and Notify()s the devices they
// name (for the power button, Notify(\_SB_.PWRB, 0x80)).
// internal/acpi (Config.GED) emits the matching AML.
package ged

import (
	"errors"
	"fmt"
	"sync"

	"github.com/nimbus-vmm/nimbus/internal/devices"
)

// Placement. Upstream allocates the register (GED_DEVICE_ACPI_SIZE = 1
// byte) from the platform MMIO area in the last MiB of the guest physical
// address space, so its address depends on the host's physical address
// width; Nimbus uses a fixed address in the free gap of the 32-bit hole
// between the KVM identity-map page and the IOAPIC, so the DSDT is the
// same on every host. The IRQ is upstream's: the first legacy IRQ its
// allocator hands out on x86-64 (X86_64_IRQ_BASE = 5), which GED takes
// before anything else allocates one (COM1 uses the fixed IRQ 4).
const (
	Base = 0xfeb0_0000
	Size = 1
	IRQ  = 5
)

// Notification is the bit set the register reports (upstream's
// AcpiNotificationFlags in devices/src/lib.rs).
type Notification uint8

// Notification bits, in the order the DSDT's ESCN method tests them.
const (
	NoDevicesChanged     Notification = 0
	CPUDevicesChanged    Notification = 1 << 0
	MemoryDevicesChanged Notification = 1 << 1
	PCIDevicesChanged    Notification = 1 << 2
	PowerButtonChanged   Notification = 1 << 3
)

// ErrNotify reports a notification that could not be delivered.
var ErrNotify = errors.New("ged notification")

// Device is the GED register. It is safe for concurrent use: Notify runs
// on the VMM's control loop while Read runs on vCPU threads.
type Device struct {
	irq devices.IRQ

	mu      sync.Mutex
	pending Notification
}

// New returns a device that pulses irq (the VM's edge-triggered line for
// IRQ) on every notification.
func New(irq devices.IRQ) *Device { return &Device{irq: irq} }

// Notify adds n to the pending bits and triggers the interrupt, as
// upstream's AcpiGedDevice::notify does. The bits stay pending (and are
// reported on the next read) even if the trigger fails.
func (d *Device) Notify(n Notification) error {
	d.mu.Lock()
	d.pending |= n
	d.mu.Unlock()
	if d.irq == nil {
		return fmt.Errorf("%w: no interrupt line", ErrNotify)
	}
	if err := d.irq.Trigger(); err != nil {
		return fmt.Errorf("%w: triggering IRQ: %w", ErrNotify, err)
	}
	return nil
}

// PowerButton is Notify(PowerButtonChanged), what vm.power-button does.
func (d *Device) PowerButton() error { return d.Notify(PowerButtonChanged) }

// Pending returns the bits not yet read by the guest.
func (d *Device) Pending() Notification {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.pending
}

// Read implements bus.Device. A one-byte read returns the pending bits and
// clears them, whatever the offset (upstream ignores it too). Upstream
// logs and leaves the buffer alone on other widths; Nimbus zeroes it so a
// guest never sees stale bytes, and the bits stay pending.
func (d *Device) Read(base, offset uint64, data []byte) {
	if len(data) != 1 {
		clear(data)
		return
	}
	d.mu.Lock()
	data[0] = byte(d.pending)
	d.pending = NoDevicesChanged
	d.mu.Unlock()
}

// Write implements bus.Device: the register is read-only, as upstream
// (whose BusDevice default write ignores the access).
func (d *Device) Write(base, offset uint64, data []byte) {}
