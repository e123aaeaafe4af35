package acpi

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"testing"

	"github.com/nimbus-vmm/nimbus/internal/arch/x86"
)

type flatMem []byte

func (m flatMem) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > int64(len(m)) {
		return 0, io.ErrShortWrite
	}
	return copy(m[off:], p), nil
}

func sum(b []byte) byte {
	var s byte
	for _, c := range b {
		s += c
	}
	return s
}

// readTable returns the table at addr after checking its length and checksum.
func readTable(t *testing.T, mem []byte, addr uint64, sig string) []byte {
	t.Helper()
	if string(mem[addr:addr+4]) != sig {
		t.Fatalf("table at %#x is %q, want %q", addr, mem[addr:addr+4], sig)
	}
	n := binary.LittleEndian.Uint32(mem[addr+4:])
	tbl := mem[addr : addr+uint64(n)]
	if sum(tbl) != 0 {
		t.Errorf("%s checksum: bytes sum to %#x", sig, sum(tbl))
	}
	if string(tbl[10:16]) != "CLOUDH" || string(tbl[28:32]) != "RVAT" {
		t.Errorf("%s header ids % x", sig, tbl[10:36])
	}
	return tbl
}

func TestBuildParsesBack(t *testing.T) {
	mem := make(flatMem, 1<<20)
	tabs, err := Build(mem, Config{BootCPUs: 2, MaxCPUs: 3, Serial: true, PCISegments: []PCISegment{{
		Win32: x86.Region{Start: 0xc000_0000, Size: 640 << 20}, Win64: x86.Region{Start: 1 << 40, Size: 1 << 30}}}})
	if err != nil {
		t.Fatal(err)
	}
	le := binary.LittleEndian
	rsdp := mem[0xa0000 : 0xa0000+36]
	if tabs.RSDP != 0xa0000 || string(rsdp[:8]) != "RSD PTR " || rsdp[15] != 2 || le.Uint32(rsdp[20:]) != 36 {
		t.Fatalf("RSDP % x", rsdp)
	}
	if sum(rsdp[:20]) != 0 || sum(rsdp) != 0 {
		t.Error("RSDP checksums")
	}
	if tabs.DSDT != 0xa0024 {
		t.Errorf("DSDT at %#x, want right after the RSDP", tabs.DSDT)
	}
	xsdt := readTable(t, mem, le.Uint64(rsdp[24:]), "XSDT")
	var sigs []string
	for off := 36; off < len(xsdt); off += 8 {
		a := le.Uint64(xsdt[off:])
		sigs = append(sigs, string(mem[a:a+4]))
	}
	if got := bytes.Join([][]byte{[]byte(sigs[0]), []byte(sigs[1]), []byte(sigs[2])}, []byte(",")); string(got) != "FACP,APIC,MCFG" || len(sigs) != 3 {
		t.Errorf("XSDT lists %v", sigs)
	}

	fadt := readTable(t, mem, tabs.FADT, "FACP")
	if len(fadt) != 276 || fadt[8] != 6 || fadt[131] != 3 {
		t.Fatalf("FADT length %d revision %d.%d", len(fadt), fadt[8], fadt[131])
	}
	if le.Uint64(fadt[140:]) != tabs.DSDT || le.Uint32(fadt[76:]) != 0x608 || le.Uint32(fadt[112:]) != 1<<20|1<<10|1<<8 {
		t.Errorf("FADT X_DSDT/PM_TMR/flags % x", fadt[76:144])
	}
	gasIO8 := []byte{1, 8, 0, 1, 0x00, 0x06, 0, 0, 0, 0, 0, 0}
	for _, off := range []int{116, 244, 256} {
		if !bytes.Equal(fadt[off:off+12], gasIO8) {
			t.Errorf("FADT GAS at %d = % x", off, fadt[off:off+12])
		}
	}
	if !bytes.Equal(fadt[208:220], []byte{1, 32, 0, 3, 0x08, 0x06, 0, 0, 0, 0, 0, 0}) || fadt[128] != 1 || string(fadt[268:276]) != "CLOUDHYP" {
		t.Errorf("FADT X_PM_TMR_BLK/reset value/vendor % x", fadt[200:])
	}

	madt := readTable(t, mem, tabs.MADT, "APIC")
	wantMADT := []byte{
		0x00, 0x00, 0xe0, 0xfe, 0, 0, 0, 0, // local APIC address, flags
		0, 8, 0, 0, 1, 0, 0, 0, // CPU 0 enabled
		0, 8, 1, 1, 1, 0, 0, 0, // CPU 1 enabled
		0, 8, 2, 2, 2, 0, 0, 0, // CPU 2 online-capable
		1, 12, 0, 0, 0x00, 0x00, 0xc0, 0xfe, 0, 0, 0, 0, // IOAPIC
		2, 10, 0, 4, 4, 0, 0, 0, 0, 0, // IRQ4 -> GSI4
	}
	if madt[8] != 5 || !bytes.Equal(madt[36:], wantMADT) {
		t.Errorf("MADT body\n got % x\nwant % x", madt[36:], wantMADT)
	}

	mcfg := readTable(t, mem, tabs.MCFG, "MCFG")
	wantMCFG := []byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xe8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	if !bytes.Equal(mcfg[36:], wantMCFG) {
		t.Errorf("MCFG body % x", mcfg[36:])
	}

	dsdt := readTable(t, mem, tabs.DSDT, "DSDT")
	body := dsdt[36:]
	if !bytes.HasPrefix(body, []byte{0x08, '_', 'S', '5', '_', 0x12, 0x04, 0x01, 0x0a, 0x05}) {
		t.Errorf("DSDT does not start with _S5_: % x", body[:16])
	}
	for _, want := range [][]byte{
		[]byte("COM1"), {0x41, 0xd0, 0x05, 0x01}, // PNP0501
		[]byte("PC00"), {0x41, 0xd0, 0x0a, 0x08}, {0x41, 0xd0, 0x0a, 0x03},
		{0x86, 0x09, 0x00, 0x01, 0x00, 0x00, 0x00, 0xe8, 0x00, 0x00, 0x10, 0x00}, // MMCONFIG Memory32Fixed, 1 MiB (bus 0)
		{0x47, 0x01, 0xf8, 0x0c, 0xf8, 0x0c, 0x01, 0x08},                         // IO 0xcf8
		{0x8a, 0x2b, 0x00, 0x00, 0x0c, 0x01},                                     // QWordMemory header
	} {
		if !bytes.Contains(body, want) {
			t.Errorf("DSDT lacks % x", want)
		}
	}
	if tabs.End != tabs.XSDT+uint64(len(xsdt)) {
		t.Errorf("End %#x", tabs.End)
	}
}

