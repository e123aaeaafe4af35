package optparse

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

// Ported from upstream option_parser's test_option_parser.
func TestOptionParser(t *testing.T) {
	newP := func() *Parser {
		return New().Add("size", "mergeable", "hotplug_method", "hotplug_size", "topology", "cmdline")
	}
	if got, _ := SplitCommas(`""`); !reflect.DeepEqual(got, []string{`""`}) {
		t.Errorf("split_commas(\"\") = %q", got)
	}
	failing := []struct {
		in   string
		kind error
	}{
		{"size=128M,hanging_param", ErrUnknownOption},
		{"size=128M,too_many_equals=foo=bar", ErrUnknownOption},
		{"size=128M,file=/dev/shm", ErrUnknownOption},
		{"size", ErrInvalidSyntax},
		{"topology=[", ErrInvalidSyntax},
		{"topology=[[[]]]]", ErrInvalidSyntax},
		{"[a,b", ErrInvalidSyntax},
		{"a]", ErrInvalidSyntax},
		{`"abc`, ErrInvalidSyntax},
		{`cmdline="`, ErrInvalidSyntax},
		{`cmdline="""`, ErrInvalidSyntax},
	}
	for _, tc := range failing {
		err := newP().Parse(tc.in)
		if !errors.Is(err, tc.kind) {
			t.Errorf("Parse(%q) = %v, want %v", tc.in, err, tc.kind)
		}
	}

	p := newP()
	if err := p.Parse("size=128M"); err != nil {
		t.Fatal(err)
	}
	if v, _ := p.Get("size"); v != "128M" || p.IsSet("mergeable") || !p.IsSet("size") {
		t.Errorf("size=%q mergeable set=%v", v, p.IsSet("mergeable"))
	}
	p = newP()
	if err := p.Parse("size=128M,mergeable=on,topology=[1,2]"); err != nil {
		t.Fatal(err)
	}
	if v, _ := p.Get("mergeable"); v != "on" {
		t.Errorf("mergeable=%q", v)
	}
	if v, _ := p.Get("topology"); v != "[1,2]" {
		t.Errorf("topology=%q", v)
	}
	p = newP()
	if err := p.Parse("topology=[[1,2],[3,4]]"); err != nil {
		t.Fatal(err)
	}
	if v, _ := p.Get("topology"); v != "[[1,2],[3,4]]" {
		t.Errorf("topology=%q", v)
	}
	p = newP()
	if err := p.Parse(`cmdline="console=ttyS0,9600n8"`); err != nil {
		t.Fatal(err)
	}
	if v, _ := p.Get("cmdline"); v != "console=ttyS0,9600n8" {
		t.Errorf("cmdline=%q", v)
	}
	p = newP()
	if err := p.Parse(`cmdline="say ""hi"""`); err != nil {
		t.Fatal(err)
	}
	if v, _ := p.Get("cmdline"); v != `say "hi"` {
		t.Errorf("cmdline=%q", v)
	}
}

func TestParseDetails(t *testing.T) {
	p := New().Add("size", "extra").AddValueless("off")
	if err := p.Parse("  size=1G ,extra=foo=bar,off,size= 2G "); err != nil {
		t.Fatal(err)
	}
	if v, _ := p.Get("size"); v != "2G" {
		t.Errorf("last key must win and values are trimmed: %q", v)
	}
	if v, _ := p.Get("extra"); v != "foo=bar" {
		t.Errorf("split at first '=': %q", v)
	}
	if !p.IsSet("off") {
		t.Error("valueless flag not set")
	}
	p = New().Add("tap")
	if err := p.Parse("tap="); err != nil {
		t.Fatal(err)
	}
	if _, ok := p.Get("tap"); ok || !p.IsSet("tap") {
		t.Error("empty value must read as unset but count as set")
	}
	if err := New().Parse("   "); err != nil {
		t.Errorf("blank input: %v", err)
	}
	p = New().Add("a")
	if err := p.ParseSubset("a=1,b=2,c"); err != nil {
		t.Errorf("subset must ignore unknown keys: %v", err)
	}
	err := New().Add("boot").Parse("boot=1,bogus=1")
	if err == nil || err.Error() != `unknown option "bogus"` {
		t.Errorf("error text: %v", err)
	}
	p = New().Add("boot")
	_ = p.Parse("boot=x")
	_, _, err = Convert(p, "boot", Uint8)
	if err == nil || err.Error() != `invalid value "x" for boot` || !errors.Is(err, ErrInvalidValue) {
		t.Errorf("conversion error: %v", err)
	}
}

