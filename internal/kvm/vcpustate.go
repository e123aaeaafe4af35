package kvm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
)

// VcpuState is what KVM holds for one x86 vCPU, for snapshots and
// migration (upstream's VcpuKvmState): everything KVM_GET_* gives, in
// the order upstream's set_state puts it back.
type VcpuState struct {
	MPState   uint32
	Regs      Regs
	Sregs     Sregs
	FPU       FPU
	XSave     []byte // struct kvm_xsave, 4096 bytes
	XCRs      XCRs
	LAPIC     []byte // struct kvm_lapic_state, 1024 bytes
	MSRs      MSRs
	Events    VcpuEvents
	DebugRegs DebugRegs
	TSCKHz    uint32 `json:",omitempty"`
}

// SaveState reads the vCPU's state; msrs are the MSRs to save (the
// system's MSR index list): those KVM cannot read are left out, as
// upstream does. Call it from any thread while the vCPU is out of
// KVM_RUN (a vCPU ioctl waits for KVM_RUN to return).
func (v *Vcpu) SaveState(msrs []uint32) (*VcpuState, error) {
	s := &VcpuState{}
	var err error
	step := func(what string, f func() error) {
		if err == nil {
			if e := f(); e != nil {
				err = fmt.Errorf("vcpu %d: save %s: %w", v.id, what, e)
			}
		}
	}
	step("MP state", func() (e error) { s.MPState, e = v.MPState(); return })
	step("registers", func() (e error) { s.Regs, e = v.Regs(); return })
	step("special registers", func() (e error) { s.Sregs, e = v.Sregs(); return })
	step("FPU", func() (e error) { s.FPU, e = v.FPU(); return })
	step("XSAVE", func() error {
		x, e := v.XSave()
		if e == nil {
			s.XSave, e = rawBytes(x)
		}
		return e
	})
	step("XCRs", func() (e error) { s.XCRs, e = v.XCRs(); return })
	step("LAPIC", func() error {
		l, e := v.LAPIC()
		s.LAPIC = append([]byte(nil), l.Regs[:]...)
		return e
	})
	step("MSRs", func() (e error) { s.MSRs, _, e = v.ReadMSRs(msrs); return })
	step("events", func() (e error) { s.Events, e = v.VcpuEvents(); return })
	step("debug registers", func() (e error) { s.DebugRegs, e = v.DebugRegs(); return })
	if err != nil {
		return nil, err
	}
	if khz, e := v.TSCKHz(); e == nil {
		s.TSCKHz = khz
	}
	return s, nil
}

// RestoreState puts s back, in upstream's order (MP state, registers,
// special registers, XSAVE, XCRs, LAPIC, FPU, MSRs, events) plus the
// debug registers; CPUID must already be set. It returns the MSRs KVM
// refused (left out, as upstream does).
func (v *Vcpu) RestoreState(s *VcpuState) (refused []uint32, err error) {
	if len(s.XSave) != sizeofXSave || len(s.LAPIC) != sizeofLapicState {
		return nil, fmt.Errorf("vcpu %d: XSAVE %d bytes, LAPIC %d bytes: %w", v.id, len(s.XSave), len(s.LAPIC), ErrInvalidArgument)
	}
	if s.TSCKHz != 0 {
		if cur, e := v.TSCKHz(); e == nil && cur != s.TSCKHz {
			// The guest calibrated against the saved frequency; KVM scales
			// the TSC where the host can (TSC scaling), else this fails.
			if e := v.SetTSCKHz(s.TSCKHz); e != nil {
				return nil, fmt.Errorf("vcpu %d: TSC frequency %d kHz (host %d kHz): %w", v.id, s.TSCKHz, cur, e)
			}
		}
	}
	step := func(what string, f func() error) {
		if err == nil {
			if e := f(); e != nil {
				err = fmt.Errorf("vcpu %d: restore %s: %w", v.id, what, e)
			}
		}
	}
	step("MP state", func() error { return v.SetMPState(s.MPState) })
	step("registers", func() error { return v.SetRegs(s.Regs) })
	step("special registers", func() error { return v.SetSregs(s.Sregs) })
	step("XSAVE", func() error {
		x := new(XSave)
		if e := binary.Read(bytes.NewReader(s.XSave), binary.LittleEndian, x); e != nil {
			return e
		}
		return v.SetXSave(x)
	})
	step("XCRs", func() error { return v.SetXCRs(s.XCRs) })
	step("LAPIC", func() error {
		var l LapicState
		copy(l.Regs[:], s.LAPIC)
		return v.SetLAPIC(&l)
	})
	step("FPU", func() error { return v.SetFPU(s.FPU) })
	step("MSRs", func() (e error) { refused, e = v.WriteMSRs(s.MSRs); return })
	step("events", func() error { return v.SetVcpuEvents(s.Events) })
	step("debug registers", func() error { return v.SetDebugRegs(s.DebugRegs) })
	return refused, err
}

func rawBytes(v any) ([]byte, error) {
	var b bytes.Buffer
	err := binary.Write(&b, binary.LittleEndian, v)
	return b.Bytes(), err
}

// ReadMSRs reads every MSR of indices that KVM can read (KVM_GET_MSRS
// stops at the first it cannot: that one is skipped and the rest read on).
func (v *Vcpu) ReadMSRs(indices []uint32) (out MSRs, skipped []uint32, err error) {
	for len(indices) > 0 {
		got, e := v.MSRs(indices...)
		out = append(out, got...)
		if e == nil {
			break
		}
		if !errors.Is(e, ErrInvalidArgument) || len(got) >= len(indices) {
			return nil, nil, e
		}
		skipped = append(skipped, indices[len(got)])
		indices = indices[len(got)+1:]
	}
	return out, skipped, nil
}

// WriteMSRs writes every MSR of m that KVM accepts, skipping (and
// returning) those it refuses.
func (v *Vcpu) WriteMSRs(m MSRs) (refused []uint32, err error) {
	for len(m) > 0 {
		b, _ := m.MarshalBinary()
		n, e := ioctlBuf(v.fd, "KVM_SET_MSRS", kvmSetMSRs, b)
		if e != nil {
			return refused, e
		}
		if n >= len(m) {
			break
		}
		refused = append(refused, m[n].Index)
		m = m[n+1:]
	}
	return refused, nil
}
