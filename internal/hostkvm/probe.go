package hostkvm

import (
	"fmt"
	"runtime"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nimbus-vmm/nimbus/internal/kvm"
)

// probeCode runs in real mode at probeEntry: an OUT that the VMM must see,
// then an interrupt through an IDT of limit 0, which must triple-fault.
// On PVM the OUT works but the triple fault comes back tens of seconds
// later as an MMIO exit: a stock kernel's early boot needs the same
// faithful exception delivery.
var probeCode = []byte{
	0xb0, 0x5a, // mov al, 0x5a
	0xe6, 0x80, // out 0x80, al
	0x0f, 0x01, 0x1e, 0x00, 0x06, // lidt [0x600] (limit 0, base 0: memory is zero)
	0xcd, 0x03, // int 3
}

const (
	probeEntry = 0x1000
	probeMem   = 64 << 10
	// probeLimit bounds the probe on a KVM that never answers the triple
	// fault; hardware KVM answers in microseconds, nested KVM in
	// milliseconds.
	probeLimit = 5 * time.Second
)

// ProbeStockGuest runs a tiny real-mode guest and checks that the vCPU
// exits as hardware KVM does: an I/O exit for its OUT, then
// KVM_EXIT_SHUTDOWN for its triple fault, within probeLimit.
func ProbeStockGuest() error {
	sys, err := kvm.Open()
	if err != nil {
		return err
	}
	defer sys.Close()
	vm, err := sys.CreateVM()
	if err != nil {
		return err
	}
	defer vm.Close()
	// Intel without unrestricted guest runs real mode through a TSS.
	if err := vm.SetTSSAddr(0xfffbd000); err != nil {
		return err
	}
	// Plain mmap, not internal/memory: that package's KVM tests gate on
	// this one.
	mem, err := unix.Mmap(-1, 0, probeMem, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return fmt.Errorf("mmap guest memory: %w", err)
	}
	defer unix.Munmap(mem)
	copy(mem[probeEntry:], probeCode)
	if err := vm.SetUserMemoryRegion(kvm.UserspaceMemoryRegion{MemorySize: probeMem, UserspaceAddr: hostAddr(mem)}); err != nil {
		return err
	}
	vcpu, err := vm.CreateVcpu(0)
	if err != nil {
		return err
	}
	defer vcpu.Close()
	s, err := vcpu.Sregs()
	if err != nil {
		return err
	}
	s.CS.Base, s.CS.Selector = 0, 0
	if err := vcpu.SetSregs(s); err != nil {
		return err
	}
	if err := vcpu.SetRegs(kvm.Regs{RIP: probeEntry, RFLAGS: 2}); err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() {
		// Kick signals the thread that entered KVM_RUN. The thread is
		// not unlocked: it carries the kick signal's state, so the
		// runtime ends it with the goroutine.
		runtime.LockOSThread()
		done <- runProbe(vcpu)
	}()
	t := time.AfterFunc(probeLimit, func() { vcpu.Kick() })
	defer t.Stop()
	return <-done
}

func runProbe(vcpu *kvm.Vcpu) error {
	e, err := vcpu.Run()
	if err != nil {
		return err
	}
	if e.Reason != kvm.ExitIO || e.IO.Direction != kvm.IOOut || e.IO.Port != 0x80 || len(e.IO.Data) != 1 || e.IO.Data[0] != 0x5a {
		return fmt.Errorf("%w: exit %v, want an OUT of 0x5a to port 0x80", ErrProbe, e)
	}
	if e, err = vcpu.Run(); err != nil {
		return err
	}
	switch e.Reason {
	case kvm.ExitShutdown:
		return nil
	case kvm.ExitIntr:
		return fmt.Errorf("%w: no KVM_EXIT_SHUTDOWN within %v of a real-mode triple fault", ErrProbe, probeLimit)
	default:
		return fmt.Errorf("%w: exit %v on a real-mode triple fault, want KVM_EXIT_SHUTDOWN", ErrProbe, e)
	}
}
