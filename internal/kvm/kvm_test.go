package kvm_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/nimbus-vmm/nimbus/internal/kvm"
	"github.com/nimbus-vmm/nimbus/internal/kvm/kvmtest"
)

// These tests run real guests and need /dev/kvm (kvmtest.Require).

type guest struct {
	sys  *kvm.System
	vm   *kvm.VM
	vcpu *kvm.Vcpu
	mem  []byte
}

// newGuest creates a VM with memSize bytes of RAM at guest-physical 0 and
// one vCPU. flags are the memory slot flags.
func newGuest(t testing.TB, memSize int, flags uint32) *guest {
	t.Helper()
	sys := kvmtest.Require(t)
	vm := kvmtest.NewVM(t, sys)
	mem, addr := anonMem(t, memSize)
	if err := vm.SetTSSAddr(0xfffbd000); err != nil {
		t.Fatal(err)
	}
	if err := vm.SetUserMemoryRegion(kvm.UserspaceMemoryRegion{Slot: 0, Flags: flags, MemorySize: uint64(memSize), UserspaceAddr: addr}); err != nil {
		t.Fatal(err)
	}
	vcpu, err := vm.CreateVcpu(0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { vcpu.Close() })
	return &guest{sys: sys, vm: vm, vcpu: vcpu, mem: mem}
}

// realMode loads code at 0x1000 and points the vCPU at it in real mode
// with CS=0.
func (g *guest) realMode(t testing.TB, code []byte) {
	t.Helper()
	copy(g.mem[0x1000:], code)
	s, err := g.vcpu.Sregs()
	if err != nil {
		t.Fatal(err)
	}
	s.CS.Base, s.CS.Selector = 0, 0
	if err := g.vcpu.SetSregs(s); err != nil {
		t.Fatal(err)
	}
	if err := g.vcpu.SetRegs(kvm.Regs{RIP: 0x1000, RFLAGS: 2}); err != nil {
		t.Fatal(err)
	}
}

func (g *guest) run(t testing.TB) kvm.Exit {
	t.Helper()
	e, err := g.vcpu.Run()
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	return e
}

func (g *guest) expectIO(t *testing.T, dir uint8, port uint16, size uint8, data []byte) kvm.Exit {
	t.Helper()
	e := g.run(t)
	if e.Reason != kvm.ExitIO || e.IO.Direction != dir || e.IO.Port != port || e.IO.Size != size || e.IO.Count != 1 {
		t.Fatalf("exit %v, want IO dir=%d port=%#x size=%d", e, dir, port, size)
	}
	if dir == kvm.IOOut && !bytes.Equal(e.IO.Data, data) {
		t.Fatalf("out data % x, want % x", e.IO.Data, data)
	}
	if dir == kvm.IOIn {
		copy(e.IO.Data, data)
	}
	return e
}

