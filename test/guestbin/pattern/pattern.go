// Package pattern is the byte stream the guest-side test programs
// (test/guestbin) and the host-side tests exchange: both ends generate
// it, so either can check what arrived.
package pattern

import "io"

// Seed is the stream's start state.
const Seed = 88172645463325252

// Reader is an endless xorshift64 byte stream.
type Reader struct{ x uint64 }

// New returns the stream from its start.
func New() *Reader { return &Reader{x: Seed} }

// Read implements io.Reader; it never fails.
func (p *Reader) Read(b []byte) (int, error) {
	for i := range b {
		p.x ^= p.x << 13
		p.x ^= p.x >> 7
		p.x ^= p.x << 17
		b[i] = byte(p.x)
	}
	return len(b), nil
}

// N is the stream's first n bytes.
func N(n int64) io.Reader { return io.LimitReader(New(), n) }
