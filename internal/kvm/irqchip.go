package kvm

// In-kernel irqchip and PIT state, for snapshots. Mirrors struct
// kvm_irqchip and struct kvm_pit_state2 from arch/x86/include/uapi/asm/kvm.h.

// IRQChip mirrors struct kvm_irqchip: the chip id and the chip's state
// (struct kvm_pic_state or struct kvm_ioapic_state in a 512-byte union),
// kept as raw bytes: Nimbus saves and restores it, never edits it.
type IRQChip struct {
	ChipID uint32
	_      uint32
	Chip   [512]byte
}

// PitChannelState mirrors struct kvm_pit_channel_state.
type PitChannelState struct {
	Count         uint32
	LatchedCount  uint16
	CountLatched  uint8
	StatusLatched uint8
	Status        uint8
	ReadState     uint8
	WriteState    uint8
	WriteLatch    uint8
	RWMode        uint8
	Mode          uint8
	BCD           uint8
	Gate          uint8
	CountLoadTime int64
}

// PitState2 mirrors struct kvm_pit_state2.
type PitState2 struct {
	Channels [3]PitChannelState
	Flags    uint32
	_        [9]uint32
}

// IRQChip returns KVM_GET_IRQCHIP for chip (IRQChipPICMaster, IRQChipPICSlave or IRQChipIOAPIC).
func (vm *VM) IRQChip(chip uint32) (IRQChip, error) {
	c := IRQChip{ChipID: chip}
	_, err := ioctlSet(vm.fd, "KVM_GET_IRQCHIP", kvmGetIRQChip, &c)
	return c, err
}

// SetIRQChip is KVM_SET_IRQCHIP.
func (vm *VM) SetIRQChip(c IRQChip) error {
	_, err := ioctlSet(vm.fd, "KVM_SET_IRQCHIP", kvmSetIRQChip, &c)
	return err
}

// PIT2 returns KVM_GET_PIT2.
func (vm *VM) PIT2() (PitState2, error) {
	return ioctlGet[PitState2](vm.fd, "KVM_GET_PIT2", kvmGetPIT2)
}

// SetPIT2 is KVM_SET_PIT2.
func (vm *VM) SetPIT2(s PitState2) error {
	_, err := ioctlSet(vm.fd, "KVM_SET_PIT2", kvmSetPIT2, &s)
	return err
}
