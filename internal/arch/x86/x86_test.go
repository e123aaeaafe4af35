package x86

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"testing"

	"github.com/nimbus-vmm/nimbus/internal/kvm"
)

type flatMem []byte

func (m flatMem) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > int64(len(m)) {
		return 0, io.ErrShortWrite
	}
	return copy(m[off:], p), nil
}

func u64(m []byte, off int) uint64 { return binary.LittleEndian.Uint64(m[off:]) }

func TestGDTEntriesMatchUpstream(t *testing.T) {
	// Values from upstream regs.rs tests (old 64-bit table and current PVH table).
	want64 := []uint64{0, 0xaf9b000000ffff, 0xcf93000000ffff, 0x8f8b000000ffff}
	want32 := []uint64{0, 0xcf9b000000ffff, 0xcf93000000ffff, 0x8b0000000067}
	for i := range want64 {
		if GDT64[i] != want64[i] {
			t.Errorf("GDT64[%d] = %#x, want %#x", i, GDT64[i], want64[i])
		}
		if GDT32[i] != want32[i] {
			t.Errorf("GDT32[%d] = %#x, want %#x", i, GDT32[i], want32[i])
		}
	}
	b := GDTBytes([]uint64{0x0102030405060708})
	if !bytes.Equal(b, []byte{8, 7, 6, 5, 4, 3, 2, 1}) {
		t.Errorf("GDTBytes = % x", b)
	}
}

func TestSegmentFromGDT(t *testing.T) {
	s := SegmentFromGDT(GDTEntry(0xa09b, 0x100000, 0xfffff), 0)
	want := kvm.Segment{Base: 0x100000, Limit: 0xffffffff, Type: 0xb, Present: 1, S: 1, L: 1, G: 1}
	if s != want {
		t.Errorf("got %+v, want %+v", s, want)
	}
	tss := SegmentFromGDT(GDT32[3], 3)
	wantTSS := kvm.Segment{Limit: 0x67, Selector: 0x18, Type: 0xb, Present: 1}
	if tss != wantTSS {
		t.Errorf("TSS got %+v, want %+v", tss, wantTSS)
	}
	null := SegmentFromGDT(0, 0)
	if null.Unusable != 1 {
		t.Errorf("null segment not unusable: %+v", null)
	}
}

func TestSetupLongMode(t *testing.T) {
	mem := make(flatMem, 0x10000)
	s, err := SetupLongMode(mem)
	if err != nil {
		t.Fatal(err)
	}
	for i, e := range GDT64 {
		if got := u64(mem, BootGDTStart+8*i); got != e {
			t.Errorf("gdt[%d] in memory = %#x, want %#x", i, got, e)
		}
	}
	if got := u64(mem, BootIDTStart); got != 0 {
		t.Errorf("idt = %#x", got)
	}
	if got := u64(mem, PML4Start); got != 0xa003 {
		t.Errorf("PML4[0] = %#x, want 0xa003", got)
	}
	if got := u64(mem, PDPTEStart); got != 0xb003 {
		t.Errorf("PDPT[0] = %#x, want 0xb003", got)
	}
	for i := 0; i < 512; i++ {
		if got, want := u64(mem, PDEStart+8*i), uint64(i)<<21|0x83; got != want {
			t.Fatalf("PD[%d] = %#x, want %#x", i, got, want)
		}
	}
	// Everything else in the PML4 and PDPT pages must be zero.
	for off := 8; off < 4096; off += 8 {
		if u64(mem, PML4Start+off) != 0 || u64(mem, PDPTEStart+off) != 0 {
			t.Fatalf("stray entry at offset %#x", off)
		}
	}
	if s.CR3 != 0x9000 || s.CR0 != CR0PE|CR0PG || s.CR4 != CR4PAE || s.EFER != EFERLME|EFERLMA {
		t.Errorf("control regs %+v", s)
	}
	if s.GDT != (DescriptorTable{0x500, 31}) || s.IDT != (DescriptorTable{0x520, 7}) {
		t.Errorf("tables %+v %+v", s.GDT, s.IDT)
	}
	if s.CS.Selector != 8 || s.CS.L != 1 || s.DS.Selector != 0x10 || s.SS != s.DS || s.TR.Selector != 0x18 {
		t.Errorf("segments %+v", s)
	}
}

func TestSetupProtectedMode(t *testing.T) {
	mem := make(flatMem, 0x1000)
	s, err := SetupProtectedMode(mem)
	if err != nil {
		t.Fatal(err)
	}
	if got := u64(mem, BootGDTStart+8); got != 0xcf9b000000ffff {
		t.Errorf("code = %#x", got)
	}
	if s.CR0 != CR0PE || s.CR3 != 0 || s.CR4 != 0 || s.EFER != 0 {
		t.Errorf("control regs %+v", s)
	}
	if s.DS.Limit != 0xffffffff || s.CS.DB != 1 || s.CS.L != 0 || s.ES.Selector != 0x10 || s.TR.Limit != 0x67 {
		t.Errorf("segments %+v", s)
	}
}

