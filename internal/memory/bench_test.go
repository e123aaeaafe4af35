package memory

import "testing"

func benchMem(b *testing.B) *Memory {
	return newMem(b, Zone{Size: 5 * gib})
}

// Device-side access costs: a ring index read, a descriptor-sized copy
// and a short-lived slice, in high RAM (the region lookup's worst case).
func BenchmarkReadU16(b *testing.B) {
	m := benchMem(b)
	for i := range b.N {
		if _, err := m.ReadU16(4*gib + uint64(i&0xfff)*2); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkReadAt16(b *testing.B) {
	m := benchMem(b)
	buf := make([]byte, 16)
	for i := range b.N {
		if _, err := m.ReadAt(buf, int64(4*gib+uint64(i&0xff)*16)); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSlice4K(b *testing.B) {
	m := benchMem(b)
	for i := range b.N {
		s, err := m.Slice(4*gib+uint64(i&0xf)*4096, 4096)
		if err != nil {
			b.Fatal(err)
		}
		s[0]++
	}
}