func (g *guest) expectHLT(t *testing.T) kvm.Regs {
	t.Helper()
	if e := g.run(t); e.Reason != kvm.ExitHLT {
		t.Fatalf("exit %v, want KVM_EXIT_HLT", e)
	}
	r, err := g.vcpu.Regs()
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestCapabilities(t *testing.T) {
	sys := kvmtest.Require(t)
	if err := sys.RequireCaps(kvm.BaseCaps...); err != nil {
		t.Fatal(err)
	}
	if sys.VcpuMmapSize() < 4096 {
		t.Fatalf("mmap size %d", sys.VcpuMmapSize())
	}
	slots, err := sys.CheckExtension(kvm.CapNrMemslots)
	if err != nil || slots < 32 {
		t.Fatalf("KVM_CAP_NR_MEMSLOTS = %d, %v", slots, err)
	}
	msrs, err := sys.MSRIndexList()
	if err != nil || len(msrs) == 0 {
		t.Fatalf("MSR index list: %d, %v", len(msrs), err)
	}
	cpuid, err := sys.SupportedCPUID()
	if err != nil {
		t.Fatal(err)
	}
	leaf0 := cpuid.Find(0, 0)
	if leaf0 == nil || leaf0.EAX == 0 {
		t.Fatalf("no CPUID leaf 0 in %d entries", len(cpuid))
	}
	t.Logf("api %d, mmap size %d, memslots %d, %d MSRs, %d CPUID entries, vendor %q",
		kvm.APIVersion, sys.VcpuMmapSize(), slots, len(msrs), len(cpuid), vendor(leaf0))
}

func vendor(e *kvm.CPUIDEntry) string {
	b := binary.LittleEndian.AppendUint32(nil, e.EBX)
	b = binary.LittleEndian.AppendUint32(b, e.EDX)
	return string(binary.LittleEndian.AppendUint32(b, e.ECX))
}

func TestRealModeIO(t *testing.T) {
	g := newGuest(t, 64<<10, 0)
	code := []byte{
		0xba, 0xf8, 0x03, // mov dx, 0x3f8
		0xb0, 'O', // mov al, 'O'
		0xee,      // out dx, al
		0xb0, 'K', // mov al, 'K'
		0xee,       // out dx, al
		0x42,       // inc dx
		0xec,       // in al, dx
		0xfe, 0xc0, // inc al
		0xee,             // out dx, al
		0xb8, 0xef, 0xbe, // mov ax, 0xbeef
		0xef, // out dx, ax
		0xf4, // hlt
	}
	g.realMode(t, code)
	g.expectIO(t, kvm.IOOut, 0x3f8, 1, []byte("O"))
	g.expectIO(t, kvm.IOOut, 0x3f8, 1, []byte("K"))
	g.expectIO(t, kvm.IOIn, 0x3f9, 1, []byte{0x41})
	g.expectIO(t, kvm.IOOut, 0x3f9, 1, []byte{0x42}) // the guest saw our IN value
	g.expectIO(t, kvm.IOOut, 0x3f9, 2, []byte{0xef, 0xbe})
	r := g.expectHLT(t)
	if r.RAX&0xffff != 0xbeef || r.RDX&0xffff != 0x3f9 || r.RIP != 0x1000+uint64(len(code)) {
		t.Fatalf("regs rax=%#x rdx=%#x rip=%#x", r.RAX, r.RDX, r.RIP)
	}
}

// Long mode: a GDT, a 4-level identity map of the first 4 MiB with 2 MiB
// pages, and 64-bit code.
func TestLongMode(t *testing.T) {
	g := newGuest(t, 4<<20, 0)
	const (
		gdtAddr  = 0x500
		pml4Addr = 0x9000
		pdptAddr = 0xa000
		pdAddr   = 0xb000
		codeAddr = 0x10000
	)
	le := binary.LittleEndian
	gdt := []uint64{0, 0x00af9b000000ffff, 0x00cf93000000ffff} // null, code64, data
	for i, d := range gdt {
		le.PutUint64(g.mem[gdtAddr+8*i:], d)
	}
	le.PutUint64(g.mem[pml4Addr:], pdptAddr|0x3) // present, writable
	le.PutUint64(g.mem[pdptAddr:], pdAddr|0x3)
	le.PutUint64(g.mem[pdAddr:], 0x0|0x83) // 2 MiB page (PS)
	le.PutUint64(g.mem[pdAddr+8:], 0x200000|0x83)
	le.PutUint64(g.mem[0x200000:], 0xcafef00dd00dfeed)
	code := []byte{
		0x48, 0xb8, 0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, // mov rax, 0x1122334455667788
		0x66, 0xba, 0xf8, 0x03, // mov dx, 0x3f8
		0xef,                                           // out dx, eax
		0x48, 0x8b, 0x0c, 0x25, 0x00, 0x00, 0x20, 0x00, // mov rcx, [0x200000]
		0xf4, // hlt
	}
	copy(g.mem[codeAddr:], code)

	s, err := g.vcpu.Sregs()
	if err != nil {
		t.Fatal(err)
	}
	cs := kvm.Segment{Base: 0, Limit: 0xffffffff, Selector: 8, Type: 11, Present: 1, S: 1, L: 1, G: 1}
	ds := kvm.Segment{Base: 0, Limit: 0xffffffff, Selector: 16, Type: 3, Present: 1, S: 1, DB: 1, G: 1}
	s.CS = cs
	s.DS, s.ES, s.FS, s.GS, s.SS = ds, ds, ds, ds, ds
	s.GDT = kvm.DTable{Base: gdtAddr, Limit: uint16(8*len(gdt) - 1)}
	s.CR3 = pml4Addr
	s.CR4 = 1 << 5              // PAE
	s.CR0 = 1<<0 | 1<<4 | 1<<31 // PE, ET, PG
	s.EFER = 1<<8 | 1<<10       // LME, LMA
	if err := g.vcpu.SetSregs(s); err != nil {
		t.Fatal(err)
	}
	if err := g.vcpu.SetRegs(kvm.Regs{RIP: codeAddr, RSP: 0x8000, RFLAGS: 2}); err != nil {
		t.Fatal(err)
	}
	g.expectIO(t, kvm.IOOut, 0x3f8, 4, []byte{0x88, 0x77, 0x66, 0x55})
	r := g.expectHLT(t)
	if r.RAX != 0x1122334455667788 || r.RCX != 0xcafef00dd00dfeed || r.RIP != codeAddr+uint64(len(code)) {
		t.Fatalf("regs rax=%#x rcx=%#x rip=%#x", r.RAX, r.RCX, r.RIP)
	}
	got, err := g.vcpu.Sregs()
	if err != nil {
		t.Fatal(err)
	}
	if got.EFER&(1<<10) == 0 || got.CS.L != 1 {
		t.Fatalf("not in long mode: efer=%#x cs.l=%d", got.EFER, got.CS.L)
	}
}

func TestMMIO(t *testing.T) {
	g := newGuest(t, 64<<10, 0) // 0xd0000 is outside every slot
	g.realMode(t, []byte{
		0xb8, 0x00, 0xd0, // mov ax, 0xd000
		0x8e, 0xd8, // mov ds, ax
		0xc6, 0x06, 0x10, 0x00, 0x5a, // mov byte [0x10], 0x5a
		0xa0, 0x20, 0x00, // mov al, [0x20]
		0xba, 0xf8, 0x03, // mov dx, 0x3f8
		0xee, // out dx, al
		0xf4, // hlt
	})
	e := g.run(t)
	if e.Reason != kvm.ExitMMIO || e.MMIO.Addr != 0xd0010 || !e.MMIO.IsWrite || !bytes.Equal(e.MMIO.Data, []byte{0x5a}) {
		t.Fatalf("exit %v data % x, want MMIO write 0x5a at 0xd0010", e, e.MMIO.Data)
	}
	e = g.run(t)
	if e.Reason != kvm.ExitMMIO || e.MMIO.Addr != 0xd0020 || e.MMIO.IsWrite || len(e.MMIO.Data) != 1 {
		t.Fatalf("exit %v, want 1-byte MMIO read at 0xd0020", e)
	}
	e.MMIO.Data[0] = 0x77
	g.expectIO(t, kvm.IOOut, 0x3f8, 1, []byte{0x77}) // the guest read our value
	g.expectHLT(t)
}

func TestIRQChip(t *testing.T) {
	sys := kvmtest.Require(t)
	vm := kvmtest.NewVM(t, sys)
	if err := vm.CreateIRQChip(); err != nil {
		t.Fatal(err)
	}
	if err := vm.CreateIRQChip(); !errors.Is(err, unix.EEXIST) {
		t.Fatalf("second KVM_CREATE_IRQCHIP: %v, want EEXIST", err)
	}
	if err := vm.SetIdentityMapAddr(0xfeffc000); err != nil {
		t.Fatal(err)
	}
	if err := vm.CreatePIT2(kvm.PitConfig{Flags: kvm.PitSpeakerDummy}); err != nil {
		t.Fatal(err)
	}
	for _, level := range []bool{true, false} {
		if err := vm.IRQLine(4, level); err != nil {
			t.Fatal(err)
		}
	}
	vcpu, err := vm.CreateVcpu(3)
	if err != nil {
		t.Fatal(err)
	}
	defer vcpu.Close()
	lapic, err := vcpu.LAPIC()
	if err != nil {
		t.Fatal(err)
	}
	if id := lapic.Reg32(0x20) >> 24; id != 3 {
		t.Fatalf("APIC ID %d, want 3", id)
	}
	if err := vcpu.SetLAPIC(&lapic); err != nil {
		t.Fatal(err)
	}

	routes := kvm.IRQRouting{}
	for pin := uint32(0); pin < 24; pin++ {
		routes = append(routes, kvm.IRQChipRoute(pin, kvm.IRQChipIOAPIC, pin))
	}
	routes = append(routes, kvm.MSIRoute(24, 0xfee00000, 0x41))
	if err := vm.SetGSIRouting(routes); err != nil {
		t.Fatal(err)
	}
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(efd)
	if err := vm.RegisterIRQFD(efd, 24); err != nil {
		t.Fatal(err)
	}
	if err := vm.UnregisterIRQFD(efd, 24); err != nil {
		t.Fatal(err)
	}
	io := kvm.IOEventFD{Addr: 0xd0000000, Len: 4, FD: int32(efd)}
	if err := vm.SetIOEventFD(io); err != nil {
		t.Fatal(err)
	}
	io.Flags = kvm.IOEventFDDeassign
	if err := vm.SetIOEventFD(io); err != nil {
		t.Fatal(err)
	}
	if _, err := vm.SignalMSI(kvm.MSI{AddressLo: 0xfee00000, Data: 0x41}); err != nil {
		t.Fatal(err)
	}
}

func TestSplitIRQChip(t *testing.T) {
	sys := kvmtest.RequireCaps(t, kvm.CapSplitIRQChip)
	vm := kvmtest.NewVM(t, sys)
	if err := vm.EnableSplitIRQChip(24); err != nil {
		t.Fatal(err)
	}
	// The PIC and IOAPIC now belong to user space.
	if err := vm.CreateIRQChip(); !errors.Is(err, unix.EEXIST) {
		t.Fatalf("KVM_CREATE_IRQCHIP after split: %v, want EEXIST", err)
	}
	vcpu, err := vm.CreateVcpu(0)
	if err != nil {
		t.Fatal(err)
	}
	defer vcpu.Close()
	if _, err := vcpu.LAPIC(); err != nil { // the local APIC is still in the kernel
		t.Fatal(err)
	}
	if _, err := vm.SignalMSI(kvm.MSI{AddressLo: 0xfee00000, Data: 0x30}); err != nil {
		t.Fatal(err)
	}
}

// runLocked runs the vCPU on a locked, named OS thread until an exit other
// than I/O arrives and returns it; the goroutine is finished when the
// channel delivers.
func runLocked(g *guest, name string) <-chan result {
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		var res result
		if res.err = kvm.SetThreadName(name); res.err == nil {
			comm, _ := os.ReadFile("/proc/thread-self/comm")
			res.comm = strings.TrimSpace(string(comm))
			res.exit, res.err = g.vcpu.Run()
		}
		ch <- res
	}()
	return ch
}

