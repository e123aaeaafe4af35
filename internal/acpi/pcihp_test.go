package acpi

import (
	"bytes"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Golden AML produced by running upstream's code verbatim (v53.0
// vmm/src/device_manager.rs, the PHPR part of `impl Aml for DeviceManager`,
// with acpi_address 0xfeb01000; vmm/src/pci_segment.rs, PciDevSlot for
// devices 0-31 then PciDevSlotMethods) against acpi_tables 0.2.1, the AML
// crate upstream's Cargo.lock pins. Upstream names its bridges \_SB_.PCnn.
var (
	upstreamPHPR1Segment = unhex(`
	5b824d0d2e5f53425f50485052085f4849440c41d00a06085f5354410a0b085f5549440d50434920486f74706c756720
	436f6e74726f6c6c6572005b01424c434b00085f43525311330a308a2b00000c0100000000000000000010b0fe000000
	000f10b0fe000000000000000000000000100000000000000079005b8050435354000c0010b0fe0a105b811a50435354
	43504349552050434944204230454a20505345472014235043454a0a5b23424c434bffff706950534547790168423045
	4a5b27424c434ba40014155053434e085c2f035f53425f5043303050434e54`)
	upstreamPHPR2Segments = unhex(`
	5b824c0e2e5f53425f50485052085f4849440c41d00a06085f5354410a0b085f5549440d50434920486f74706c756720
	436f6e74726f6c6c6572005b01424c434b00085f43525311330a308a2b00000c0100000000000000000010b0fe000000
	000f10b0fe000000000000000000000000100000000000000079005b8050435354000c0010b0fe0a105b811a50435354
	43504349552050434944204230454a20505345472014235043454a0a5b23424c434bffff706950534547790168423045
	4a5b27424c434ba40014245053434e085c2f035f53425f5043303050434e545c2f035f53425f5043303150434e54`)
	upstreamBridge = unhex(`
	5b822f53303030085f53554e00085f41445200141d5f454a30095c2f035f53425f504850525043454a5f53554e5f5345
	475b823353303031085f53554e01085f4144520c00000100141d5f454a30095c2f035f53425f504850525043454a5f53
	554e5f5345475b823453303032085f53554e0a02085f4144520c00000200141d5f454a30095c2f035f53425f50485052
	5043454a5f53554e5f5345475b823453303033085f53554e0a03085f4144520c00000300141d5f454a30095c2f035f53
	425f504850525043454a5f53554e5f5345475b823453303034085f53554e0a04085f4144520c00000400141d5f454a30
	095c2f035f53425f504850525043454a5f53554e5f5345475b823453303035085f53554e0a05085f4144520c00000500
	141d5f454a30095c2f035f53425f504850525043454a5f53554e5f5345475b823453303036085f53554e0a06085f4144
	520c00000600141d5f454a30095c2f035f53425f504850525043454a5f53554e5f5345475b823453303037085f53554e
	0a07085f4144520c00000700141d5f454a30095c2f035f53425f504850525043454a5f53554e5f5345475b8234533030
	38085f53554e0a08085f4144520c00000800141d5f454a30095c2f035f53425f504850525043454a5f53554e5f534547
	5b823453303039085f53554e0a09085f4144520c00000900141d5f454a30095c2f035f53425f504850525043454a5f53
	554e5f5345475b823453303130085f53554e0a0a085f4144520c00000a00141d5f454a30095c2f035f53425f50485052
	5043454a5f53554e5f5345475b823453303131085f53554e0a0b085f4144520c00000b00141d5f454a30095c2f035f53
	425f504850525043454a5f53554e5f5345475b823453303132085f53554e0a0c085f4144520c00000c00141d5f454a30
	095c2f035f53425f504850525043454a5f53554e5f5345475b823453303133085f53554e0a0d085f4144520c00000d00
	141d5f454a30095c2f035f53425f504850525043454a5f53554e5f5345475b823453303134085f53554e0a0e085f4144
	520c00000e00141d5f454a30095c2f035f53425f504850525043454a5f53554e5f5345475b823453303135085f53554e
	0a0f085f4144520c00000f00141d5f454a30095c2f035f53425f504850525043454a5f53554e5f5345475b8234533031
	36085f53554e0a10085f4144520c00001000141d5f454a30095c2f035f53425f504850525043454a5f53554e5f534547
	5b823453303137085f53554e0a11085f4144520c00001100141d5f454a30095c2f035f53425f504850525043454a5f53
	554e5f5345475b823453303138085f53554e0a12085f4144520c00001200141d5f454a30095c2f035f53425f50485052
	5043454a5f53554e5f5345475b823453303139085f53554e0a13085f4144520c00001300141d5f454a30095c2f035f53
	425f504850525043454a5f53554e5f5345475b823453303230085f53554e0a14085f4144520c00001400141d5f454a30
	095c2f035f53425f504850525043454a5f53554e5f5345475b823453303231085f53554e0a15085f4144520c00001500
	141d5f454a30095c2f035f53425f504850525043454a5f53554e5f5345475b823453303232085f53554e0a16085f4144
	520c00001600141d5f454a30095c2f035f53425f504850525043454a5f53554e5f5345475b823453303233085f53554e
	0a17085f4144520c00001700141d5f454a30095c2f035f53425f504850525043454a5f53554e5f5345475b8234533032
	34085f53554e0a18085f4144520c00001800141d5f454a30095c2f035f53425f504850525043454a5f53554e5f534547
	5b823453303235085f53554e0a19085f4144520c00001900141d5f454a30095c2f035f53425f504850525043454a5f53
	554e5f5345475b823453303236085f53554e0a1a085f4144520c00001a00141d5f454a30095c2f035f53425f50485052
	5043454a5f53554e5f5345475b823453303237085f53554e0a1b085f4144520c00001b00141d5f454a30095c2f035f53
	425f504850525043454a5f53554e5f5345475b823453303238085f53554e0a1c085f4144520c00001c00141d5f454a30
	095c2f035f53425f504850525043454a5f53554e5f5345475b823453303239085f53554e0a1d085f4144520c00001d00
	141d5f454a30095c2f035f53425f504850525043454a5f53554e5f5345475b823453303330085f53554e0a1e085f4144
	520c00001e00141d5f454a30095c2f035f53425f504850525043454a5f53554e5f5345475b823453303331085f53554e
	0a1f085f4144520c00001f00141d5f454a30095c2f035f53425f504850525043454a5f53554e5f53454714452944564e
	540a7b680160a00a9360018653303030697b680a0260a00b93600a028653303031697b680a0460a00b93600a04865330
	3032697b680a0860a00b93600a088653303033697b680a1060a00b93600a108653303034697b680a2060a00b93600a20
	8653303035697b680a4060a00b93600a408653303036697b680a8060a00b93600a808653303037697b680b000160a00c
	93600b00018653303038697b680b000260a00c93600b00028653303039697b680b000460a00c93600b00048653303130
	697b680b000860a00c93600b00088653303131697b680b001060a00c93600b00108653303132697b680b002060a00c93
	600b00208653303133697b680b004060a00c93600b00408653303134697b680b008060a00c93600b0080865330313569
	7b680c0000010060a00e93600c000001008653303136697b680c0000020060a00e93600c000002008653303137697b68
	0c0000040060a00e93600c000004008653303138697b680c0000080060a00e93600c000008008653303139697b680c00
	00100060a00e93600c000010008653303230697b680c0000200060a00e93600c000020008653303231697b680c000040
	0060a00e93600c000040008653303232697b680c0000800060a00e93600c000080008653303233697b680c0000000160
	a00e93600c000000018653303234697b680c0000000260a00e93600c000000028653303235697b680c0000000460a00e
	93600c000000048653303236697b680c0000000860a00e93600c000000088653303237697b680c0000001060a00e9360
	0c000000108653303238697b680c0000002060a00e93600c000000208653303239697b680c0000004060a00e93600c00
	0000408653303330697b680c0000008060a00e93600c0000008086533033316914480650434e54085b235c2f035f5342
	5f50485052424c434bffff705f5345475c2f035f53425f504850525053454744564e545c2f035f53425f504850525043
	49550144564e545c2f035f53425f50485052504349440a035b275c2f035f53425f50485052424c434b`)
)

func unhex(s string) []byte {
	b, err := hex.DecodeString(strings.Join(strings.Fields(s), ""))
	if err != nil {
		panic(err)
	}
	return b
}

func TestPCIHotplugMatchesUpstream(t *testing.T) {
	for _, c := range []struct {
		buses []string
		want  []byte
	}{
		{[]string{`\_SB_.PC00`}, upstreamPHPR1Segment},
		{[]string{`\_SB_.PC00`, `\_SB_.PC01`}, upstreamPHPR2Segments},
	} {
		phpr, bridge, err := PCIHotplug{Base: 0xfeb01000, Buses: c.buses}.Terms()
		if err != nil {
			t.Fatal(err)
		}
		expect(t, "PHPR for "+strings.Join(c.buses, ","), mustMarshal(t, phpr), c.want)
		expect(t, "bridge terms", mustMarshal(t, bridge...), upstreamBridge)
	}
	expect(t, "BridgeTerms", mustMarshal(t, BridgeTerms()...), upstreamBridge)
}

// TestPCIHotplugFragments checks pieces of the output against encodings
// worked out by hand from ACPI 6.5 chapter 20, independently of the golden
// bytes above.
func TestPCIHotplugFragments(t *testing.T) {
	phpr, bridge, err := PCIHotplug{Base: 0xfeb01000}.Terms()
	if err != nil {
		t.Fatal(err)
	}
	c := mustMarshal(t, phpr)
	b := mustMarshal(t, bridge...)
	sb := func(segs ...string) []byte { // \_SB_.x.y as RootChar MultiNamePrefix 3 segments
		return append([]byte{0x5c, 0x2f, 0x03, '_', 'S', 'B', '_'}, strings.Join(segs, "")...)
	}
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	for _, f := range []struct {
		what string
		in   []byte
		frag []byte
	}{
		// DeviceOp, PkgLength 0xd4+1 (0x40|0xdd&0xf, 0xdd>>4), DualNamePrefix
		{`Device (\_SB.PHPR)`, c, []byte{0x5b, 0x82, 0x4d, 0x0d, 0x2e, '_', 'S', 'B', '_', 'P', 'H', 'P', 'R'}},
		{"Name (_STA, 0x0B)", c, []byte{0x08, '_', 'S', 'T', 'A', 0x0a, 0x0b}},
		{"Mutex (BLCK, 0)", c, []byte{0x5b, 0x01, 'B', 'L', 'C', 'K', 0x00}},
		{"OperationRegion (PCST, SystemMemory, 0xFEB01000, 0x10)", c,
			[]byte{0x5b, 0x80, 'P', 'C', 'S', 'T', 0x00, 0x0c, 0x00, 0x10, 0xb0, 0xfe, 0x0a, 0x10}},
		// FieldFlags DWordAcc 3 | WriteAsZeros 2<<5 = 0x43
		{"Field (PCST, DWordAcc, NoLock, WriteAsZeros)", c,
			[]byte{0x5b, 0x81, 0x1a, 'P', 'C', 'S', 'T', 0x43, 'P', 'C', 'I', 'U', 0x20, 'P', 'C', 'I', 'D', 0x20, 'B', '0', 'E', 'J', 0x20, 'P', 'S', 'E', 'G', 0x20}},
		{"Method (PCEJ, 2, Serialized)", c, []byte{
			0x14, 0x23, 'P', 'C', 'E', 'J', 0x0a,
			0x5b, 0x23, 'B', 'L', 'C', 'K', 0xff, 0xff, // Acquire (BLCK, 0xFFFF)
			0x70, 0x69, 'P', 'S', 'E', 'G', // PSEG = Arg1
			0x79, 0x01, 0x68, 'B', '0', 'E', 'J', // B0EJ = One << Arg0
			0x5b, 0x27, 'B', 'L', 'C', 'K', // Release (BLCK)
			0xa4, 0x00}}, // Return (Zero)
		// PkgLength 1 + name 4 + flags 1 + the 15-byte call = 0x15
		{`Method (PSCN) { \_SB.PC00.PCNT () }`, c, cat([]byte{0x14, 0x15, 'P', 'S', 'C', 'N', 0x08}, sb("PC00", "PCNT"))},
		{"Device (S001)", b, cat([]byte{0x5b, 0x82, 0x33, 'S', '0', '0', '1',
			0x08, '_', 'S', 'U', 'N', 0x01,
			0x08, '_', 'A', 'D', 'R', 0x0c, 0x00, 0x00, 0x01, 0x00,
			0x14, 0x1d, '_', 'E', 'J', '0', 0x09},
			sb("PHPR", "PCEJ"), []byte("_SUN_SEG"))},
		// Local0 = Arg0 & 0x80000000; If (Local0 == 0x80000000) { Notify (S031, Arg1) }
		{"DVNT slot 31", b, []byte{0x7b, 0x68, 0x0c, 0, 0, 0, 0x80, 0x60,
			0xa0, 0x0e, 0x93, 0x60, 0x0c, 0, 0, 0, 0x80, 0x86, 'S', '0', '3', '1', 0x69}},
		// body 5+19+20+20+21+17 = 102 bytes, PkgLength 104 in two bytes: 0x40|104&0xf, 104>>4
		{"Method (PCNT, 0, Serialized)", b, cat(
			[]byte{0x14, 0x48, 0x06, 'P', 'C', 'N', 'T', 0x08},
			[]byte{0x5b, 0x23}, sb("PHPR", "BLCK"), []byte{0xff, 0xff}, // Acquire (\_SB.PHPR.BLCK, 0xFFFF)
			[]byte("\x70_SEG"), sb("PHPR", "PSEG"), // \_SB.PHPR.PSEG = _SEG
			[]byte("DVNT"), sb("PHPR", "PCIU"), []byte{0x01}, // DVNT (\_SB.PHPR.PCIU, One)
			[]byte("DVNT"), sb("PHPR", "PCID"), []byte{0x0a, 0x03}, // DVNT (\_SB.PHPR.PCID, 0x03)
			[]byte{0x5b, 0x27}, sb("PHPR", "BLCK"))}, // Release (\_SB.PHPR.BLCK)
	} {
		if !bytes.Contains(f.in, f.frag) {
			t.Errorf("%s: % x not found", f.what, f.frag)
		}
	}
	if len(bridge) != 34 {
		t.Errorf("%d bridge terms, want 32 slots, DVNT, PCNT", len(bridge))
	}
	if !bytes.HasSuffix(b, mustMarshal(t, bridge[33])) || !bytes.HasPrefix(b, mustMarshal(t, bridge[0])) {
		t.Error("bridge terms not in upstream's order")
	}
}

func TestPCIHotplugRejectsBadConfig(t *testing.T) {
	for _, base := range []uint64{0, ^uint64(0) - 4} {
		if _, _, err := (PCIHotplug{Base: base}).Terms(); !errors.Is(err, ErrTables) {
			t.Errorf("base %#x: err = %v, want ErrTables", base, err)
		}
	}
	phpr, _, err := PCIHotplug{Base: 0xfeb01000, Buses: []string{`\_SB_.PCI00`}}.Terms()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Marshal(phpr); !errors.Is(err, ErrAML) {
		t.Errorf("bad bus path: err = %v, want ErrAML", err)
	}
}

// hotplugDSDT is a DSDT with PCI hotplug spliced in the way the
// integration does it: PHPR before the bridge, the bridge terms at the end
// of \_SB_.PC00, and GED.PCIHotplug set.
func hotplugDSDT(t *testing.T) []byte {
	t.Helper()
	phpr, bridge, err := PCIHotplug{Base: 0xfeb01000}.Terms()
	if err != nil {
		t.Fatal(err)
	}
	ged, err := GED{Base: 0xfeb00000, IRQ: 5, PCIHotplug: true}.Terms()
	if err != nil {
		t.Fatal(err)
	}
	pci0 := append([]Term{
		Name("_HID", EISAID("PNP0A08")),
		Name("_CID", EISAID("PNP0A03")),
		Name("_ADR", Int(0)),
		Name("_SEG", Int(0)),
		Name("_UID", Int(0)),
		Name("_CRS", ResourceTemplate(WordBusNumber(0, 0))),
	}, bridge...)
	terms := append([]Term{Name("_S5_", Package(Int(5))), phpr, Device("_SB_.PC00", pci0...)}, ged...)
	b, err := (&SDT{Signature: "DSDT", Revision: 6, OEMTableID: "CHDSDT", Body: mustMarshal(t, terms...)}).MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// iaslRoundTrip disassembles table with ACPICA's iasl (Debian package
// acpica-tools), skipping the test when it is not installed, recompiles
// the ASL and returns it.
func iaslRoundTrip(t *testing.T, table []byte) string {
	t.Helper()
	iasl, err := exec.LookPath("iasl")
	if err != nil {
		t.Skip("iasl not installed")
	}
	dir := t.TempDir()
	dat := filepath.Join(dir, "dsdt.dat")
	if err := os.WriteFile(dat, table, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(iasl, "-d", dat).CombinedOutput(); err != nil {
		t.Fatalf("iasl -d: %v\n%s", err, out)
	}
	asl, err := os.ReadFile(filepath.Join(dir, "dsdt.dsl"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(asl), "External (") {
		t.Errorf("disassembly has unresolved references:\n%s", asl)
	}
	// Recompile. The only diagnostic expected is the bridge's
	// _HID-and-_ADR warning, which upstream's bridge has too.
	dsl := filepath.Join(dir, "re.dsl")
	if err := os.WriteFile(dsl, asl, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(iasl, "-p", filepath.Join(dir, "re"), dsl).CombinedOutput()
	if err != nil || !strings.Contains(string(out), " 0 Errors") {
		t.Fatalf("iasl recompile: %v\n%s", err, out)
	}
	return string(asl)
}

func TestPCIHotplugIASL(t *testing.T) {
	asl := iaslRoundTrip(t, hotplugDSDT(t))
	for _, want := range []string{
		`Device (_SB.PHPR)`,
		`Name (_UID, "PCI Hotplug Controller")`,
		`Mutex (BLCK, 0x00)`,
		`OperationRegion (PCST, SystemMemory, 0xFEB01000, 0x10)`,
		`Field (PCST, DWordAcc, NoLock, WriteAsZeros)`,
		`B0EJ = (One << Arg0)`,
		`\_SB.PC00.PCNT ()`,
		`Device (S031)`,
		`Name (_ADR, 0x001F0000)`,
		`\_SB.PHPR.PCEJ (_SUN, _SEG)`,
		`Local0 = (Arg0 & 0x40000000)`,
		`Notify (S030, Arg1)`,
		`\_SB.PHPR.PSEG = _SEG /* \_SB_.PC00._SEG */`,
		`DVNT (\_SB.PHPR.PCIU, One)`,
		`DVNT (\_SB.PHPR.PCID, 0x03)`,
		`\_SB.PHPR.PSCN ()`,
	} {
		if !strings.Contains(asl, want) {
			t.Errorf("disassembly lacks %q", want)
		}
	}
}
