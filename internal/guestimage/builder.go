// Package guestimage builds Linux initramfs images in-process: a newc cpio
// (written with u-root's pkg/cpio) holding a static busybox, kernel modules
// resolved with their dependencies, extra files and an init script. The
// Builder is the low-level writer (the KVM sandbox uses it for its L1 image);
// Build assembles the standard L2 test guest whose init prints markers that
// end-to-end tests parse (see ParseConsole).
package guestimage

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"

	"github.com/u-root/u-root/pkg/cpio"
)

// ErrImage is the category of every error building an image.
var ErrImage = errors.New("guestimage")

// Compression selects how Bytes/WriteTo encode the archive.
type Compression int

const (
	// None writes a plain newc archive: the fastest to unpack, which matters
	// when the kernel runs under TCG emulation.
	None Compression = iota
	// Gzip compresses the archive; every Debian kernel can unpack it.
	Gzip
)

// entry is one archive member. Host files are opened only while the archive
// is written so that large binaries are never held in memory.
type entry struct {
	info cpio.Info
	data []byte // contents (files) or link target (symlinks)
	host string // host path whose contents are streamed instead of data
}

// Builder accumulates initramfs members. Paths are guest paths; parent
// directories are created implicitly. The zero value is not usable: call
// NewBuilder.
type Builder struct {
	entries []entry
	names   map[string]int // normalized name -> index in entries
}

// NewBuilder returns an empty Builder holding only /dev/console, which the
// kernel needs to give init a stdout before devtmpfs is mounted.
func NewBuilder() *Builder {
	b := &Builder{names: map[string]int{}}
	b.add(entry{info: cpio.Info{Name: "dev/console", Mode: cpio.S_IFCHR | 0o600, Rmajor: 5, Rminor: 1}})
	return b
}

func clean(guestPath string) (string, error) {
	if !path.IsAbs(guestPath) {
		return "", fmt.Errorf("%w: guest path %q is not absolute", ErrImage, guestPath)
	}
	n := cpio.Normalize(path.Clean(guestPath))
	if n == "" || n == "." {
		return "", fmt.Errorf("%w: guest path %q names the root", ErrImage, guestPath)
	}
	return n, nil
}

func (b *Builder) add(e entry) {
	// Parents first, so that the archive creates them in order.
	if d := path.Dir(e.info.Name); d != "." {
		if _, ok := b.names[d]; !ok {
			b.add(entry{info: cpio.Info{Name: d, Mode: cpio.S_IFDIR | 0o755}})
		}
	}
	if i, ok := b.names[e.info.Name]; ok {
		b.entries[i] = e // a later addition replaces an earlier one
		return
	}
	b.names[e.info.Name] = len(b.entries)
	b.entries = append(b.entries, e)
}

// AddDir adds an empty directory.
func (b *Builder) AddDir(guestPath string, perm fs.FileMode) error {
	n, err := clean(guestPath)
	if err != nil {
		return err
	}
	b.add(entry{info: cpio.Info{Name: n, Mode: cpio.S_IFDIR | uint64(perm.Perm())}})
	return nil
}

// AddFile adds a regular file with the given contents.
func (b *Builder) AddFile(guestPath string, data []byte, perm fs.FileMode) error {
	n, err := clean(guestPath)
	if err != nil {
		return err
	}
	b.add(entry{info: cpio.Info{Name: n, Mode: cpio.S_IFREG | uint64(perm.Perm()), FileSize: uint64(len(data))}, data: data})
	return nil
}

// AddSymlink adds a symbolic link at guestPath pointing to target.
func (b *Builder) AddSymlink(guestPath, target string) error {
	n, err := clean(guestPath)
	if err != nil {
		return err
	}
	b.add(entry{info: cpio.Info{Name: n, Mode: cpio.S_IFLNK | 0o777, FileSize: uint64(len(target))}, data: []byte(target)})
	return nil
}

// AddHostFile adds the host file or directory tree at hostPath under
// guestPath. Symlinks are followed; permissions are kept.
func (b *Builder) AddHostFile(hostPath, guestPath string) error {
	fi, err := os.Stat(hostPath)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrImage, err)
	}
	if !fi.IsDir() {
		n, err := clean(guestPath)
		if err != nil {
			return err
		}
		abs, err := filepath.Abs(hostPath)
		if err != nil {
			return fmt.Errorf("%w: %w", ErrImage, err)
		}
		b.add(entry{info: cpio.Info{Name: n, Mode: cpio.S_IFREG | uint64(fi.Mode().Perm()), FileSize: uint64(fi.Size())}, host: abs})
		return nil
	}
	if err := b.AddDir(guestPath, fi.Mode().Perm()); err != nil {
		return err
	}
	des, err := os.ReadDir(hostPath)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrImage, err)
	}
	for _, de := range des {
		hp := filepath.Join(hostPath, de.Name())
		if _, err := os.Stat(hp); errors.Is(err, fs.ErrNotExist) && de.Type()&fs.ModeSymlink != 0 {
			continue // a dangling link inside a tree (e.g. to an uninstalled package's file)
		}
		if err := b.AddHostFile(filepath.Join(hostPath, de.Name()), path.Join(guestPath, de.Name())); err != nil {
			return err
		}
	}
	return nil
}

