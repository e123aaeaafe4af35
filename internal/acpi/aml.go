package acpi

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
)

// AML encoding, ACPI 6.5 chapter 20 ("ACPI Machine Language Specification").

// ErrAML reports a term that cannot be encoded (bad name, bad EISA ID, ...).
var ErrAML = errors.New("invalid AML")

// AML opcodes and prefixes (ACPI 6.5 20.2).
const (
	zeroOp          = 0x00
	oneOp           = 0x01
	nameOp          = 0x08
	bytePrefix      = 0x0a
	wordPrefix      = 0x0b
	dwordPrefix     = 0x0c
	stringPrefix    = 0x0d
	qwordPrefix     = 0x0e
	scopeOp         = 0x10
	bufferOp        = 0x11
	packageOp       = 0x12
	methodOp        = 0x14
	dualNamePrefix  = 0x2e
	multiNamePrefix = 0x2f
	extOpPrefix     = 0x5b
	deviceOp        = 0x82 // after extOpPrefix
	returnOp        = 0xa4
	onesOp          = 0xff
)

// Term is an AML term that appends its encoding to b.
type Term interface {
	AppendAML(b []byte) ([]byte, error)
}

// Marshal encodes terms one after another.
func Marshal(terms ...Term) ([]byte, error) {
	var b []byte
	var err error
	for _, t := range terms {
		if b, err = t.AppendAML(b); err != nil {
			return nil, err
		}
	}
	return b, nil
}

// pkgLength encodes a PkgLength (20.2.4) for a body of n bytes; the length
// counts its own bytes when includeSelf is set.
func pkgLength(n int, includeSelf bool) []byte {
	var ll int
	switch {
	case n < 1<<6-1:
		ll = 1
	case n < 1<<12-2:
		ll = 2
	case n < 1<<20-3:
		ll = 3
	default:
		ll = 4
	}
	if includeSelf {
		n += ll
	}
	if ll == 1 {
		return []byte{byte(n)}
	}
	b := []byte{byte(ll-1)<<6 | byte(n&0xf)}
	for i := 1; i < ll; i++ {
		b = append(b, byte(n>>(4+8*(i-1))))
	}
	return b
}

// withPkgLength emits op bytes, the PkgLength of body, then body.
func withPkgLength(b []byte, body []byte, op ...byte) []byte {
	b = append(b, op...)
	b = append(b, pkgLength(len(body), true)...)
	return append(b, body...)
}

// Int is an integer constant, encoded in the smallest form (Zero, One,
// Byte/Word/DWord/QWord prefixes) as iasl and acpi_tables do.
type Int uint64

// AppendAML implements Term.
func (v Int) AppendAML(b []byte) ([]byte, error) {
	switch {
	case v == 0:
		return append(b, zeroOp), nil
	case v == 1:
		return append(b, oneOp), nil
	case v <= 0xff:
		return append(b, bytePrefix, byte(v)), nil
	case v <= 0xffff:
		return binary.LittleEndian.AppendUint16(append(b, wordPrefix), uint16(v)), nil
	case v <= 0xffffffff:
		return binary.LittleEndian.AppendUint32(append(b, dwordPrefix), uint32(v)), nil
	}
	return binary.LittleEndian.AppendUint64(append(b, qwordPrefix), uint64(v)), nil
}

type onesTerm struct{}

func (onesTerm) AppendAML(b []byte) ([]byte, error) { return append(b, onesOp), nil }

// Ones is the all-bits-set constant.
var Ones Term = onesTerm{}

// String is a NUL-terminated ASCII string constant.
type String string

// AppendAML implements Term.
func (s String) AppendAML(b []byte) ([]byte, error) {
	for i := 0; i < len(s); i++ {
		if s[i] == 0 || s[i] > 0x7f {
			return nil, fmt.Errorf("%w: string %q has a non-ASCII or NUL byte", ErrAML, string(s))
		}
	}
	b = append(append(b, stringPrefix), s...)
	return append(b, 0), nil
}

// EISAID is a compressed EISA ID such as "PNP0501" (ASL EisaId()).
type EISAID string

// AppendAML implements Term.
func (id EISAID) AppendAML(b []byte) ([]byte, error) {
	v, err := eisaValue(string(id))
	if err != nil {
		return nil, err
	}
	return Int(v).AppendAML(b)
}