type result struct {
	exit kvm.Exit
	comm string
	err  error
}

func TestKickRunningVcpu(t *testing.T) {
	g := newGuest(t, 64<<10, 0)
	g.realMode(t, []byte{
		0xff, 0x06, 0x00, 0x05, // inc word [0x500]
		0xeb, 0xfa, // jmp back
	})
	ch := runLocked(g, "vcpu0")
	// Wait until the guest is executing, so the signal (not immediate_exit
	// alone) has to stop it.
	waitGuestWord16(t, g.mem, 0x500, 0)
	if err := g.vcpu.Kick(); err != nil {
		t.Fatal(err)
	}
	res := <-ch
	if res.err != nil {
		t.Fatal(res.err)
	}
	if res.exit.Reason != kvm.ExitIntr {
		t.Fatalf("exit %v, want KVM_EXIT_INTR", res.exit)
	}
	if res.comm != "vcpu0" {
		t.Fatalf("thread name %q, want vcpu0", res.comm)
	}
	// The kick is consumed: the guest runs again (and is kicked again).
	before := guestWord16(g.mem, 0x500)
	ch = runLocked(g, "vcpu0")
	waitGuestWord16(t, g.mem, 0x500, before)
	if err := g.vcpu.Kick(); err != nil {
		t.Fatal(err)
	}
	if res = <-ch; res.err != nil || res.exit.Reason != kvm.ExitIntr {
		t.Fatalf("second kick: %v %v", res.exit, res.err)
	}
}

