package qcow2

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nimbus-vmm/nimbus/internal/testproc"
)

// The tests make images with qemu-img and qemu-io (Debian's qemu-utils,
// which scripts/install-deps.sh installs) and have qemu-img judge what
// this package wrote: `qemu-img check` must find no error and no leak,
// `qemu-img compare` the same contents as a raw file written alike.

func tool(t *testing.T, name string, args ...string) string {
	t.Helper()
	return testproc.Tool(t, name, args...)
}

// checkClean runs qemu-img check and compares the image with the raw
// reference.
func checkClean(t *testing.T, img, ref string) {
	t.Helper()
	out := tool(t, "qemu-img", "check", "-f", "qcow2", img)
	if !strings.Contains(out, "No errors were found") || strings.Contains(out, "leaked") {
		t.Fatalf("qemu-img check %s:\n%s", img, out)
	}
	tool(t, "qemu-img", "compare", "-f", "qcow2", "-F", "raw", img, ref)
}

// writeBoth writes p at off to the image and the raw reference.
func writeBoth(t *testing.T, img *Image, ref *os.File, p []byte, off int64) {
	t.Helper()
	if n, err := img.WriteAt(p, off); err != nil || n != len(p) {
		t.Fatalf("WriteAt(%d bytes at %#x) = %d, %v", len(p), off, n, err)
	}
	if _, err := ref.WriteAt(p, off); err != nil {
		t.Fatal(err)
	}
}

// sameContents reads the whole disk through the image and compares it
// with want, in uneven pieces that cross cluster boundaries.
func sameContents(t *testing.T, img *Image, want []byte) {
	t.Helper()
	if img.Size() != int64(len(want)) {
		t.Fatalf("size %d, want %d", img.Size(), len(want))
	}
	got := make([]byte, len(want))
	for off, step := 0, 3*4096+512; off < len(got); off += step {
		end := min(off+step, len(got))
		if n, err := img.ReadAt(got[off:end], int64(off)); err != nil || n != end-off {
			t.Fatalf("ReadAt(%#x) = %d, %v", off, n, err)
		}
	}
	if i := firstDiff(got, want); i >= 0 {
		t.Fatalf("byte %#x reads %#x, want %#x", i, got[i], want[i])
	}
}

func firstDiff(a, b []byte) int {
	for i := range a {
		if a[i] != b[i] {
			return i
		}
	}
	return -1
}

