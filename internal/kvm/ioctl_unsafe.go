package kvm

import (
	"fmt"
	"runtime"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// This file holds every use of package unsafe in package kvm: passing Go
// values to ioctls, atomic access to kvm_run.immediate_exit and prctl.

// ioctl issues one ioctl, retrying on EINTR (every ioctl here except
// KVM_RUN is safe to restart). It returns the syscall's result.
func ioctl(fd int, name string, req, arg uintptr) (int, error) {
	for {
		r, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, arg)
		switch e {
		case 0:
			return int(r), nil
		case unix.EINTR:
			continue
		default:
			return int(r), ioctlErr(name, e)
		}
	}
}

// ioctlPtr passes a pointer to p. p may point to the stack: the stack does
// not move during the system call.
func ioctlPtr(fd int, name string, req uintptr, p unsafe.Pointer) (int, error) {
	for {
		r, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, uintptr(p))
		switch e {
		case 0:
			return int(r), nil
		case unix.EINTR:
			continue
		default:
			return int(r), ioctlErr(name, e)
		}
	}
}

// ioctlGet reads a fixed-size struct from the kernel.
func ioctlGet[T any](fd int, name string, req uintptr) (T, error) {
	var v T
	_, err := ioctlPtr(fd, name, req, unsafe.Pointer(&v))
	return v, err
}

// ioctlSet passes a fixed-size struct to the kernel.
func ioctlSet[T any](fd int, name string, req uintptr, v *T) (int, error) {
	return ioctlPtr(fd, name, req, unsafe.Pointer(v))
}

// ioctlBuf passes a marshalled variable-length struct; the kernel may
// write back into b.
func ioctlBuf(fd int, name string, req uintptr, b []byte) (int, error) {
	return ioctlPtr(fd, name, req, unsafe.Pointer(&b[0]))
}

// getDirtyLog fills bitmap (one bit per page of the slot) from
// KVM_GET_DIRTY_LOG. The struct carries a user pointer the garbage
// collector does not see, so the bitmap is kept alive explicitly.
func getDirtyLog(fd int, slot uint32, bitmap []uint64) error {
	d := dirtyLog{Slot: slot, Bitmap: uint64(uintptr(unsafe.Pointer(&bitmap[0])))}
	_, err := ioctlPtr(fd, "KVM_GET_DIRTY_LOG", kvmGetDirtyLog, unsafe.Pointer(&d))
	runtime.KeepAlive(bitmap)
	return err
}

// The first 32-bit word of kvm_run holds request_interrupt_window (byte 0)
// and immediate_exit (byte 1); x86 is little-endian, so immediate_exit is
// bits 8-15 of that word. Atomic word operations let Kick set the flag
// from another thread without disturbing request_interrupt_window.
const immediateExitBit = 1 << (8 * runImmediateExit)

func runWord(run []byte) *uint32 { return (*uint32)(unsafe.Pointer(&run[0])) }

func setImmediateExit(run []byte, on bool) {
	if on {
		atomic.OrUint32(runWord(run), immediateExitBit)
	} else {
		atomic.AndUint32(runWord(run), ^uint32(immediateExitBit))
	}
}

// takeImmediateExit clears immediate_exit and reports whether it was set.
func takeImmediateExit(run []byte) bool {
	return atomic.AndUint32(runWord(run), ^uint32(immediateExitBit))&immediateExitBit != 0
}

// SetThreadName names the calling OS thread (prctl PR_SET_NAME), e.g.
// "vcpu0", so that ps, top and /proc show it. Names longer than 15 bytes
// are truncated by the kernel. Call it after runtime.LockOSThread.
func SetThreadName(name string) error {
	b := make([]byte, len(name)+1)
	copy(b, name)
	if err := unix.Prctl(unix.PR_SET_NAME, uintptr(unsafe.Pointer(&b[0])), 0, 0, 0); err != nil {
		return fmt.Errorf("prctl(PR_SET_NAME, %q): %w: %w", name, ErrIoctl, err)
	}
	return nil
}