func eisaValue(s string) (uint32, error) {
	if len(s) != 7 {
		return 0, fmt.Errorf("%w: EISA id %q is not 7 characters", ErrAML, s)
	}
	var v uint32
	for i := 0; i < 3; i++ {
		if s[i] < 'A' || s[i] > 'Z' {
			return 0, fmt.Errorf("%w: EISA id %q needs 3 upper-case letters", ErrAML, s)
		}
		v = v<<5 | uint32(s[i]-'@')
	}
	for i := 3; i < 7; i++ {
		var d byte
		switch c := s[i]; {
		case c >= '0' && c <= '9':
			d = c - '0'
		case c >= 'A' && c <= 'F':
			d = c - 'A' + 10
		default:
			return 0, fmt.Errorf("%w: EISA id %q needs 4 hex digits", ErrAML, s)
		}
		v = v<<4 | uint32(d)
	}
	// The 32-bit value is stored big-endian, i.e. byte-swapped as an integer.
	return v>>24 | v>>8&0xff00 | v<<8&0xff0000 | v<<24, nil
}

// appendPath encodes a NameString: optional root '\' or parent '^'
// prefixes, then 4-character segments separated by dots.
func appendPath(b []byte, path string) ([]byte, error) {
	rest := path
	for len(rest) > 0 && (rest[0] == '\\' || rest[0] == '^') {
		b = append(b, rest[0])
		rest = rest[1:]
	}
	if rest == "" {
		return nil, fmt.Errorf("%w: empty name %q", ErrAML, path)
	}
	segs := strings.Split(rest, ".")
	for _, s := range segs {
		if !validNameSeg(s) {
			return nil, fmt.Errorf("%w: name segment %q in %q must be 4 characters of A-Z, 0-9, _ not starting with a digit", ErrAML, s, path)
		}
	}
	switch len(segs) {
	case 1:
	case 2:
		b = append(b, dualNamePrefix)
	default:
		if len(segs) > 255 {
			return nil, fmt.Errorf("%w: too many segments in %q", ErrAML, path)
		}
		b = append(b, multiNamePrefix, byte(len(segs)))
	}
	for _, s := range segs {
		b = append(b, s...)
	}
	return b, nil
}

func validNameSeg(s string) bool {
	if len(s) != 4 || (s[0] >= '0' && s[0] <= '9') {
		return false
	}
	for i := 0; i < 4; i++ {
		c := s[i]
		if !(c == '_' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

type nameTerm struct {
	path  string
	value Term
}

// Name is ASL Name(path, value).
func Name(path string, value Term) Term { return nameTerm{path, value} }

func (n nameTerm) AppendAML(b []byte) ([]byte, error) {
	b, err := appendPath(append(b, nameOp), n.path)
	if err != nil {
		return nil, err
	}
	return n.value.AppendAML(b)
}

type packageTerm []Term

// Package is ASL Package(){elements} with at most 255 elements.
func Package(elems ...Term) Term { return packageTerm(elems) }

func (p packageTerm) AppendAML(b []byte) ([]byte, error) {
	if len(p) > 255 {
		return nil, fmt.Errorf("%w: package of %d elements (use VarPackage)", ErrAML, len(p))
	}
	body := []byte{byte(len(p))}
	var err error
	for _, e := range p {
		if body, err = e.AppendAML(body); err != nil {
			return nil, err
		}
	}
	return withPkgLength(b, body, packageOp), nil
}

// Buffer is ASL Buffer(){bytes}.
type Buffer []byte

// AppendAML implements Term.
func (buf Buffer) AppendAML(b []byte) ([]byte, error) {
	body, _ := Int(len(buf)).AppendAML(nil)
	body = append(body, buf...)
	return withPkgLength(b, body, bufferOp), nil
}

type scoped struct {
	op       []byte
	path     string
	flags    []byte
	children []Term
}

func (s scoped) AppendAML(b []byte) ([]byte, error) {
	body, err := appendPath(nil, s.path)
	if err != nil {
		return nil, err
	}
	body = append(body, s.flags...)
	for _, c := range s.children {
		if body, err = c.AppendAML(body); err != nil {
			return nil, err
		}
	}
	return withPkgLength(b, body, s.op...), nil
}

// Device is ASL Device(path){children}.
func Device(path string, children ...Term) Term {
	return scoped{op: []byte{extOpPrefix, deviceOp}, path: path, children: children}
}

// Scope is ASL Scope(path){children}.
func Scope(path string, children ...Term) Term {
	return scoped{op: []byte{scopeOp}, path: path, children: children}
}

// Method is ASL Method(name, args, Serialized|NotSerialized){body}.
func Method(name string, args uint8, serialized bool, body ...Term) Term {
	flags := args & 7
	if serialized {
		flags |= 1 << 3
	}
	return scoped{op: []byte{methodOp}, path: name, flags: []byte{flags}, children: body}
}

type returnTerm struct{ v Term }

// Return is ASL Return(v).
func Return(v Term) Term { return returnTerm{v} }

func (r returnTerm) AppendAML(b []byte) ([]byte, error) { return r.v.AppendAML(append(b, returnOp)) }
