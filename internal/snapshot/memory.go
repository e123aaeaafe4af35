package snapshot

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/nimbus-vmm/nimbus/internal/memory"
)

// Range is one guest RAM range in memory-ranges (upstream's MemoryRange).
type Range struct {
	GPA    uint64 `json:"gpa"`
	Length uint64 `json:"length"`
}

// RangeTable is upstream's MemoryRangeTable.
type RangeTable struct {
	Data []Range `json:"data"`
}

// Size is the bytes the ranges take in memory-ranges.
func (t RangeTable) Size() uint64 {
	var n uint64
	for _, r := range t.Data {
		if n+r.Length < n {
			return math.MaxUint64 // a crafted table must not wrap to a small size
		}
		n += r.Length
	}
	return n
}

// RAM gives the host mapping of guest RAM.
type RAM interface {
	Slice(gpa, n uint64) ([]byte, error)
}

// PopulatedRAM is RAM that says which pages may hold data (one byte per
// page, bit 0), as *memory.Memory's Populated does; WriteMemory skips the
// others. Without it every page is looked at.
type PopulatedRAM interface {
	RAM
	Populated(gpa, n uint64, vec []byte) error
}

const pageSize = 4096

// WriteMemory writes memory-ranges: the ranges in table order, densely.
// Pages that never existed (PopulatedRAM) and pages of zeros are left as
// holes, so the file takes the space of the RAM the guest uses.
func WriteMemory(dir string, t RangeTable, ram RAM) (written uint64, err error) {
	f, err := create(dir, MemoryFile)
	if err != nil {
		return 0, fmt.Errorf("Error creating memory snapshot file: %w", err)
	}
	defer func() {
		if cerr := f.Close(); err == nil && cerr != nil {
			err = cerr
		}
	}()
	pop, _ := ram.(PopulatedRAM)
	var off uint64
	for _, r := range t.Data {
		b, err := ram.Slice(r.GPA, r.Length)
		if err != nil {
			return written, fmt.Errorf("memory range %#x+%#x: %w", r.GPA, r.Length, err)
		}
		n, err := writeSparse(f, int64(off), r.GPA, b, pop)
		written += n
		if err != nil {
			return written, fmt.Errorf("Error writing memory snapshot: %w", err)
		}
		off += r.Length
	}
	if err := f.Truncate(int64(off)); err != nil {
		return written, fmt.Errorf("Error writing memory snapshot: %w", err)
	}
	return written, nil
}

var zeroPage [pageSize]byte

// writeSparse writes b (guest RAM at gpa) at off, skipping pages that
// pop says never existed or that hold only zeros. It returns the bytes
// written.
func writeSparse(f *os.File, off int64, gpa uint64, b []byte, pop PopulatedRAM) (uint64, error) {
	const chunk = 2 << 20
	var written uint64
	vec := make([]byte, chunk/pageSize)
	for c := 0; c < len(b); c += chunk {
		part := b[c:min(c+chunk, len(b))]
		pages := (len(part) + pageSize - 1) / pageSize
		// Pages that never existed read as zeros; asking which exist
		// saves faulting the others in.
		if pop == nil || pop.Populated(gpa+uint64(c), uint64(len(part)), vec) != nil {
			for i := range vec[:pages] {
				vec[i] = 1
			}
		}
		start := -1 // first page of the run being collected
		flush := func(end int) error {
			if start < 0 {
				return nil
			}
			s, e := start*pageSize, min(end*pageSize, len(part))
			start = -1
			if _, err := f.WriteAt(part[s:e], off+int64(c+s)); err != nil {
				return err
			}
			written += uint64(e - s)
			return nil
		}
		for p := range pages {
			pg := part[p*pageSize : min((p+1)*pageSize, len(part))]
			if vec[p]&1 == 0 || bytes.Equal(pg, zeroPage[:len(pg)]) {
				if err := flush(p); err != nil {
					return written, err
				}
				continue
			}
			if start < 0 {
				start = p
			}
		}
		if err := flush(pages); err != nil {
			return written, err
		}
	}
	return written, nil
}

// ReadMemory copies memory-ranges into guest RAM, reading only the file's
// data (its holes are zeros, as fresh guest RAM is). With prefault every
// page of the ranges is populated as well (upstream's prefault).
func ReadMemory(dir string, t RangeTable, ram RAM, prefault bool) error {
	f, err := openMemory(dir, t)
	if err != nil {
		return err
	}
	defer f.Close()
	var off int64
	for _, r := range t.Data {
		b, err := ram.Slice(r.GPA, r.Length)
		if err != nil {
			return fmt.Errorf("memory range %#x+%#x: %w", r.GPA, r.Length, err)
		}
		if prefault {
			_ = unix.Madvise(b, unix.MADV_POPULATE_WRITE) // best effort (Linux 5.14+)
		}
		if err := readData(f, off, b); err != nil {
			return fmt.Errorf("Error reading memory snapshot: %w", err)
		}
		off += int64(r.Length)
	}
	return nil
}

// readData reads the data extents of f's [off, off+len(b)) into b.
func readData(f *os.File, off int64, b []byte) error {
	return memory.FileData(int(f.Fd()), off, off+int64(len(b)), func(from, to int64) error {
		if _, err := f.ReadAt(b[from-off:to-off], from); err != nil && !errors.Is(err, io.EOF) {
			return err
		}
		return nil
	})
}

// FileMapper puts a file's pages under guest RAM (*memory.Memory's
// MapPrivate).
type FileMapper interface {
	MapPrivate(gpa, size uint64, f *os.File, off int64) error
}

// MapMemory maps memory-ranges under guest RAM instead of copying it:
// the guest's pages come from the file as it touches them (upstream's
// memory_restore_mode=ondemand, done by the kernel's page cache rather
// than userfaultfd). The file must stay as it is while the VM lives.
func MapMemory(dir string, t RangeTable, ram FileMapper) error {
	f, err := openMemory(dir, t)
	if err != nil {
		return err
	}
	defer f.Close() // the mappings keep the file
	var off int64
	for _, r := range t.Data {
		if err := ram.MapPrivate(r.GPA, r.Length, f, off); err != nil {
			return err
		}
		off += int64(r.Length)
	}
	return nil
}

// openMemory opens memory-ranges, which must be as long as t's ranges.
func openMemory(dir string, t RangeTable) (*os.File, error) {
	p := filepath.Join(dir, MemoryFile)
	f, err := os.Open(p)
	if err != nil {
		return nil, fmt.Errorf("Error opening memory snapshot file %q: %w", p, err)
	}
	fi, err := f.Stat()
	if err == nil && uint64(fi.Size()) != t.Size() {
		err = fmt.Errorf("%s is %d bytes, its memory ranges need %d: %w", MemoryFile, fi.Size(), t.Size(), ErrFormat)
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}
