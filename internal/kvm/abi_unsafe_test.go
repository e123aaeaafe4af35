package kvm

import (
	"encoding/binary"
	"testing"
	"unsafe"
)

// Sizes and field offsets from the C headers (<linux/kvm.h> and
// arch/x86/include/uapi/asm/kvm.h, x86-64 ABI), hard-coded so the Go
// mirrors are checked against the kernel ABI rather than against
// themselves. binary.Size equal to unsafe.Sizeof proves the Go compiler
// added no padding of its own.
func TestStructSizes(t *testing.T) {
	for _, c := range []struct {
		name      string
		size      uintptr
		wireSize  int
		kernelABI uintptr
	}{
		{"kvm_regs", unsafe.Sizeof(Regs{}), binary.Size(Regs{}), 144},
		{"kvm_segment", unsafe.Sizeof(Segment{}), binary.Size(Segment{}), 24},
		{"kvm_dtable", unsafe.Sizeof(DTable{}), binary.Size(DTable{}), 16},
		{"kvm_sregs", unsafe.Sizeof(Sregs{}), binary.Size(Sregs{}), 312},
		{"kvm_fpu", unsafe.Sizeof(FPU{}), binary.Size(FPU{}), 416},
		{"kvm_lapic_state", unsafe.Sizeof(LapicState{}), binary.Size(LapicState{}), 1024},
		{"kvm_xcr", unsafe.Sizeof(XCR{}), binary.Size(XCR{}), 16},
		{"kvm_xcrs", unsafe.Sizeof(XCRs{}), binary.Size(XCRs{}), 392},
		{"kvm_vcpu_events", unsafe.Sizeof(VcpuEvents{}), binary.Size(VcpuEvents{}), 64},
		{"kvm_debugregs", unsafe.Sizeof(DebugRegs{}), binary.Size(DebugRegs{}), 128},
		{"kvm_xsave", unsafe.Sizeof(XSave{}), binary.Size(XSave{}), 4096},
		{"kvm_mp_state", unsafe.Sizeof(mpState{}), binary.Size(mpState{}), 4},
		{"kvm_cpuid_entry2", unsafe.Sizeof(CPUIDEntry{}), binary.Size(CPUIDEntry{}), 40},
		{"kvm_msr_entry", unsafe.Sizeof(MSREntry{}), binary.Size(MSREntry{}), 16},
		{"kvm_userspace_memory_region", unsafe.Sizeof(UserspaceMemoryRegion{}), binary.Size(UserspaceMemoryRegion{}), 32},
		{"kvm_irq_level", unsafe.Sizeof(irqLevel{}), binary.Size(irqLevel{}), 8},
		{"kvm_pit_config", unsafe.Sizeof(PitConfig{}), binary.Size(PitConfig{}), 64},
		{"kvm_irqfd", unsafe.Sizeof(IRQFD{}), binary.Size(IRQFD{}), 32},
		{"kvm_ioeventfd", unsafe.Sizeof(IOEventFD{}), binary.Size(IOEventFD{}), 64},
		{"kvm_clock_data", unsafe.Sizeof(ClockData{}), binary.Size(ClockData{}), 48},
		{"kvm_irqchip", unsafe.Sizeof(IRQChip{}), binary.Size(IRQChip{}), 520},
		{"kvm_pit_channel_state", unsafe.Sizeof(PitChannelState{}), binary.Size(PitChannelState{}), 24},
		{"kvm_pit_state2", unsafe.Sizeof(PitState2{}), binary.Size(PitState2{}), 112},
		{"kvm_msi", unsafe.Sizeof(MSI{}), binary.Size(MSI{}), 32},
		{"kvm_enable_cap", unsafe.Sizeof(EnableCap{}), binary.Size(EnableCap{}), 104},
		{"kvm_dirty_log", unsafe.Sizeof(dirtyLog{}), binary.Size(dirtyLog{}), 16},
		{"kvm_irq_routing_entry", unsafe.Sizeof(IRQRoutingEntry{}), binary.Size(IRQRoutingEntry{}), 48},
	} {
		if c.size != c.kernelABI {
			t.Errorf("sizeof(%s) = %d, want %d", c.name, c.size, c.kernelABI)
		}
		if uintptr(c.wireSize) != c.kernelABI {
			t.Errorf("binary.Size(%s) = %d, want %d (hidden Go padding?)", c.name, c.wireSize, c.kernelABI)
		}
	}
	// The sizes encoded into the ioctl numbers.
	for _, c := range []struct {
		name string
		enc  uintptr
		real uintptr
	}{
		{"regs", sizeofRegs, unsafe.Sizeof(Regs{})}, {"sregs", sizeofSregs, unsafe.Sizeof(Sregs{})},
		{"fpu", sizeofFPU, unsafe.Sizeof(FPU{})}, {"lapic", sizeofLapicState, unsafe.Sizeof(LapicState{})},
		{"xcrs", sizeofXCRs, unsafe.Sizeof(XCRs{})}, {"events", sizeofVcpuEvents, unsafe.Sizeof(VcpuEvents{})},
		{"debugregs", sizeofDebugRegs, unsafe.Sizeof(DebugRegs{})}, {"xsave", sizeofXSave, unsafe.Sizeof(XSave{})},
		{"mp_state", sizeofMPState, unsafe.Sizeof(mpState{})}, {"memregion", sizeofUserMemRegion, unsafe.Sizeof(UserspaceMemoryRegion{})},
		{"irq_level", sizeofIRQLevel, unsafe.Sizeof(irqLevel{})}, {"irqfd", sizeofIRQFD, unsafe.Sizeof(IRQFD{})},
		{"pit_config", sizeofPitConfig, unsafe.Sizeof(PitConfig{})}, {"ioeventfd", sizeofIOEventFD, unsafe.Sizeof(IOEventFD{})},
		{"clock", sizeofClockData, unsafe.Sizeof(ClockData{})}, {"msi", sizeofMSI, unsafe.Sizeof(MSI{})},
		{"enable_cap", sizeofEnableCap, unsafe.Sizeof(EnableCap{})}, {"dirty_log", sizeofDirtyLog, unsafe.Sizeof(dirtyLog{})},
		{"cpuid_entry2", sizeofCPUIDEntry, unsafe.Sizeof(CPUIDEntry{})}, {"msr_entry", sizeofMSREntry, unsafe.Sizeof(MSREntry{})},
		{"irq_routing_entry", sizeofIRQRoutingEntry, unsafe.Sizeof(IRQRoutingEntry{})},
	} {
		if c.enc != c.real {
			t.Errorf("sizeof %s constant %d != Go struct %d", c.name, c.enc, c.real)
		}
	}
}

