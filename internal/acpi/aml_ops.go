package acpi

import "fmt"

// Named objects, references and the statements and expressions control
// methods need (ACPI 6.5 sections 20.2.5 "Term Objects Encoding" and
// 20.2.6 "Miscellaneous Objects Encoding"). Argument orders follow ASL,
// byte orders the AML grammar.

// Opcodes used below (ACPI 6.5 20.3, "AML Byte Stream Byte Values").
const (
	opRegionOp = 0x80 // after extOpPrefix
	fieldOp    = 0x81 // after extOpPrefix
	local0Op   = 0x60
	arg0Op     = 0x68
	storeOp    = 0x70
	andOp      = 0x7b
	notifyOp   = 0x86
	lNotOp     = 0x92
	lEqualOp   = 0x93
	ifOp       = 0xa0
)

// RegionSpace is an OperationRegion's address space (RegionSpace, 20.2.5.2).
type RegionSpace uint8

// Region spaces.
const (
	SystemMemory RegionSpace = 0
	SystemIO     RegionSpace = 1
	PCIConfig    RegionSpace = 2
)

type opRegion struct {
	name           string
	space          RegionSpace
	offset, length Term
}

// OperationRegion is ASL OperationRegion(name, space, offset, length):
// ExtOpPrefix 0x80 NameString RegionSpace RegionOffset RegionLen.
func OperationRegion(name string, space RegionSpace, offset, length Term) Term {
	return opRegion{name, space, offset, length}
}

func (r opRegion) AppendAML(b []byte) ([]byte, error) {
	b, err := appendPath(append(b, extOpPrefix, opRegionOp), r.name)
	if err != nil {
		return nil, err
	}
	if b, err = r.offset.AppendAML(append(b, byte(r.space))); err != nil {
		return nil, err
	}
	return r.length.AppendAML(b)
}

// FieldAccess is a Field's AccessType (FieldFlags bits 0-3).
type FieldAccess uint8

// Access types.
const (
	AnyAcc   FieldAccess = 0
	ByteAcc  FieldAccess = 1
	WordAcc  FieldAccess = 2
	DWordAcc FieldAccess = 3
	QWordAcc FieldAccess = 4
)

// FieldUpdate is a Field's UpdateRule (FieldFlags bits 5-6).
type FieldUpdate uint8

// Update rules.
const (
	Preserve     FieldUpdate = 0
	WriteAsOnes  FieldUpdate = 1
	WriteAsZeros FieldUpdate = 2
)

// FieldUnit is one entry of a Field list: a NamedField (Name, Bits) or,
// with an empty Name, a ReservedField skipping Bits bits.
type FieldUnit struct {
	Name string
	Bits int
}

type field struct {
	region string
	access FieldAccess
	lock   bool
	update FieldUpdate
	units  []FieldUnit
}

// Field is ASL Field(region, access, Lock|NoLock, update){units}:
// ExtOpPrefix 0x81 PkgLength NameString FieldFlags FieldList, where each
// NamedField is a NameSeg and a PkgLength-encoded bit count (not counting
// itself) and a ReservedField is 0x00 and the same.
func Field(region string, access FieldAccess, lock bool, update FieldUpdate, units ...FieldUnit) Term {
	return field{region, access, lock, update, units}
}

func (f field) AppendAML(b []byte) ([]byte, error) {
	if f.access > QWordAcc+1 || f.update > WriteAsZeros {
		return nil, fmt.Errorf("%w: field flags access=%d update=%d", ErrAML, f.access, f.update)
	}
	body, err := appendPath(nil, f.region)
	if err != nil {
		return nil, err
	}
	body = append(body, byte(f.access)|bit(f.lock, 4)|byte(f.update)<<5)
	for _, u := range f.units {
		if u.Bits <= 0 || u.Bits >= 1<<28 {
			return nil, fmt.Errorf("%w: field unit %q of %d bits", ErrAML, u.Name, u.Bits)
		}
		if u.Name == "" {
			body = append(body, 0)
		} else {
			if !validNameSeg(u.Name) {
				return nil, fmt.Errorf("%w: field unit name %q", ErrAML, u.Name)
			}
			body = append(body, u.Name...)
		}
		body = append(body, pkgLength(u.Bits, false)...)
	}
	return withPkgLength(b, body, extOpPrefix, fieldOp), nil
}

