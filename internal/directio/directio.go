// Package directio does file I/O through O_DIRECT for callers whose
// buffers, offsets and lengths are not aligned: such transfers go through
// an aligned bounce buffer, partly covered blocks read, modified and
// written back, as upstream's RawFile does for qcow2 with direct=on.
package directio

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// MemAlign is the buffer alignment AlignedBuf gives: a page, O_DIRECT's
// strictest need on Linux.
const MemAlign = 4096

// AlignedBuf returns n bytes whose first byte is MemAlign-aligned.
func AlignedBuf(n int) []byte {
	b := make([]byte, n+MemAlign)
	off := (MemAlign - int(addrOf(b)%MemAlign)) % MemAlign
	return b[off : off+n : off+n]
}

// AddrAligned reports whether b starts on an a-byte boundary in memory.
func AddrAligned(b []byte, a int) bool { return addrOf(b)%uintptr(a) == 0 }

// bounceSize is the most one bounced transfer moves per system call.
const bounceSize = 128 << 10

// File is a file opened with O_DIRECT whose ReadAt and WriteAt take any
// buffer, offset and length. Its methods are safe for concurrent use.
type File struct {
	f        *os.File
	memAlign int // buffer address alignment O_DIRECT needs here
	align    int // offset and length alignment; a power of two
	// mu orders writes: bounced ones (read-modify-write, and the
	// truncation after a write that extended the file) hold it
	// exclusively, aligned ones shared.
	mu     sync.RWMutex
	bounce []byte // guarded by mu (exclusive) for writes
	rmu    sync.Mutex
	rbuf   []byte // bounce buffer of bounced reads, guarded by rmu
}

// ErrNoDirect says that the file system does not do O_DIRECT (tmpfs
// before Linux 6.6, for one).
var ErrNoDirect = errors.New("the file system does not take O_DIRECT")

// OpenFile opens path with flag (os.O_RDONLY or os.O_RDWR, …) plus
// O_DIRECT, for callers that align their transfers themselves.
func OpenFile(path string, flag int) (*os.File, error) {
	f, err := os.OpenFile(path, flag|unix.O_DIRECT|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.EINVAL) {
		return nil, fmt.Errorf("%s: %w: %w", path, ErrNoDirect, err)
	}
	return f, err
}

// Open opens path with flag (os.O_RDONLY or os.O_RDWR, …) plus O_DIRECT.
func Open(path string, flag int) (*File, error) {
	f, err := OpenFile(path, flag)
	if err != nil {
		return nil, err
	}
	d := &File{f: f, memAlign: MemAlign, align: MemAlign}
	// The file system says what it needs (statx STATX_DIOALIGN, Linux
	// 6.1); a page covers every file system that does not say.
	var st unix.Statx_t
	if unix.Statx(int(f.Fd()), "", unix.AT_EMPTY_PATH, unix.STATX_DIOALIGN, &st) == nil &&
		st.Mask&unix.STATX_DIOALIGN != 0 && validAlign(st.Dio_offset_align) && validAlign(st.Dio_mem_align) {
		d.align, d.memAlign = int(st.Dio_offset_align), int(st.Dio_mem_align)
	}
	return d, nil
}

func validAlign(a uint32) bool { return a > 0 && a <= MemAlign && a&(a-1) == 0 }

// Fd is the file's descriptor (for fallocate, fdatasync, locks).
func (d *File) Fd() uintptr { return d.f.Fd() }

// Stat is os.File's Stat.
func (d *File) Stat() (os.FileInfo, error) { return d.f.Stat() }

// Close closes the file.
func (d *File) Close() error { return d.f.Close() }

func (d *File) aligned(p []byte, off int64) bool {
	a := int64(d.align)
	return off%a == 0 && int64(len(p))%a == 0 && AddrAligned(p, d.memAlign)
}

// ReadAt reads len(p) bytes at off, as os.File.ReadAt: fewer only at the
// end of the file, with io.EOF.
func (d *File) ReadAt(p []byte, off int64) (int, error) {
	if d.aligned(p, off) {
		return d.f.ReadAt(p, off)
	}
	d.rmu.Lock()
	defer d.rmu.Unlock()
	if d.rbuf == nil {
		d.rbuf = AlignedBuf(bounceSize)
	}
	a := int64(d.align)
	done := 0
	for done < len(p) {
		pos := off + int64(done)
		lo := pos &^ (a - 1)
		hi := min((off+int64(len(p))+a-1)&^(a-1), lo+bounceSize)
		buf := d.rbuf[:hi-lo]
		n, err := d.f.ReadAt(buf, lo)
		if err != nil && !errors.Is(err, io.EOF) {
			return done, err
		}
		k := copy(p[done:], buf[min(int64(n), pos-lo):n])
		done += k
		if int64(n) < hi-lo && done < len(p) {
			return done, io.EOF
		}
	}
	return done, nil
}

// WriteAt writes p at off, as os.File.WriteAt. Partly covered blocks are
// read and written whole; the file's size ends up as a buffered write
// would leave it.
func (d *File) WriteAt(p []byte, off int64) (int, error) {
	if d.aligned(p, off) {
		d.mu.RLock()
		defer d.mu.RUnlock()
		return d.f.WriteAt(p, off)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.bounce == nil {
		d.bounce = AlignedBuf(bounceSize)
	}
	a := int64(d.align)
	end := off + int64(len(p))
	done := 0
	for done < len(p) {
		pos := off + int64(done)
		lo := pos &^ (a - 1)
		hi := min((end+a-1)&^(a-1), lo+bounceSize)
		buf := d.bounce[:hi-lo]
		stop := min(end, hi) // this round writes p's bytes [pos, stop)
		// eof is where the file ended if it ends inside [lo, hi).
		eof := int64(-1)
		if pos > lo {
			if n, err := d.readBlock(buf[:a], lo); err != nil {
				return done, err
			} else if n < a {
				eof = lo + n
			}
		}
		// The last block, when partly covered and not the first, is read
		// too, unless the file ended in the first: then what it holds
		// past stop is cut off by the truncation below.
		if last := hi - a; stop < hi && eof < 0 && (pos == lo || last > lo) {
			if n, err := d.readBlock(buf[last-lo:], last); err != nil {
				return done, err
			} else if n < a {
				eof = last + n
			}
		}
		copy(buf[pos-lo:], p[done:done+int(stop-pos)])
		if _, err := d.f.WriteAt(buf, lo); err != nil {
			return done, err
		}
		if eof >= 0 && max(eof, stop) < hi {
			// The write extended the file to a block boundary; a
			// buffered write would have stopped at max(eof, stop).
			if err := d.f.Truncate(max(eof, stop)); err != nil {
				return done, err
			}
		}
		done += int(stop - pos)
	}
	return done, nil
}

// readBlock reads one aligned block into b (len(b) = align), zeroing what
// lies past the end of the file; it returns how many bytes the file had.
func (d *File) readBlock(b []byte, off int64) (int64, error) {
	n, err := d.f.ReadAt(b, off)
	if err != nil && !errors.Is(err, io.EOF) {
		return 0, err
	}
	clear(b[n:])
	return int64(n), nil
}
