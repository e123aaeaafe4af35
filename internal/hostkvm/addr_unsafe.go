package hostkvm

import "unsafe"

// hostAddr is the host virtual address of b's first byte, for
// KVM_SET_USER_MEMORY_REGION. b must be mmap'd (never moved by the GC).
func hostAddr(b []byte) uint64 { return uint64(uintptr(unsafe.Pointer(&b[0]))) }
