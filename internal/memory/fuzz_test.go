package memory

import (
	"bytes"
	"errors"
	"testing"
)

// fuzzMemory has a gap and two adjacent regions from different mappings:
// [0,64K) RAM, [64K,128K) hole, [128K,192K) zone b, [192K,256K) zone c.
var fuzzRegions = []Region{{0, 64 << 10}, {128 << 10, 64 << 10}, {192 << 10, 64 << 10}}

// The later regions are hot-added (Plug), as ACPI memory hotplug does.
func newFuzzMemory(t testing.TB) *Memory {
	m, err := New(fuzzRegions[0].Size, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	for _, r := range fuzzRegions[1:] {
		if _, err := m.Plug(&fakeVM{fail: -1}, "", r.GPA, r.Size, Options{}); err != nil {
			t.Fatal(err)
		}
	}
	return m
}

// model: how many bytes from gpa are backed before the first gap, and
// whether [gpa, gpa+n) lies inside one region.
func model(gpa uint64, n int) (reach int, oneRegion bool) {
	for reach < n {
		cur := gpa + uint64(reach)
		if cur < gpa {
			break
		}
		var in *Region
		for i := range fuzzRegions {
			if r := &fuzzRegions[i]; cur >= r.GPA && cur < r.End() {
				in = r
			}
		}
		if in == nil {
			break
		}
		if reach == 0 {
			oneRegion = uint64(n) <= in.End()-gpa
		}
		reach += int(min(uint64(n-reach), in.End()-cur))
	}
	return reach, oneRegion && reach == n
}

func FuzzAccess(f *testing.F) {
	for _, s := range []struct {
		gpa uint64
		n   uint16
	}{{0, 8}, {64<<10 - 4, 8}, {128<<10 - 1, 2}, {192<<10 - 3, 6}, {256<<10 - 1, 1}, {256 << 10, 1}, {^uint64(0), 2}, {1 << 63, 4}} {
		f.Add(s.gpa, s.n, byte(7))
	}
	m := newFuzzMemory(f)
	f.Fuzz(func(t *testing.T, gpa uint64, n uint16, fill byte) {
		size := int(n) % 4096
		reach, one := model(gpa, size)
		p := bytes.Repeat([]byte{fill}, size)

		wn, werr := m.WriteAt(p, int64(gpa))
		rbuf := make([]byte, size)
		rn, rerr := m.ReadAt(rbuf, int64(gpa))
		wantErr := reach != size
		if int64(gpa) < 0 { // a negative io.ReaderAt offset is always an error
			reach, one, wantErr = 0, false, true
		}
		if wn != reach || rn != reach {
			t.Fatalf("gpa %#x n %d: WriteAt %d ReadAt %d, model %d", gpa, size, wn, rn, reach)
		}
		if wantErr != (werr != nil) || wantErr != (rerr != nil) {
			t.Fatalf("gpa %#x n %d: errors %v / %v with reach %d", gpa, size, werr, rerr, reach)
		}
		for _, err := range []error{werr, rerr} {
			if err != nil && !errors.Is(err, ErrBadAddress) {
				t.Fatalf("error %v does not wrap ErrBadAddress", err)
			}
		}
		if !bytes.Equal(rbuf[:rn], p[:rn]) {
			t.Fatalf("gpa %#x: read back differs", gpa)
		}

		s, serr := m.Slice(gpa, uint64(size))
		if size > 0 && int64(gpa) >= 0 && (serr == nil) != one {
			t.Fatalf("gpa %#x n %d: Slice err %v, model one-region %v", gpa, size, serr, one)
		}
		if serr == nil && (len(s) != size || !bytes.Equal(s, p)) {
			t.Fatalf("gpa %#x: Slice % x", gpa, s)
		}
		_, r1 := model(gpa, 4)
		if _, err := m.ReadU32(gpa); (err == nil) != r1 {
			t.Fatalf("gpa %#x: ReadU32 err %v, model %v", gpa, err, r1)
		}
		if err := m.WriteU64(gpa, 0x1122334455667788); err == nil {
			if v, err := m.ReadU64(gpa); err != nil || v != 0x1122334455667788 {
				t.Fatalf("gpa %#x: U64 round trip %#x %v", gpa, v, err)
			}
		}
	})
}
