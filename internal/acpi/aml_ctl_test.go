package acpi

import (
	"errors"
	"testing"
)

// TestAMLMutexAcquireRelease is acpi_tables' test_mutex (src/aml.rs), whose
// bytes are iasl's output for the ASL below.
func TestAMLMutexAcquireRelease(t *testing.T) {
	// Device (_SB_.MHPC) {
	//     Name (_HID, EisaId("PNP0A06"))
	//     Mutex (MLCK, 0x00)
	//     Method (TEST, 0, NotSerialized) { Acquire (MLCK, 0xFFFF) Local0 = One Release (MLCK) }
	// }
	want := []byte{
		0x5B, 0x82, 0x33, 0x2E, 0x5F, 0x53, 0x42, 0x5F, 0x4D, 0x48, 0x50, 0x43, 0x08, 0x5F,
		0x48, 0x49, 0x44, 0x0C, 0x41, 0xD0, 0x0A, 0x06, 0x5B, 0x01, 0x4D, 0x4C, 0x43, 0x4B,
		0x00, 0x14, 0x17, 0x54, 0x45, 0x53, 0x54, 0x00, 0x5B, 0x23, 0x4D, 0x4C, 0x43, 0x4B,
		0xFF, 0xFF, 0x70, 0x01, 0x60, 0x5B, 0x27, 0x4D, 0x4C, 0x43, 0x4B,
	}
	got := mustMarshal(t, Device("_SB_.MHPC",
		Name("_HID", EISAID("PNP0A06")),
		Mutex("MLCK", 0),
		Method("TEST", 0, false,
			Acquire("MLCK", 0xffff),
			Store(Int(1), Local(0)),
			Release("MLCK"),
		),
	))
	expect(t, "MHPC with mutex", got, want)
}

// TestAMLWhile is acpi_tables' test_while (iasl output).
func TestAMLWhile(t *testing.T) {
	// Device (_SB.MHPC) {
	//     Name (_HID, EisaId ("PNP0A06"))
	//     Method (TEST, 0, NotSerialized) { Local0 = Zero  While ((Local0 < 0x04)) { Local0 += One } }
	// }
	want := []byte{
		0x5B, 0x82, 0x28, 0x2E, 0x5F, 0x53, 0x42, 0x5F, 0x4D, 0x48, 0x50, 0x43, 0x08, 0x5F,
		0x48, 0x49, 0x44, 0x0C, 0x41, 0xD0, 0x0A, 0x06, 0x14, 0x13, 0x54, 0x45, 0x53, 0x54,
		0x00, 0x70, 0x00, 0x60, 0xA2, 0x09, 0x95, 0x60, 0x0A, 0x04, 0x72, 0x60, 0x01, 0x60,
	}
	got := mustMarshal(t, Device("_SB_.MHPC",
		Name("_HID", EISAID("PNP0A06")),
		Method("TEST", 0, false,
			Store(Int(0), Local(0)),
			While(LLess(Local(0), Int(4)), Add(Local(0), Int(1), Local(0))),
		),
	))
	expect(t, "MHPC with While", got, want)
}

// TestAMLCompareOps follows acpi_tables' test_compare_op.
func TestAMLCompareOps(t *testing.T) {
	got := mustMarshal(t,
		LAnd(Int(0), Int(1)),
		LOr(Int(0), Int(1)),
		LEqual(Int(0), Int(1)),
		LGreater(Int(0), Int(1)),
		LLess(Int(0), Int(1)),
		LNotEqual(Int(0), Int(1)),
		LNot(Int(0)),
	)
	want := []byte{
		0x90, 0x00, 0x01, // 0 && 1
		0x91, 0x00, 0x01, // 0 || 1
		0x93, 0x00, 0x01, // 0 == 1
		0x94, 0x00, 0x01, // 0 > 1
		0x95, 0x00, 0x01, // 0 < 1
		0x92, 0x93, 0x00, 0x01, // 0 != 1
		0x92, 0x00, // !0 (acpi_tables' test_object_op LogicalNot)
	}
	expect(t, "compare ops", got, want)
}

// TestAMLIntegerOps: operand orders and opcodes from ACPI 6.5 20.2.5.4
// (DefAdd := AddOp Operand Operand Target, ...), opcode values from 20.3.
func TestAMLIntegerOps(t *testing.T) {
	for _, c := range []struct {
		asl  string
		term Term
		want []byte
	}{
		{"Add (Local0, One, Local0)", Add(Local(0), Int(1), Local(0)), []byte{0x72, 0x60, 0x01, 0x60}},
		{"Subtract (Local1, 0x10, Local2)", Subtract(Local(1), Int(0x10), Local(2)), []byte{0x74, 0x61, 0x0a, 0x10, 0x62}},
		// Upstream's PCEJ: B0EJ = One << Arg0
		{"ShiftLeft (One, Arg0, B0EJ)", ShiftLeft(Int(1), Arg(0), Path("B0EJ")), []byte{0x79, 0x01, 0x68, 'B', '0', 'E', 'J'}},
		{"ShiftRight (Arg0, 0x04, Local0)", ShiftRight(Arg(0), Int(4), Local(0)), []byte{0x7a, 0x68, 0x0a, 0x04, 0x60}},
		// Target Zero is NullName: the result is discarded.
		{"Or (Local0, 0x0100, Zero)", Or(Local(0), Int(0x100), Int(0)), []byte{0x7d, 0x60, 0x0b, 0x00, 0x01, 0x00}},
		{"Increment (Local0)", Increment(Local(0)), []byte{0x75, 0x60}},
		{"Decrement (Arg2)", Decrement(Arg(2)), []byte{0x76, 0x6a}},
		// Acquire on a full path, the timeout a WordData even when small.
		{`Acquire (\_SB.PHPR.BLCK, 0x0001)`, Acquire(`\_SB_.PHPR.BLCK`, 1),
			[]byte{0x5b, 0x23, 0x5c, 0x2f, 0x03, '_', 'S', 'B', '_', 'P', 'H', 'P', 'R', 'B', 'L', 'C', 'K', 0x01, 0x00}},
		{`Release (\_SB.PHPR.BLCK)`, Release(`\_SB_.PHPR.BLCK`),
			[]byte{0x5b, 0x27, 0x5c, 0x2f, 0x03, '_', 'S', 'B', '_', 'P', 'H', 'P', 'R', 'B', 'L', 'C', 'K'}},
		{"Mutex (CPLK, 0x0F)", Mutex("CPLK", 15), []byte{0x5b, 0x01, 'C', 'P', 'L', 'K', 0x0f}},
		{"While (One) {}", While(Int(1)), []byte{0xa2, 0x02, 0x01}},
	} {
		expect(t, c.asl, mustMarshal(t, c.term), c.want)
	}
}

func TestAMLCtlRejectsBadInput(t *testing.T) {
	for name, term := range map[string]Term{
		"sync level 16":   Mutex("MLCK", 16),
		"bad mutex name":  Mutex("lock", 0),
		"bad acquire":     Acquire("TOOLONG", 0xffff),
		"bad release":     Release(""),
		"bad predicate":   While(Local(8)),
		"bad while body":  While(Int(1), Arg(7)),
		"bad add operand": Add(Local(0), Local(9), Local(0)),
	} {
		if _, err := Marshal(term); !errors.Is(err, ErrAML) {
			t.Errorf("%s: err = %v, want ErrAML", name, err)
		}
	}
}
