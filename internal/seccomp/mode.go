package seccomp

import "fmt"

// Mode is what a filter does with a syscall outside its list (--seccomp).
type Mode int

const (
	// Off installs no filter (--seccomp false).
	Off Mode = iota
	// Trap raises SIGSYS (--seccomp true, the default): the Go runtime
	// then prints "SIGSYS: bad system call" and the stack of the
	// goroutine that made the call, whose first argument is the syscall
	// number, and the process exits with status 2.
	Trap
	// Log lets the call through after the kernel logs it (audit type
	// 1326, "SECCOMP", with the syscall number).
	Log
	// Errno fails the call with EPERM.
	Errno
)

// modeNames are the --seccomp values, by Mode.
var modeNames = [...]string{Off: "false", Trap: "true", Log: "log", Errno: "errno"}

// ParseMode parses the value of --seccomp.
func ParseMode(s string) (Mode, error) {
	for m, name := range modeNames {
		if s == name {
			return Mode(m), nil
		}
	}
	return Off, fmt.Errorf("invalid seccomp mode %q: want true, false, log or errno", s)
}

// String is the --seccomp value of m.
func (m Mode) String() string {
	if m >= 0 && int(m) < len(modeNames) {
		return modeNames[m]
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}
