package x86

import (
	"errors"
	"fmt"
	"io"

	"github.com/nimbus-vmm/nimbus/internal/kvm"
)

// Control-register and EFER bits (Intel SDM vol. 3, 2.5 and 2.2.1).
const (
	CR0PE   = 1 << 0
	CR0PG   = 1 << 31
	CR4PAE  = 1 << 5
	EFERLME = 1 << 8
	EFERLMA = 1 << 10
)

// ErrGuestMemory wraps failures writing boot structures to guest memory.
var ErrGuestMemory = errors.New("writing guest memory")

// DescriptorTable is a GDTR/IDTR value.
type DescriptorTable struct {
	Base  uint64
	Limit uint16
}

// SystemState is what the boot CPU's special registers must hold at entry.
// ApplySystemState loads it into kvm_sregs; it ORs CR0/CR4/EFER into
// the values KVM reports rather than replacing unrelated bits.
type SystemState struct {
	CR0, CR3, CR4, EFER uint64
	GDT, IDT            DescriptorTable
	CS, DS, ES, FS, GS  kvm.Segment
	SS, TR              kvm.Segment
}

func stateFromGDT(gdt [4]uint64) SystemState {
	code := SegmentFromGDT(gdt[1], 1)
	data := SegmentFromGDT(gdt[2], 2)
	return SystemState{
		GDT: DescriptorTable{Base: BootGDTStart, Limit: uint16(8*len(gdt) - 1)},
		IDT: DescriptorTable{Base: BootIDTStart, Limit: 7},
		CS:  code, DS: data, ES: data, FS: data, GS: data, SS: data,
		TR: SegmentFromGDT(gdt[3], 3),
	}
}

func writeAt(mem io.WriterAt, b []byte, gpa uint64, what string) error {
	if _, err := mem.WriteAt(b, int64(gpa)); err != nil {
		return fmt.Errorf("%s at %#x: %w: %w", what, gpa, ErrGuestMemory, err)
	}
	return nil
}

func writeTables(mem io.WriterAt, gdt [4]uint64) error {
	if err := writeAt(mem, GDTBytes(gdt[:]), BootGDTStart, "boot GDT"); err != nil {
		return err
	}
	return writeAt(mem, make([]byte, 8), BootIDTStart, "boot IDT")
}

// SetupLongMode writes the 64-bit boot GDT, an empty IDT and the identity
// page tables, and returns the state for entering the Linux 64-bit boot
// protocol entry (paging and long mode already on).
func SetupLongMode(mem io.WriterAt) (SystemState, error) {
	if err := writeTables(mem, GDT64); err != nil {
		return SystemState{}, err
	}
	if err := writeAt(mem, PageTables(), PML4Start, "page tables"); err != nil {
		return SystemState{}, err
	}
	s := stateFromGDT(GDT64)
	s.CR0 = CR0PE | CR0PG
	s.CR3 = PML4Start
	s.CR4 = CR4PAE
	s.EFER = EFERLME | EFERLMA
	return s, nil
}

// SetupProtectedMode writes the flat 32-bit GDT and an empty IDT and returns
// the state for a PVH entry: protected mode, paging off (PVH ABI, xen
// docs/misc/pvh.pandoc).
func SetupProtectedMode(mem io.WriterAt) (SystemState, error) {
	if err := writeTables(mem, GDT32); err != nil {
		return SystemState{}, err
	}
	s := stateFromGDT(GDT32)
	s.CR0 = CR0PE
	return s, nil
}