type localTerm uint8

// Local is LocalN (N in 0-7), a method's local variable.
func Local(n uint8) Term { return localTerm(n) }

func (l localTerm) AppendAML(b []byte) ([]byte, error) {
	if l > 7 {
		return nil, fmt.Errorf("%w: Local%d", ErrAML, uint8(l))
	}
	return append(b, local0Op+byte(l)), nil
}

type argTerm uint8

// Arg is ArgN (N in 0-6), a method's argument.
func Arg(n uint8) Term { return argTerm(n) }

func (a argTerm) AppendAML(b []byte) ([]byte, error) {
	if a > 6 {
		return nil, fmt.Errorf("%w: Arg%d", ErrAML, uint8(a))
	}
	return append(b, arg0Op+byte(a)), nil
}

type pathTerm string

// Path is a reference to a named object by its NameString, e.g.
// Path(`\_SB_.PWRB`) or Path("GDAT").
func Path(name string) Term { return pathTerm(name) }

func (p pathTerm) AppendAML(b []byte) ([]byte, error) { return appendPath(b, string(p)) }

type methodCall struct {
	name string
	args []Term
}

// Call invokes the method name with args (a MethodInvocation: the
// NameString followed by the arguments).
func Call(name string, args ...Term) Term { return methodCall{name, args} }

func (c methodCall) AppendAML(b []byte) ([]byte, error) {
	if len(c.args) > 7 {
		return nil, fmt.Errorf("%w: %s called with %d arguments", ErrAML, c.name, len(c.args))
	}
	b, err := appendPath(b, c.name)
	if err != nil {
		return nil, err
	}
	for _, a := range c.args {
		if b, err = a.AppendAML(b); err != nil {
			return nil, err
		}
	}
	return b, nil
}

// opTerm is an opcode followed by its operands in order.
type opTerm struct {
	op       []byte
	operands []Term
}

func (o opTerm) AppendAML(b []byte) ([]byte, error) {
	b = append(b, o.op...)
	var err error
	for _, t := range o.operands {
		if b, err = t.AppendAML(b); err != nil {
			return nil, err
		}
	}
	return b, nil
}

// Store is ASL Store(source, destination): 0x70 TermArg SuperName.
func Store(source, destination Term) Term {
	return opTerm{[]byte{storeOp}, []Term{source, destination}}
}

// And is ASL And(a, b, result): 0x7B Operand Operand Target.
func And(a, b, result Term) Term { return opTerm{[]byte{andOp}, []Term{a, b, result}} }

// LEqual is ASL LEqual(a, b): 0x93 Operand Operand.
func LEqual(a, b Term) Term { return opTerm{[]byte{lEqualOp}, []Term{a, b}} }

// LNotEqual is ASL LNotEqual(a, b), encoded as LNot(LEqual(a, b)): 0x92 0x93.
func LNotEqual(a, b Term) Term { return opTerm{[]byte{lNotOp, lEqualOp}, []Term{a, b}} }

// Notify is ASL Notify(object, value): 0x86 SuperName TermArg.
func Notify(object, value Term) Term { return opTerm{[]byte{notifyOp}, []Term{object, value}} }

type ifTerm struct {
	predicate Term
	body      []Term
}

// If is ASL If(predicate){body}: 0xA0 PkgLength Predicate TermList.
func If(predicate Term, body ...Term) Term { return ifTerm{predicate, body} }

func (t ifTerm) AppendAML(b []byte) ([]byte, error) {
	body, err := t.predicate.AppendAML(nil)
	if err != nil {
		return nil, err
	}
	for _, c := range t.body {
		if body, err = c.AppendAML(body); err != nil {
			return nil, err
		}
	}
	return withPkgLength(b, body, ifOp), nil
}
