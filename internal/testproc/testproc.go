// Package testproc starts child processes for tests: their combined output
// is kept for failure messages, and the test's cleanup kills a process that
// is still running and always waits for it, so no test leaks one.
package testproc

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nimbus-vmm/nimbus/internal/syncbuf"
)

// Proc is a started process.
type Proc struct {
	// Cmd is the running command (for its Path, Process, …).
	Cmd    *exec.Cmd
	out    syncbuf.Buffer
	exited chan struct{}
	err    error
}

// Start starts name with args; t's cleanup kills it if it still runs and
// waits for it.
func Start(t testing.TB, name string, args ...string) *Proc {
	t.Helper()
	return StartVia(t, Direct, name, args...)
}

// Direct is the via of StartVia that starts the process right here.
func Direct(start func() error) error { return start() }

// StartVia is Start with the fork made by via, which must call start and
// return its error: via can run it on an OS thread it has switched into
// another namespace, which the child then inherits.
func StartVia(t testing.TB, via func(start func() error) error, name string, args ...string) *Proc {
	t.Helper()
	return StartCmd(t, via, exec.Command(name, args...))
}

// StartCmd is StartVia for a prepared command (its ExtraFiles, Env, ...);
// its Stdout and Stderr are taken over.
func StartCmd(t testing.TB, via func(start func() error) error, cmd *exec.Cmd) *Proc {
	t.Helper()
	p := &Proc{Cmd: cmd, exited: make(chan struct{})}
	p.Cmd.Stdout, p.Cmd.Stderr = &p.out, &p.out
	if err := via(p.Cmd.Start); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.err = p.Cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			p.Cmd.Process.Kill()
			<-p.exited
		}
	})
	return p
}

// Output is what the process wrote to stdout and stderr so far.
func (p *Proc) Output() string { return p.out.String() }

// Wait waits for the process to exit or ctx to end; exited says which,
// and err is the process's exit error when it did.
func (p *Proc) Wait(ctx context.Context) (exited bool, err error) {
	select {
	case <-p.exited:
		return true, p.err
	case <-ctx.Done():
		return false, nil
	}
}

// ThreadNames lists the names of process pid's threads
// (/proc/PID/task/*/comm); threads that end while it reads are skipped.
func ThreadNames(pid int) ([]string, error) {
	task := fmt.Sprintf("/proc/%d/task", pid)
	ents, err := os.ReadDir(task)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(task, e.Name(), "comm"))
		if err != nil {
			continue
		}
		names = append(names, strings.TrimSpace(string(b)))
	}
	return names, nil
}

// Tool runs a host program to its end and returns its combined output:
// the test skips when the program is not installed and fails when it
// exits with an error (e.g. qemu-img from qemu-utils, which
// scripts/install-deps.sh installs).
func Tool(t testing.TB, name string, args ...string) string {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		t.Skipf("%s not installed", name)
	}
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// Diagnose is for a test that gave up on a running process: each thread's
// name, scheduler state, kernel wait channel and current system call
// (/proc/PID/task/*: a vCPU thread in KVM_RUN shows syscall 16, ioctl,
// with the KVM_RUN number 0xae80), then, for a Go program, every
// goroutine's stack from the dump SIGQUIT makes it print as it exits
// (waited for up to wait). An exited process gives its output only.
func (p *Proc) Diagnose(wait time.Duration) string {
	select {
	case <-p.exited:
		return p.Output()
	default:
	}
	var s strings.Builder
	pid := p.Cmd.Process.Pid
	task := fmt.Sprintf("/proc/%d/task", pid)
	ents, _ := os.ReadDir(task)
	fmt.Fprintf(&s, "threads of %d (name state wchan syscall):\n", pid)
	for _, e := range ents {
		read := func(f string) string {
			b, _ := os.ReadFile(filepath.Join(task, e.Name(), f))
			return strings.TrimSpace(string(b))
		}
		state := read("stat")
		if i := strings.LastIndexByte(state, ')'); i >= 0 && i+2 < len(state) {
			state = strings.Fields(state[i+2:])[0]
		}
		sc := strings.Fields(read("syscall"))
		if len(sc) > 2 {
			sc = sc[:3]
		}
		fmt.Fprintf(&s, "  %s %s %s %s %s\n", e.Name(), read("comm"), state, read("wchan"), strings.Join(sc, " "))
	}
	p.Cmd.Process.Signal(syscall.SIGQUIT)
	select {
	case <-p.exited:
	case <-time.After(wait):
	}
	s.WriteString("output (a SIGQUIT dump at the end):\n")
	s.WriteString(p.Output())
	return s.String()
}
