package optparse

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

var errBadValue = errors.New("bad value")

// Toggle parses on|off|true|false (case-insensitive); "" is false.
func Toggle(s string) (bool, error) {
	switch strings.ToLower(s) {
	case "on", "true":
		return true, nil
	case "off", "false", "":
		return false, nil
	}
	return false, errBadValue
}

// ByteSized parses a byte count: a plain integer or one with a binary
// suffix K, M or G (uppercase only), e.g. "512M" = 536870912.
func ByteSized(s string) (uint64, error) {
	s = strings.TrimSpace(s)
	shift := 0
	switch {
	case strings.HasSuffix(s, "K"):
		shift = 10
	case strings.HasSuffix(s, "M"):
		shift = 20
	case strings.HasSuffix(s, "G"):
		shift = 30
	}
	// Upstream strips every trailing suffix letter.
	s = strings.TrimRight(s, "KMG")
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, err
	}
	if shift > 0 && v > (^uint64(0))>>shift {
		return 0, fmt.Errorf("%d<<%d overflows", v, shift)
	}
	return v << shift, nil
}

// Uint returns a parser for unsigned integers of the given bit size, so
// "256" fails for 8 bits as Rust's u8 parse does.
func Uint(bits int) func(string) (uint64, error) {
	return func(s string) (uint64, error) {
		s = strings.TrimPrefix(s, "+") // Rust's integer FromStr accepts '+'
		return strconv.ParseUint(s, 10, bits)
	}
}

// Uint8 parses a u8.
func Uint8(s string) (uint8, error) { v, err := Uint(8)(s); return uint8(v), err }

// Uint16 parses a u16.
func Uint16(s string) (uint16, error) { v, err := Uint(16)(s); return uint16(v), err }

// Uint32 parses a u32.
func Uint32(s string) (uint32, error) { v, err := Uint(32)(s); return uint32(v), err }

// Uint64 parses a u64.
func Uint64(s string) (uint64, error) { return Uint(64)(s) }

// String accepts any text.
func String(s string) (string, error) { return s, nil }

// IntegerList parses [1,3,5] or ranges [0,2-4,7] (= 0,2,3,4,7); the
// brackets are optional. A range must be increasing: 5-3 and 5-5 fail.
func IntegerList(s string) ([]uint64, error) { return IntegerListBits(64)(s) }

// IntegerListBits is IntegerList whose elements must fit in bits.
func IntegerListBits(bits int) func(string) ([]uint64, error) {
	parse := Uint(bits)
	return func(s string) ([]uint64, error) {
		body := strings.Trim(strings.TrimSpace(s), "[]")
		var list []uint64
		for _, r := range strings.Split(body, ",") {
			items := strings.Split(r, "-")
			if len(items) > 2 {
				return nil, errBadValue
			}
			start, err := parse(items[0])
			if err != nil {
				return nil, err
			}
			list = append(list, start)
			if len(items) == 2 {
				end, err := parse(items[1])
				if err != nil {
					return nil, err
				}
				if start >= end {
					return nil, errBadValue
				}
				for i := start + 1; i <= end; i++ {
					list = append(list, i)
				}
			}
		}
		return list, nil
	}
}

// StringList parses [foo,bar] (brackets optional).
func StringList(s string) ([]string, error) {
	body := strings.Trim(strings.TrimSpace(s), "[]")
	return strings.Split(body, ","), nil
}

// Pair is one key@value element of a tuple list.
type Pair[V any] struct {
	Key   string
	Value V
}

// TupleList returns a parser for [key@value,...] where each value is read
// by val (an integer, or an IntegerList such as [1,2]). The outer brackets
// are required, elements are trimmed, the key may be quoted (to hold '@'),
// must not be empty, and the value must not start with whitespace.
func TupleList[V any](val func(string) (V, error)) func(string) ([]Pair[V], error) {
	return func(s string) ([]Pair[V], error) {
		s = strings.TrimSpace(s)
		if !strings.HasPrefix(s, "[") || !strings.HasSuffix(s, "]") || len(s) < 2 {
			return nil, errBadValue
		}
		items, err := SplitCommas(s[1 : len(s)-1])
		if err != nil {
			return nil, err
		}
		var out []Pair[V]
		for _, item := range items {
			item = strings.TrimSpace(item)
			at := indexOutsideQuotes(item, '@')
			if at < 0 {
				return nil, errBadValue
			}
			key := Dequote(item[:at])
			raw := item[at+1:]
			if key == "" || raw == "" || raw != strings.TrimLeft(raw, " \t") {
				return nil, errBadValue
			}
			if indexOutsideQuotes(raw, '@') >= 0 && !strings.HasPrefix(raw, "[") {
				return nil, errBadValue
			}
			v, err := val(raw)
			if err != nil {
				return nil, err
			}
			out = append(out, Pair[V]{Key: key, Value: v})
		}
		return out, nil
	}
}

func indexOutsideQuotes(s string, c byte) int {
	in := false
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '"':
			in = !in
		case c:
			if !in {
				return i
			}
		}
	}
	return -1
}
