package kvm_test

import (
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// anonMem maps size bytes of anonymous memory for a test guest and returns
// it with its host address (for KVM_SET_USER_MEMORY_REGION).
func anonMem(t testing.TB, size int) ([]byte, uint64) {
	t.Helper()
	b, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE)
	if err != nil {
		t.Fatalf("mmap: %v", err)
	}
	t.Cleanup(func() { unix.Munmap(b) })
	return b, uint64(uintptr(unsafe.Pointer(&b[0])))
}
