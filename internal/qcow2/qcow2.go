// Package qcow2 reads and writes QEMU's qcow2 disk images, versions 2 and
// 3, as upstream Cloud Hypervisor's qcow crate does for its disks: data
// clusters through L1/L2 tables, zero clusters, zlib-compressed clusters
// (read, and rewritten uncompressed when the guest writes them), backing
// files (raw or qcow2, read-only), and refcounts kept exact so that
// `qemu-img check` finds nothing to repair.
//
// Not served: encryption, external data files, extended L2 entries, zstd
// compression, and writing an image that holds internal snapshots.
package qcow2

import (
	"bytes"
	"compress/flate"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/nimbus-vmm/nimbus/internal/directio"
)

// Sentinel errors.
var (
	// ErrFormat: the file is not a well-formed qcow2 image.
	ErrFormat = errors.New("invalid qcow2 image")
	// ErrUnsupported: a qcow2 feature this package does not serve.
	ErrUnsupported = errors.New("unsupported qcow2 feature")
	// ErrReadOnly: a write to an image opened read-only.
	ErrReadOnly = errors.New("qcow2 image is read-only")
	// ErrBacking: the image names a backing file but backing files are
	// not allowed (upstream's backing_files=off, its default).
	ErrBacking = errors.New("qcow2 backing files are not allowed (backing_files=on allows them)")
)

// Options says how an image is opened.
type Options struct {
	ReadOnly bool
	// BackingFiles allows an image with a backing file, opened read-only
	// (upstream's backing_files=on).
	BackingFiles bool
	// Direct opens the image with O_DIRECT (upstream's direct=on): data and
	// metadata bypass the host's page cache, unaligned transfers through
	// a bounce buffer. A backing file, only ever read, is still cached.
	Direct bool
}

// file is what an image lives in: an *os.File, or a *directio.File for
// Options.Direct.
type file interface {
	io.ReaderAt
	io.WriterAt
	Fd() uintptr
	Stat() (os.FileInfo, error)
	Close() error
}

// Backing is a backing file's contents.
type Backing interface {
	io.ReaderAt
	Size() int64
	Close() error
}

// Image is an open qcow2 image. Its methods are safe for concurrent use
// (one at a time).
type Image struct {
	mu       sync.Mutex
	f        file
	readonly bool
	h        header
	csize    int64 // cluster size
	l2n      int64 // entries per L2 table
	rbits    uint  // refcount width in bits
	l1       []uint64
	reftable []uint64
	end      int64 // where the next cluster is allocated
	l2cache  map[int64][]uint64
	backing  Backing
	// BackingFile is the backing file's path as the image names it ("" for
	// none).
	BackingFile string
}

// maxL2Cache bounds the L2 tables kept in memory (each a cluster; 256 of
// 64 KiB tables map 128 GiB).
const maxL2Cache = 256

// IsQcow2 reports whether f starts with the qcow2 magic.
func IsQcow2(f io.ReaderAt) bool {
	var b [4]byte
	_, err := f.ReadAt(b[:], 0)
	return err == nil && binary.BigEndian.Uint32(b[:]) == Magic
}

// Open opens the qcow2 image at path.
func Open(path string, o Options) (*Image, error) {
	flags := os.O_RDWR
	if o.ReadOnly {
		flags = os.O_RDONLY
	}
	var f file
	var err error
	if o.Direct {
		f, err = directio.Open(path, flags)
	} else {
		f, err = os.OpenFile(path, flags, 0)
	}
	if err != nil {
		return nil, err
	}
	img, err := openFile(f, filepath.Dir(path), o)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return img, nil
}

