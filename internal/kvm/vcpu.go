package kvm

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// KickSignal is the real-time signal Kick sends to a vCPU thread (see the
// package documentation). The Go runtime does not use it.
const KickSignal = unix.Signal(40)

// Vcpu is a KVM vCPU file descriptor with its mapped kvm_run.
type Vcpu struct {
	id  int
	fd  int
	tid atomic.Int32 // OS thread last seen in Run; 0 before the first Run

	closing atomic.Bool  // set first by Close so that no new Run enters the guest
	mu      sync.RWMutex // Close (write) against Run and Kick (read)
	run     []byte       // kvm_run mapping; nil after Close
}

// ID returns the vCPU id given to CreateVcpu.
func (v *Vcpu) ID() int { return v.id }

// Fd returns the vCPU file descriptor.
func (v *Vcpu) Fd() int { return v.fd }

// Close unmaps kvm_run and closes the vCPU fd. It is safe while another
// goroutine is in Run: Close kicks it, waits for it to leave, and every
// later Run fails with ErrClosed.
func (v *Vcpu) Close() error {
	v.closing.Store(true)
	v.Kick() // a Run inside the guest returns; errors mean already closed
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.run == nil {
		return nil
	}
	err := unix.Munmap(v.run)
	v.run = nil
	if cerr := unix.Close(v.fd); err == nil {
		err = cerr
	}
	v.fd = -1
	return err
}

// Run enters the guest (KVM_RUN) and returns the decoded exit. The
// exit's data slices alias kvm_run and are valid until the next Run; fill
// IO.Data (IOIn) or MMIO.Data (reads) before calling Run again.
//
// Call Run from a goroutine locked to its OS thread (runtime.LockOSThread)
// so that Kick can signal it. A kick makes Run return Reason ExitIntr;
// other EINTRs and EAGAIN are retried.
func (v *Vcpu) Run() (Exit, error) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	if v.run == nil || v.closing.Load() {
		return Exit{}, fmt.Errorf("vcpu %d: %w", v.id, ErrClosed)
	}
	v.tid.Store(int32(unix.Gettid()))
	for {
		_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(v.fd), kvmRun, 0)
		switch e {
		case 0:
			return decodeExit(v.run)
		case unix.EINTR:
			if takeImmediateExit(v.run) {
				return Exit{Reason: ExitIntr}, nil
			}
		case unix.EAGAIN:
		default:
			return Exit{}, fmt.Errorf("vcpu %d: %w", v.id, ioctlErr("KVM_RUN", e))
		}
	}
}

// Kick makes the vCPU return from Run with ExitIntr as soon as possible:
// at once if it is in the guest, or at its next Run otherwise. It is safe
// to call from any goroutine, any number of times; kicks do not queue.
func (v *Vcpu) Kick() error {
	v.mu.RLock()
	defer v.mu.RUnlock()
	if v.run == nil {
		return fmt.Errorf("vcpu %d: kick: %w", v.id, ErrClosed)
	}
	setImmediateExit(v.run, true)
	tid := v.tid.Load()
	if tid == 0 {
		return nil // never ran: immediate_exit alone stops the first Run
	}
	if err := unix.Tgkill(unix.Getpid(), int(tid), KickSignal); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("vcpu %d: tgkill %d: %w: %w", v.id, tid, ErrIoctl, err)
	}
	return nil
}

// Regs returns KVM_GET_REGS.
func (v *Vcpu) Regs() (Regs, error) { return ioctlGet[Regs](v.fd, "KVM_GET_REGS", kvmGetRegs) }

// SetRegs is KVM_SET_REGS.
func (v *Vcpu) SetRegs(r Regs) error {
	_, err := ioctlSet(v.fd, "KVM_SET_REGS", kvmSetRegs, &r)
	return err
}

// Sregs returns KVM_GET_SREGS.
func (v *Vcpu) Sregs() (Sregs, error) { return ioctlGet[Sregs](v.fd, "KVM_GET_SREGS", kvmGetSregs) }

// SetSregs is KVM_SET_SREGS.
func (v *Vcpu) SetSregs(s Sregs) error {
	_, err := ioctlSet(v.fd, "KVM_SET_SREGS", kvmSetSregs, &s)
	return err
}

// FPU returns KVM_GET_FPU.
func (v *Vcpu) FPU() (FPU, error) { return ioctlGet[FPU](v.fd, "KVM_GET_FPU", kvmGetFPU) }

// SetFPU is KVM_SET_FPU.
func (v *Vcpu) SetFPU(f FPU) error {
	_, err := ioctlSet(v.fd, "KVM_SET_FPU", kvmSetFPU, &f)
	return err
}

// MSRs reads the given MSRs (KVM_GET_MSRS). It fails naming the first
// index KVM could not read.
func (v *Vcpu) MSRs(indices ...uint32) (MSRs, error) {
	if len(indices) == 0 {
		return nil, nil
	}
	in := make(MSRs, len(indices))
	for i, idx := range indices {
		in[i].Index = idx
	}
	b, _ := in.MarshalBinary()
	n, err := ioctlBuf(v.fd, "KVM_GET_MSRS", kvmGetMSRs, b)
	if err != nil {
		return nil, err
	}
	var out MSRs
	if err := out.UnmarshalBinary(b); err != nil {
		return nil, err
	}
	if n < len(out) {
		return out[:n], fmt.Errorf("KVM_GET_MSRS: MSR %#x not readable: %w", out[n].Index, ErrInvalidArgument)
	}
	return out, nil
}

