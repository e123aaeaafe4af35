package memory

import (
	"errors"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/nimbus-vmm/nimbus/internal/kvm"
)

// TestMapDevice: device memory takes a KVM slot with RAM's flags, stays
// out of the RAM accessors and size, refuses to overlap RAM, and gives
// its slot back on Unmap for the next mapping or plug.
func TestMapDevice(t *testing.T) {
	m := newMem(t, Zone{Size: 64 * mib})
	vm := &fakeVM{fail: -1}
	if _, err := m.Register(vm, 0, kvm.MemLogDirtyPages); err != nil {
		t.Fatal(err)
	}
	data, err := unix.Mmap(-1, 0, 4*mib, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Munmap(data) })
	if _, err := m.MapDevice(vm, 32*mib, data); !errors.Is(err, ErrInvalid) {
		t.Fatalf("overlapping RAM: %v", err)
	}
	if _, err := m.MapDevice(vm, 8*gib+1, data); !errors.Is(err, ErrInvalid) {
		t.Fatalf("unaligned: %v", err)
	}
	if _, err := m.MapDevice(&fakeVM{fail: 0}, 8*gib, data); err == nil {
		t.Fatal("failing registrar accepted")
	}
	d, err := m.MapDevice(vm, 8*gib, data)
	if err != nil {
		t.Fatal(err)
	}
	want := kvm.UserspaceMemoryRegion{Slot: 1, Flags: kvm.MemLogDirtyPages, GuestPhysAddr: 8 * gib, MemorySize: 4 * mib, UserspaceAddr: hostAddr(data)}
	if d.Slot() != 1 || vm.slots[len(vm.slots)-1] != want {
		t.Fatalf("slot %d, registered %+v, want %+v", d.Slot(), vm.slots[len(vm.slots)-1], want)
	}
	if _, err := m.ReadU8(8 * gib); !errors.Is(err, ErrBadAddress) || m.Size() != 64*mib {
		t.Fatalf("device memory visible as RAM: %v, size %#x", err, m.Size())
	}
	if err := d.Unmap(); err != nil {
		t.Fatal(err)
	}
	if del := vm.slots[len(vm.slots)-1]; del != (kvm.UserspaceMemoryRegion{Slot: 1, GuestPhysAddr: 8 * gib}) {
		t.Fatalf("delete registered %+v", del)
	}
	if info, err := m.Plug(vm, "hp0", 4*gib, 2*mib, Options{}); err != nil || info.Slot != 1 {
		t.Fatalf("plug after unmap: %+v, %v (want the freed slot 1)", info, err)
	}
	if info, err := m.Plug(vm, "hp1", 5*gib, 2*mib, Options{}); err != nil || info.Slot != 2 {
		t.Fatalf("second plug: %+v, %v", info, err)
	}
}
