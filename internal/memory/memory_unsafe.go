package memory

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// hostAddr is the host virtual address of a mapping, for KVM slots and
// vhost-user memory tables. The mappings come from mmap, so the garbage
// collector never moves or frees them.
func hostAddr(b []byte) uint64 { return uint64(uintptr(unsafe.Pointer(unsafe.SliceData(b)))) }

// mapFileFixed maps n bytes of fd at off over b's first n bytes
// (MAP_FIXED, private: copy on write), replacing what was there.
// golang.org/x/sys/unix's Mmap cannot place a mapping.
func mapFileFixed(b []byte, n uint64, fd int, off int64) error {
	addr := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	_, _, e := unix.Syscall6(unix.SYS_MMAP, addr, uintptr(n), unix.PROT_READ|unix.PROT_WRITE,
		unix.MAP_PRIVATE|unix.MAP_FIXED|unix.MAP_NORESERVE, uintptr(fd), uintptr(off))
	if e != 0 {
		return e
	}
	return nil
}