func openFile(f file, dir string, o Options) (*Image, error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	fileSize := fi.Size()
	head := make([]byte, min(fileSize, 4096))
	if _, err := f.ReadAt(head, 0); err != nil {
		return nil, fmt.Errorf("%w: reading the header: %w", ErrFormat, err)
	}
	h, err := parseHeader(head)
	if err != nil {
		return nil, err
	}
	img := &Image{f: f, readonly: o.ReadOnly, h: h, l2cache: map[int64][]uint64{}}
	if err := img.check(); err != nil {
		return nil, err
	}
	img.csize = 1 << h.ClusterBits
	img.l2n = img.csize / 8
	img.rbits = 1 << h.RefcountOrder
	img.end = (fileSize + img.csize - 1) &^ (img.csize - 1)
	if img.l1, err = img.readTable(int64(h.L1TableOffset), int64(h.L1Size), fileSize); err != nil {
		return nil, fmt.Errorf("L1 table: %w", err)
	}
	if img.reftable, err = img.readTable(int64(h.RefcountTableOffset), int64(h.RefcountTableClusters)*img.csize/8, fileSize); err != nil {
		return nil, fmt.Errorf("refcount table: %w", err)
	}
	format, err := backingFormat(head, h)
	if err != nil {
		return nil, err
	}
	if h.BackingFileOffset != 0 {
		if !o.BackingFiles {
			return nil, ErrBacking
		}
		if err := img.openBacking(head, dir, format); err != nil {
			return nil, err
		}
	}
	if !o.ReadOnly && h.AutoclearFeatures != 0 {
		// qcow2.txt: a writer that does not understand an autoclear bit
		// must clear it (the bitmaps it stands for go stale).
		img.h.AutoclearFeatures = 0
		if _, err := f.WriteAt(make([]byte, 8), 88); err != nil {
			img.closeBacking()
			return nil, err
		}
	}
	return img, nil
}

// check refuses what the package does not serve and what cannot be right.
func (img *Image) check() error {
	h := img.h
	if h.ClusterBits < 9 || h.ClusterBits > 21 {
		return fmt.Errorf("%w: cluster_bits %d", ErrFormat, h.ClusterBits)
	}
	if h.CryptMethod != 0 {
		return fmt.Errorf("%w: encryption (crypt_method %d)", ErrUnsupported, h.CryptMethod)
	}
	in := h.IncompatibleFeatures
	switch {
	case in&incompatDirty != 0:
		return fmt.Errorf("%w: the image is dirty (lazy refcounts); repair it with qemu-img check -r all", ErrUnsupported)
	case in&incompatCorrupt != 0:
		return fmt.Errorf("%w: the image is marked corrupt; repair it with qemu-img check -r all", ErrFormat)
	case in&incompatDataFile != 0:
		return fmt.Errorf("%w: external data file", ErrUnsupported)
	case in&incompatExtendedL2 != 0:
		return fmt.Errorf("%w: extended L2 entries", ErrUnsupported)
	case in&^incompatCompression != 0:
		return fmt.Errorf("%w: incompatible features %#x", ErrUnsupported, in)
	case h.CompressionType != 0:
		return fmt.Errorf("%w: compression type %d (only zlib)", ErrUnsupported, h.CompressionType)
	}
	if h.RefcountOrder < 3 || h.RefcountOrder > 6 {
		return fmt.Errorf("%w: refcount_order %d (8 to 64-bit refcounts only)", ErrUnsupported, h.RefcountOrder)
	}
	if h.NbSnapshots != 0 && !img.readonly {
		return fmt.Errorf("%w: writing an image with %d internal snapshots", ErrUnsupported, h.NbSnapshots)
	}
	csize := uint64(1) << h.ClusterBits
	perL1 := csize * (csize / 8)
	if h.Size > 1<<56 || uint64(h.L1Size) < (h.Size+perL1-1)/perL1 {
		return fmt.Errorf("%w: L1 table of %d entries for %d bytes", ErrFormat, h.L1Size, h.Size)
	}
	for _, off := range []uint64{h.L1TableOffset, h.RefcountTableOffset} {
		if off == 0 || off%csize != 0 {
			return fmt.Errorf("%w: table offset %#x is not cluster-aligned", ErrFormat, off)
		}
	}
	return nil
}

// readTable reads n big-endian uint64 entries at off.
func (img *Image) readTable(off, n, fileSize int64) ([]uint64, error) {
	if n < 0 || n > fileSize/8 || off+n*8 > fileSize {
		return nil, fmt.Errorf("%w: %d entries at %#x past the end of the file", ErrFormat, n, off)
	}
	b := make([]byte, n*8)
	if _, err := img.f.ReadAt(b, off); err != nil {
		return nil, err
	}
	t := make([]uint64, n)
	for i := range t {
		t[i] = binary.BigEndian.Uint64(b[i*8:])
	}
	return t, nil
}

