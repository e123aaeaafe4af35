package acpi

import (
	"bytes"
	"errors"
	"testing"
)

// Expected bytes in this file are worked out from the AML grammar in ACPI
// 6.5 chapter 20 (opcode values from 20.3), with the ASL in comments.

func TestAMLOperationRegion(t *testing.T) {
	// OperationRegion (GDST, SystemMemory, 0xFEB00000, One)
	// DefOpRegion := ExtOpPrefix 0x80 NameString RegionSpace RegionOffset RegionLen
	want := []byte{0x5b, 0x80, 'G', 'D', 'S', 'T', 0x00, 0x0c, 0x00, 0x00, 0xb0, 0xfe, 0x01}
	expect(t, "OperationRegion", mustMarshal(t, OperationRegion("GDST", SystemMemory, Int(0xfeb00000), Int(1))), want)
	// OperationRegion (PRST, SystemIO, 0x0CD8, 0x0C)
	want = []byte{0x5b, 0x80, 'P', 'R', 'S', 'T', 0x01, 0x0b, 0xd8, 0x0c, 0x0a, 0x0c}
	expect(t, "SystemIO region", mustMarshal(t, OperationRegion("PRST", SystemIO, Int(0xcd8), Int(12))), want)
}

func TestAMLField(t *testing.T) {
	// Field (GDST, ByteAcc, NoLock, WriteAsZeros) { GDAT, 8 }
	// DefField := ExtOpPrefix 0x81 PkgLength NameString FieldFlags FieldList;
	// FieldFlags = AccessType 1 | UpdateRule 2 << 5 = 0x41;
	// NamedField := NameSeg PkgLength(8 bits, not counting itself).
	want := []byte{0x5b, 0x81, 0x0b, 'G', 'D', 'S', 'T', 0x41, 'G', 'D', 'A', 'T', 0x08}
	expect(t, "Field", mustMarshal(t, Field("GDST", ByteAcc, false, WriteAsZeros, FieldUnit{"GDAT", 8})), want)

	// Field (PRST, DWordAcc, Lock, Preserve) { Offset (2), CPEN, 1, , 100 }:
	// flags 3 | 1<<4; ReservedField := 0x00 PkgLength; 100 bits needs a
	// two-byte PkgLength (0x40|100&0xf, 100>>4).
	want = []byte{0x5b, 0x81, 0x10, 'P', 'R', 'S', 'T', 0x13, 0x00, 0x10, 'C', 'P', 'E', 'N', 0x01, 0x00, 0x44, 0x06}
	got := mustMarshal(t, Field("PRST", DWordAcc, true, Preserve, FieldUnit{"", 16}, FieldUnit{"CPEN", 1}, FieldUnit{"", 100}))
	expect(t, "Field with reserved units", got, want)
}

func TestAMLStatements(t *testing.T) {
	for _, c := range []struct {
		asl  string
		term Term
		want []byte
	}{
		// StoreOp TermArg SuperName
		{"Store (GDAT, Local0)", Store(Path("GDAT"), Local(0)), []byte{0x70, 'G', 'D', 'A', 'T', 0x60}},
		// AndOp Operand Operand Target
		{"And (Local0, One, Local1)", And(Local(0), Int(1), Local(1)), []byte{0x7b, 0x60, 0x01, 0x61}},
		{"And (Local0, 0x08, Local1)", And(Local(0), Int(8), Local(1)), []byte{0x7b, 0x60, 0x0a, 0x08, 0x61}},
		// LEqualOp Operand Operand; LNotEqual is LNotOp LEqualOp
		{"LEqual (Local1, 0x08)", LEqual(Local(1), Int(8)), []byte{0x93, 0x61, 0x0a, 0x08}},
		{"LNotEqual (Arg0, Zero)", LNotEqual(Arg(0), Int(0)), []byte{0x92, 0x93, 0x68, 0x00}},
		// NotifyOp NotifyObject NotifyValue; \_SB.PWRB is RootChar DualNamePrefix seg seg
		{`Notify (\_SB.PWRB, 0x80)`, Notify(Path(`\_SB_.PWRB`), Int(0x80)),
			[]byte{0x86, 0x5c, 0x2e, '_', 'S', 'B', '_', 'P', 'W', 'R', 'B', 0x0a, 0x80}},
		// MethodInvocation := NameString TermArgList
		{`\_SB.GEC.ESCN ()`, Call(`\_SB_.GEC_.ESCN`),
			[]byte{0x5c, 0x2f, 0x03, '_', 'S', 'B', '_', 'G', 'E', 'C', '_', 'E', 'S', 'C', 'N'}},
		{"MCRS (Local0, 0x10)", Call("MCRS", Local(0), Int(16)), []byte{'M', 'C', 'R', 'S', 0x60, 0x0a, 0x10}},
		{"Local7", Local(7), []byte{0x67}},
		{"Arg6", Arg(6), []byte{0x6e}},
		// IfOp PkgLength Predicate TermList: predicate 4 bytes + Notify 13 bytes, +1 for the PkgLength
		{`If (LEqual (Local1, 0x08)) { Notify (\_SB.PWRB, 0x80) }`,
			If(LEqual(Local(1), Int(8)), Notify(Path(`\_SB_.PWRB`), Int(0x80))),
			[]byte{0xa0, 0x12, 0x93, 0x61, 0x0a, 0x08, 0x86, 0x5c, 0x2e, '_', 'S', 'B', '_', 'P', 'W', 'R', 'B', 0x0a, 0x80}},
	} {
		expect(t, c.asl, mustMarshal(t, c.term), c.want)
	}
}

