// Package vm is the x86-64 KVM machine behind vm.boot (upstream's Vm): it
// creates the KVM VM with an in-kernel irqchip, maps and registers guest
// RAM, writes ACPI and MP tables, loads the payload, places the legacy
// devices on the I/O bus at upstream's ports and runs one goroutine per
// vCPU. It implements vmm.Machine; Factory returns the vmm.MachineFactory
// the VMM process uses.
//
// Interrupt controller: the full in-kernel irqchip (KVM_CREATE_IRQCHIP:
// PIC, IOAPIC and LAPICs in the kernel) plus the in-kernel PIT
// (KVM_CREATE_PIT2). Upstream uses a split irqchip with a userspace IOAPIC;
// the in-kernel one needs no userspace device, routes GSIs 0-23 to IOAPIC
// pins 1:1 by default (the MP table and MADT describe exactly that) and
// keeps HLT and timer interrupts inside the kernel, which is the simplest
// and fastest choice until PCI MSI routing needs a userspace IOAPIC.
package vm
