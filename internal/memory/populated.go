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
	clear(vec[:pages])
	if r.fileBacked {
		for i := range vec[:pages] {
			vec[i] = 1
		}
		return nil
	}
	if r.FD >= 0 {
		return populatedFile(r.FD, int64(r.FileOffset+off), n, vec)
	}
	return populatedPagemap(r.HostAddr+off, pages, vec)
}

func populatedFile(fd int, start int64, n uint64, vec []byte) error {
	end := start + int64(n)
	for pos := start; pos < end; {
		data, err := unix.Seek(fd, pos, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) || (err == nil && data >= end) {
			return nil
		}
		if err != nil {
			// No SEEK_DATA: everything may hold data.
			for i := range vec[:(n+PageSize-1)/PageSize] {
				vec[i] = 1
			}
			return nil
		}
		hole, err := unix.Seek(fd, data, unix.SEEK_HOLE)
		if err != nil || hole > end {
			hole = end
		}
		for p := (data - start) / PageSize; p < (hole-start+PageSize-1)/PageSize; p++ {
			vec[p] = 1
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

func populatedPagemap(addr uint64, pages int, vec []byte) error {
	f, err := os.Open("/proc/self/pagemap")
	if err != nil {
		for i := range vec[:pages] {
			vec[i] = 1
		}
		return nil
	}
	defer f.Close()
	const batch = 4096
	buf := make([]byte, 8*batch)
	for done := 0; done < pages; {
		k := min(batch, pages-done)
		if _, err := f.ReadAt(buf[:8*k], int64((addr/PageSize+uint64(done))*8)); err != nil {
			return fmt.Errorf("pagemap: %w", err)
		}
		for i := range k {
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
		if gpa < r.GPA || gpa+size > r.End() {
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