func TestAMLOpsRejectBadInput(t *testing.T) {
	for name, term := range map[string]Term{
		"Local8":          Local(8),
		"Arg7":            Arg(7),
		"bad region name": OperationRegion("GD", SystemMemory, Int(0), Int(1)),
		"bad unit name":   Field("GDST", ByteAcc, false, Preserve, FieldUnit{"gdat", 8}),
		"zero-bit unit":   Field("GDST", ByteAcc, false, Preserve, FieldUnit{"GDAT", 0}),
		"bad update rule": Field("GDST", ByteAcc, false, 3, FieldUnit{"GDAT", 8}),
		"bad call name":   Call("toolong"),
		"bad operand":     Store(Local(9), Local(0)),
		"bad if body":     If(Int(1), Notify(Path("X"), Int(1))),
	} {
		if _, err := Marshal(term); !errors.Is(err, ErrAML) {
			t.Errorf("%s: err = %v, want ErrAML", name, err)
		}
	}
}

// gedDevice is Device (\_SB.GED) for IRQ 5, worked out by hand.
var gedDevice = []byte{
	0x5b, 0x82, 0x4a, 0x04, // DeviceOp, PkgLength 74 (two bytes: 0x40|74&0xf, 74>>4)
	0x2e, '_', 'S', 'B', '_', 'G', 'E', 'D', '_',
	0x08, '_', 'H', 'I', 'D', 0x0d, 'A', 'C', 'P', 'I', '0', '0', '1', '3', 0x00, // Name (_HID, "ACPI0013")
	0x08, '_', 'U', 'I', 'D', 0x00, // Name (_UID, Zero)
	0x08, '_', 'C', 'R', 'S', 0x11, 0x0e, 0x0a, 0x0b, // Name (_CRS, Buffer (11) {
	0x89, 0x06, 0x00, 0x03, 0x01, 0x05, 0x00, 0x00, 0x00, //   Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive) {5}
	0x79, 0x00, // EndTag })
	0x14, 0x15, '_', 'E', 'V', 'T', 0x09, // Method (_EVT, 1, Serialized)
	0x5c, 0x2f, 0x03, '_', 'S', 'B', '_', 'G', 'E', 'C', '_', 'E', 'S', 'C', 'N', // \_SB.GEC.ESCN ()
}

