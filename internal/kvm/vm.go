package kvm

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// VM is a KVM virtual machine file descriptor.
type VM struct {
	fd       int
	mmapSize int
}

// Fd returns the VM file descriptor.
func (vm *VM) Fd() int { return vm.fd }

// Close closes the VM fd. The kernel frees the VM once its vCPUs and
// other references are closed too.
func (vm *VM) Close() error {
	if vm.fd < 0 {
		return nil
	}
	err := unix.Close(vm.fd)
	vm.fd = -1
	return err
}

// CheckExtension is KVM_CHECK_EXTENSION on the VM fd (some answers, such
// as CapNrMemslots, are per VM). Needs CapCheckExtensionVM.
func (vm *VM) CheckExtension(c Cap) (int, error) { return checkExtension(vm.fd, c) }

// SetUserMemoryRegion installs, moves or (MemorySize 0) deletes a memory
// slot.
func (vm *VM) SetUserMemoryRegion(r UserspaceMemoryRegion) error {
	_, err := ioctlSet(vm.fd, "KVM_SET_USER_MEMORY_REGION", kvmSetUserMemoryRegion, &r)
	if err != nil {
		return fmt.Errorf("slot %d gpa %#x size %#x: %w", r.Slot, r.GuestPhysAddr, r.MemorySize, err)
	}
	return nil
}

// SetTSSAddr places the three-page TSS region Intel VMX needs in real mode
// (KVM_SET_TSS_ADDR); it must not overlap guest memory or devices.
func (vm *VM) SetTSSAddr(addr uint32) error {
	_, err := ioctl(vm.fd, "KVM_SET_TSS_ADDR", kvmSetTSSAddr, uintptr(addr))
	return err
}

// SetIdentityMapAddr places the one-page EPT identity map
// (KVM_SET_IDENTITY_MAP_ADDR).
func (vm *VM) SetIdentityMapAddr(addr uint64) error {
	_, err := ioctlSet(vm.fd, "KVM_SET_IDENTITY_MAP_ADDR", kvmSetIdentityMapAddr, &addr)
	return err
}

// CreateIRQChip creates the in-kernel PIC pair, IOAPIC and local APICs
// (KVM_CREATE_IRQCHIP). Call it before creating vCPUs.
func (vm *VM) CreateIRQChip() error {
	_, err := ioctl(vm.fd, "KVM_CREATE_IRQCHIP", kvmCreateIRQChip, 0)
	return err
}

// EnableCap is KVM_ENABLE_CAP on the VM fd.
func (vm *VM) EnableCap(c EnableCap) error {
	if _, err := ioctlSet(vm.fd, "KVM_ENABLE_CAP", kvmEnableCap, &c); err != nil {
		return fmt.Errorf("%v: %w", c.Cap, err)
	}
	return nil
}

// EnableSplitIRQChip keeps the local APICs in the kernel and leaves the
// PIC and IOAPIC to user space, with ioapicPins routes reserved for the
// user-space IOAPIC (KVM_ENABLE_CAP(KVM_CAP_SPLIT_IRQCHIP)). Call it
// instead of CreateIRQChip, before creating vCPUs.
func (vm *VM) EnableSplitIRQChip(ioapicPins uint32) error {
	return vm.EnableCap(EnableCap{Cap: CapSplitIRQChip, Args: [4]uint64{uint64(ioapicPins)}})
}

// CreatePIT2 creates the in-kernel i8254 PIT (KVM_CREATE_PIT2); it needs
// the in-kernel irqchip.
func (vm *VM) CreatePIT2(cfg PitConfig) error {
	_, err := ioctlSet(vm.fd, "KVM_CREATE_PIT2", kvmCreatePIT2, &cfg)
	return err
}

// IRQLine sets the level of an in-kernel irqchip input (KVM_IRQ_LINE).
func (vm *VM) IRQLine(irq uint32, high bool) error {
	l := irqLevel{IRQ: irq}
	if high {
		l.Level = 1
	}
	if _, err := ioctlSet(vm.fd, "KVM_IRQ_LINE", kvmIRQLine, &l); err != nil {
		return fmt.Errorf("irq %d: %w", irq, err)
	}
	return nil
}

