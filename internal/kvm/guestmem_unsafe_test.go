package kvm_test

import (
	"sync/atomic"
	"testing"
	"time"
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

// guestWord16 atomically reads the little-endian u16 at off (4-byte
// aligned) that a running vCPU is writing concurrently; a plain load
// would be a data race the compiler may hoist out of a polling loop.
func guestWord16(mem []byte, off int) uint16 {
	if off%4 != 0 || off+4 > len(mem) {
		panic("guestWord16: offset must be 4-byte aligned and inside guest memory")
	}
	return uint16(atomic.LoadUint32((*uint32)(unsafe.Pointer(&mem[off]))))
}

// guestWaitLimit bounds how long a test waits for a guest to make
// progress: far longer than a healthy guest needs, so reaching it means
// the guest is stuck, and the test fails instead of hanging.
const guestWaitLimit = 30 * time.Second

// waitGuestWord16 waits until the u16 at off differs from old, failing the
// test if it has not changed within guestWaitLimit.
func waitGuestWord16(t testing.TB, mem []byte, off int, old uint16) {
	t.Helper()
	deadline := time.Now().Add(guestWaitLimit)
	for guestWord16(mem, off) == old {
		if time.Now().After(deadline) {
			t.Fatalf("guest word at %#x still %#x after %v: the guest is not running", off, old, guestWaitLimit)
		}
		time.Sleep(time.Millisecond)
	}
}
