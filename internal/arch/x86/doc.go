// Package x86 holds the byte-level x86-64 machine setup that needs no KVM:
// the guest-physical memory layout, the boot GDT/IDT, identity page tables
// and the Intel MP table. The values the vCPU register code needs (CR0/CR3/
// CR4/EFER, GDT/IDT bases, segment descriptors) are returned as plain
// structs so that code only converts them to KVM's structures.
package x86
