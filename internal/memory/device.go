package memory

import (
	"fmt"

	"github.com/nimbus-vmm/nimbus/internal/kvm"
)

// DeviceMapping is host memory a device maps into guest-physical address
// space outside RAM (virtio-pmem's file, upstream's UserspaceMapping): a
// KVM slot numbered with RAM's, but invisible to the RAM accessors, the
// RAM size and vhost-user memory tables.
type DeviceMapping struct {
	m    *Memory
	vm   SlotRegistrar
	slot uint32
	gpa  uint64
	size uint64
}

// MapDevice registers data (a page-aligned host mapping the caller owns
// and keeps mapped until Unmap) as guest memory at gpa, which must not
// overlap RAM, in the next free KVM slot.
func (m *Memory) MapDevice(vm SlotRegistrar, gpa uint64, data []byte) (*DeviceMapping, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	size := uint64(len(data))
	if size == 0 || size%PageSize != 0 || gpa%PageSize != 0 || gpa+size < gpa {
		return nil, fmt.Errorf("map %#x device bytes at %#x: %w", size, gpa, ErrInvalid)
	}
	for _, r := range m.list() {
		if gpa < r.End() && r.GPA < gpa+size {
			return nil, fmt.Errorf("device memory [%#x-%#x) overlaps RAM %v: %w", gpa, gpa+size, r.Region, ErrInvalid)
		}
	}
	slot := m.allocSlot()
	err := vm.SetUserMemoryRegion(kvm.UserspaceMemoryRegion{
		Slot: slot, Flags: m.flags, GuestPhysAddr: gpa, MemorySize: size, UserspaceAddr: hostAddr(data),
	})
	if err != nil {
		m.freeSlots = append(m.freeSlots, slot)
		return nil, fmt.Errorf("register device memory [%#x-%#x): %w", gpa, gpa+size, err)
	}
	return &DeviceMapping{m: m, vm: vm, slot: slot, gpa: gpa, size: size}, nil
}

// Slot is the mapping's KVM slot.
func (d *DeviceMapping) Slot() uint32 { return d.slot }

// Unmap deletes the KVM slot (the guest no longer reaches the memory;
// the caller may unmap it afterwards) and frees its number.
func (d *DeviceMapping) Unmap() error {
	m := d.m
	m.mu.Lock()
	defer m.mu.Unlock()
	// A zero size deletes the slot (KVM API, KVM_SET_USER_MEMORY_REGION).
	if err := d.vm.SetUserMemoryRegion(kvm.UserspaceMemoryRegion{Slot: d.slot, GuestPhysAddr: d.gpa}); err != nil {
		return fmt.Errorf("delete device memory slot %d: %w", d.slot, err)
	}
	m.freeSlots = append(m.freeSlots, d.slot)
	return nil
}

// allocSlot is a deleted slot's number or the next new one. mu held.
func (m *Memory) allocSlot() uint32 {
	if n := len(m.freeSlots); n > 0 {
		s := m.freeSlots[n-1]
		m.freeSlots = m.freeSlots[:n-1]
		return s
	}
	s := m.nextSlot
	m.nextSlot++
	return s
}