func TestToggle(t *testing.T) {
	for in, want := range map[string]bool{"on": true, "ON": true, "True": true, "off": false, "false": false, "": false} {
		got, err := Toggle(in)
		if err != nil || got != want {
			t.Errorf("Toggle(%q) = %v, %v", in, got, err)
		}
	}
	if _, err := Toggle("yes"); err == nil {
		t.Error("Toggle(yes) accepted")
	}
}

func TestByteSized(t *testing.T) {
	ok := map[string]uint64{"1K": 1024, "1M": 1 << 20, "1G": 1 << 30, "0K": 0, "123": 123, "512M": 536870912}
	for in, want := range ok {
		if got, err := ByteSized(in); err != nil || got != want {
			t.Errorf("ByteSized(%q) = %d, %v", in, got, err)
		}
	}
	for _, in := range []string{"", "xyzK", "1k", "12Q", "-1", "17179869184G"} {
		if _, err := ByteSized(in); err == nil {
			t.Errorf("ByteSized(%q) accepted", in)
		}
	}
}

func TestIntegerList(t *testing.T) {
	ok := map[string][]uint64{"[0,1,2]": {0, 1, 2}, "[0-3]": {0, 1, 2, 3}, "[0,2-4,7]": {0, 2, 3, 4, 7}, "1,3": {1, 3}, "[5]": {5}}
	for in, want := range ok {
		if got, err := IntegerList(in); err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("IntegerList(%q) = %v, %v", in, got, err)
		}
	}
	for _, in := range []string{"[5-3]", "[5-5]", "[1-2-3]", "[a]", "[]"} {
		if _, err := IntegerList(in); err == nil {
			t.Errorf("IntegerList(%q) accepted", in)
		}
	}
	if _, err := IntegerListBits(8)("[256]"); err == nil {
		t.Error("u8 list accepted 256")
	}
}

func TestStringList(t *testing.T) {
	got, _ := StringList("[foo,bar]")
	if !reflect.DeepEqual(got, []string{"foo", "bar"}) {
		t.Errorf("got %q", got)
	}
	got, _ = StringList("amx")
	if !reflect.DeepEqual(got, []string{"amx"}) {
		t.Errorf("got %q", got)
	}
}

func TestTupleList(t *testing.T) {
	lists := TupleList(IntegerList)
	got, err := lists("[0@[0,2],1@[1,3]]")
	want := []Pair[[]uint64]{{"0", []uint64{0, 2}}, {"1", []uint64{1, 3}}}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("got %v, %v", got, err)
	}
	got, err = lists("[ a@[1,2] , b@[3-4] ]")
	want = []Pair[[]uint64]{{"a", []uint64{1, 2}}, {"b", []uint64{3, 4}}}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("trimmed: got %v, %v", got, err)
	}
	ints := TupleList(Uint64)
	g2, err := ints(`[1@15,"x@y"@20]`)
	if err != nil || len(g2) != 2 || g2[0].Value != 15 || g2[1].Key != "x@y" || g2[1].Value != 20 {
		t.Errorf("got %v, %v", g2, err)
	}
	for _, in := range []string{"0@[0,2]", "[@1]", "[a@ 1]", "[a1]", "[a@1@2]", "[a@[1,2]"} {
		if _, err := ints(in); err == nil {
			if _, err2 := lists(in); err2 == nil {
				t.Errorf("TupleList(%q) accepted", in)
			}
		}
	}
}

func FuzzOptionParser(f *testing.F) {
	for _, s := range []string{"size=128M", "topology=[[1,2],[3,4]]", `cmdline="a,b"`, "[a,b", "a]", "x=[0@[0,2],1@[1,3]]", "k=1-3"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p := New().Add("size", "topology", "cmdline", "x", "k").AddValueless("off")
		if err := p.Parse(s); err != nil {
			if !errors.Is(err, ErrUnknownOption) && !errors.Is(err, ErrInvalidSyntax) {
				t.Fatalf("uncategorised error %v", err)
			}
			return
		}
		for _, k := range []string{"size", "topology", "cmdline", "x", "k"} {
			_, _, _ = Convert(p, k, ByteSized)
			_, _, _ = Convert(p, k, IntegerList)
			_, _, _ = Convert(p, k, TupleList(IntegerList))
			_, _, _ = Convert(p, k, StringList)
			if v, ok := p.Get(k); ok && strings.Contains(v, `"`) && !strings.Contains(s, `""`) {
				t.Fatalf("dequote left a quote in %q", v)
			}
		}
	})
}
