package snapshot

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// mincore fills vec with one byte per page of b, bit 0 set for a page
// in RAM (mincore(2); golang.org/x/sys/unix has no wrapper).
func mincore(b, vec []byte) error {
	if len(b) == 0 {
		return nil
	}
	_, _, e := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(unsafe.SliceData(b))), uintptr(len(b)),
		uintptr(unsafe.Pointer(unsafe.SliceData(vec))))
	if e != 0 {
		return e
	}
	return nil
}
