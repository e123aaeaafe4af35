package x86

import (
	"testing"

	"github.com/nimbus-vmm/nimbus/internal/kvm"
)

func supportedFixture() kvm.CPUID {
	return kvm.CPUID{
		{Function: 0, EAX: 0x1f},
		{Function: 1, EAX: 0x800f12, EBX: 0x0012_0800, ECX: 0x1, EDX: 0x1},
		{Function: 4, Index: 0, Flags: 1, EAX: 0x121}, // L1d
		{Function: 4, Index: 1, Flags: 1, EAX: 0x163}, // L3
		{Function: 0xb, Index: 0, Flags: 1, EAX: 9, EBX: 9, ECX: 9, EDX: 9},
		{Function: leafKVMBase, EAX: leafKVMFeatures},
		{Function: leafKVMFeatures, EAX: 0x1234},
		{Function: leafAddrSizes, EAX: 0x3030},
		{Function: leafAMDExtAPIC, EAX: 7},
	}
}

func TestPatchCPUID(t *testing.T) {
	topo := Topology{}.Normalize(4)
	if topo != (Topology{1, 4, 1, 1}) {
		t.Fatalf("default topology %+v", topo)
	}
	in := supportedFixture()
	got := PatchCPUID(in, CPUIDConfig{ID: 3, Topology: topo, TSCKHz: 2_500_000, PhysBits: 40, TSCDeadline: true})
	if in[1].EBX != 0x0012_0800 {
		t.Fatal("PatchCPUID modified its input")
	}
	l1 := got.Find(1, 0)
	if l1.EBX != 0x0304_0800 || l1.ECX != 0x1|ecxHypervisor|ecxTSCDeadline || l1.EDX != 0x1|edxHTT {
		t.Errorf("leaf 1 = %+v", *l1)
	}
	if e := got.Find(4, 0); e.EAX != 0x0c00_0121 { // 4 cores (3<<26), L1 shared by 1 thread
		t.Errorf("leaf 4.0 eax %#x", e.EAX)
	}
	if e := got.Find(4, 1); e.EAX != 0x0c00_c163 { // L3 shared by 4 (3<<14)
		t.Errorf("leaf 4.1 eax %#x", e.EAX)
	}
	want0b := []kvm.CPUIDEntry{
		{Function: 0xb, Index: 0, Flags: 1, EAX: 0, EBX: 1, ECX: 0x100, EDX: 3},
		{Function: 0xb, Index: 1, Flags: 1, EAX: 2, EBX: 4, ECX: 0x201, EDX: 3},
		{Function: 0xb, Index: 2, Flags: 1, EAX: 0, EBX: 0, ECX: 2, EDX: 3},
	}
	for _, w := range want0b {
		if e := got.Find(0xb, w.Index); e == nil || *e != w {
			t.Errorf("leaf 0xb.%d = %+v, want %+v", w.Index, e, w)
		}
	}
	if e := got.Find(0x1f, 2); e == nil || e.ECX != levelDie<<8|2 || e.EDX != 3 || e.EAX != 2 {
		t.Errorf("leaf 0x1f.2 = %+v", e)
	}
	if e := got.Find(leafKVMBase, 0); e.EAX != leafTiming || e.EBX != 0x4b4d564b || e.ECX != 0x564b4d56 || e.EDX != 0x4d {
		t.Errorf("leaf 0x40000000 = %+v", *e)
	}
	if e := got.Find(leafKVMFeatures, 0); e.EAX != 0x1234 {
		t.Errorf("kvm features changed: %+v", *e)
	}
	if e := got.Find(leafTiming, 0); e == nil || e.EAX != 2_500_000 || e.EBX != 1_000_000 {
		t.Errorf("leaf 0x40000010 = %+v", e)
	}
	if e := got.Find(leafAddrSizes, 0); e.EAX != 0x3028 {
		t.Errorf("leaf 0x80000008 eax %#x", e.EAX)
	}
	if e := got.Find(leafAMDExtAPIC, 0); e.EAX != 3 {
		t.Errorf("leaf 0x8000001e eax %#x", e.EAX)
	}
	n := 0
	for _, e := range got {
		if e.Function == 0xb {
			n++
		}
	}
	if n != 3 {
		t.Errorf("%d leaf 0xb entries, want 3 (KVM's replaced)", n)
	}
}

func TestPatchCPUIDNoTSC(t *testing.T) {
	got := PatchCPUID(supportedFixture(), CPUIDConfig{Topology: Topology{}.Normalize(1)})
	if got.Find(leafTiming, 0) != nil || got.Find(leafKVMBase, 0).EAX != leafKVMFeatures {
		t.Error("leaf 0x40000010 advertised without a TSC frequency")
	}
	if l1 := got.Find(1, 0); l1.EDX&edxHTT != 0 || l1.EBX>>16&0xff != 1 || l1.ECX&ecxTSCDeadline != 0 {
		t.Errorf("leaf 1 for one vCPU: %+v", *l1)
	}
}