func TestKickBeforeRun(t *testing.T) {
	g := newGuest(t, 64<<10, 0)
	g.realMode(t, []byte{0xf4}) // hlt
	if err := g.vcpu.Kick(); err != nil {
		t.Fatal(err)
	}
	if e := g.run(t); e.Reason != kvm.ExitIntr {
		t.Fatalf("exit %v, want KVM_EXIT_INTR from a pending kick", e)
	}
	g.expectHLT(t) // the kick was consumed
}

func TestShutdownOnTripleFault(t *testing.T) {
	// PVM answers a triple fault with a bogus MMIO exit after ~40 s.
	kvmtest.RequireStockGuests(t)
	g := newGuest(t, 64<<10, 0)
	// An IDT of limit 0 turns any interrupt into a triple fault.
	g.realMode(t, []byte{
		0x0f, 0x01, 0x1e, 0x00, 0x06, // lidt [0x600]
		0xcd, 0x03, // int3
	})
	// IDT descriptor at 0x600: limit 0, base 0 (already zero).
	if e := g.run(t); e.Reason != kvm.ExitShutdown {
		t.Fatalf("exit %v, want KVM_EXIT_SHUTDOWN", e)
	}
}

func TestDirtyLog(t *testing.T) {
	g := newGuest(t, 64<<10, kvm.MemLogDirtyPages)
	g.realMode(t, []byte{
		0xc6, 0x06, 0x00, 0x30, 0x01, // mov byte [0x3000], 1
		0xf4, // hlt
	})
	g.expectHLT(t)
	bitmap := make([]uint64, 1) // 16 pages
	if err := g.vm.DirtyLog(0, bitmap); err != nil {
		t.Fatal(err)
	}
	if bitmap[0]&(1<<3) == 0 || bitmap[0]&(1<<5) != 0 {
		t.Fatalf("dirty bitmap %#b, want page 3 dirty and page 5 clean", bitmap[0])
	}
}

