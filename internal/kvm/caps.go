package kvm

import "fmt"

// Cap is a KVM capability number (KVM_CAP_* in <linux/kvm.h>), queried
// with KVM_CHECK_EXTENSION.
type Cap uint32

// Capabilities this package's callers check. Values from <linux/kvm.h>.
const (
	CapIRQChip            Cap = 0
	CapHLT                Cap = 1
	CapUserMemory         Cap = 3
	CapSetTSSAddr         Cap = 4
	CapExtCPUID           Cap = 7
	CapNrVcpus            Cap = 9
	CapNrMemslots         Cap = 10
	CapPIT                Cap = 11
	CapMPState            Cap = 14
	CapSyncMMU            Cap = 16
	CapUserNMI            Cap = 22
	CapIRQRouting         Cap = 25
	CapIRQInjectStatus    Cap = 26
	CapIRQFD              Cap = 32
	CapPIT2               Cap = 33
	CapIOEventFD          Cap = 36
	CapSetIdentityMapAddr Cap = 37
	CapAdjustClock        Cap = 39
	CapVcpuEvents         Cap = 41
	CapDebugRegs          Cap = 50
	CapEnableCap          Cap = 54
	CapXSave              Cap = 55
	CapXCRs               Cap = 56
	CapTSCControl         Cap = 60
	CapGetTSCKHz          Cap = 61
	CapMaxVcpus           Cap = 66
	CapTSCDeadlineTimer   Cap = 72
	CapKVMClockCtrl       Cap = 76
	CapSignalMSI          Cap = 77
	CapReadonlyMem        Cap = 81
	CapIRQFDResample      Cap = 82
	CapCheckExtensionVM   Cap = 105
	CapSplitIRQChip       Cap = 121
	CapX2APICAPI          Cap = 129
	CapImmediateExit      Cap = 136
)

var capNames = map[Cap]string{
	CapIRQChip: "KVM_CAP_IRQCHIP", CapHLT: "KVM_CAP_HLT", CapUserMemory: "KVM_CAP_USER_MEMORY",
	CapSetTSSAddr: "KVM_CAP_SET_TSS_ADDR", CapExtCPUID: "KVM_CAP_EXT_CPUID",
	CapNrVcpus: "KVM_CAP_NR_VCPUS", CapNrMemslots: "KVM_CAP_NR_MEMSLOTS", CapPIT: "KVM_CAP_PIT",
	CapMPState: "KVM_CAP_MP_STATE", CapSyncMMU: "KVM_CAP_SYNC_MMU", CapUserNMI: "KVM_CAP_USER_NMI",
	CapIRQRouting: "KVM_CAP_IRQ_ROUTING", CapIRQInjectStatus: "KVM_CAP_IRQ_INJECT_STATUS",
	CapIRQFD: "KVM_CAP_IRQFD", CapPIT2: "KVM_CAP_PIT2", CapIOEventFD: "KVM_CAP_IOEVENTFD",
	CapSetIdentityMapAddr: "KVM_CAP_SET_IDENTITY_MAP_ADDR", CapAdjustClock: "KVM_CAP_ADJUST_CLOCK",
	CapVcpuEvents: "KVM_CAP_VCPU_EVENTS", CapDebugRegs: "KVM_CAP_DEBUGREGS",
	CapEnableCap: "KVM_CAP_ENABLE_CAP", CapXSave: "KVM_CAP_XSAVE", CapXCRs: "KVM_CAP_XCRS",
	CapTSCControl: "KVM_CAP_TSC_CONTROL", CapGetTSCKHz: "KVM_CAP_GET_TSC_KHZ",
	CapMaxVcpus: "KVM_CAP_MAX_VCPUS", CapTSCDeadlineTimer: "KVM_CAP_TSC_DEADLINE_TIMER",
	CapKVMClockCtrl: "KVM_CAP_KVMCLOCK_CTRL", CapSignalMSI: "KVM_CAP_SIGNAL_MSI",
	CapReadonlyMem: "KVM_CAP_READONLY_MEM", CapIRQFDResample: "KVM_CAP_IRQFD_RESAMPLE",
	CapCheckExtensionVM: "KVM_CAP_CHECK_EXTENSION_VM", CapSplitIRQChip: "KVM_CAP_SPLIT_IRQCHIP",
	CapX2APICAPI: "KVM_CAP_X2APIC_API", CapImmediateExit: "KVM_CAP_IMMEDIATE_EXIT",
}

// String returns the C name, e.g. "KVM_CAP_IRQFD".
func (c Cap) String() string {
	if n, ok := capNames[c]; ok {
		return n
	}
	return fmt.Sprintf("KVM_CAP(%d)", uint32(c))
}

// BaseCaps are the capabilities an x86-64 VMM built on this package needs.
var BaseCaps = []Cap{
	CapUserMemory, CapSetTSSAddr, CapIRQChip, CapPIT2, CapIRQFD, CapIOEventFD,
	CapIRQRouting, CapSignalMSI, CapExtCPUID, CapImmediateExit, CapVcpuEvents,
	CapDebugRegs, CapXSave, CapXCRs, CapMPState, CapAdjustClock, CapUserNMI,
}