func TestGEDTerms(t *testing.T) {
	terms, err := GED{Base: 0xfeb00000, IRQ: 5}.Terms()
	if err != nil {
		t.Fatal(err)
	}
	if len(terms) != 3 {
		t.Fatalf("%d terms, want PWRB, GEC_, GED_", len(terms))
	}
	// Device (\_SB.PWRB) { Name (_HID, EisaId ("PNP0C0C")) Name (_UID, Zero) }
	pwrb := []byte{0x5b, 0x82, 0x1a, 0x2e, '_', 'S', 'B', '_', 'P', 'W', 'R', 'B',
		0x08, '_', 'H', 'I', 'D', 0x0c, 0x41, 0xd0, 0x0c, 0x0c,
		0x08, '_', 'U', 'I', 'D', 0x00}
	expect(t, "PWRB", mustMarshal(t, terms[0]), pwrb)
	expect(t, "GED_", mustMarshal(t, terms[2]), gedDevice)

	gec := mustMarshal(t, terms[1])
	// Method (ESCN, 0, Serialized) { Store (GDAT, Local0) And (Local0, 8, Local1)
	//   If (LEqual (Local1, 8)) { Notify (\_SB.PWRB, 0x80) } }
	escn := []byte{0x14, 0x24, 'E', 'S', 'C', 'N', 0x08,
		0x70, 'G', 'D', 'A', 'T', 0x60,
		0x7b, 0x60, 0x0a, 0x08, 0x61,
		0xa0, 0x12, 0x93, 0x61, 0x0a, 0x08, 0x86, 0x5c, 0x2e, '_', 'S', 'B', '_', 'P', 'W', 'R', 'B', 0x0a, 0x80}
	for what, frag := range map[string][]byte{
		"path":            {0x2e, '_', 'S', 'B', '_', 'G', 'E', 'C', '_'},
		"_HID PNP0A06":    {0x08, '_', 'H', 'I', 'D', 0x0c, 0x41, 0xd0, 0x0a, 0x06},
		"_UID":            append(append([]byte{0x08, '_', 'U', 'I', 'D', 0x0d}, "Generic Event Controller"...), 0),
		"OperationRegion": {0x5b, 0x80, 'G', 'D', 'S', 'T', 0x00, 0x0c, 0x00, 0x00, 0xb0, 0xfe, 0x01},
		"Field":           {0x5b, 0x81, 0x0b, 'G', 'D', 'S', 'T', 0x41, 'G', 'D', 'A', 'T', 0x08},
		"ESCN":            escn,
		// QWordMemory (ResourceProducer, PosDecode, MinFixed, MaxFixed, NonCacheable, ReadWrite,
		//   0, 0xFEB00000, 0xFEB00000, 0, 1)
		"_CRS": {0x8a, 0x2b, 0x00, 0x00, 0x0c, 0x01,
			0, 0, 0, 0, 0, 0, 0, 0,
			0x00, 0x00, 0xb0, 0xfe, 0, 0, 0, 0,
			0x00, 0x00, 0xb0, 0xfe, 0, 0, 0, 0,
			0, 0, 0, 0, 0, 0, 0, 0,
			0x01, 0, 0, 0, 0, 0, 0, 0,
			0x79, 0x00},
	} {
		if !bytes.Contains(gec, frag) {
			t.Errorf("GEC_ lacks %s % x\nGEC_: % x", what, frag, gec)
		}
	}
	if !bytes.HasSuffix(gec, escn) {
		t.Errorf("ESCN is not GEC_'s last term")
	}
}

func TestGEDHotplugBranches(t *testing.T) {
	terms, err := GED{Base: 0xfeb00000, IRQ: 5, CPUHotplug: true, PCIHotplug: true}.Terms()
	if err != nil {
		t.Fatal(err)
	}
	gec := mustMarshal(t, terms[1])
	cpu := []byte{0x7b, 0x60, 0x01, 0x61, 0xa0, 0x13, 0x93, 0x61, 0x01,
		0x5c, 0x2f, 0x03, '_', 'S', 'B', '_', 'C', 'P', 'U', 'S', 'C', 'S', 'C', 'N'}
	pci := []byte{0x7b, 0x60, 0x0a, 0x04, 0x61, 0xa0, 0x14, 0x93, 0x61, 0x0a, 0x04,
		0x5c, 0x2f, 0x03, '_', 'S', 'B', '_', 'P', 'H', 'P', 'R', 'P', 'S', 'C', 'N'}
	i, j := bytes.Index(gec, cpu), bytes.Index(gec, pci)
	if i < 0 || j < 0 || i > j {
		t.Errorf("CPU branch at %d, PCI branch at %d; want both, CPU first\nGEC_: % x", i, j, gec)
	}
	if bytes.Contains(gec, []byte("MSCN")) {
		t.Error("memory branch emitted without MemoryHotplug")
	}
}

func TestGEDRejectsBadAddress(t *testing.T) {
	for _, base := range []uint64{0, ^uint64(0)} {
		if _, err := (GED{Base: base, IRQ: 5}).Terms(); !errors.Is(err, ErrTables) {
			t.Errorf("base %#x: err = %v, want ErrTables", base, err)
		}
	}
}

func TestDSDTWithGED(t *testing.T) {
	plain, err := DSDT(Config{BootCPUs: 1, Serial: true})
	if err != nil {
		t.Fatal(err)
	}
	withGED, err := DSDT(Config{BootCPUs: 1, Serial: true, GED: &GED{Base: 0xfeb00000, IRQ: 5}})
	if err != nil {
		t.Fatal(err)
	}
	terms, _ := GED{Base: 0xfeb00000, IRQ: 5}.Terms()
	want := append(append([]byte{}, plain.Body...), mustMarshal(t, terms...)...)
	expect(t, "DSDT body with GED", withGED.Body, want)
	if !bytes.HasSuffix(withGED.Body, gedDevice) {
		t.Error("GED_ is not the DSDT's last device")
	}
	if _, err := DSDT(Config{BootCPUs: 1, GED: &GED{}}); !errors.Is(err, ErrTables) {
		t.Errorf("zero GED base: err = %v, want ErrTables", err)
	}
}