func randBytes(r *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// TestHeaderBytes: a qemu-img header decodes and encodes back byte for
// byte, for versions 2 and 3.
func TestHeaderBytes(t *testing.T) {
	dir := t.TempDir()
	for _, compat := range []string{"0.10", "1.1"} {
		p := filepath.Join(dir, compat+".qcow2")
		tool(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "compat="+compat+",cluster_size=4096", p, "5G")
		raw, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		h, err := parseHeader(raw)
		if err != nil {
			t.Fatal(err)
		}
		if h.Size != 5<<30 || h.ClusterBits != 12 || h.L1Size != 5<<30/(4096*512) {
			t.Fatalf("compat %s: %+v", compat, h)
		}
		b, err := h.MarshalBinary()
		if err != nil || !bytes.Equal(b, raw[:len(b)]) {
			t.Fatalf("compat %s: re-encoded header differs (%v):\n% x\n% x", compat, err, b, raw[:len(b)])
		}
		if want := map[string]int{"0.10": 72, "1.1": 112}[compat]; len(b) != want {
			t.Fatalf("compat %s: header of %d bytes, want %d", compat, len(b), want)
		}
	}
}

// TestWritesMatchRaw: random writes (inside clusters, across them, whole
// ones, the disk's last byte) read back as written, through a fresh open
// too, and qemu-img agrees: versions 2 and 3, 4 KiB clusters (many L2
// tables and refcount blocks to allocate) and 64 KiB, 16- and 64-bit
// refcounts.
func TestWritesMatchRaw(t *testing.T) {
	const size = 48 << 20
	for _, c := range []struct {
		opts   string
		direct bool // through O_DIRECT (direct=on): metadata and data bounced where unaligned
	}{
		{"compat=0.10,cluster_size=4096", false}, {"compat=1.1,cluster_size=65536", false},
		{"compat=1.1,cluster_size=4096,refcount_bits=64", false}, {"compat=1.1,cluster_size=512,refcount_bits=8", false},
		{"compat=1.1,cluster_size=65536", true}, {"compat=0.10,cluster_size=4096", true},
	} {
		opts := c.opts
		name := opts
		if c.direct {
			name += ",direct"
		}
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			p, refPath := filepath.Join(dir, "disk.qcow2"), filepath.Join(dir, "ref.raw")
			tool(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", opts, p, "48M")
			ref, err := os.Create(refPath)
			if err != nil {
				t.Fatal(err)
			}
			defer ref.Close()
			if err := ref.Truncate(size); err != nil {
				t.Fatal(err)
			}
			img, err := Open(p, Options{Direct: c.direct})
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := img.f.(*os.File); ok == c.direct {
				t.Fatalf("direct=%v opened a %T", c.direct, img.f)
			}
			tableClusters := img.h.RefcountTableClusters
			r := rand.New(rand.NewPCG(1, 2))
			for i := 0; i < 300; i++ {
				n := 1 + r.IntN(200<<10)
				off := r.Int64N(size - int64(n))
				if i%10 == 0 {
					off &^= 4095
				}
				writeBoth(t, img, ref, randBytes(r, n), off)
			}
			writeBoth(t, img, ref, []byte{0xee}, size-1)
			if n, err := img.WriteAt([]byte{1, 2}, size-1); n != 1 || err == nil {
				t.Fatalf("write past the end: %d, %v", n, err)
			}
			ref.WriteAt([]byte{1}, size-1)
			want, err := os.ReadFile(refPath)
			if err != nil {
				t.Fatal(err)
			}
			sameContents(t, img, want)
			if strings.Contains(opts, "cluster_size=512") && img.h.RefcountTableClusters <= tableClusters {
				t.Fatalf("refcount table of %d clusters: 48 MiB of 512-byte clusters outgrow the first", tableClusters)
			}
			if err := img.Flush(); err != nil {
				t.Fatal(err)
			}
			img.Close()
			checkClean(t, p, refPath)
			img, err = Open(p, Options{ReadOnly: true, Direct: c.direct})
			if err != nil {
				t.Fatal(err)
			}
			defer img.Close()
			sameContents(t, img, want)
			if _, err := img.WriteAt([]byte{1}, 0); !errors.Is(err, ErrReadOnly) {
				t.Fatalf("write to a read-only image: %v", err)
			}
		})
	}
}

