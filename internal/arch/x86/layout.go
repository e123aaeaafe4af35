package x86

// Guest-physical memory layout. Mirrors Cloud Hypervisor's
// arch/src/x86_64/layout.rs so guests and firmware see the same addresses.
const (
	// BootGDTStart is where the boot GDT is written.
	BootGDTStart = 0x500
	// BootIDTStart is where the (empty) boot IDT is written.
	BootIDTStart = 0x520
	// PVHInfoStart is the address of hvm_start_info for PVH boot.
	PVHInfoStart = 0x6000
	// ModlistStart is the address of the hvm_modlist_entry array.
	ModlistStart = 0x6040
	// MemmapStart is the address of the PVH memory map table; it may share
	// the zero page's address because the two boot paths are exclusive.
	MemmapStart = 0x7000
	// ZeroPageStart is the address of the Linux boot_params ("zero page").
	ZeroPageStart = 0x7000
	// BootStackStart is the bottom of the boot CPU's initial stack page.
	BootStackStart = 0x8000
	// BootStackPointer is the boot CPU's initial RSP/RBP.
	BootStackPointer = 0x8ff0
	// PML4Start, PDPTEStart and PDEStart hold the identity page tables for
	// the 64-bit Linux entry (upstream regs.rs setup_page_tables).
	PML4Start  = 0x9000
	PDPTEStart = 0xa000
	PDEStart   = 0xb000
	// CmdlineStart is where the kernel command line is written.
	CmdlineStart = 0x20000
	// CmdlineMaxSize bounds the command line including its NUL.
	CmdlineMaxSize = 0x10000
	// MPTableStart is the last KiB of the 640 KiB base RAM.
	MPTableStart = 0x9fc00
	// EBDAStart is the start of the reserved area below 1 MiB.
	EBDAStart = 0xa0000
	// RSDPPointer is where the ACPI RSDP is written.
	RSDPPointer = EBDAStart
	// SMBIOSStart is the first address the SMBIOS spec allows.
	SMBIOSStart = 0xf0000
	// HighRAMStart is where the kernel is loaded (1 MiB).
	HighRAMStart = 0x100000

	// Mem32BitReservedStart starts the 32-bit hole (devices + MMCONFIG).
	Mem32BitReservedStart = 0xc000_0000
	// Mem32BitDevicesSize is the 32-bit PCI device window size (640 MiB).
	Mem32BitDevicesSize = 640 << 20
	// PCIMMConfigStart is the PCI MMCONFIG (ECAM) base, after the device window.
	PCIMMConfigStart = Mem32BitReservedStart + Mem32BitDevicesSize
	// PCIMMConfigSize covers 256 buses of ECAM space.
	PCIMMConfigSize = 256 << 20
	// Mem32BitReservedSize is the whole 32-bit hole.
	Mem32BitReservedSize = Mem32BitDevicesSize + PCIMMConfigSize
	// KVMTSSStart is the 3-page region KVM_SET_TSS_ADDR needs.
	KVMTSSStart = PCIMMConfigStart + PCIMMConfigSize
	// KVMTSSSize is three pages.
	KVMTSSSize = 3 * 4 << 10
	// KVMIdentityMapStart is the page for KVM_SET_IDENTITY_MAP_ADDR.
	KVMIdentityMapStart = KVMTSSStart + KVMTSSSize
	// KVMIdentityMapSize is one page.
	KVMIdentityMapSize = 4 << 10
	// IOAPICStart is the IOAPIC MMIO base.
	IOAPICStart = 0xfec0_0000
	// IOAPICSize is the IOAPIC MMIO window size.
	IOAPICSize = 0x20
	// APICStart is the local APIC MMIO base.
	APICStart = 0xfee0_0000
	// RAM64BitStart is where RAM continues above the 32-bit hole.
	RAM64BitStart = 0x1_0000_0000
)

// Region is a range of guest-physical addresses.
type Region struct {
	Start uint64
	Size  uint64
}

// End returns the first address after the region.
func (r Region) End() uint64 { return r.Start + r.Size }

// Contains reports whether [addr, addr+size) lies inside the region.
func (r Region) Contains(addr, size uint64) bool {
	return addr >= r.Start && size <= r.Size && addr-r.Start <= r.Size-size
}

// RAMRegions splits memSize bytes of guest RAM around the 32-bit hole the
// way upstream's arch_memory_regions does: RAM from 0 up to 3 GiB, the rest
// from 4 GiB.
func RAMRegions(memSize uint64) []Region {
	if memSize <= Mem32BitReservedStart {
		return []Region{{Start: 0, Size: memSize}}
	}
	return []Region{
		{Start: 0, Size: Mem32BitReservedStart},
		{Start: RAM64BitStart, Size: memSize - Mem32BitReservedStart},
	}
}