// SetIRQFD is KVM_IRQFD: bind (or with IRQFDDeassign unbind) an eventfd to
// a GSI so that writing the eventfd injects the interrupt.
func (vm *VM) SetIRQFD(f IRQFD) error {
	if _, err := ioctlSet(vm.fd, "KVM_IRQFD", kvmIRQFD, &f); err != nil {
		return fmt.Errorf("fd %d gsi %d: %w", f.FD, f.GSI, err)
	}
	return nil
}

// RegisterIRQFD binds eventfd fd to gsi.
func (vm *VM) RegisterIRQFD(fd int, gsi uint32) error {
	return vm.SetIRQFD(IRQFD{FD: uint32(fd), GSI: gsi})
}

// UnregisterIRQFD unbinds eventfd fd from gsi.
func (vm *VM) UnregisterIRQFD(fd int, gsi uint32) error {
	return vm.SetIRQFD(IRQFD{FD: uint32(fd), GSI: gsi, Flags: IRQFDDeassign})
}

// SetIOEventFD is KVM_IOEVENTFD: signal an eventfd when the guest writes
// an address (or port), without an exit to user space.
func (vm *VM) SetIOEventFD(e IOEventFD) error {
	if _, err := ioctlSet(vm.fd, "KVM_IOEVENTFD", kvmIOEventFD, &e); err != nil {
		return fmt.Errorf("fd %d addr %#x len %d: %w", e.FD, e.Addr, e.Len, err)
	}
	return nil
}

// SignalMSI injects an MSI (KVM_SIGNAL_MSI). It reports whether the
// message was delivered (false: the guest blocked it).
func (vm *VM) SignalMSI(m MSI) (bool, error) {
	n, err := ioctlSet(vm.fd, "KVM_SIGNAL_MSI", kvmSignalMSI, &m)
	if err != nil {
		return false, err
	}
	return n > 0, nil
}

// SetGSIRouting replaces the whole GSI routing table (KVM_SET_GSI_ROUTING).
func (vm *VM) SetGSIRouting(r IRQRouting) error {
	b, _ := r.MarshalBinary()
	_, err := ioctlBuf(vm.fd, "KVM_SET_GSI_ROUTING", kvmSetGSIRouting, b)
	return err
}

// Clock returns KVM_GET_CLOCK (the kvmclock base).
func (vm *VM) Clock() (ClockData, error) {
	return ioctlGet[ClockData](vm.fd, "KVM_GET_CLOCK", kvmGetClock)
}

// SetClock is KVM_SET_CLOCK.
func (vm *VM) SetClock(c ClockData) error {
	_, err := ioctlSet(vm.fd, "KVM_SET_CLOCK", kvmSetClock, &c)
	return err
}

// DirtyLog fills bitmap with KVM_GET_DIRTY_LOG for a slot registered with
// MemLogDirtyPages: bit i of the bitmap is page i of the slot. bitmap must
// hold at least one bit per page of the slot, rounded up to 64.
func (vm *VM) DirtyLog(slot uint32, bitmap []uint64) error {
	if len(bitmap) == 0 {
		return fmt.Errorf("KVM_GET_DIRTY_LOG: empty bitmap: %w", ErrInvalidArgument)
	}
	if err := getDirtyLog(vm.fd, slot, bitmap); err != nil {
		return fmt.Errorf("slot %d: %w", slot, err)
	}
	return nil
}

// CreateVcpu creates vCPU id (its initial APIC id) and maps its kvm_run.
func (vm *VM) CreateVcpu(id int) (*Vcpu, error) {
	fd, err := ioctl(vm.fd, "KVM_CREATE_VCPU", kvmCreateVcpu, uintptr(id))
	if err != nil {
		return nil, fmt.Errorf("vcpu %d: %w", id, err)
	}
	run, err := unix.Mmap(fd, 0, vm.mmapSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("vcpu %d: mmap kvm_run: %w: %w", id, ErrIoctl, err)
	}
	return &Vcpu{id: id, fd: fd, run: run}, nil
}
