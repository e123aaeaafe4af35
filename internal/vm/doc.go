// Package vm is the x86-64 KVM machine behind vm.boot (upstream's Vm): it
// creates the KVM VM with an in-kernel irqchip, maps and registers guest
// RAM, writes ACPI and MP tables, loads the payload, places the legacy
// devices on the I/O bus at upstream's ports and runs one goroutine per
// vCPU. It implements vmm.Machine, vmm.Hotplugger and vmm.CPUHotplugger;
// Factory returns the vmm.MachineFactory the VMM process uses.
//
// Build makes the machine without a payload (what restore will start
// from); LoadPayload adds the kernel, tables and boot registers. Every
// device and the resources it holds is registered in internal/devmgr,
// whose release functions are the one teardown path for failed adds, hot
// removal and shutdown. PCI and vCPU hotplug follow upstream's ACPI
// design: the GED notifies, the DSDT's PHPR/CPUS methods read the
// internal/devices/pcihp and cpuhp registers, and the guest's ejects come
// back to the control loop (Hotplugger.Ejected) to be released.
//
// Interrupt controller: the full in-kernel irqchip (KVM_CREATE_IRQCHIP:
// PIC, IOAPIC and LAPICs in the kernel) plus the in-kernel PIT
// (KVM_CREATE_PIT2). Upstream uses a split irqchip with a userspace IOAPIC;
// the in-kernel one needs no userspace device, routes GSIs 0-23 to IOAPIC
// pins 1:1 by default (the MP table and MADT describe exactly that) and
// keeps HLT and timer interrupts inside the kernel, which is the simplest
// and fastest choice until PCI MSI routing needs a userspace IOAPIC.
package vm
