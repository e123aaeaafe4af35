package x86

import (
	"fmt"

	"github.com/nimbus-vmm/nimbus/internal/kvm"
)

// Local APIC register offsets and delivery modes (Intel SDM vol. 3A 11.5.1).
const (
	APICRegLVTLINT0  = 0x350
	APICRegLVTLINT1  = 0x360
	APICModeNMI      = 0x4
	APICModeExtINT   = 0x7
	apicDeliveryMask = 0x700
)

// Initial FPU control values (upstream regs.rs setup_fpu).
const (
	FPUControlWord = 0x37f
	FPUMXCSR       = 0x1f80
)

// rflagsReserved is RFLAGS bit 1, which always reads as 1.
const rflagsReserved = 0x2

// ApplySystemState loads st into sregs (as read from KVM_GET_SREGS). For
// the 64-bit Linux entry CR0/CR4/EFER are ORed into KVM's reset values, as
// upstream does; for the PVH entry (paging off) CR0 is exactly PE and CR4
// is 0, as the PVH ABI and upstream require.
func ApplySystemState(sregs *kvm.Sregs, st SystemState) {
	sregs.CS, sregs.DS, sregs.ES = st.CS, st.DS, st.ES
	sregs.FS, sregs.GS, sregs.SS = st.FS, st.GS, st.SS
	sregs.TR = st.TR
	sregs.GDT = kvm.DTable{Base: st.GDT.Base, Limit: st.GDT.Limit}
	sregs.IDT = kvm.DTable{Base: st.IDT.Base, Limit: st.IDT.Limit}
	if st.CR0&CR0PG == 0 {
		sregs.CR0 = st.CR0
		sregs.CR4 = st.CR4
	} else {
		sregs.CR0 |= st.CR0
		sregs.CR4 |= st.CR4
	}
	sregs.CR3 = st.CR3
	sregs.EFER |= st.EFER
}

// BootRegs returns the general registers for the boot vCPU. For the Linux
// 64-bit entry info is boot_params (RSI) and the stack is at
// BootStackPointer; for PVH info is hvm_start_info (RBX).
func BootRegs(entry, info uint64, pvh bool) kvm.Regs {
	r := kvm.Regs{RIP: entry, RFLAGS: rflagsReserved}
	if pvh {
		r.RBX = info
	} else {
		r.RSI = info
		r.RSP = BootStackPointer
		r.RBP = BootStackPointer
	}
	return r
}

// BootFPU returns the FPU state every vCPU starts with.
func BootFPU() kvm.FPU {
	return kvm.FPU{FCW: FPUControlWord, MXCSR: FPUMXCSR}
}

// SetLINT programs LINT0 as ExtINT (the PIC's output) and LINT1 as NMI,
// as a PC's BIOS does (upstream interrupts.rs set_lint).
func SetLINT(l *kvm.LapicState) {
	l.SetReg32(APICRegLVTLINT0, l.Reg32(APICRegLVTLINT0)&^apicDeliveryMask|APICModeExtINT<<8)
	l.SetReg32(APICRegLVTLINT1, l.Reg32(APICRegLVTLINT1)&^apicDeliveryMask|APICModeNMI<<8)
}

// VcpuSetup is what ConfigureVcpu needs for one vCPU.
type VcpuSetup struct {
	CPUID kvm.CPUID
	// Boot is set for the boot vCPU only; APs wait for INIT/SIPI.
	Boot *BootState
}

// BootState is the boot vCPU's entry state.
type BootState struct {
	System SystemState
	Entry  uint64
	Info   uint64
	PVH    bool
}

// ConfigureVcpu sets CPUID, the boot MSRs, the LAPIC LINT pins and, for
// the boot vCPU, FPU, special and general registers (upstream
// configure_vcpu).
func ConfigureVcpu(v *kvm.Vcpu, s VcpuSetup) error {
	if err := v.SetCPUID2(s.CPUID); err != nil {
		return fmt.Errorf("vcpu %d cpuid: %w", v.ID(), err)
	}
	if xcr0 := GuestXCR0(s.CPUID); xcr0 != 0 {
		x := kvm.XCRs{NrXCRs: 1}
		x.XCRs[0] = kvm.XCR{XCR: 0, Value: xcr0}
		if err := v.SetXCRs(x); err != nil {
			return fmt.Errorf("vcpu %d xcr0 %#x: %w", v.ID(), xcr0, err)
		}
	}
	if err := v.SetMSRs(BootMSRs()); err != nil {
		return fmt.Errorf("vcpu %d msrs: %w", v.ID(), err)
	}
	if s.Boot != nil {
		if err := SetBootState(v, s.Boot); err != nil {
			return err
		}
	}
	l, err := v.LAPIC()
	if err != nil {
		return fmt.Errorf("vcpu %d lapic: %w", v.ID(), err)
	}
	SetLINT(&l)
	if err := v.SetLAPIC(&l); err != nil {
		return fmt.Errorf("vcpu %d lapic: %w", v.ID(), err)
	}
	return nil
}

// SetBootState puts the boot vCPU at the payload's entry (FPU, segment and
// control registers, general registers): what loading a payload adds to a
// vCPU that ConfigureVcpu set up without one.
func SetBootState(v *kvm.Vcpu, b *BootState) error {
	if err := v.SetFPU(BootFPU()); err != nil {
		return fmt.Errorf("vcpu %d fpu: %w", v.ID(), err)
	}
	sregs, err := v.Sregs()
	if err != nil {
		return fmt.Errorf("vcpu %d sregs: %w", v.ID(), err)
	}
	ApplySystemState(&sregs, b.System)
	if err := v.SetSregs(sregs); err != nil {
		return fmt.Errorf("vcpu %d sregs: %w", v.ID(), err)
	}
	if err := v.SetRegs(BootRegs(b.Entry, b.Info, b.PVH)); err != nil {
		return fmt.Errorf("vcpu %d regs: %w", v.ID(), err)
	}
	return nil
}