// AddBusybox adds the static busybox at hostPath as /bin/busybox with a
// /bin/sh link; init scripts run `busybox --install -s` for the other applets.
func (b *Builder) AddBusybox(hostPath string) error {
	if err := b.AddHostFile(hostPath, "/bin/busybox"); err != nil {
		return fmt.Errorf("busybox (Debian package busybox-static): %w", err)
	}
	for _, d := range []string{"/sbin", "/usr/bin", "/usr/sbin", "/proc", "/sys", "/tmp", "/root"} {
		if err := b.AddDir(d, 0o755); err != nil {
			return err
		}
	}
	return b.AddSymlink("/bin/sh", "busybox")
}

// Names lists the archive members in write order, as absolute guest paths.
func (b *Builder) Names() []string {
	out := make([]string, len(b.entries))
	for i, e := range b.entries {
		out[i] = "/" + e.info.Name
	}
	return out
}

// Size is the total size of the members' contents in bytes.
func (b *Builder) Size() int64 {
	var n int64
	for _, e := range b.entries {
		n += int64(e.info.FileSize)
	}
	return n
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// WriteTo writes the uncompressed newc archive, trailer included.
func (b *Builder) WriteTo(w io.Writer) (int64, error) {
	cw := &countWriter{w: w}
	rw := cpio.Newc.Writer(cw)
	for i, e := range b.entries {
		info := e.info
		info.Ino = uint64(i + 1) // distinct inodes: equal ones would be unpacked as hard links
		info.NLink = 1
		if info.Mode&cpio.S_IFMT == cpio.S_IFDIR {
			info.NLink = 2
		}
		rec := cpio.Record{Info: info, ReaderAt: bytes.NewReader(e.data)}
		var f *os.File
		if e.host != "" {
			var err error
			if f, err = os.Open(e.host); err != nil {
				return cw.n, fmt.Errorf("%w: %w", ErrImage, err)
			}
			rec.ReaderAt = f
		}
		err := rw.WriteRecord(rec)
		if f != nil {
			f.Close()
		}
		if err != nil {
			return cw.n, fmt.Errorf("%w: writing %s: %w", ErrImage, info.Name, err)
		}
	}
	if err := cpio.WriteTrailer(rw); err != nil {
		return cw.n, fmt.Errorf("%w: %w", ErrImage, err)
	}
	return cw.n, nil
}

// Encode writes the archive to w with the given compression.
func (b *Builder) Encode(w io.Writer, c Compression) error {
	switch c {
	case None:
		_, err := b.WriteTo(w)
		return err
	case Gzip:
		zw, err := gzip.NewWriterLevel(w, gzip.BestSpeed)
		if err != nil {
			return fmt.Errorf("%w: %w", ErrImage, err)
		}
		if _, err := b.WriteTo(zw); err != nil {
			return err
		}
		if err := zw.Close(); err != nil {
			return fmt.Errorf("%w: %w", ErrImage, err)
		}
		return nil
	default:
		return fmt.Errorf("%w: unknown compression %d", ErrImage, c)
	}
}

// Bytes returns the encoded archive.
func (b *Builder) Bytes(c Compression) ([]byte, error) {
	var buf bytes.Buffer
	if err := b.Encode(&buf, c); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// ReadArchive decodes an archive made by Builder (either compression) into
// a map from absolute guest path to record, for tests and inspection.
func ReadArchive(data []byte) (map[string]cpio.Record, error) {
	if len(data) > 2 && data[0] == 0x1f && data[1] == 0x8b {
		zr, err := gzip.NewReader(bytes.NewReader(data))
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrImage, err)
		}
		if data, err = io.ReadAll(zr); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrImage, err)
		}
	}
	recs, err := cpio.ReadAllRecords(cpio.Newc.Reader(bytes.NewReader(data)))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrImage, err)
	}
	out := map[string]cpio.Record{}
	for _, r := range recs {
		out["/"+r.Name] = r
	}
	return out, nil
}

// sortedKeys is a small helper for deterministic output.
func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}
