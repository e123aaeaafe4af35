package kvm

import "testing"

// Expected request numbers as the C preprocessor computes them from
// <linux/kvm.h> on x86-64 (cross-checked with gVisor's kvm_const.go and
// crosvm's kvm_sys bindings for the ones they list).
func TestIoctlNumbers(t *testing.T) {
	for _, c := range []struct {
		name string
		got  uintptr
		want uintptr
	}{
		{"KVM_GET_API_VERSION", kvmGetAPIVersion, 0xae00},
		{"KVM_CREATE_VM", kvmCreateVM, 0xae01},
		{"KVM_GET_MSR_INDEX_LIST", kvmGetMSRIndexList, 0xc004ae02},
		{"KVM_CHECK_EXTENSION", kvmCheckExtension, 0xae03},
		{"KVM_GET_VCPU_MMAP_SIZE", kvmGetVcpuMmapSize, 0xae04},
		{"KVM_GET_SUPPORTED_CPUID", kvmGetSupportedCPUID, 0xc008ae05},
		{"KVM_CREATE_VCPU", kvmCreateVcpu, 0xae41},
		{"KVM_GET_DIRTY_LOG", kvmGetDirtyLog, 0x4010ae42},
		{"KVM_SET_USER_MEMORY_REGION", kvmSetUserMemoryRegion, 0x4020ae46},
		{"KVM_SET_TSS_ADDR", kvmSetTSSAddr, 0xae47},
		{"KVM_SET_IDENTITY_MAP_ADDR", kvmSetIdentityMapAddr, 0x4008ae48},
		{"KVM_CREATE_IRQCHIP", kvmCreateIRQChip, 0xae60},
		{"KVM_IRQ_LINE", kvmIRQLine, 0x4008ae61},
		{"KVM_SET_GSI_ROUTING", kvmSetGSIRouting, 0x4008ae6a},
		{"KVM_IRQFD", kvmIRQFD, 0x4020ae76},
		{"KVM_CREATE_PIT2", kvmCreatePIT2, 0x4040ae77},
		{"KVM_IOEVENTFD", kvmIOEventFD, 0x4040ae79},
		{"KVM_SET_CLOCK", kvmSetClock, 0x4030ae7b},
		{"KVM_GET_CLOCK", kvmGetClock, 0x8030ae7c},
		{"KVM_SET_TSC_KHZ", kvmSetTSCKHz, 0xaea2},
		{"KVM_GET_TSC_KHZ", kvmGetTSCKHz, 0xaea3},
		{"KVM_ENABLE_CAP", kvmEnableCap, 0x4068aea3},
		{"KVM_SIGNAL_MSI", kvmSignalMSI, 0x4020aea5},
		{"KVM_RUN", kvmRun, 0xae80},
		{"KVM_GET_REGS", kvmGetRegs, 0x8090ae81},
		{"KVM_SET_REGS", kvmSetRegs, 0x4090ae82},
		{"KVM_GET_SREGS", kvmGetSregs, 0x8138ae83},
		{"KVM_SET_SREGS", kvmSetSregs, 0x4138ae84},
		{"KVM_GET_MSRS", kvmGetMSRs, 0xc008ae88},
		{"KVM_SET_MSRS", kvmSetMSRs, 0x4008ae89},
		{"KVM_GET_FPU", kvmGetFPU, 0x81a0ae8c},
		{"KVM_SET_FPU", kvmSetFPU, 0x41a0ae8d},
		{"KVM_GET_LAPIC", kvmGetLAPIC, 0x8400ae8e},
		{"KVM_SET_LAPIC", kvmSetLAPIC, 0x4400ae8f},
		{"KVM_SET_CPUID2", kvmSetCPUID2, 0x4008ae90},
		{"KVM_GET_MP_STATE", kvmGetMPState, 0x8004ae98},
		{"KVM_SET_MP_STATE", kvmSetMPState, 0x4004ae99},
		{"KVM_NMI", kvmNMI, 0xae9a},
		{"KVM_GET_VCPU_EVENTS", kvmGetVcpuEvents, 0x8040ae9f},
		{"KVM_SET_VCPU_EVENTS", kvmSetVcpuEvents, 0x4040aea0},
		{"KVM_GET_DEBUGREGS", kvmGetDebugRegs, 0x8080aea1},
		{"KVM_SET_DEBUGREGS", kvmSetDebugRegs, 0x4080aea2},
		{"KVM_GET_XSAVE", kvmGetXSave, 0x9000aea4},
		{"KVM_SET_XSAVE", kvmSetXSave, 0x5000aea5},
		{"KVM_GET_XCRS", kvmGetXCRs, 0x8188aea6},
		{"KVM_SET_XCRS", kvmSetXCRs, 0x4188aea7},
		{"KVM_GET_IRQCHIP", kvmGetIRQChip, 0xc208ae62},
		{"KVM_SET_IRQCHIP", kvmSetIRQChip, 0x8208ae63},
		{"KVM_GET_PIT2", kvmGetPIT2, 0x8070ae9f},
		{"KVM_SET_PIT2", kvmSetPIT2, 0x4070aea0},
	} {
		if c.got != c.want {
			t.Errorf("%s = %#x, want %#x", c.name, c.got, c.want)
		}
	}
}