// backingFormat finds the backing file format header extension ("" if
// absent).
func backingFormat(head []byte, h header) (string, error) {
	off := int(h.HeaderLength)
	for off+8 <= len(head) {
		typ := binary.BigEndian.Uint32(head[off:])
		n := int(binary.BigEndian.Uint32(head[off+4:]))
		off += 8
		if typ == extEnd {
			break
		}
		if off+n > len(head) {
			return "", fmt.Errorf("%w: header extension %#x of %d bytes past the first 4 KiB", ErrFormat, typ, n)
		}
		if typ == extBackingFormat {
			return string(head[off : off+n]), nil
		}
		off += (n + 7) &^ 7
	}
	return "", nil
}

func (img *Image) openBacking(head []byte, dir, format string) error {
	h := img.h
	if h.BackingFileSize == 0 || h.BackingFileSize > 1023 || h.BackingFileOffset > uint64(len(head)) ||
		h.BackingFileOffset+uint64(h.BackingFileSize) > uint64(len(head)) {
		return fmt.Errorf("%w: backing file name of %d bytes at %#x", ErrFormat, h.BackingFileSize, h.BackingFileOffset)
	}
	name := string(head[h.BackingFileOffset : h.BackingFileOffset+uint64(h.BackingFileSize)])
	img.BackingFile = name
	path := name
	if !filepath.IsAbs(path) {
		path = filepath.Join(dir, path)
	}
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("backing file: %w", err)
	}
	switch {
	case format == "qcow2" || format == "" && IsQcow2(f):
		b, err := openFile(f, filepath.Dir(path), Options{ReadOnly: true, BackingFiles: true})
		if err != nil {
			f.Close()
			return fmt.Errorf("backing file %s: %w", path, err)
		}
		img.backing = b
	case format == "raw" || format == "":
		fi, err := f.Stat()
		if err != nil {
			f.Close()
			return err
		}
		img.backing = rawBacking{f, fi.Size()}
	default:
		f.Close()
		return fmt.Errorf("%w: backing file format %q", ErrUnsupported, format)
	}
	return nil
}

type rawBacking struct {
	*os.File
	size int64
}

func (r rawBacking) Size() int64 { return r.size }

// Size is the virtual disk's size in bytes.
func (img *Image) Size() int64 { return int64(img.h.Size) }

// ReadAt reads len(p) bytes of the virtual disk at off.
func (img *Image) ReadAt(p []byte, off int64) (int, error) {
	img.mu.Lock()
	defer img.mu.Unlock()
	return img.each(p, off, img.readCluster)
}

// WriteAt writes p to the virtual disk at off, allocating clusters as
// needed.
func (img *Image) WriteAt(p []byte, off int64) (int, error) {
	if img.readonly {
		return 0, ErrReadOnly
	}
	img.mu.Lock()
	defer img.mu.Unlock()
	return img.each(p, off, img.writeCluster)
}

// each splits [off, off+len(p)) at cluster boundaries.
func (img *Image) each(p []byte, off int64, do func(p []byte, vc, within int64) error) (int, error) {
	if off < 0 || off > img.Size() {
		return 0, fmt.Errorf("offset %d outside the disk's %d bytes: %w", off, img.Size(), io.EOF)
	}
	short := false
	if rest := img.Size() - off; int64(len(p)) > rest {
		p, short = p[:rest], true
	}
	done := 0
	err := img.clusters(off, int64(len(p)), func(vc, within, k int64) error {
		if err := do(p[done:done+int(k)], vc, within); err != nil {
			return err
		}
		done += int(k)
		return nil
	})
	if err == nil && short {
		err = io.EOF
	}
	return done, err
}

// clusters calls fn for each virtual cluster vc that [off, off+n) touches,
// with the piece's start within the cluster and its length k.
func (img *Image) clusters(off, n int64, fn func(vc, within, k int64) error) error {
	for pos, end := off, off+n; pos < end; {
		vc, within := pos/img.csize, pos&(img.csize-1)
		k := min(end-pos, img.csize-within)
		if err := fn(vc, within, k); err != nil {
			return err
		}
		pos += k
	}
	return nil
}

// l2Entry is virtual cluster vc's L2 entry (0: unallocated), with the
// table's host offset (0: no table).
func (img *Image) l2Entry(vc int64) (entry uint64, table int64, err error) {
	l1i := vc / img.l2n
	if l1i >= int64(len(img.l1)) {
		return 0, 0, nil
	}
	table = int64(img.l1[l1i] & offsetMask)
	if table == 0 {
		return 0, 0, nil
	}
	t, err := img.loadL2(table)
	if err != nil {
		return 0, 0, err
	}
	return t[vc%img.l2n], table, nil
}

