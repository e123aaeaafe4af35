package pattern

import (
	"bytes"
	"io"
	"testing"
)

// TestStream: the first bytes are fixed (both ends of a test depend on
// them) and reads in any chunking give the same stream.
func TestStream(t *testing.T) {
	a, _ := io.ReadAll(N(64))
	if want := []byte{0xb0, 0x9b, 0xd0}; !bytes.HasPrefix(a, want) {
		t.Fatalf("stream starts % x, want % x", a[:3], want)
	}
	p := New()
	var b []byte
	for _, n := range []int{1, 7, 56} {
		c := make([]byte, n)
		p.Read(c)
		b = append(b, c...)
	}
	if !bytes.Equal(a, b) {
		t.Fatal("chunked reads differ")
	}
}