func TestVcpuStateRoundTrip(t *testing.T) {
	g := newGuest(t, 64<<10, 0)
	v := g.vcpu
	cpuid, err := g.sys.SupportedCPUID()
	if err != nil {
		t.Fatal(err)
	}
	if err := v.SetCPUID2(cpuid); err != nil {
		t.Fatal(err)
	}

	regs := kvm.Regs{RAX: 1, RBX: 2, R15: 15, RIP: 0x1234, RFLAGS: 0x202}
	if err := v.SetRegs(regs); err != nil {
		t.Fatal(err)
	}
	if got, err := v.Regs(); err != nil || got != regs {
		t.Fatalf("regs %+v %v", got, err)
	}

	const sysenterCS = 0x174
	if err := v.SetMSRs(kvm.MSRs{{Index: sysenterCS, Data: 0x10}}); err != nil {
		t.Fatal(err)
	}
	m, err := v.MSRs(sysenterCS)
	if err != nil || len(m) != 1 || m[0].Data != 0x10 {
		t.Fatalf("MSRs %+v %v", m, err)
	}
	if _, err := v.MSRs(0xdeadbeef); !errors.Is(err, kvm.ErrInvalidArgument) {
		t.Fatalf("bogus MSR read: %v", err)
	}

	fpu, err := v.FPU()
	if err != nil {
		t.Fatal(err)
	}
	fpu.MXCSR = 0x1f80
	fpu.XMM[1][0] = 0xab
	if err := v.SetFPU(fpu); err != nil {
		t.Fatal(err)
	}
	if got, _ := v.FPU(); got.XMM[1][0] != 0xab {
		t.Fatalf("xmm1 %x", got.XMM[1])
	}

	if ev, err := v.VcpuEvents(); err != nil {
		t.Fatal(err)
	} else if err := v.SetVcpuEvents(ev); err != nil {
		t.Fatal(err)
	}
	dr, err := v.DebugRegs()
	if err != nil {
		t.Fatal(err)
	}
	dr.DB[0] = 0x4000
	if err := v.SetDebugRegs(dr); err != nil {
		t.Fatal(err)
	}
	if got, _ := v.DebugRegs(); got.DB[0] != 0x4000 {
		t.Fatalf("db0 %#x", got.DB[0])
	}
	xs, err := v.XSave()
	if err != nil {
		t.Fatal(err)
	}
	if err := v.SetXSave(xs); err != nil {
		t.Fatal(err)
	}
	xcrs, err := v.XCRs()
	if err != nil {
		t.Fatal(err)
	}
	if err := v.SetXCRs(xcrs); err != nil {
		t.Fatal(err)
	}
	if st, err := v.MPState(); err != nil || st != kvm.MPStateRunnable {
		t.Fatalf("mp state %d %v", st, err)
	}
	if err := v.SetMPState(kvm.MPStateRunnable); err != nil {
		t.Fatal(err)
	}
	khz, err := v.TSCKHz()
	if err != nil || khz == 0 {
		t.Fatalf("tsc khz %d %v", khz, err)
	}
	if err := v.SetTSCKHz(khz); err != nil {
		t.Fatal(err)
	}
	if err := v.NMI(); err != nil {
		t.Fatal(err)
	}
	clk, err := g.vm.Clock()
	if err != nil {
		t.Fatal(err)
	}
	clk.Flags = 0
	if err := g.vm.SetClock(clk); err != nil {
		t.Fatal(err)
	}
	// Only allowed before the first vCPU exists.
	if err := g.vm.SetIdentityMapAddr(0xfeffc000); !errors.Is(err, unix.EINVAL) {
		t.Fatalf("KVM_SET_IDENTITY_MAP_ADDR after KVM_CREATE_VCPU: %v, want EINVAL", err)
	}
	t.Logf("tsc %d kHz, kvmclock %d ns, xcr0 %#x", khz, clk.Clock, xcrs.XCRs[0].Value)
}

// Close while another goroutine runs the guest: Run must come back (with
// a kick, then ErrClosed) and nothing may touch the unmapped kvm_run.
func TestCloseWhileRunning(t *testing.T) {
	g := newGuest(t, 64<<10, 0)
	g.realMode(t, []byte{
		0xff, 0x06, 0x00, 0x05, // inc word [0x500]
		0xeb, 0xfa, // jmp back
	})
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		for {
			e, err := g.vcpu.Run()
			if err != nil {
				done <- err
				return
			}
			if e.Reason != kvm.ExitIntr {
				done <- errors.New("unexpected exit " + e.String())
				return
			}
		}
	}()
	waitGuestWord16(t, g.mem, 0x500, 0)
	if err := g.vcpu.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, kvm.ErrClosed) {
		t.Fatalf("Run after Close: %v, want ErrClosed", err)
	}
	if err := g.vcpu.Kick(); !errors.Is(err, kvm.ErrClosed) {
		t.Fatalf("Kick after Close: %v", err)
	}
}