func TestSetupFailsOnSmallMemory(t *testing.T) {
	if _, err := SetupLongMode(make(flatMem, 0x9000)); !errors.Is(err, ErrGuestMemory) {
		t.Errorf("err = %v, want ErrGuestMemory", err)
	}
}

func TestMPTableOneCPUBytes(t *testing.T) {
	b, err := MPTable(MPTableStart, 1)
	if err != nil {
		t.Fatal(err)
	}
	// Expected bytes worked out from the MP spec 1.4 layouts.
	exp := []byte{}
	exp = append(exp, "_MP_"...)
	exp = binary.LittleEndian.AppendUint32(exp, 0x9fc10)
	exp = append(exp, 1, 4, 0, 0, 0, 0, 0, 0)
	hdr := []byte("PCMP")
	hdr = binary.LittleEndian.AppendUint16(hdr, 44+20+8+8+16*8+2*8)
	hdr = append(hdr, 4, 0)
	hdr = append(hdr, "FC      000000000000"...)
	hdr = append(hdr, 0, 0, 0, 0, 0, 0, 0, 0)
	hdr = binary.LittleEndian.AppendUint32(hdr, 0xfee00000)
	hdr = append(hdr, 0, 0, 0, 0)
	hdr = append(hdr, 0, 0, 0x14, 3, 0x00, 0x06, 0, 0, 0x01, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
	hdr = append(hdr, 1, 0, 'I', 'S', 'A', ' ', ' ', ' ')
	hdr = append(hdr, 2, 2, 0x14, 1, 0, 0, 0xc0, 0xfe)
	for i := byte(0); i < 16; i++ {
		hdr = append(hdr, 3, 0, 0, 0, 0, i, 2, i)
	}
	hdr = append(hdr, 4, 3, 0, 0, 0, 0, 0, 0)
	hdr = append(hdr, 4, 1, 0, 0, 0, 0, 0xff, 1)
	exp = append(exp, hdr...)
	// Checksums: the byte sum of each structure must be zero.
	exp[10] = checksum(exp[:16])
	exp[16+7] = checksum(exp[16:])
	if !bytes.Equal(b, exp) {
		t.Fatalf("MP table mismatch\n got % x\nwant % x", b, exp)
	}
	if checksum(b[:16]) != 0 || checksum(b[16:]) != 0 {
		t.Error("checksums do not sum to zero")
	}
}

func TestMPTableCPUCountAndLimits(t *testing.T) {
	b, err := MPTable(MPTableStart, 4)
	if err != nil {
		t.Fatal(err)
	}
	cpus := 0
	for off := 16 + 44; off < len(b); {
		switch b[off] {
		case mpProcessor:
			if int(b[off+1]) != cpus {
				t.Errorf("cpu %d has APIC id %d", cpus, b[off+1])
			}
			cpus++
			off += 20
		default:
			off += 8
		}
	}
	if cpus != 4 {
		t.Errorf("found %d cpus", cpus)
	}
	if _, err := MPTable(MPTableStart, 0); !errors.Is(err, ErrMPTable) {
		t.Errorf("0 cpus: %v", err)
	}
	if _, err := MPTable(MPTableStart, 255); !errors.Is(err, ErrMPTable) {
		t.Errorf("255 cpus: %v", err)
	}
	mem := make(flatMem, 0x100000)
	if err := WriteMPTable(mem, 41); !errors.Is(err, ErrMPTable) {
		t.Errorf("41 cpus must not reach the EBDA: %v", err)
	}
	if err := WriteMPTable(mem, 40); err != nil {
		t.Errorf("40 cpus: %v", err)
	}
	if string(mem[MPTableStart:MPTableStart+4]) != "_MP_" {
		t.Error("no floating pointer written")
	}
}

func TestRAMRegions(t *testing.T) {
	if r := RAMRegions(512 << 20); len(r) != 1 || r[0] != (Region{0, 512 << 20}) {
		t.Errorf("512M: %+v", r)
	}
	r := RAMRegions(4 << 30)
	if len(r) != 2 || r[0] != (Region{0, 0xc0000000}) || r[1] != (Region{0x100000000, 1 << 30}) {
		t.Errorf("4G: %+v", r)
	}
	if PCIMMConfigStart != 0xe8000000 || KVMTSSStart != 0xf8000000 {
		t.Errorf("layout constants %#x %#x", PCIMMConfigStart, KVMTSSStart)
	}
	if !(Region{0x1000, 0x1000}).Contains(0x1000, 0x1000) || (Region{0x1000, 0x1000}).Contains(0x1001, 0x1000) {
		t.Error("Contains")
	}
}
