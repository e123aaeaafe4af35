package memory

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// Populated fills vec, one byte per page of [gpa, gpa+n) (inside one
// region), with 1 where the page may hold data and 0 where it reads as
// zeros because it never existed: snapshots and migrations skip those.
// A shared zone asks its memfd (SEEK_DATA: pages in the page cache or in
// swap, whoever wrote them: a vhost-user back end writes through its own
// mapping); private memory asks /proc/self/pagemap (present or swapped).
// mincore would miss swapped-out pages.
func (m *Memory) Populated(gpa, n uint64, vec []byte) error {
	r := m.find(gpa)
	if r == nil || n > r.End()-gpa {
		return badAddress(gpa, int(min(n, 1<<31)))
	}
	off := gpa - r.GPA
	pages := int((n + PageSize - 1) / PageSize)
	if len(vec) < pages {
		return fmt.Errorf("populated: %d bytes for %d pages: %w", len(vec), pages, ErrInvalid)
	}
	vec = vec[:pages]
	switch {
	case r.fileBacked:
		fill(vec, 1)
		return nil
	case r.FD >= 0:
		fill(vec, 0)
		start := int64(r.FileOffset + off)
		return FileData(r.FD, start, start+int64(n), func(from, to int64) error {
			fill(vec[(from-start)/PageSize:(to-start+PageSize-1)/PageSize], 1)
			return nil
		})
	}
	pm, err := m.pagemapFile()
	if err != nil {
		fill(vec, 1) // no pagemap: every page may hold data
		return nil
	}
	return populatedPagemap(pm, r.HostAddr+off, vec)
}

func fill(vec []byte, v byte) {
	for i := range vec {
		vec[i] = v
	}
}

// FileData calls fn for each run of data in fd's [start, end)
// (SEEK_DATA/SEEK_HOLE), clipped to the range; holes read as zeros. On a
// file system without SEEK_DATA the whole range is data.
func FileData(fd int, start, end int64, fn func(from, to int64) error) error {
	for pos := start; pos < end; {
		data, err := unix.Seek(fd, pos, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) || (err == nil && data >= end) {
			return nil // only holes left
		}
		if err != nil {
			data = pos
		}
		hole, err := unix.Seek(fd, data, unix.SEEK_HOLE)
		if err != nil || hole > end {
			hole = end
		}
		if err := fn(data, hole); err != nil {
			return err
		}
		pos = hole
	}
	return nil
}

// pagemap entry bits (Documentation/admin-guide/mm/pagemap.rst).
const (
	pagemapPresent = 1 << 63
	pagemapSwapped = 1 << 62
)

// pagemapFile is /proc/self/pagemap, opened once; Close closes it.
func (m *Memory) pagemapFile() (*os.File, error) {
	m.pagemapOnce.Do(func() { m.pagemap, m.pagemapErr = os.Open("/proc/self/pagemap") })
	return m.pagemap, m.pagemapErr
}

// populatedPagemap marks in vec the pages from addr that are present or
// swapped out.
func populatedPagemap(pm *os.File, addr uint64, vec []byte) error {
	const batch = 4096
	buf := make([]byte, 8*batch)
	for done := 0; done < len(vec); {
		k := min(batch, len(vec)-done)
		if _, err := pm.ReadAt(buf[:8*k], int64((addr/PageSize+uint64(done))*8)); err != nil {
			return fmt.Errorf("pagemap: %w", err)
		}
		for i := range k {
			vec[done+i] = 0
			if binary.LittleEndian.Uint64(buf[8*i:])&(pagemapPresent|pagemapSwapped) != 0 {
				vec[done+i] = 1
			}
		}
		done += k
	}
	return nil
}

// MapPrivate puts f's bytes from off under guest RAM [gpa, gpa+size),
// which must be a private, non-hugetlb region's: pages are read from the
// file when first touched and writes stay in this process (copy on
// write). A restore maps its memory file this way instead of copying it
// (memory_restore_mode=ondemand); the file must not change meanwhile.
func (m *Memory) MapPrivate(gpa, size uint64, f *os.File, off int64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	next := append([]region(nil), m.list()...)
	for i := range next {
		r := &next[i]
		if gpa < r.GPA || gpa > r.End() || size > r.End()-gpa { // no gpa+size: it can wrap
			continue
		}
		if r.FD >= 0 || r.huge {
			return fmt.Errorf("map a file under shared or hugetlb guest RAM %v: %w", r.Region, ErrInvalid)
		}
		if (gpa-r.GPA)%PageSize != 0 || size%PageSize != 0 || off%PageSize != 0 {
			return fmt.Errorf("map a file under guest RAM at %#x+%#x, file offset %#x: %w", gpa, size, off, ErrInvalid)
		}
		if err := mapFileFixed(r.data[gpa-r.GPA:], size, int(f.Fd()), off); err != nil {
			return fmt.Errorf("map a file under guest RAM %v: %w: %w", r.Region, ErrMap, err)
		}
		r.fileBacked = true
		m.regions.Store(&next)
		return nil
	}
	return badAddress(gpa, int(min(size, 1<<31)))
}
