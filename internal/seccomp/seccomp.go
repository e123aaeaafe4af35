package seccomp

import (
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	libseccomp "github.com/elastic/go-seccomp-bpf"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// placeholder is the default action the library assembles; program
// swaps it for the mode's action (the library has no errno value).
const placeholder = libseccomp.ActionKillProcess

// action is the seccomp return value for a call outside the list.
func (m Mode) action() (uint32, error) {
	switch m {
	case Trap:
		return unix.SECCOMP_RET_TRAP, nil
	case Log:
		return unix.SECCOMP_RET_LOG, nil
	case Errno:
		return unix.SECCOMP_RET_ERRNO | uint32(unix.EPERM), nil
	}
	return 0, fmt.Errorf("no filter for seccomp mode %v", m)
}

// program assembles an allow-list that answers other calls as m says.
func program(m Mode, names []string) ([]bpf.RawInstruction, error) {
	act, err := m.action()
	if err != nil {
		return nil, err
	}
	pol := libseccomp.Policy{
		DefaultAction: placeholder,
		Syscalls:      []libseccomp.SyscallGroup{{Names: names, Action: libseccomp.ActionAllow}},
	}
	insts, err := pol.Assemble()
	if err != nil {
		return nil, err
	}
	swapped := 0
	for i, in := range insts {
		if r, ok := in.(bpf.RetConstant); ok && r.Val == uint32(placeholder) {
			insts[i] = bpf.RetConstant{Val: act}
			swapped++
		}
	}
	if swapped == 0 {
		return nil, errors.New("seccomp: the assembled filter has no default action")
	}
	return bpf.Assemble(insts)
}

// vcpuProgram is the vCPU allow-list, assembled for the process's mode
// by InstallProcess: the process filter is process-wide kernel state, and
// vCPU threads started later follow its mode.
var vcpuProgram atomic.Pointer[[]bpf.RawInstruction]

// InstallProcess confines every thread of the process (and every thread
// started later) to the process allow-list. Off installs nothing. Call it
// once, before serving requests or running a guest.
func InstallProcess(m Mode) error {
	if m == Off {
		return nil
	}
	proc, err := program(m, processList())
	if err != nil {
		return fmt.Errorf("seccomp: %w", err)
	}
	vcpu, err := program(m, vcpuList())
	if err != nil {
		return fmt.Errorf("seccomp: %w", err)
	}
	preload()
	if err := load(proc, unix.SECCOMP_FILTER_FLAG_TSYNC); err != nil {
		return err
	}
	vcpuProgram.Store(&vcpu)
	return nil
}

// preload makes the standard library read now what it reads from files
// on first use, which could be on a vCPU thread (which may not open
// files) or after Landlock: the local time zone, read by the first log
// line that formats a time (a vCPU thread's was).
func preload() { time.Now().Local().Zone() }

// ConfineVcpuThread adds the vCPU allow-list to the calling thread, which
// must be locked to its goroutine for the rest of its life
// (runtime.LockOSThread, never unlocked): the filter cannot be removed.
// It does nothing unless the process was confined.
func ConfineVcpuThread() error {
	p := vcpuProgram.Load()
	if p == nil {
		return nil
	}
	return load(*p, 0)
}