// TestBackingFiles: an overlay reads its backing file (raw, then qcow2
// over qcow2) where it has no cluster, a partial write copies the rest of
// the cluster up, the backing file is never written, and a backing file
// is refused unless allowed.
func TestBackingFiles(t *testing.T) {
	dir := t.TempDir()
	r := rand.New(rand.NewPCG(3, 4))
	base := randBytes(r, 8<<20)
	basePath := filepath.Join(dir, "base.raw")
	if err := os.WriteFile(basePath, base, 0o644); err != nil {
		t.Fatal(err)
	}
	mid := filepath.Join(dir, "mid.qcow2")
	top := filepath.Join(dir, "top.qcow2")
	// A 12 MiB overlay over 8 MiB: the last 4 MiB read as zeroes.
	tool(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", "base.raw", "-F", "raw", mid, "12M")
	tool(t, "qemu-io", "-c", "write -P 0x5a 1M 64k", mid)
	tool(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", mid, "-F", "qcow2", top, "12M")
	if _, err := Open(top, Options{}); !errors.Is(err, ErrBacking) {
		t.Fatalf("backing file without BackingFiles: %v", err)
	}
	img, err := Open(top, Options{BackingFiles: true})
	if err != nil {
		t.Fatal(err)
	}
	if img.BackingFile != mid {
		t.Fatalf("backing file %q", img.BackingFile)
	}
	want := append(bytes.Clone(base), make([]byte, 4<<20)...)
	copy(want[1<<20:], bytes.Repeat([]byte{0x5a}, 64<<10))
	sameContents(t, img, want)
	refPath := filepath.Join(dir, "ref.raw")
	ref, err := os.Create(refPath)
	if err != nil {
		t.Fatal(err)
	}
	defer ref.Close()
	ref.Write(want)
	for _, w := range []struct{ off, n int64 }{{100, 10}, {1<<20 + 5000, 70000}, {8<<20 - 3, 9}, {10 << 20, 4096}} {
		writeBoth(t, img, ref, randBytes(r, int(w.n)), w.off)
	}
	img.Close()
	checkClean(t, top, refPath)
	if got, _ := os.ReadFile(basePath); !bytes.Equal(got, base) {
		t.Fatal("the backing file was written")
	}
}

// TestCompressedAndZeroClusters: zlib-compressed clusters (qemu-img
// convert -c) and version 3 zero clusters (qemu-io write -z) read right;
// writing into them rewrites the cluster whole, and the compressed
// data's refcounts are dropped (no leak for qemu-img check).
func TestCompressedAndZeroClusters(t *testing.T) {
	dir := t.TempDir()
	r := rand.New(rand.NewPCG(5, 6))
	data := bytes.Repeat(randBytes(r, 1000), 4<<10) // compressible, 4000000 bytes
	data = append(data, make([]byte, 4<<20-len(data))...)
	src := filepath.Join(dir, "src.raw")
	if err := os.WriteFile(src, data, 0o644); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "c.qcow2")
	tool(t, "qemu-img", "convert", "-c", "-f", "raw", "-O", "qcow2", src, p)
	tool(t, "qemu-io", "-c", "write -z 2M 128k", p)
	clear(data[2<<20 : 2<<20+128<<10])
	img, err := Open(p, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if img.h.Version != 3 {
		t.Fatalf("version %d", img.h.Version)
	}
	sameContents(t, img, data)
	ref, err := os.Create(filepath.Join(dir, "ref.raw"))
	if err != nil {
		t.Fatal(err)
	}
	defer ref.Close()
	ref.Write(data)
	writeBoth(t, img, ref, randBytes(r, 100), 70000)         // into a compressed cluster
	writeBoth(t, img, ref, randBytes(r, 65536), 3<<20)       // a whole compressed cluster
	writeBoth(t, img, ref, randBytes(r, 300), 2<<20+65536+7) // into a zero cluster
	img.Close()
	checkClean(t, p, ref.Name())
}

// TestRefused: what the package does not serve is refused at open with a
// reason.
func TestRefused(t *testing.T) {
	dir := t.TempDir()
	mk := func(name, opts string) string {
		p := filepath.Join(dir, name)
		tool(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", opts, p, "1M")
		return p
	}
	for _, c := range []struct {
		path string
		ro   bool
		want error
		says string
	}{
		{mk("zstd.qcow2", "compression_type=zstd"), false, ErrUnsupported, "compression type 1"},
		{mk("l2.qcow2", "extended_l2=on"), false, ErrUnsupported, "extended L2"},
		{mk("rc1.qcow2", "refcount_bits=1"), true, ErrUnsupported, "refcount_order 0"},
	} {
		if _, err := Open(c.path, Options{ReadOnly: c.ro}); !errors.Is(err, c.want) || !strings.Contains(err.Error(), c.says) {
			t.Errorf("%s: %v, want %v saying %q", filepath.Base(c.path), err, c.want, c.says)
		}
	}
	snap := mk("snap.qcow2", "compat=1.1")
	tool(t, "qemu-img", "snapshot", "-c", "s1", snap)
	if _, err := Open(snap, Options{}); !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "internal snapshots") {
		t.Errorf("writable with snapshots: %v", err)
	}
	if img, err := Open(snap, Options{ReadOnly: true}); err != nil {
		t.Errorf("read-only with snapshots: %v", err)
	} else {
		img.Close()
	}
	dirty := mk("dirty.qcow2", "compat=1.1")
	f, _ := os.OpenFile(dirty, os.O_RDWR, 0)
	f.WriteAt([]byte{0, 0, 0, 0, 0, 0, 0, 1}, 72)
	f.Close()
	if _, err := Open(dirty, Options{}); !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "qemu-img check -r all") {
		t.Errorf("dirty: %v", err)
	}
	raw := filepath.Join(dir, "raw.img")
	os.WriteFile(raw, make([]byte, 4096), 0o644)
	if _, err := Open(raw, Options{}); !errors.Is(err, ErrFormat) {
		t.Errorf("raw file: %v", err)
	}
}

// TestCraftedImage: an L2 entry pointing at the header or past the file is
// refused for writes, not obeyed.
func TestCraftedImage(t *testing.T) {
	p := filepath.Join(t.TempDir(), "x.qcow2")
	tool(t, "qemu-img", "create", "-q", "-f", "qcow2", p, "1M")
	tool(t, "qemu-io", "-c", "write -P 1 0 64k", p)
	img, err := Open(p, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	e, table, err := img.l2Entry(0)
	if err != nil || table == 0 || e&offsetMask == 0 {
		t.Fatalf("entry %#x table %#x: %v", e, table, err)
	}
	for _, bad := range []uint64{0x200 | entryCopied, 1<<40 | entryCopied, img.h.L1TableOffset | entryCopied} {
		t2, _ := img.loadL2(table)
		t2[0] = bad
		if _, err := img.WriteAt([]byte{9}, 10); !errors.Is(err, ErrFormat) {
			t.Errorf("write through L2 entry %#x: %v", bad, err)
		}
	}
}

// FuzzOpen: any file opens or is refused, and reads of an opened one
// return or fail, without a panic.
func FuzzOpen(f *testing.F) {
	f.Add(seedImage())
	f.Add([]byte("QFI\xfb\x00\x00\x00\x03"))
	f.Fuzz(func(t *testing.T, b []byte) {
		path := filepath.Join(t.TempDir(), "f.qcow2")
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
		img, err := Open(path, Options{ReadOnly: true})
		if err != nil {
			return
		}
		defer img.Close()
		buf := make([]byte, 8192)
		for _, off := range []int64{0, 4096, img.Size() / 2, img.Size() - 1} {
			if off >= 0 {
				img.ReadAt(buf, off)
			}
		}
	})
}

// seedImage is a small valid version 3 image made by hand: 512-byte
// clusters, a 32 KiB disk (one L2 table); cluster 0 the header, 1 the L1 table, 2 the
// refcount table, 3 its block, 4 an L2 table, 5 a data cluster (virtual
// cluster 1) and an entry for a zero cluster (virtual cluster 2).
func seedImage() []byte {
	const c = 512
	h := header{Version: 3, ClusterBits: 9, Size: 32 << 10, L1Size: 1, L1TableOffset: c,
		RefcountTableOffset: 2 * c, RefcountTableClusters: 1, RefcountOrder: 4, HeaderLength: v3HeaderLen}
	hb, _ := h.MarshalBinary()
	b := make([]byte, 6*c)
	copy(b, hb)
	be := binary.BigEndian
	be.PutUint64(b[c:], 4*c|entryCopied)
	be.PutUint64(b[2*c:], 3*c)
	for i := range 6 {
		be.PutUint16(b[3*c+2*i:], 1)
	}
	be.PutUint64(b[4*c+8:], 5*c|entryCopied)
	be.PutUint64(b[4*c+16:], entryZero)
	copy(b[5*c:], "data")
	return b
}

// TestSeedImage: the fuzz seed is an image qemu-img finds clean, and it
// reads as built.
func TestSeedImage(t *testing.T) {
	p := filepath.Join(t.TempDir(), "seed.qcow2")
	if err := os.WriteFile(p, seedImage(), 0o644); err != nil {
		t.Fatal(err)
	}
	tool(t, "qemu-img", "check", "-q", "-f", "qcow2", p)
	img, err := Open(p, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	b := make([]byte, 1024)
	if _, err := img.ReadAt(b, 512); err != nil || string(b[:4]) != "data" || !bytes.Equal(b[512:], make([]byte, 512)) {
		t.Fatalf("read %q..., %v", b[:8], err)
	}
}

// TestResize: growing moves the L1 table when it must (512-byte
// clusters: 1 MiB needs 32 entries, 8 MiB 256), keeps the data, and the
// new space takes writes; qemu-img agrees on size and contents. Shrinking
// and an image with a backing file are refused.
func TestResize(t *testing.T) {
	dir := t.TempDir()
	p, refPath := filepath.Join(dir, "r.qcow2"), filepath.Join(dir, "r.raw")
	tool(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=512", p, "1M")
	ref, err := os.Create(refPath)
	if err != nil {
		t.Fatal(err)
	}
	defer ref.Close()
	ref.Truncate(1 << 20)
	img, err := Open(p, Options{})
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(7, 8))
	writeBoth(t, img, ref, randBytes(r, 5000), 1000)
	l1 := img.h.L1TableOffset
	if err := img.Resize(8 << 20); err != nil {
		t.Fatal(err)
	}
	if img.h.L1TableOffset == l1 || img.h.L1Size != 256 {
		t.Fatalf("L1 table at %#x (was %#x), %d entries", img.h.L1TableOffset, l1, img.h.L1Size)
	}
	ref.Truncate(8 << 20)
	writeBoth(t, img, ref, randBytes(r, 70000), 8<<20-70000)
	if err := img.Resize(4 << 20); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("shrink: %v", err)
	}
	img.Close()
	checkClean(t, p, refPath)
	if out := tool(t, "qemu-img", "info", p); !strings.Contains(out, "virtual size: 8 MiB") {
		t.Fatalf("qemu-img info:\n%s", out)
	}
	over := filepath.Join(dir, "over.qcow2")
	tool(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", p, "-F", "qcow2", over)
	img, err = Open(over, Options{BackingFiles: true})
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	if err := img.Resize(16 << 20); !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "backing file") {
		t.Fatalf("resize over a backing file: %v", err)
	}
}

// TestDiscardAndWriteZeroes: whole clusters are deallocated (freed in the
// refcounts: qemu-img check finds no leak) and read as zeroes, over a
// backing file too (version 3's zero flag; version 2 gets zeroes
// written); Discard leaves partial clusters alone, WriteZeroes zeroes
// them. Compressed clusters are freed as well.
func TestDiscardAndWriteZeroes(t *testing.T) {
	const size = 4 << 20
	for _, c := range []struct{ opts, backing string }{
		{"compat=1.1,cluster_size=4096", ""}, {"compat=0.10,cluster_size=4096", ""},
		{"compat=1.1,cluster_size=4096", "raw"}, {"compat=0.10,cluster_size=4096", "raw"},
	} {
		t.Run(c.opts+","+c.backing, func(t *testing.T) {
			dir := t.TempDir()
			r := rand.New(rand.NewPCG(9, 10))
			base := randBytes(r, size)
			p, refPath := filepath.Join(dir, "d.qcow2"), filepath.Join(dir, "ref.raw")
			args := []string{"create", "-q", "-f", "qcow2", "-o", c.opts}
			want := make([]byte, size)
			if c.backing != "" {
				bp := filepath.Join(dir, "base.raw")
				os.WriteFile(bp, base, 0o644)
				args = append(args, "-b", bp, "-F", "raw")
				copy(want, base)
			}
			tool(t, "qemu-img", append(args, p, "4M")...)
			ref, err := os.Create(refPath)
			if err != nil {
				t.Fatal(err)
			}
			defer ref.Close()
			ref.Write(want)
			img, err := Open(p, Options{BackingFiles: true})
			if err != nil {
				t.Fatal(err)
			}
			writeBoth(t, img, ref, randBytes(r, 1<<20), 512<<10)
			// Discard [600 KiB+100, 900 KiB+100): clusters 151-224 go,
			// the partial ends stay.
			if err := img.Discard(600<<10+100, 300<<10); err != nil {
				t.Fatal(err)
			}
			ref.WriteAt(make([]byte, 300<<10-4096), 600<<10+4096)
			// WriteZeroes over data and the ends of clusters.
			if err := img.WriteZeroes(1<<20+5, 200<<10, true); err != nil {
				t.Fatal(err)
			}
			ref.WriteAt(make([]byte, 200<<10), 1<<20+5)
			if err := img.WriteZeroes(3<<20, 8192, true); err != nil { // clusters never written
				t.Fatal(err)
			}
			// Without unmap (sparse=off) the zeroed cluster keeps its
			// host cluster, written with zeroes.
			before, _, _ := img.l2Entry(1<<20/4096 + 100)
			if err := img.WriteZeroes(1<<20+400<<10, 4096, false); err != nil {
				t.Fatal(err)
			}
			ref.WriteAt(make([]byte, 4096), 1<<20+400<<10)
			if after, _, _ := img.l2Entry(1<<20/4096 + 100); after != before || after&offsetMask == 0 {
				t.Fatalf("sparse=off write-zeroes: entry %#x, was %#x", after, before)
			}
			ref.WriteAt(make([]byte, 8192), 3<<20)
			if err := img.Discard(0, size+1); err == nil {
				t.Fatal("discard past the end")
			}
			got, _ := os.ReadFile(refPath)
			sameContents(t, img, got)
			img.Close()
			checkClean(t, p, refPath)
		})
	}
	// Compressed clusters: discarding them frees their data's clusters.
	dir := t.TempDir()
	src := filepath.Join(dir, "src.raw")
	os.WriteFile(src, bytes.Repeat([]byte("compressible "), 100000), 0o644)
	p := filepath.Join(dir, "c.qcow2")
	tool(t, "qemu-img", "convert", "-c", "-f", "raw", "-O", "qcow2", src, p)
	img, err := Open(p, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := img.Discard(0, img.Size()&^(img.csize-1)); err != nil {
		t.Fatal(err)
	}
	img.Close()
	out := tool(t, "qemu-img", "check", p)
	if !strings.Contains(out, "No errors were found") || strings.Contains(out, "leaked") {
		t.Fatalf("qemu-img check:\n%s", out)
	}
}
