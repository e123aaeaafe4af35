package memory

import (
	"testing"

	"github.com/nimbus-vmm/nimbus/internal/kvm"
	"github.com/nimbus-vmm/nimbus/internal/kvm/kvmtest"
)

// A real guest writes RAM above 4 GiB through the slots Register
// installed; the host sees the value through Memory, and the guest reads
// what the host wrote below the hole.
func TestRegisterWithKVM(t *testing.T) {
	sys := kvmtest.Require(t)
	vm := kvmtest.NewVM(t, sys)
	m := newMem(t, Zone{Size: 3*gib + 2*mib})
	if _, err := m.Register(vm, 0, 0); err != nil {
		t.Fatal(err)
	}
	vcpu, err := vm.CreateVcpu(0)
	if err != nil {
		t.Fatal(err)
	}
	defer vcpu.Close()

	// 64-bit guest with 2 MiB identity pages for [0,2M) and [4G,4G+2M).
	const pml4, pdpt, pdLow, pdHigh, code = 0x9000, 0xa000, 0xb000, 0xc000, 0x10000
	writes := []struct{ gpa, v uint64 }{
		{pml4, pdpt | 3},
		{pdpt + 0*8, pdLow | 3}, {pdpt + 4*8, pdHigh | 3},
		{pdLow, 0x83}, {pdHigh, 4*gib | 0x83},
		{0x500, 0}, {0x508, 0x00af9b000000ffff}, {0x510, 0x00cf93000000ffff},
		{0x2000, 0xfeedfacecafebeef},
	}
	for _, w := range writes {
		if err := m.WriteU64(w.gpa, w.v); err != nil {
			t.Fatal(err)
		}
	}
	prog := []byte{
		0x48, 0x8b, 0x04, 0x25, 0x00, 0x20, 0x00, 0x00, // mov rax, [0x2000]
		0x48, 0xbb, 0x10, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, // mov rbx, 0x100000010
		0x48, 0x89, 0x03, // mov [rbx], rax
		0xf4, // hlt
	}
	if _, err := m.WriteAt(prog, code); err != nil {
		t.Fatal(err)
	}
	s, err := vcpu.Sregs()
	if err != nil {
		t.Fatal(err)
	}
	ds := kvm.Segment{Limit: 0xffffffff, Selector: 16, Type: 3, Present: 1, S: 1, DB: 1, G: 1}
	s.CS = kvm.Segment{Limit: 0xffffffff, Selector: 8, Type: 11, Present: 1, S: 1, L: 1, G: 1}
	s.DS, s.ES, s.FS, s.GS, s.SS = ds, ds, ds, ds, ds
	s.GDT = kvm.DTable{Base: 0x500, Limit: 23}
	s.CR3, s.CR4, s.CR0, s.EFER = pml4, 1<<5, 1|1<<4|1<<31, 1<<8|1<<10
	if err := vcpu.SetSregs(s); err != nil {
		t.Fatal(err)
	}
	if err := vcpu.SetRegs(kvm.Regs{RIP: code, RFLAGS: 2}); err != nil {
		t.Fatal(err)
	}
	if e, err := vcpu.Run(); err != nil || e.Reason != kvm.ExitHLT {
		t.Fatalf("exit %v, %v; want HLT", e, err)
	}
	if v, err := m.ReadU64(4*gib + 0x10); err != nil || v != 0xfeedfacecafebeef {
		t.Fatalf("high RAM after guest write: %#x, %v", v, err)
	}
}