func TestX2APICID(t *testing.T) {
	topo := Topology{ThreadsPerCore: 2, CoresPerDie: 3, DiesPerPackage: 1, Packages: 2}
	// thread bit 0, core bits 1-2, package from bit 3
	for id, want := range map[uint32]uint32{0: 0, 1: 1, 2: 2, 5: 5, 6: 8, 7: 9, 11: 13} {
		if got := topo.X2APICID(id); got != want {
			t.Errorf("X2APICID(%d) = %d, want %d", id, got, want)
		}
	}
}

func TestRegsAndState(t *testing.T) {
	r := BootRegs(0x100200, 0x7000, false)
	if r != (kvm.Regs{RIP: 0x100200, RSI: 0x7000, RSP: 0x8ff0, RBP: 0x8ff0, RFLAGS: 2}) {
		t.Errorf("linux regs %+v", r)
	}
	r = BootRegs(0x1000000, 0x6000, true)
	if r != (kvm.Regs{RIP: 0x1000000, RBX: 0x6000, RFLAGS: 2}) {
		t.Errorf("pvh regs %+v", r)
	}
	if f := BootFPU(); f.FCW != 0x37f || f.MXCSR != 0x1f80 {
		t.Errorf("fpu %+v", f)
	}
	var l kvm.LapicState
	l.SetReg32(APICRegLVTLINT0, 0x10700|0x400) // masked, some mode set
	SetLINT(&l)
	if l.Reg32(APICRegLVTLINT0) != 0x10700 || l.Reg32(APICRegLVTLINT1) != 0x400 {
		t.Errorf("LINT0 %#x LINT1 %#x", l.Reg32(APICRegLVTLINT0), l.Reg32(APICRegLVTLINT1))
	}

	mem := &fakeMem{}
	long, err := SetupLongMode(mem)
	if err != nil {
		t.Fatal(err)
	}
	s := kvm.Sregs{CR0: 0x60000010, EFER: 0}
	ApplySystemState(&s, long)
	if s.CR0 != 0x60000010|CR0PE|CR0PG || s.CR3 != PML4Start || s.CR4 != CR4PAE || s.EFER != EFERLME|EFERLMA {
		t.Errorf("long mode sregs cr0 %#x cr3 %#x cr4 %#x efer %#x", s.CR0, s.CR3, s.CR4, s.EFER)
	}
	if s.CS.L != 1 || s.CS.Selector != 0x8 || s.GDT.Base != BootGDTStart {
		t.Errorf("long mode cs %+v gdt %+v", s.CS, s.GDT)
	}
	pm, err := SetupProtectedMode(mem)
	if err != nil {
		t.Fatal(err)
	}
	s = kvm.Sregs{CR0: 0x60000010, CR4: 0x20}
	ApplySystemState(&s, pm)
	if s.CR0 != CR0PE || s.CR4 != 0 || s.CS.DB != 1 || s.CS.L != 0 {
		t.Errorf("pvh sregs cr0 %#x cr4 %#x cs %+v", s.CR0, s.CR4, s.CS)
	}
}

func TestBootMSRs(t *testing.T) {
	want := map[uint32]uint64{0x174: 0, 0x175: 0, 0x176: 0, 0xc0000081: 0, 0xc0000083: 0, 0xc0000102: 0,
		0xc0000084: 0, 0xc0000082: 0, 0x10: 0, 0x1a0: 1, 0x2ff: 0x806}
	got := BootMSRs()
	if len(got) != len(want) {
		t.Fatalf("%d MSRs, want %d", len(got), len(want))
	}
	for _, e := range got {
		if v, ok := want[e.Index]; !ok || v != e.Data {
			t.Errorf("MSR %#x = %#x", e.Index, e.Data)
		}
	}
}

type fakeMem struct{}

func (fakeMem) WriteAt(p []byte, off int64) (int, error) { return len(p), nil }

func TestGuestXCR0(t *testing.T) {
	sig := uint32(kvm.CPUIDFlagSignificantIndex)
	c := kvm.CPUID{
		{Function: 1, ECX: ecxXSAVE},
		{Function: 0xd, Index: 0, Flags: sig, EAX: 0x207, EDX: 0x1},
		{Function: 0xd, Index: 1, Flags: sig, EAX: 0xf, ECX: 0x1800},
	}
	if got := GuestXCR0(c); got != 0x1_0000_0207 {
		t.Errorf("GuestXCR0 = %#x, want 0x100000207 (sub-leaf 0 EDX:EAX)", got)
	}
	c[0].ECX = 0
	if got := GuestXCR0(c); got != 0 {
		t.Errorf("without XSAVE: GuestXCR0 = %#x, want 0", got)
	}
	if got := GuestXCR0(kvm.CPUID{{Function: 1, ECX: ecxXSAVE}}); got != 0 {
		t.Errorf("without leaf 0xd: GuestXCR0 = %#x, want 0", got)
	}
}
