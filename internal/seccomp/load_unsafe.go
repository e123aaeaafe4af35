package seccomp

import (
	"fmt"
	"runtime"
	"unsafe"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// load installs prog with seccomp(SECCOMP_SET_MODE_FILTER, flags) on the
// calling thread (all threads with SECCOMP_FILTER_FLAG_TSYNC).
// bpf.RawInstruction has struct sock_filter's layout
// (include/uapi/linux/filter.h: u16 code, u8 jt, u8 jf, u32 k).
func load(prog []bpf.RawInstruction, flags uintptr) error {
	if len(prog) == 0 || len(prog) > 0xffff {
		return fmt.Errorf("seccomp: a filter of %d instructions", len(prog))
	}
	// Required unless CAP_SYS_ADMIN; Nimbus never executes anything, so
	// setuid binaries gaining privileges is moot either way.
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("seccomp: setting no_new_privs: %w", err)
	}
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: (*unix.SockFilter)(unsafe.Pointer(&prog[0]))}
	r, _, errno := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, flags, uintptr(unsafe.Pointer(&fprog)))
	runtime.KeepAlive(prog)
	switch {
	case errno != 0:
		return fmt.Errorf("seccomp: loading the filter: %w", errno)
	case r != 0:
		// TSYNC reports the thread that could not take the filter.
		return fmt.Errorf("seccomp: thread %d could not take the filter", r)
	}
	return nil
}
