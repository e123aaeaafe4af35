package memory

import "unsafe"

// hostAddr is the host virtual address of a mapping, for KVM slots and
// vhost-user memory tables. The mappings come from mmap, so the garbage
// collector never moves or frees them.
func hostAddr(b []byte) uint64 { return uint64(uintptr(unsafe.Pointer(unsafe.SliceData(b)))) }
