package acpi

import "fmt"

// Synchronization, loops and the integer and logical operators the
// hotplug methods need (ACPI 6.5 20.2.5.2 "Named Objects Encoding" for
// Mutex, 20.2.5.3 "Statement Opcodes Encoding" for While, 20.2.5.4
// "Expression Opcodes Encoding" for the rest). As in aml_ops.go, argument
// orders follow ASL (operands, then the result Target) and byte orders the
// AML grammar; the encodings are those of rust-vmm's acpi_tables crate
// (src/aml.rs), which upstream builds its DSDT with.

// Opcodes used below (ACPI 6.5 20.3).
const (
	mutexOp      = 0x01 // after extOpPrefix
	acquireOp    = 0x23 // after extOpPrefix
	releaseOp    = 0x27 // after extOpPrefix
	addOp        = 0x72
	subtractOp   = 0x74
	incrementOp  = 0x75
	decrementOp  = 0x76
	shiftLeftOp  = 0x79
	shiftRightOp = 0x7a
	orOp         = 0x7d
	lAndOp       = 0x90
	lOrOp        = 0x91
	lGreaterOp   = 0x94
	lLessOp      = 0x95
	whileOp      = 0xa2
)

type mutexTerm struct {
	name  string
	level uint8
}

// Mutex is ASL Mutex(name, syncLevel): ExtOpPrefix 0x01 NameString
// SyncFlags, the sync level (0-15) in bits 0-3.
func Mutex(name string, syncLevel uint8) Term { return mutexTerm{name, syncLevel} }

func (m mutexTerm) AppendAML(b []byte) ([]byte, error) {
	if m.level > 15 {
		return nil, fmt.Errorf("%w: mutex %s sync level %d", ErrAML, m.name, m.level)
	}
	b, err := appendPath(append(b, extOpPrefix, mutexOp), m.name)
	if err != nil {
		return nil, err
	}
	return append(b, m.level), nil
}

type acquireTerm struct {
	mutex   string
	timeout uint16
}

// Acquire is ASL Acquire(mutex, timeout): ExtOpPrefix 0x23 SuperName
// Timeout, the timeout a little-endian WordData (0xFFFF waits forever).
func Acquire(mutex string, timeout uint16) Term { return acquireTerm{mutex, timeout} }

func (a acquireTerm) AppendAML(b []byte) ([]byte, error) {
	b, err := appendPath(append(b, extOpPrefix, acquireOp), a.mutex)
	if err != nil {
		return nil, err
	}
	return le.AppendUint16(b, a.timeout), nil
}

// Release is ASL Release(mutex): ExtOpPrefix 0x27 SuperName.
func Release(mutex string) Term {
	return opTerm{[]byte{extOpPrefix, releaseOp}, []Term{Path(mutex)}}
}

type whileTerm struct {
	predicate Term
	body      []Term
}

// While is ASL While(predicate){body}: 0xA2 PkgLength Predicate TermList.
func While(predicate Term, body ...Term) Term { return whileTerm{predicate, body} }

func (w whileTerm) AppendAML(b []byte) ([]byte, error) {
	body, err := w.predicate.AppendAML(nil)
	if err != nil {
		return nil, err
	}
	for _, c := range w.body {
		if body, err = c.AppendAML(body); err != nil {
			return nil, err
		}
	}
	return withPkgLength(b, body, whileOp), nil
}

// Add is ASL Add(a, b, result): 0x72 Operand Operand Target.
func Add(a, b, result Term) Term { return opTerm{[]byte{addOp}, []Term{a, b, result}} }

// Subtract is ASL Subtract(a, b, result), result = a - b: 0x74 Operand
// Operand Target.
func Subtract(a, b, result Term) Term { return opTerm{[]byte{subtractOp}, []Term{a, b, result}} }

// ShiftLeft is ASL ShiftLeft(source, count, result): 0x79 Operand
// ShiftCount Target.
func ShiftLeft(source, count, result Term) Term {
	return opTerm{[]byte{shiftLeftOp}, []Term{source, count, result}}
}

// ShiftRight is ASL ShiftRight(source, count, result): 0x7A Operand
// ShiftCount Target.
func ShiftRight(source, count, result Term) Term {
	return opTerm{[]byte{shiftRightOp}, []Term{source, count, result}}
}

// Or is ASL Or(a, b, result): 0x7D Operand Operand Target.
func Or(a, b, result Term) Term { return opTerm{[]byte{orOp}, []Term{a, b, result}} }

// Increment is ASL Increment(name): 0x75 SuperName.
func Increment(name Term) Term { return opTerm{[]byte{incrementOp}, []Term{name}} }

// Decrement is ASL Decrement(name): 0x76 SuperName.
func Decrement(name Term) Term { return opTerm{[]byte{decrementOp}, []Term{name}} }

// LLess is ASL LLess(a, b), a < b: 0x95 Operand Operand.
func LLess(a, b Term) Term { return opTerm{[]byte{lLessOp}, []Term{a, b}} }

// LGreater is ASL LGreater(a, b), a > b: 0x94 Operand Operand.
func LGreater(a, b Term) Term { return opTerm{[]byte{lGreaterOp}, []Term{a, b}} }

// LAnd is ASL LAnd(a, b): 0x90 Operand Operand.
func LAnd(a, b Term) Term { return opTerm{[]byte{lAndOp}, []Term{a, b}} }

// LOr is ASL LOr(a, b): 0x91 Operand Operand.
func LOr(a, b Term) Term { return opTerm{[]byte{lOrOp}, []Term{a, b}} }

// LNot is ASL LNot(a): 0x92 Operand.
func LNot(a Term) Term { return opTerm{[]byte{lNotOp}, []Term{a}} }

// Buffer field opcodes (ACPI 6.5 20.2.5.2).
const (
	createDWordFieldOp = 0x8a
	createQWordFieldOp = 0x8f
)

// CreateDWordField is ASL CreateDWordField(buffer, byteIndex, name):
// 0x8A SourceBuff ByteIndex NameString.
func CreateDWordField(buffer, byteIndex Term, name string) Term {
	return opTerm{[]byte{createDWordFieldOp}, []Term{buffer, byteIndex, Path(name)}}
}

// CreateQWordField is ASL CreateQWordField(buffer, byteIndex, name):
// 0x8F SourceBuff ByteIndex NameString.
func CreateQWordField(buffer, byteIndex Term, name string) Term {
	return opTerm{[]byte{createQWordFieldOp}, []Term{buffer, byteIndex, Path(name)}}
}
