package directio

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

func open(t *testing.T, path string) *File {
	t.Helper()
	d, err := Open(path, os.O_RDWR|os.O_CREATE)
	if errors.Is(err, syscall.EINVAL) {
		t.Skipf("%s: the file system refuses O_DIRECT", filepath.Dir(path))
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

func TestAlignedBuf(t *testing.T) {
	for _, n := range []int{0, 1, 512, 4096, 100000} {
		b := AlignedBuf(n)
		if len(b) != n || cap(b) != n || !AddrAligned(b, MemAlign) {
			t.Fatalf("AlignedBuf(%d): len %d cap %d aligned %v", n, len(b), cap(b), AddrAligned(b, MemAlign))
		}
	}
}

// TestMatchesBufferedIO does the same random reads and writes (unaligned
// buffers, offsets and lengths, some past the end of the file, some larger
// than the bounce buffer) through File and through a plain file, and wants
// the same bytes, counts, errors and file sizes.
func TestMatchesBufferedIO(t *testing.T) {
	dir := t.TempDir()
	d := open(t, filepath.Join(dir, "direct"))
	t.Logf("file system alignment: offsets %d, memory %d", d.align, d.memAlign)
	for _, align := range []int{d.align, MemAlign} {
		d.align = align
		if err := d.f.Truncate(0); err != nil {
			t.Fatal(err)
		}
		ref, err := os.Create(filepath.Join(dir, "ref"))
		if err != nil {
			t.Fatal(err)
		}
		defer ref.Close()
		r := rand.New(rand.NewPCG(uint64(align), 7))
		mem := AlignedBuf(3*bounceSize + 2*MemAlign)
		for i := range 400 {
			// Mostly small transfers near the end of the file, where
			// extending it is tested; some large and aligned ones.
			n := r.IntN(3 * 4096)
			if r.IntN(8) == 0 {
				n = r.IntN(2*bounceSize + 4096)
			}
			off := int64(r.IntN(1 << 19))
			shift := r.IntN(64)
			if r.IntN(4) == 0 {
				off &^= int64(align - 1)
				n &^= align - 1
				shift = 0
			}
			p := mem[shift : shift+n]
			if r.IntN(2) == 0 {
				for j := range p {
					p[j] = byte(r.Uint32())
				}
				dn, derr := d.WriteAt(p, off)
				rn, rerr := ref.WriteAt(p, off)
				if dn != rn || derr != nil || rerr != nil {
					t.Fatalf("step %d: WriteAt(%d bytes at %d) = %d, %v; buffered %d, %v", i, n, off, dn, derr, rn, rerr)
				}
			} else {
				want := make([]byte, n)
				rn, rerr := ref.ReadAt(want, off)
				dn, derr := d.ReadAt(p, off)
				if dn != rn || !errors.Is(derr, rerr) && (derr != io.EOF || rerr != io.EOF) || !bytes.Equal(p[:dn], want[:rn]) {
					t.Fatalf("step %d: ReadAt(%d bytes at %d) = %d, %v; buffered %d, %v", i, n, off, dn, derr, rn, rerr)
				}
			}
			ds, _ := d.Stat()
			rs, _ := ref.Stat()
			if ds.Size() != rs.Size() {
				t.Fatalf("step %d (align %d): size %d, buffered %d", i, align, ds.Size(), rs.Size())
			}
		}
		got, _ := os.ReadFile(filepath.Join(dir, "direct"))
		want, _ := os.ReadFile(filepath.Join(dir, "ref"))
		if !bytes.Equal(got, want) {
			t.Fatalf("align %d: contents differ", align)
		}
	}
}