func TestBuildVariants(t *testing.T) {
	mem := make(flatMem, 1<<20)
	tabs, err := Build(mem, Config{BootCPUs: 1})
	if err != nil {
		t.Fatal(err)
	}
	dsdt := readTable(t, mem, tabs.DSDT, "DSDT")
	if bytes.Contains(dsdt, []byte("COM1")) {
		t.Error("COM1 present without Serial")
	}
	x, err := MADT(1, 2, true)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := x.MarshalBinary()
	want := []byte{9, 16, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0}
	if !bytes.Equal(b[36+8+16:36+8+32], want) {
		t.Errorf("x2APIC entry % x", b[36+8+16:36+8+32])
	}
	// More than 255 IDs forces x2APIC entries.
	big, _ := MADT(1, 300, false)
	bb, _ := big.MarshalBinary()
	if bb[44] != 9 {
		t.Errorf("300 CPUs: entry type %d", bb[44])
	}
	if _, err := Build(mem, Config{BootCPUs: 0}); !errors.Is(err, ErrTables) {
		t.Errorf("0 CPUs: %v", err)
	}
	if _, err := Build(mem, Config{BootCPUs: 30000}); !errors.Is(err, ErrTables) {
		t.Errorf("tables past SMBIOS: %v", err)
	}
	if _, err := Build(make(flatMem, 0xa0000), Config{BootCPUs: 1}); !errors.Is(err, ErrTables) {
		t.Errorf("short memory: %v", err)
	}
}