func (img *Image) loadL2(off int64) ([]uint64, error) {
	if t, ok := img.l2cache[off]; ok {
		return t, nil
	}
	if off%img.csize != 0 || off+img.csize > img.end {
		return nil, fmt.Errorf("%w: L2 table at %#x", ErrFormat, off)
	}
	t, err := img.readTable(off, img.l2n, img.end)
	if err != nil {
		return nil, err
	}
	if len(img.l2cache) >= maxL2Cache {
		for k := range img.l2cache {
			delete(img.l2cache, k)
			break
		}
	}
	img.l2cache[off] = t
	return t, nil
}

// isZero reports whether an L2 entry reads as zeroes (version 3's flag).
func (img *Image) isZero(e uint64) bool { return img.h.Version >= 3 && e&entryZero != 0 }

func (img *Image) readCluster(p []byte, vc, within int64) error {
	e, _, err := img.l2Entry(vc)
	if err != nil {
		return err
	}
	switch host := int64(e & offsetMask); {
	case e&entryCompressed != 0:
		c, err := img.decompress(e)
		if err != nil {
			return err
		}
		copy(p, c[within:])
	case img.isZero(e):
		clear(p)
	case host != 0:
		if _, err := img.f.ReadAt(p, host+within); err != nil && !errors.Is(err, io.EOF) {
			return err
		} else if err != nil {
			return fmt.Errorf("%w: data cluster at %#x past the end of the file", ErrFormat, host)
		}
	default:
		return img.readBacking(p, vc*img.csize+within)
	}
	return nil
}

// readBacking reads p at off from the backing file; what lies past its
// end (or with none) reads as zeroes.
func (img *Image) readBacking(p []byte, off int64) error {
	clear(p)
	if img.backing == nil || off >= img.backing.Size() {
		return nil
	}
	n := min(int64(len(p)), img.backing.Size()-off)
	if _, err := img.backing.ReadAt(p[:n], off); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	return nil
}

// compressedRange is the host bytes a compressed L2 entry's data spans:
// from its offset to the end of its last 512-byte sector.
func (img *Image) compressedRange(e uint64) (start, end int64) {
	x := 62 - (img.h.ClusterBits - 8)
	start = int64(e & (1<<x - 1))
	sectors := int64((e>>x)&(1<<(62-x)-1)) + 1
	return start, start&^511 + sectors*512
}

func (img *Image) decompress(e uint64) ([]byte, error) {
	start, end := img.compressedRange(e)
	end = min(end, img.end)
	if start >= end {
		return nil, fmt.Errorf("%w: compressed cluster at %#x", ErrFormat, start)
	}
	raw := make([]byte, end-start)
	if _, err := img.f.ReadAt(raw, start); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	out := make([]byte, img.csize)
	if _, err := io.ReadFull(flate.NewReader(bytes.NewReader(raw)), out); err != nil {
		return nil, fmt.Errorf("%w: compressed cluster at %#x: %w", ErrFormat, start, err)
	}
	return out, nil
}

func (img *Image) writeCluster(p []byte, vc, within int64) error {
	table, err := img.ensureL2(vc / img.l2n)
	if err != nil {
		return err
	}
	t, err := img.loadL2(table)
	if err != nil {
		return err
	}
	e := t[vc%img.l2n]
	host := int64(e & offsetMask)
	if host != 0 && e&entryCompressed == 0 {
		// A guest write must land in a data cluster: never past the file,
		// over the header or the L1 and refcount tables (qemu's overlap
		// check, for a crafted or damaged image).
		if err := img.checkData(host); err != nil {
			return err
		}
	}
	if host != 0 && e&entryCompressed == 0 && !img.isZero(e) {
		_, err := img.f.WriteAt(p, host+within)
		return err
	}
	// A whole new cluster: what the guest did not write comes from where
	// the cluster read before.
	c := p
	if int64(len(p)) < img.csize {
		switch {
		case e&entryCompressed != 0:
			if c, err = img.decompress(e); err != nil {
				return err
			}
		default:
			c = make([]byte, img.csize)
			if !img.isZero(e) {
				if err := img.readBacking(c, vc*img.csize); err != nil {
					return err
				}
			}
		}
		copy(c[within:], p)
	}
	fresh := host == 0 || e&entryCompressed != 0
	if fresh {
		// A preallocated zero cluster keeps its host cluster.
		if host, err = img.alloc(); err != nil {
			return err
		}
	}
	if _, err := img.f.WriteAt(c, host); err != nil {
		return err
	}
	if err := img.setL2(t, table, vc%img.l2n, uint64(host)|entryCopied); err != nil {
		return err
	}
	if e&entryCompressed != 0 {
		return img.unrefCompressed(e)
	}
	return nil
}

