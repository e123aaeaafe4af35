// Package optparse implements Cloud Hypervisor's option_parser syntax
// (option_parser/src/lib.rs): comma-separated key=value items used by every
// CLI option (--disk path=/a,readonly=on) and by ch-remote's add-* commands.
//
// The input is trimmed and split on commas outside [...] (which nest) and
// "..." ; each item splits at its first '='. Keys must be registered, either
// requiring a value (Add) or as a valueless flag (AddValueless). The last
// occurrence of a key wins; an empty value reads as unset.
package optparse

import (
	"errors"
	"fmt"
	"strings"
)

// Error categories, matched with errors.Is.
var (
	ErrUnknownOption = errors.New("unknown option")
	ErrInvalidSyntax = errors.New("invalid syntax")
	ErrInvalidValue  = errors.New("invalid value")
)

// Error says what failed: Kind is one of the categories above, Option the
// key concerned (empty for syntax errors) and Value the offending text.
type Error struct {
	Kind   error
	Option string
	Value  string
}

func (e *Error) Error() string {
	switch {
	case e.Kind == ErrUnknownOption:
		return fmt.Sprintf("unknown option %q", e.Option)
	case e.Kind == ErrInvalidValue && e.Option != "":
		return fmt.Sprintf("invalid value %q for %s", e.Value, e.Option)
	default:
		return fmt.Sprintf("%v: %q", e.Kind, e.Value)
	}
}

// Unwrap returns the category.
func (e *Error) Unwrap() error { return e.Kind }

type option struct {
	requiresValue bool
	value         *string
}

// Parser holds the registered keys and, after Parse, their raw values.
type Parser struct {
	opts map[string]*option
}

// New returns a parser with no keys registered.
func New() *Parser { return &Parser{opts: map[string]*option{}} }

// Add registers keys that require a value (key=value).
func (p *Parser) Add(names ...string) *Parser {
	for _, n := range names {
		p.opts[n] = &option{requiresValue: true}
	}
	return p
}

// AddValueless registers flag keys such as "off", "tty" or "readonly".
func (p *Parser) AddValueless(names ...string) *Parser {
	for _, n := range names {
		p.opts[n] = &option{}
	}
	return p
}

// Parse reads input; an unregistered key is an ErrUnknownOption error.
func (p *Parser) Parse(input string) error { return p.parse(input, false) }

// ParseSubset reads input like Parse but ignores unregistered keys, so one
// option string can be read by several parsers (upstream parse_subset).
func (p *Parser) ParseSubset(input string) error { return p.parse(input, true) }

func (p *Parser) parse(input string, subset bool) error {
	if strings.TrimSpace(input) == "" {
		return nil
	}
	items, err := SplitCommas(input)
	if err != nil {
		return err
	}
	for _, item := range items {
		key, value, hasValue := strings.Cut(item, "=")
		o, ok := p.opts[key]
		if !ok {
			if subset {
				continue
			}
			return &Error{Kind: ErrUnknownOption, Option: key, Value: item}
		}
		if o.requiresValue {
			if !hasValue {
				return &Error{Kind: ErrInvalidSyntax, Option: key, Value: item}
			}
			v := strings.TrimSpace(value)
			o.value = &v
		} else {
			empty := ""
			o.value = &empty
		}
	}
	return nil
}

// SplitCommas splits s (trimmed) on commas that are outside brackets and
// quotes. Unbalanced brackets or quotes are an ErrInvalidSyntax error.
func SplitCommas(s string) ([]string, error) {
	var list []string
	var cur strings.Builder
	depth := 0
	inQuotes := false
	for _, c := range strings.TrimSpace(s) {
		switch c {
		case '[':
			depth++
		case ']':
			depth--
			if depth < 0 {
				return nil, &Error{Kind: ErrInvalidSyntax, Value: s}
			}
		case '"':
			inQuotes = !inQuotes
		case ',':
			if depth == 0 && !inQuotes {
				list = append(list, cur.String())
				cur.Reset()
				continue
			}
		}
		cur.WriteRune(c)
	}
	list = append(list, cur.String())
	if depth != 0 || inQuotes {
		return nil, &Error{Kind: ErrInvalidSyntax, Value: s}
	}
	return list, nil
}

// IsSet reports whether key appeared in the input (even with no value).
func (p *Parser) IsSet(key string) bool {
	o, ok := p.opts[key]
	return ok && o.value != nil
}

// Get returns key's dequoted value; ok is false when the key is absent or
// its value is empty (upstream treats "size=" as unset).
func (p *Parser) Get(key string) (value string, ok bool) {
	o, found := p.opts[key]
	if !found || o.value == nil || *o.value == "" {
		return "", false
	}
	return Dequote(*o.value), true
}

// Dequote removes double quotes; "" inside quotes is a literal quote.
func Dequote(s string) string {
	var out strings.Builder
	inQuotes := false
	var prev byte
	for i := 0; i < len(s); i++ {
		ch := s[i]
		if ch == '"' {
			if !inQuotes && prev == '"' {
				out.WriteByte('"')
			}
			inQuotes = !inQuotes
		} else {
			out.WriteByte(ch)
		}
		prev = ch
	}
	return out.String()
}

// Convert reads key with conv. It returns ok=false (and no error) when the
// key is unset; a conversion failure is an ErrInvalidValue error naming
// the key and the offending text.
func Convert[T any](p *Parser, key string, conv func(string) (T, error)) (v T, ok bool, err error) {
	s, ok := p.Get(key)
	if !ok {
		return v, false, nil
	}
	v, err = conv(s)
	if err != nil {
		return v, false, &Error{Kind: ErrInvalidValue, Option: key, Value: s}
	}
	return v, true, nil
}

// ConvertOr is Convert with a default for an unset key.
func ConvertOr[T any](p *Parser, key string, conv func(string) (T, error), def T) (T, error) {
	v, ok, err := Convert(p, key, conv)
	if err != nil {
		return def, err
	}
	if !ok {
		return def, nil
	}
	return v, nil
}