func TestFieldOffsets(t *testing.T) {
	var (
		r   Regs
		s   Sregs
		seg Segment
		f   FPU
		ev  VcpuEvents
		x   XCRs
		io  IOEventFD
		cd  ClockData
		ec  EnableCap
		dr  DebugRegs
		m   MSI
		re  IRQRoutingEntry
	)
	for _, c := range []struct {
		name string
		got  uintptr
		want uintptr
	}{
		{"kvm_regs.rip", unsafe.Offsetof(r.RIP), 128},
		{"kvm_regs.rflags", unsafe.Offsetof(r.RFLAGS), 136},
		{"kvm_regs.r8", unsafe.Offsetof(r.R8), 64},
		{"kvm_segment.selector", unsafe.Offsetof(seg.Selector), 12},
		{"kvm_segment.type", unsafe.Offsetof(seg.Type), 14},
		{"kvm_segment.unusable", unsafe.Offsetof(seg.Unusable), 22},
		{"kvm_sregs.tr", unsafe.Offsetof(s.TR), 144},
		{"kvm_sregs.gdt", unsafe.Offsetof(s.GDT), 192},
		{"kvm_sregs.idt", unsafe.Offsetof(s.IDT), 208},
		{"kvm_sregs.cr0", unsafe.Offsetof(s.CR0), 224},
		{"kvm_sregs.cr3", unsafe.Offsetof(s.CR3), 240},
		{"kvm_sregs.efer", unsafe.Offsetof(s.EFER), 264},
		{"kvm_sregs.apic_base", unsafe.Offsetof(s.APICBase), 272},
		{"kvm_sregs.interrupt_bitmap", unsafe.Offsetof(s.InterruptBitmap), 280},
		{"kvm_fpu.fcw", unsafe.Offsetof(f.FCW), 128},
		{"kvm_fpu.last_ip", unsafe.Offsetof(f.LastIP), 136},
		{"kvm_fpu.xmm", unsafe.Offsetof(f.XMM), 152},
		{"kvm_fpu.mxcsr", unsafe.Offsetof(f.MXCSR), 408},
		{"kvm_vcpu_events.interrupt", unsafe.Offsetof(ev.Interrupt), 8},
		{"kvm_vcpu_events.nmi", unsafe.Offsetof(ev.NMI), 12},
		{"kvm_vcpu_events.sipi_vector", unsafe.Offsetof(ev.SIPIVector), 16},
		{"kvm_vcpu_events.flags", unsafe.Offsetof(ev.Flags), 20},
		{"kvm_vcpu_events.smi", unsafe.Offsetof(ev.SMI), 24},
		{"kvm_vcpu_events.triple_fault", unsafe.Offsetof(ev.TripleFaultPending), 28},
		{"kvm_vcpu_events.exception_has_payload", unsafe.Offsetof(ev.ExceptionHasPayload), 55},
		{"kvm_vcpu_events.exception_payload", unsafe.Offsetof(ev.ExceptionPayload), 56},
		{"kvm_xcrs.xcrs", unsafe.Offsetof(x.XCRs), 8},
		{"kvm_ioeventfd.len", unsafe.Offsetof(io.Len), 16},
		{"kvm_ioeventfd.fd", unsafe.Offsetof(io.FD), 20},
		{"kvm_ioeventfd.flags", unsafe.Offsetof(io.Flags), 24},
		{"kvm_clock_data.flags", unsafe.Offsetof(cd.Flags), 8},
		{"kvm_clock_data.realtime", unsafe.Offsetof(cd.Realtime), 16},
		{"kvm_clock_data.host_tsc", unsafe.Offsetof(cd.HostTSC), 24},
		{"kvm_enable_cap.args", unsafe.Offsetof(ec.Args), 8},
		{"kvm_debugregs.dr6", unsafe.Offsetof(dr.DR6), 32},
		{"kvm_debugregs.flags", unsafe.Offsetof(dr.Flags), 48},
		{"kvm_msi.devid", unsafe.Offsetof(m.DevID), 16},
		{"kvm_irq_routing_entry.u", unsafe.Offsetof(re.U), 16},
	} {
		if c.got != c.want {
			t.Errorf("offsetof(%s) = %d, want %d", c.name, c.got, c.want)
		}
	}
}