// SetMSRs writes MSRs (KVM_SET_MSRS). It fails naming the first MSR KVM
// refused.
func (v *Vcpu) SetMSRs(m MSRs) error {
	if len(m) == 0 {
		return nil
	}
	b, _ := m.MarshalBinary()
	n, err := ioctlBuf(v.fd, "KVM_SET_MSRS", kvmSetMSRs, b)
	if err != nil {
		return err
	}
	if n < len(m) {
		return fmt.Errorf("KVM_SET_MSRS: MSR %#x = %#x refused: %w", m[n].Index, m[n].Data, ErrInvalidArgument)
	}
	return nil
}

// SetCPUID2 sets the guest's CPUID table (KVM_SET_CPUID2).
func (v *Vcpu) SetCPUID2(c CPUID) error {
	b, _ := c.MarshalBinary()
	_, err := ioctlBuf(v.fd, "KVM_SET_CPUID2", kvmSetCPUID2, b)
	return err
}

// LAPIC returns KVM_GET_LAPIC (needs an in-kernel local APIC).
func (v *Vcpu) LAPIC() (LapicState, error) {
	return ioctlGet[LapicState](v.fd, "KVM_GET_LAPIC", kvmGetLAPIC)
}

// SetLAPIC is KVM_SET_LAPIC.
func (v *Vcpu) SetLAPIC(l *LapicState) error {
	_, err := ioctlSet(v.fd, "KVM_SET_LAPIC", kvmSetLAPIC, l)
	return err
}

// XCRs returns KVM_GET_XCRS.
func (v *Vcpu) XCRs() (XCRs, error) { return ioctlGet[XCRs](v.fd, "KVM_GET_XCRS", kvmGetXCRs) }

// SetXCRs is KVM_SET_XCRS.
func (v *Vcpu) SetXCRs(x XCRs) error {
	_, err := ioctlSet(v.fd, "KVM_SET_XCRS", kvmSetXCRs, &x)
	return err
}

// VcpuEvents returns KVM_GET_VCPU_EVENTS (pending exceptions, interrupts,
// NMIs, SMIs).
func (v *Vcpu) VcpuEvents() (VcpuEvents, error) {
	return ioctlGet[VcpuEvents](v.fd, "KVM_GET_VCPU_EVENTS", kvmGetVcpuEvents)
}

// SetVcpuEvents is KVM_SET_VCPU_EVENTS.
func (v *Vcpu) SetVcpuEvents(e VcpuEvents) error {
	_, err := ioctlSet(v.fd, "KVM_SET_VCPU_EVENTS", kvmSetVcpuEvents, &e)
	return err
}

// DebugRegs returns KVM_GET_DEBUGREGS.
func (v *Vcpu) DebugRegs() (DebugRegs, error) {
	return ioctlGet[DebugRegs](v.fd, "KVM_GET_DEBUGREGS", kvmGetDebugRegs)
}

// SetDebugRegs is KVM_SET_DEBUGREGS.
func (v *Vcpu) SetDebugRegs(d DebugRegs) error {
	_, err := ioctlSet(v.fd, "KVM_SET_DEBUGREGS", kvmSetDebugRegs, &d)
	return err
}

// XSave returns KVM_GET_XSAVE (the 4 KiB legacy area).
func (v *Vcpu) XSave() (*XSave, error) {
	x := new(XSave)
	_, err := ioctlSet(v.fd, "KVM_GET_XSAVE", kvmGetXSave, x)
	return x, err
}

// SetXSave is KVM_SET_XSAVE.
func (v *Vcpu) SetXSave(x *XSave) error {
	_, err := ioctlSet(v.fd, "KVM_SET_XSAVE", kvmSetXSave, x)
	return err
}

// MPState returns KVM_GET_MP_STATE (MPState* constants).
func (v *Vcpu) MPState() (uint32, error) {
	s, err := ioctlGet[mpState](v.fd, "KVM_GET_MP_STATE", kvmGetMPState)
	return s.MPState, err
}

// SetMPState is KVM_SET_MP_STATE.
func (v *Vcpu) SetMPState(state uint32) error {
	s := mpState{MPState: state}
	_, err := ioctlSet(v.fd, "KVM_SET_MP_STATE", kvmSetMPState, &s)
	return err
}

// TSCKHz returns KVM_GET_TSC_KHZ: the guest TSC frequency.
func (v *Vcpu) TSCKHz() (uint32, error) {
	n, err := ioctl(v.fd, "KVM_GET_TSC_KHZ", kvmGetTSCKHz, 0)
	return uint32(n), err
}

// SetTSCKHz sets the guest TSC frequency (KVM_SET_TSC_KHZ; scaling needs
// CapTSCControl).
func (v *Vcpu) SetTSCKHz(khz uint32) error {
	_, err := ioctl(v.fd, "KVM_SET_TSC_KHZ", kvmSetTSCKHz, uintptr(khz))
	return err
}

// NMI injects a non-maskable interrupt (KVM_NMI).
func (v *Vcpu) NMI() error {
	_, err := ioctl(v.fd, "KVM_NMI", kvmNMI, 0)
	return err
}

// EnableCap is KVM_ENABLE_CAP on the vCPU fd.
func (v *Vcpu) EnableCap(c EnableCap) error {
	if _, err := ioctlSet(v.fd, "KVM_ENABLE_CAP", kvmEnableCap, &c); err != nil {
		return fmt.Errorf("%v: %w", c.Cap, err)
	}
	return nil
}
