package x86

import "github.com/nimbus-vmm/nimbus/internal/kvm"

// MSR indexes (Linux arch/x86/include/asm/msr-index.h).
const (
	MSRIA32TSC         = 0x10
	MSRIA32SysenterCS  = 0x174
	MSRIA32SysenterESP = 0x175
	MSRIA32SysenterEIP = 0x176
	MSRIA32MiscEnable  = 0x1a0
	MSRMTRRDefType     = 0x2ff
	MSRStar            = 0xc000_0081
	MSRLStar           = 0xc000_0082
	MSRCStar           = 0xc000_0083
	MSRSyscallMask     = 0xc000_0084
	MSRKernelGSBase    = 0xc000_0102
	MiscEnableFastStr  = 1 << 0
	MTRRDefTypeEnable  = 1 << 11
	MTRRMemTypeWB      = 6
)

// BootMSRs are the MSR values every vCPU starts with (upstream
// arch/src/x86_64/regs.rs boot_msr_entries): syscall MSRs cleared, TSC 0,
// fast strings enabled and write-back as the default memory type.
func BootMSRs() kvm.MSRs {
	return kvm.MSRs{
		{Index: MSRIA32SysenterCS},
		{Index: MSRIA32SysenterESP},
		{Index: MSRIA32SysenterEIP},
		{Index: MSRStar},
		{Index: MSRCStar},
		{Index: MSRKernelGSBase},
		{Index: MSRSyscallMask},
		{Index: MSRLStar},
		{Index: MSRIA32TSC},
		{Index: MSRIA32MiscEnable, Data: MiscEnableFastStr},
		{Index: MSRMTRRDefType, Data: MTRRDefTypeEnable | MTRRMemTypeWB},
	}
}
