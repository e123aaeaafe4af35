package virtio

import (
	"fmt"
	"io"
)

// Reader reads the bytes of a list of guest buffers in order (the
// readable part of a Chain). Every access is bounds checked by the
// GuestMemory; a buffer outside RAM ends the read with its error.
type Reader struct {
	mem  GuestMemory
	bufs []Buffer
	off  uint32 // offset into bufs[0]
}

// NewReader reads bufs from mem.
func NewReader(mem GuestMemory, bufs []Buffer) *Reader {
	return &Reader{mem: mem, bufs: bufs}
}

// Remaining is the number of bytes not read yet.
func (r *Reader) Remaining() uint64 { return total(r.bufs) - uint64(r.off) }

// Read implements io.Reader.
func (r *Reader) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) && len(r.bufs) > 0 {
		b := r.bufs[0]
		k := min(uint64(len(p)-n), uint64(b.Len-r.off))
		if k > 0 {
			if _, err := r.mem.ReadAt(p[n:n+int(k)], int64(b.Addr+uint64(r.off))); err != nil {
				return n, fmt.Errorf("read guest buffer: %w", err)
			}
		}
		n += int(k)
		r.off += uint32(k)
		if r.off == b.Len {
			r.bufs, r.off = r.bufs[1:], 0
		}
	}
	if n == 0 && len(p) > 0 {
		return 0, io.EOF
	}
	return n, nil
}

// Writer writes into a list of guest buffers in order (the writable part
// of a Chain) and counts what it wrote, for Queue.Push.
type Writer struct {
	mem     GuestMemory
	bufs    []Buffer
	off     uint32
	written uint64
}

// NewWriter writes into bufs in mem.
func NewWriter(mem GuestMemory, bufs []Buffer) *Writer {
	return &Writer{mem: mem, bufs: bufs}
}

// Remaining is the space left.
func (w *Writer) Remaining() uint64 { return total(w.bufs) - uint64(w.off) }

// Written is the number of bytes written so far.
func (w *Writer) Written() uint32 { return uint32(w.written) }

// Write implements io.Writer; it fails with io.ErrShortWrite when the
// buffers are full.
func (w *Writer) Write(p []byte) (int, error) {
	n := 0
	for n < len(p) && len(w.bufs) > 0 {
		b := w.bufs[0]
		k := min(uint64(len(p)-n), uint64(b.Len-w.off))
		if k > 0 {
			if _, err := w.mem.WriteAt(p[n:n+int(k)], int64(b.Addr+uint64(w.off))); err != nil {
				return n, fmt.Errorf("write guest buffer: %w", err)
			}
		}
		n += int(k)
		w.off += uint32(k)
		w.written += k
		if w.off == b.Len {
			w.bufs, w.off = w.bufs[1:], 0
		}
	}
	if n < len(p) {
		return n, io.ErrShortWrite
	}
	return n, nil
}

// SplitBuffers cuts bufs after n bytes: head holds the first n bytes (or
// all of bufs if shorter), tail the rest, starting at its first non-empty
// buffer (so tail[0] is where byte n lives).
func SplitBuffers(bufs []Buffer, n uint64) (head, tail []Buffer) {
	for i, b := range bufs {
		if n == 0 && b.Len > 0 {
			return head, bufs[i:]
		}
		if uint64(b.Len) <= n {
			head = append(head, b)
			n -= uint64(b.Len)
			continue
		}
		head = append(head, Buffer{b.Addr, uint32(n)})
		tail = append([]Buffer{{b.Addr + n, b.Len - uint32(n)}}, bufs[i+1:]...)
		return head, tail
	}
	return head, nil
}
