package kvm

import (
	"encoding/binary"
	"fmt"
)

// x86 structs from arch/x86/include/uapi/asm/kvm.h. Field order, sizes and
// padding match the C structs exactly (checked in abi_unsafe_test.go).

// Regs mirrors struct kvm_regs.
type Regs struct {
	RAX, RBX, RCX, RDX uint64
	RSI, RDI, RSP, RBP uint64
	R8, R9, R10, R11   uint64
	R12, R13, R14, R15 uint64
	RIP, RFLAGS        uint64
}

// Segment mirrors struct kvm_segment.
type Segment struct {
	Base     uint64
	Limit    uint32
	Selector uint16
	Type     uint8
	Present  uint8
	DPL      uint8
	DB       uint8
	S        uint8
	L        uint8
	G        uint8
	AVL      uint8
	Unusable uint8
	_        uint8
}

// DTable mirrors struct kvm_dtable (GDTR/IDTR).
type DTable struct {
	Base  uint64
	Limit uint16
	_     [3]uint16
}

// Sregs mirrors struct kvm_sregs.
type Sregs struct {
	CS, DS, ES, FS, GS, SS Segment
	TR, LDT                Segment
	GDT, IDT               DTable
	CR0, CR2, CR3, CR4     uint64
	CR8                    uint64
	EFER                   uint64
	APICBase               uint64
	InterruptBitmap        [4]uint64 // (KVM_NR_INTERRUPTS + 63) / 64
}

// FPU mirrors struct kvm_fpu.
type FPU struct {
	FPR        [8][16]uint8
	FCW        uint16
	FSW        uint16
	FTWX       uint8
	_          uint8
	LastOpcode uint16
	LastIP     uint64
	LastDP     uint64
	XMM        [16][16]uint8
	MXCSR      uint32
	_          uint32
}

// LapicState mirrors struct kvm_lapic_state: the local APIC register page
// (KVM_APIC_REG_SIZE = 0x400).
type LapicState struct {
	Regs [1024]uint8
}

// Reg32 reads the 32-bit APIC register at byte offset off (e.g. 0x20 for
// the APIC ID register).
func (l *LapicState) Reg32(off int) uint32 { return binary.LittleEndian.Uint32(l.Regs[off:]) }

// SetReg32 writes the 32-bit APIC register at byte offset off.
func (l *LapicState) SetReg32(off int, v uint32) { binary.LittleEndian.PutUint32(l.Regs[off:], v) }

// XCR mirrors struct kvm_xcr.
type XCR struct {
	XCR   uint32
	_     uint32
	Value uint64
}

// XCRs mirrors struct kvm_xcrs (KVM_MAX_XCRS = 16).
type XCRs struct {
	NrXCRs uint32
	Flags  uint32
	XCRs   [16]XCR
	_      [16]uint64
}

// VcpuEvents mirrors struct kvm_vcpu_events (Linux 6.0+ names; the layout
// is unchanged since 2.6.32, later fields replaced reserved bytes).
type VcpuEvents struct {
	Exception struct {
		Injected     uint8
		Nr           uint8
		HasErrorCode uint8
		Pending      uint8
		ErrorCode    uint32
	}
	Interrupt struct {
		Injected uint8
		Nr       uint8
		Soft     uint8
		Shadow   uint8
	}
	NMI struct {
		Injected uint8
		Pending  uint8
		Masked   uint8
		_        uint8
	}
	SIPIVector uint32
	Flags      uint32
	SMI        struct {
		SMM          uint8
		Pending      uint8
		SMMInsideNMI uint8
		LatchedInit  uint8
	}
	TripleFaultPending  uint8
	_                   [26]uint8
	ExceptionHasPayload uint8
	ExceptionPayload    uint64
}

// DebugRegs mirrors struct kvm_debugregs.
type DebugRegs struct {
	DB    [4]uint64
	DR6   uint64
	DR7   uint64
	Flags uint64
	_     [9]uint64
}

// XSave mirrors struct kvm_xsave (the legacy 4 KiB area).
type XSave struct {
	Region [1024]uint32
}

// MP states (KVM_MP_STATE_*).
const (
	MPStateRunnable      = 0
	MPStateUninitialized = 1
	MPStateInitReceived  = 2
	MPStateHalted        = 3
	MPStateSIPIReceived  = 4
)

// mpState mirrors struct kvm_mp_state.
type mpState struct {
	MPState uint32
}

// CPUID entry flags (KVM_CPUID_FLAG_*).
const (
	CPUIDFlagSignificantIndex = 1 << 0
)

// CPUIDEntry mirrors struct kvm_cpuid_entry2.
type CPUIDEntry struct {
	Function uint32
	Index    uint32
	Flags    uint32
	EAX      uint32
	EBX      uint32
	ECX      uint32
	EDX      uint32
	_        [3]uint32
}

const sizeofCPUIDEntry = 40

// CPUID is the payload of KVM_GET_SUPPORTED_CPUID and KVM_SET_CPUID2
// (struct kvm_cpuid2 with its trailing entries).
type CPUID []CPUIDEntry

// Find returns the entry for (function, index), honouring
// CPUIDFlagSignificantIndex, or nil.
func (c CPUID) Find(function, index uint32) *CPUIDEntry {
	for i := range c {
		e := &c[i]
		if e.Function == function && (e.Flags&CPUIDFlagSignificantIndex == 0 || e.Index == index) {
			return e
		}
	}
	return nil
}

// MarshalBinary encodes the header {nent, padding} followed by the entries.
func (c CPUID) MarshalBinary() ([]byte, error) {
	b := make([]byte, sizeofCPUID2+len(c)*sizeofCPUIDEntry)
	le := binary.LittleEndian
	le.PutUint32(b, uint32(len(c)))
	for i, e := range c {
		o := b[sizeofCPUID2+i*sizeofCPUIDEntry:]
		for j, w := range [...]uint32{e.Function, e.Index, e.Flags, e.EAX, e.EBX, e.ECX, e.EDX} {
			le.PutUint32(o[4*j:], w)
		}
	}
	return b, nil
}

// UnmarshalBinary decodes a struct kvm_cpuid2; it keeps the first nent
// entries.
func (c *CPUID) UnmarshalBinary(b []byte) error {
	if len(b) < sizeofCPUID2 {
		return fmt.Errorf("kvm_cpuid2: %d bytes: %w", len(b), ErrInvalidArgument)
	}
	le := binary.LittleEndian
	n := int(le.Uint32(b))
	if len(b) < sizeofCPUID2+n*sizeofCPUIDEntry {
		return fmt.Errorf("kvm_cpuid2: %d entries in %d bytes: %w", n, len(b), ErrInvalidArgument)
	}
	out := make(CPUID, n)
	for i := range out {
		o := b[sizeofCPUID2+i*sizeofCPUIDEntry:]
		out[i] = CPUIDEntry{
			Function: le.Uint32(o[0:]), Index: le.Uint32(o[4:]), Flags: le.Uint32(o[8:]),
			EAX: le.Uint32(o[12:]), EBX: le.Uint32(o[16:]), ECX: le.Uint32(o[20:]), EDX: le.Uint32(o[24:]),
		}
	}
	*c = out
	return nil
}
