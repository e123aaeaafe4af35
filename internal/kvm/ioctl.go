package kvm

// Ioctl request encoding from include/uapi/asm-generic/ioctl.h (x86 uses the
// generic layout): dir<<30 | size<<16 | type<<8 | nr.
const (
	iocNone  = 0
	iocWrite = 1
	iocRead  = 2

	iocNRShift   = 0
	iocTypeShift = 8
	iocSizeShift = 16
	iocDirShift  = 30
)

func ioc(dir, typ, nr, size uintptr) uintptr {
	return dir<<iocDirShift | size<<iocSizeShift | typ<<iocTypeShift | nr<<iocNRShift
}

func io(nr uintptr) uintptr         { return ioc(iocNone, kvmio, nr, 0) }
func ior(nr, size uintptr) uintptr  { return ioc(iocRead, kvmio, nr, size) }
func iow(nr, size uintptr) uintptr  { return ioc(iocWrite, kvmio, nr, size) }
func iowr(nr, size uintptr) uintptr { return ioc(iocRead|iocWrite, kvmio, nr, size) }

// APIVersion is KVM_API_VERSION from <linux/kvm.h>; it has been 12 since
// Linux 2.6.22 and is the only version this package speaks.
const APIVersion = 12

const kvmio = 0xAE

// Sizes of the structs the ioctl numbers encode (x86-64). abi_test.go
// checks them against the Go mirrors.
const (
	sizeofMSRList         = 4    // struct kvm_msr_list (header)
	sizeofCPUID2          = 8    // struct kvm_cpuid2 (header)
	sizeofMSRs            = 8    // struct kvm_msrs (header)
	sizeofIRQRouting      = 8    // struct kvm_irq_routing (header)
	sizeofDirtyLog        = 16   // struct kvm_dirty_log
	sizeofUserMemRegion   = 32   // struct kvm_userspace_memory_region
	sizeofIRQLevel        = 8    // struct kvm_irq_level
	sizeofIRQFD           = 32   // struct kvm_irqfd
	sizeofPitConfig       = 64   // struct kvm_pit_config
	sizeofIOEventFD       = 64   // struct kvm_ioeventfd
	sizeofClockData       = 48   // struct kvm_clock_data
	sizeofMSI             = 32   // struct kvm_msi
	sizeofEnableCap       = 104  // struct kvm_enable_cap
	sizeofRegs            = 144  // struct kvm_regs
	sizeofSregs           = 312  // struct kvm_sregs
	sizeofFPU             = 416  // struct kvm_fpu
	sizeofLapicState      = 1024 // struct kvm_lapic_state
	sizeofMPState         = 4    // struct kvm_mp_state
	sizeofVcpuEvents      = 64   // struct kvm_vcpu_events
	sizeofDebugRegs       = 128  // struct kvm_debugregs
	sizeofXSave           = 4096 // struct kvm_xsave (without KVM_GET_XSAVE2 extension)
	sizeofXCRs            = 392  // struct kvm_xcrs
	sizeofIdentityMapAddr = 8    // __u64
	sizeofIRQChip         = 520  // struct kvm_irqchip
	sizeofPitState2       = 112  // struct kvm_pit_state2
)

// Ioctl numbers from <linux/kvm.h>, grouped by the file descriptor they
// apply to. Only the ioctls this package wraps appear here.
var (
	// /dev/kvm
	kvmGetAPIVersion     = io(0x00)
	kvmCreateVM          = io(0x01)
	kvmGetMSRIndexList   = iowr(0x02, sizeofMSRList)
	kvmCheckExtension    = io(0x03)
	kvmGetVcpuMmapSize   = io(0x04)
	kvmGetSupportedCPUID = iowr(0x05, sizeofCPUID2)

	// VM
	kvmCreateVcpu          = io(0x41)
	kvmGetDirtyLog         = iow(0x42, sizeofDirtyLog)
	kvmSetUserMemoryRegion = iow(0x46, sizeofUserMemRegion)
	kvmSetTSSAddr          = io(0x47)
	kvmSetIdentityMapAddr  = iow(0x48, sizeofIdentityMapAddr)
	kvmCreateIRQChip       = io(0x60)
	kvmIRQLine             = iow(0x61, sizeofIRQLevel)
	kvmGetIRQChip          = iowr(0x62, sizeofIRQChip)
	kvmSetIRQChip          = ior(0x63, sizeofIRQChip) // _IOR in <linux/kvm.h>, for historical reasons
	kvmSetGSIRouting       = iow(0x6a, sizeofIRQRouting)
	kvmIRQFD               = iow(0x76, sizeofIRQFD)
	kvmCreatePIT2          = iow(0x77, sizeofPitConfig)
	kvmIOEventFD           = iow(0x79, sizeofIOEventFD)
	kvmSetClock            = iow(0x7b, sizeofClockData)
	kvmGetClock            = ior(0x7c, sizeofClockData)
	kvmEnableCap           = iow(0xa3, sizeofEnableCap) // also a vCPU ioctl
	kvmGetPIT2             = ior(0x9f, sizeofPitState2)
	kvmSetPIT2             = iow(0xa0, sizeofPitState2)
	kvmSignalMSI           = iow(0xa5, sizeofMSI)
	kvmSetTSCKHz           = io(0xa2) // vCPU (and VM since Linux 6.0)
	kvmGetTSCKHz           = io(0xa3)
	kvmRun                 = io(0x80)
	kvmGetRegs             = ior(0x81, sizeofRegs)
	kvmSetRegs             = iow(0x82, sizeofRegs)
	kvmGetSregs            = ior(0x83, sizeofSregs)
	kvmSetSregs            = iow(0x84, sizeofSregs)
	kvmGetMSRs             = iowr(0x88, sizeofMSRs)
	kvmSetMSRs             = iow(0x89, sizeofMSRs)
	kvmGetFPU              = ior(0x8c, sizeofFPU)
	kvmSetFPU              = iow(0x8d, sizeofFPU)
	kvmGetLAPIC            = ior(0x8e, sizeofLapicState)
	kvmSetLAPIC            = iow(0x8f, sizeofLapicState)
	kvmSetCPUID2           = iow(0x90, sizeofCPUID2)
	kvmGetMPState          = ior(0x98, sizeofMPState)
	kvmSetMPState          = iow(0x99, sizeofMPState)
	kvmNMI                 = io(0x9a)
	kvmGetVcpuEvents       = ior(0x9f, sizeofVcpuEvents)
	kvmSetVcpuEvents       = iow(0xa0, sizeofVcpuEvents)
	kvmGetDebugRegs        = ior(0xa1, sizeofDebugRegs)
	kvmSetDebugRegs        = iow(0xa2, sizeofDebugRegs)
	kvmGetXSave            = ior(0xa4, sizeofXSave)
	kvmSetXSave            = iow(0xa5, sizeofXSave)
	kvmGetXCRs             = ior(0xa6, sizeofXCRs)
	kvmSetXCRs             = iow(0xa7, sizeofXCRs)
)