// unrefCompressed drops the references a compressed cluster's data holds
// on the host clusters it spans.
func (img *Image) unrefCompressed(e uint64) error {
	start, end := img.compressedRange(e)
	return img.addRefs(start, end, -1)
}

// addRefs adds d to the refcount of every host cluster [start, end)
// touches.
func (img *Image) addRefs(start, end, d int64) error {
	for hc := start / img.csize; hc*img.csize < end; hc++ {
		if err := img.addRef(hc, d); err != nil {
			return err
		}
	}
	return nil
}

// checkData refuses a data cluster at host that is not one.
func (img *Image) checkData(host int64) error {
	in := func(off, n int64) bool { return host+img.csize > off && host < off+n }
	if host%img.csize != 0 || host+img.csize > img.end || in(0, img.csize) ||
		in(int64(img.h.L1TableOffset), int64(len(img.l1))*8) ||
		in(int64(img.h.RefcountTableOffset), int64(img.h.RefcountTableClusters)*img.csize) {
		return fmt.Errorf("%w: data cluster at %#x overlaps metadata or lies past the end", ErrFormat, host)
	}
	return nil
}

// Discard deallocates the clusters wholly inside [off, off+n) (the rest
// is left as it is, as a discard may): they read as zeroes after, and
// their host clusters are freed and punched out of the file.
func (img *Image) Discard(off, n int64) error {
	return img.zeroRange(off, n, true, false)
}

// WriteZeroes makes [off, off+n) read as zeroes. With unmap, whole
// clusters are deallocated as by Discard and the ends written; without
// (upstream's sparse=off), zeroes are written and the clusters stay
// allocated.
func (img *Image) WriteZeroes(off, n int64, unmap bool) error {
	return img.zeroRange(off, n, unmap, true)
}

// zeroRange deallocates the whole clusters of [off, off+n) when
// dealloc, and writes zeroes over the rest when write.
func (img *Image) zeroRange(off, n int64, dealloc, write bool) error {
	if img.readonly {
		return ErrReadOnly
	}
	img.mu.Lock()
	defer img.mu.Unlock()
	if off < 0 || n < 0 || off+n > img.Size() {
		return fmt.Errorf("range %d+%d outside the disk's %d bytes: %w", off, n, img.Size(), io.EOF)
	}
	var zeroes []byte
	return img.clusters(off, n, func(vc, within, k int64) error {
		switch {
		case dealloc && k == img.csize:
			return img.zeroCluster(vc)
		case write:
			if zeroes == nil {
				zeroes = make([]byte, img.csize)
			}
			return img.writeCluster(zeroes[:k], vc, within)
		}
		return nil
	})
}

// zeroCluster makes virtual cluster vc read as zeroes without data: an
// unallocated entry when nothing shows through it, else version 3's zero
// flag; version 2 over a backing file has neither and gets zeroes
// written. What the cluster held is freed.
func (img *Image) zeroCluster(vc int64) error {
	e, table, err := img.l2Entry(vc)
	if err != nil {
		return err
	}
	var repl uint64
	switch {
	case img.backing != nil && img.h.Version < 3:
		return img.writeCluster(make([]byte, img.csize), vc, 0)
	case img.backing != nil:
		repl = entryZero
	}
	if e == repl {
		return nil
	}
	if table == 0 {
		if table, err = img.ensureL2(vc / img.l2n); err != nil {
			return err
		}
	}
	t, err := img.loadL2(table)
	if err != nil {
		return err
	}
	if err := img.setL2(t, table, vc%img.l2n, repl); err != nil {
		return err
	}
	switch host := int64(e & offsetMask); {
	case e&entryCompressed != 0:
		return img.unrefCompressed(e)
	case host != 0:
		if err := img.addRef(host/img.csize, -1); err != nil {
			return err
		}
		// Give the space back to the host file system; best effort.
		_ = unix.Fallocate(int(img.f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, host, img.csize)
	}
	return nil
}

// setL2 writes entry i of the L2 table at off (cached as t).
func (img *Image) setL2(t []uint64, off, i int64, e uint64) error {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], e)
	if _, err := img.f.WriteAt(b[:], off+i*8); err != nil {
		return err
	}
	t[i] = e
	return nil
}