// TestTwoPCISegments: each segment is a host bridge \_SB_.PCnn with its
// _SEG and its own ECAM MiB (in its _CRS, in MBRD and in MCFG), only
// segment 0 decodes I/O ports, and the hotplug scan visits both.
func TestTwoPCISegments(t *testing.T) {
	mem := make(flatMem, 1<<20)
	segs := []PCISegment{
		{Win32: x86.Region{Start: 0xc000_0000, Size: 320 << 20}, Win64: x86.Region{Start: 1 << 32, Size: 1 << 40}},
		{Win32: x86.Region{Start: 0xd400_0000, Size: 320 << 20}, Win64: x86.Region{Start: 1<<32 + 1<<40, Size: 1 << 40}},
	}
	tabs, err := Build(mem, Config{BootCPUs: 1, PCISegments: segs, PCIHotplug: &PCIHotplug{Base: 0xfeb01000}})
	if err != nil {
		t.Fatal(err)
	}
	mcfg := readTable(t, mem, tabs.MCFG, "MCFG")
	want := []byte{0, 0, 0, 0, 0, 0, 0, 0,
		0, 0, 0, 0xe8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
		0, 0, 0x10, 0xe8, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0}
	if !bytes.Equal(mcfg[36:], want) {
		t.Errorf("MCFG body\n got % x\nwant % x", mcfg[36:], want)
	}
	body := readTable(t, mem, tabs.DSDT, "DSDT")[36:]
	pc01 := bytes.Index(body, []byte("\x2e_SB_PC01")) // the Device's DualNamePath, not PSCN's call
	if pc01 < 0 || !bytes.Contains(body, []byte("_SB_PC00")) {
		t.Fatal("DSDT lacks \\_SB_.PC00 or \\_SB_.PC01")
	}
	seg1 := body[pc01:]
	ecam1 := []byte{0x86, 0x09, 0x00, 0x01, 0x00, 0x00, 0x10, 0xe8, 0x00, 0x00, 0x10, 0x00}
	for _, w := range [][]byte{{0x08, '_', 'S', 'E', 'G', 0x01}, ecam1} {
		if !bytes.Contains(seg1[:400], w) {
			t.Errorf("PC01 lacks % x", w)
		}
	}
	if crs := seg1[:bytes.Index(seg1, []byte("S000"))]; bytes.Contains(crs, []byte{0x47, 0x01, 0xf8, 0x0c}) || bytes.Contains(crs, []byte{0x88, 0x0d, 0x00, 0x01}) {
		t.Error("PC01 decodes I/O ports")
	}
	if bytes.Count(body, ecam1) != 2 { // PC01's _CRS and MBRD
		t.Errorf("segment 1's ECAM appears %d times, want 2", bytes.Count(body, ecam1))
	}
	if !bytes.Contains(body, []byte("PC01PCNT")) {
		t.Error("PSCN does not scan PC01")
	}
}

func TestSDTHeaderBytes(t *testing.T) {
	b, err := (&SDT{Signature: "TEST", Revision: 1, OEMTableID: "TESTTEST", Body: []byte{0x78, 0x56, 0x34, 0x12}}).MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	want := []byte("TEST\x28\x00\x00\x00\x01\x00CLOUDHTESTTEST\x01\x00\x00\x00RVAT\x00\x00\x00\x01\x78\x56\x34\x12")
	want[9] = Checksum(want)
	if !bytes.Equal(b, want) || sum(b) != 0 {
		t.Errorf("\n got % x\nwant % x", b, want)
	}
}
