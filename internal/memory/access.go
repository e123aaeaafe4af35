package memory

import (
	"encoding/binary"
	"fmt"
	"sort"
)

// find returns the region containing gpa, or nil.
func (m *Memory) find(gpa uint64) *region {
	regions := m.list()
	i := sort.Search(len(regions), func(i int) bool { return regions[i].End() > gpa })
	if i < len(regions) && regions[i].GPA <= gpa {
		return &regions[i]
	}
	return nil
}

func badAddress(gpa uint64, n int) error {
	return fmt.Errorf("guest address %#x (+%d): %w", gpa, n, ErrBadAddress)
}

// Slice returns the n bytes of guest RAM at gpa, aliasing guest memory.
// The range must lie in one region. Use the slice for the duration of one
// request only: it dangles after Close.
//
// While dirty logging is on (StartDirtyLog), the caller may write the
// slice at any time until its request ends, so its pages are counted as
// written in the final round (DirtyRanges with final set), when devices
// are paused, rather than in the round in which Slice was called.
func (m *Memory) Slice(gpa, n uint64) ([]byte, error) {
	r, b, err := m.slice(gpa, n)
	if err == nil {
		r.markSliced(gpa-r.GPA, n)
	}
	return b, err
}

// Mapping is Slice for reading guest RAM out (snapshots, migration): it
// does not count the pages as written.
func (m *Memory) Mapping(gpa, n uint64) ([]byte, error) {
	_, b, err := m.slice(gpa, n)
	return b, err
}

func (m *Memory) slice(gpa, n uint64) (*region, []byte, error) {
	r := m.find(gpa)
	if r == nil {
		return nil, nil, badAddress(gpa, int(min(n, 1<<31)))
	}
	off := gpa - r.GPA
	if n > r.Size-off {
		return nil, nil, badAddress(gpa, int(min(n, 1<<31)))
	}
	return r, r.data[off : off+n : off+n], nil
}

// ReadAt copies guest RAM at guest-physical address off into p. It may
// span adjacent regions; on a gap or the end of RAM it returns the bytes
// copied so far and an error wrapping ErrBadAddress (io.ReaderAt style).
func (m *Memory) ReadAt(p []byte, off int64) (int, error) {
	return m.access(p, off, false)
}

// WriteAt copies p into guest RAM at guest-physical address off, with
// ReadAt's rules.
func (m *Memory) WriteAt(p []byte, off int64) (int, error) {
	return m.access(p, off, true)
}

func (m *Memory) access(p []byte, off int64, write bool) (int, error) {
	if off < 0 {
		return 0, badAddress(uint64(off), len(p))
	}
	gpa := uint64(off)
	done := 0
	for done < len(p) {
		cur := gpa + uint64(done)
		if cur < gpa { // wrapped past 2^64
			return done, badAddress(cur, len(p)-done)
		}
		r := m.find(cur)
		if r == nil {
			return done, badAddress(cur, len(p)-done)
		}
		mem := r.data[cur-r.GPA:]
		var n int
		if write {
			n = copy(mem, p[done:])
			r.markWritten(cur-r.GPA, uint64(n))
		} else {
			n = copy(p[done:], mem)
		}
		done += n
	}
	return done, nil
}

// fixed returns the size bytes at gpa; little-endian scalar accesses must
// not straddle regions.
func (m *Memory) fixed(gpa, size uint64) ([]byte, error) {
	_, b, err := m.slice(gpa, size)
	return b, err
}

// ReadU8 reads a byte at gpa.
func (m *Memory) ReadU8(gpa uint64) (uint8, error) {
	b, err := m.fixed(gpa, 1)
	if err != nil {
		return 0, err
	}
	return b[0], nil
}

// ReadU16 reads a little-endian uint16 at gpa.
func (m *Memory) ReadU16(gpa uint64) (uint16, error) {
	b, err := m.fixed(gpa, 2)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint16(b), nil
}

// ReadU32 reads a little-endian uint32 at gpa.
func (m *Memory) ReadU32(gpa uint64) (uint32, error) {
	b, err := m.fixed(gpa, 4)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint32(b), nil
}

// ReadU64 reads a little-endian uint64 at gpa.
func (m *Memory) ReadU64(gpa uint64) (uint64, error) {
	b, err := m.fixed(gpa, 8)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint64(b), nil
}

// WriteU8 writes a byte at gpa.
func (m *Memory) WriteU8(gpa uint64, v uint8) error {
	r, b, err := m.slice(gpa, 1)
	if err != nil {
		return err
	}
	b[0] = v
	r.markWritten(gpa-r.GPA, 1)
	return nil
}

// WriteU16 writes a little-endian uint16 at gpa.
func (m *Memory) WriteU16(gpa uint64, v uint16) error {
	r, b, err := m.slice(gpa, 2)
	if err != nil {
		return err
	}
	binary.LittleEndian.PutUint16(b, v)
	r.markWritten(gpa-r.GPA, 2)
	return nil
}

// WriteU32 writes a little-endian uint32 at gpa.
func (m *Memory) WriteU32(gpa uint64, v uint32) error {
	r, b, err := m.slice(gpa, 4)
	if err != nil {
		return err
	}
	binary.LittleEndian.PutUint32(b, v)
	r.markWritten(gpa-r.GPA, 4)
	return nil
}

// WriteU64 writes a little-endian uint64 at gpa.
func (m *Memory) WriteU64(gpa uint64, v uint64) error {
	r, b, err := m.slice(gpa, 8)
	if err != nil {
		return err
	}
	binary.LittleEndian.PutUint64(b, v)
	r.markWritten(gpa-r.GPA, 8)
	return nil
}