// ensureL2 returns the host offset of L1 entry l1i's L2 table, making one
// when there is none.
func (img *Image) ensureL2(l1i int64) (int64, error) {
	if l1i >= int64(len(img.l1)) {
		return 0, fmt.Errorf("%w: L1 index %d past the table", ErrFormat, l1i)
	}
	if off := int64(img.l1[l1i] & offsetMask); off != 0 {
		return off, nil
	}
	off, err := img.alloc()
	if err != nil {
		return 0, err
	}
	if _, err := img.f.WriteAt(make([]byte, img.csize), off); err != nil {
		return 0, err
	}
	e := uint64(off) | entryCopied
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], e)
	if _, err := img.f.WriteAt(b[:], int64(img.h.L1TableOffset)+l1i*8); err != nil {
		return 0, err
	}
	img.l1[l1i] = e
	return off, nil
}

// alloc takes a cluster at the end of the file, its refcount 1. Freed
// clusters are not reused: the file only grows, as a sparse file does.
func (img *Image) alloc() (int64, error) {
	off := img.end
	img.end += img.csize
	if err := img.addRef(off/img.csize, 1); err != nil {
		return 0, err
	}
	return off, nil
}

// addRef adds d to host cluster hc's refcount, making the refcount block
// that holds it when there is none.
func (img *Image) addRef(hc, d int64) error {
	perBlock := img.csize * 8 / int64(img.rbits)
	ti := hc / perBlock
	if ti >= int64(len(img.reftable)) {
		if err := img.growReftable(); err != nil {
			return err
		}
	}
	block := int64(img.reftable[ti] &^ 511)
	if block == 0 {
		block = img.end
		img.end += img.csize
		if _, err := img.f.WriteAt(make([]byte, img.csize), block); err != nil {
			return err
		}
		var b [8]byte
		binary.BigEndian.PutUint64(b[:], uint64(block))
		if _, err := img.f.WriteAt(b[:], int64(img.h.RefcountTableOffset)+ti*8); err != nil {
			return err
		}
		img.reftable[ti] = uint64(block)
		// The new block's own refcount, in itself or in another block.
		if err := img.addRef(block/img.csize, 1); err != nil {
			return err
		}
	}
	width := int64(img.rbits / 8)
	pos := block + (hc%perBlock)*width
	b := make([]byte, 8)
	if _, err := img.f.ReadAt(b[8-width:], pos); err != nil {
		return err
	}
	v := int64(binary.BigEndian.Uint64(b)) + d
	if v < 0 || img.rbits < 64 && v >= 1<<img.rbits {
		return fmt.Errorf("%w: refcount of cluster %#x would be %d", ErrFormat, hc*img.csize, v)
	}
	binary.BigEndian.PutUint64(b, uint64(v))
	_, err := img.f.WriteAt(b[8-width:], pos)
	return err
}

// growReftable moves the refcount table to a larger one at the end of
// the file, as qemu does when the image outgrows it: the new table is
// written (with refcounts for its own clusters and any refcount block
// they need), then the header points at it, then the old table's
// clusters are freed. A crash in between leaks clusters, never loses
// data.
func (img *Image) growReftable() error {
	perBlock := img.csize * 8 / int64(img.rbits)
	perCluster := img.csize / 8
	entries := int64(len(img.reftable)) * 2
	clusters := func(n int64) int64 { return (n + perCluster - 1) / perCluster }
	// Room for every cluster there will be once the table and the
	// blocks for it are added.
	for (img.end/img.csize+clusters(entries)+clusters(entries)/perBlock+2)/perBlock >= entries {
		entries *= 2
	}
	n := clusters(entries)
	entries = n * perCluster
	if n > 1<<32-1 {
		return fmt.Errorf("%w: refcount table of %d clusters", ErrUnsupported, n)
	}
	oldOff, oldClusters := int64(img.h.RefcountTableOffset), int64(img.h.RefcountTableClusters)
	off := img.end
	img.end += n * img.csize
	img.reftable = append(img.reftable, make([]uint64, entries-int64(len(img.reftable)))...)
	img.h.RefcountTableOffset, img.h.RefcountTableClusters = uint64(off), uint32(n)
	if err := img.writeReftable(); err != nil {
		return err
	}
	// addRef writes new blocks' entries into the new table.
	if err := img.addRefs(off, off+n*img.csize, 1); err != nil {
		return err
	}
	if err := img.sync(); err != nil {
		return err
	}
	var b [12]byte
	binary.BigEndian.PutUint64(b[0:], uint64(off))
	binary.BigEndian.PutUint32(b[8:], uint32(n))
	if _, err := img.f.WriteAt(b[:], 48); err != nil {
		return err
	}
	if err := img.sync(); err != nil {
		return err
	}
	return img.addRefs(oldOff, oldOff+oldClusters*img.csize, -1)
}

// Resize grows the virtual disk to size bytes, moving the L1 table to a
// larger one when it must, as upstream's QcowDisk::resize: shrinking is
// refused (clusters past the end would have to be reclaimed), and so is
// an image with a backing file.
func (img *Image) Resize(size int64) error {
	if img.readonly {
		return ErrReadOnly
	}
	img.mu.Lock()
	defer img.mu.Unlock()
	switch cur := img.Size(); {
	case img.BackingFile != "":
		return fmt.Errorf("%w: resizing an image with a backing file", ErrUnsupported)
	case size < cur:
		return fmt.Errorf("%w: shrinking a qcow2 image (%d to %d bytes)", ErrUnsupported, cur, size)
	case size == cur:
		return nil
	case size > 1<<56:
		return fmt.Errorf("%w: %d bytes", ErrUnsupported, size)
	}
	perL1 := img.csize * img.l2n
	if need := (size + perL1 - 1) / perL1; need > int64(len(img.l1)) {
		if err := img.growL1(need); err != nil {
			return err
		}
	}
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(size))
	if _, err := img.f.WriteAt(b[:], 24); err != nil {
		return err
	}
	img.h.Size = uint64(size)
	return img.sync()
}

// growL1 moves the L1 table to n entries at the end of the file, then
// points the header at it and frees the old one.
func (img *Image) growL1(n int64) error {
	if n > 1<<22 { // qemu's QCOW_MAX_L1_SIZE, 32 MiB of entries
		return fmt.Errorf("%w: L1 table of %d entries", ErrUnsupported, n)
	}
	oldOff, oldN := int64(img.h.L1TableOffset), int64(len(img.l1))
	clusters := func(entries int64) int64 { return (entries*8 + img.csize - 1) / img.csize }
	off := img.end
	img.end += clusters(n) * img.csize
	l1 := append(slices.Clone(img.l1), make([]uint64, n-oldN)...)
	b := make([]byte, clusters(n)*img.csize)
	for i, e := range l1 {
		binary.BigEndian.PutUint64(b[i*8:], e)
	}
	if _, err := img.f.WriteAt(b, off); err != nil {
		return err
	}
	if err := img.addRefs(off, img.end, 1); err != nil {
		return err
	}
	if err := img.sync(); err != nil {
		return err
	}
	var h [12]byte
	binary.BigEndian.PutUint32(h[0:], uint32(n))
	binary.BigEndian.PutUint64(h[4:], uint64(off))
	if _, err := img.f.WriteAt(h[:], 36); err != nil {
		return err
	}
	if err := img.sync(); err != nil {
		return err
	}
	img.l1, img.h.L1Size, img.h.L1TableOffset = l1, uint32(n), uint64(off)
	return img.addRefs(oldOff, oldOff+oldN*8, -1)
}

func (img *Image) writeReftable() error {
	b := make([]byte, len(img.reftable)*8)
	for i, e := range img.reftable {
		binary.BigEndian.PutUint64(b[i*8:], e)
	}
	_, err := img.f.WriteAt(b, int64(img.h.RefcountTableOffset))
	return err
}

// Flush makes what was written durable.
func (img *Image) Flush() error {
	if img.readonly {
		return nil
	}
	return img.sync()
}

// sync is fdatasync: metadata lives in the file's data, and a grown file's
// size is flushed with it.
func (img *Image) sync() error { return unix.Fdatasync(int(img.f.Fd())) }

// Close closes the image and its backing file.
func (img *Image) Close() error {
	img.mu.Lock()
	defer img.mu.Unlock()
	err := img.f.Close()
	img.closeBacking()
	return err
}

func (img *Image) closeBacking() {
	if img.backing != nil {
		img.backing.Close()
		img.backing = nil
	}
}
