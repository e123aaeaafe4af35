package seccomp

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// childEnv makes the test binary a confined child (see TestMain).
const childEnv = "NIMBUS_SECCOMP_CHILD"

func TestMain(m *testing.M) {
	if spec := os.Getenv(childEnv); spec != "" {
		os.Exit(child(spec))
	}
	os.Exit(m.Run())
}

// child confines itself as spec ("mode:kind") says, shows that the VMM's
// ordinary work still runs, then makes a call its filter forbids:
// getppid anywhere ("process") or openat on a vCPU thread ("vcpu"). It
// prints what the forbidden call returned, if it returned.
func child(spec string) int {
	modeName, kind, _ := strings.Cut(spec, ":")
	m, err := ParseMode(modeName)
	if err != nil {
		fmt.Println(err)
		return 3
	}
	if err := InstallProcess(m); err != nil {
		fmt.Println("install:", err)
		return 3
	}
	if err := ordinaryWork(); err != nil {
		fmt.Println("ordinary work:", err)
		return 3
	}
	switch kind {
	case "process":
		ppid, _, errno := unix.RawSyscall(unix.SYS_GETPPID, 0, 0, 0)
		fmt.Printf("getppid=%d errno=%d\n", int(ppid), int(errno))
	case "vcpu":
		out := make(chan string)
		go func() {
			runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
			if err := ConfineVcpuThread(); err != nil {
				out <- "confine: " + err.Error()
				return
			}
			// Goroutines started here run on threads that did not
			// inherit the vCPU filter: they may open files.
			if err := spawnOpeners(); err != nil {
				out <- "spawned: " + err.Error()
				return
			}
			_, err := os.Open(os.Args[0])
			out <- fmt.Sprintf("vcpu open: %v", err)
		}()
		fmt.Println(<-out)
		// The rest of the process still may.
		f, err := os.Open(os.Args[0])
		fmt.Printf("other open: %v\n", err)
		if f != nil {
			f.Close()
		}
	}
	return 0
}

// ordinaryWork is a sample of what the VMM does after it is confined:
// files, sockets, fd passing, goroutines on new threads, a GC.
func ordinaryWork() error {
	dir, err := os.MkdirTemp("", "seccomp")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if err := os.WriteFile(filepath.Join(dir, "f"), []byte("x"), 0o600); err != nil {
		return err
	}
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fds[0])
	defer unix.Close(fds[1])
	if err := unix.Sendmsg(fds[0], []byte{1}, unix.UnixRights(fds[0]), nil, 0); err != nil {
		return err
	}
	mfd, err := unix.MemfdCreate("ram", unix.MFD_CLOEXEC)
	if err != nil {
		return err
	}
	unix.Close(mfd)
	if err := spawnOpeners(); err != nil {
		return err
	}
	runtime.GC()
	return nil
}

// spawnOpeners opens a file from goroutines locked to threads of their
// own, which makes the runtime start threads.
func spawnOpeners() error {
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		wg.Go(func() {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			f, err := os.Open(os.Args[0])
			if err == nil {
				f.Close()
			}
			errs[i] = err
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// runChild runs the test binary as a child confined by spec.
func runChild(t *testing.T, spec string) (stdout, stderr string, code, pid int) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+spec)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	if cmd.Process != nil {
		pid = cmd.Process.Pid
	}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		code = ee.ExitCode()
	default:
		t.Fatal(err)
	}
	return o.String(), e.String(), code, pid
}

func TestForbiddenCallAnyThread(t *testing.T) {
	ppid := strconv.Itoa(os.Getpid())
	for _, tc := range []struct {
		mode     string
		wantCode int
		want     string // in stdout (or stderr when it dies)
	}{
		{"true", 2, "SIGSYS: bad system call"},
		{"errno", 0, fmt.Sprintf("getppid=-1 errno=%d", unix.EPERM)},
		{"log", 0, "getppid=" + ppid + " errno=0"},
		{"false", 0, "getppid=" + ppid + " errno=0"},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			out, errOut, code, pid := runChild(t, tc.mode+":process")
			if code != tc.wantCode || !strings.Contains(out+errOut, tc.want) {
				t.Fatalf("exit %d, want %d and %q; stdout:\n%s\nstderr:\n%s", code, tc.wantCode, tc.want, out, errOut)
			}
			if tc.mode == "log" {
				checkLogged(t, pid, unix.SYS_GETPPID)
			}
			if tc.mode == "true" && !strings.Contains(errOut, "Getppid") && !strings.Contains(errOut, "RawSyscall") {
				t.Errorf("the crash report does not show the call:\n%s", errOut)
			}
		})
	}
}

func TestForbiddenCallOnVcpuThread(t *testing.T) {
	for _, tc := range []struct {
		mode     string
		wantCode int
		want     []string
	}{
		{"true", 2, []string{"SIGSYS: bad system call"}},
		{"errno", 0, []string{"vcpu open: open " + os.Args[0] + ": operation not permitted", "other open: <nil>"}},
		{"false", 0, []string{"vcpu open: <nil>", "other open: <nil>"}},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			out, errOut, code, _ := runChild(t, tc.mode+":vcpu")
			for _, w := range tc.want {
				if code != tc.wantCode || !strings.Contains(out+errOut, w) {
					t.Fatalf("exit %d, want %d and %q; stdout:\n%s\nstderr:\n%s", code, tc.wantCode, w, out, errOut)
				}
			}
		})
	}
}

// checkLogged finds the kernel's audit record (type 1326, SECCOMP) of
// pid's call nr in the kernel log, when the test may read it (root).
func checkLogged(t *testing.T, pid int, nr int) {
	t.Helper()
	// A raw fd: os.File would wait for more records instead of
	// returning EAGAIN at the end of the log.
	fd, err := unix.Open("/dev/kmsg", unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Logf("not checking the kernel log: %v", err)
		return
	}
	defer unix.Close(fd)
	want := []string{"type=1326", fmt.Sprintf(" pid=%d ", pid), fmt.Sprintf(" syscall=%d ", nr)}
	buf := make([]byte, 8192)
	for {
		n, err := unix.Read(fd, buf) // one record per read; EAGAIN at the end
		if errors.Is(err, unix.EPIPE) {
			continue // records overwritten while reading
		}
		if err != nil || n <= 0 {
			break
		}
		rec := string(buf[:n])
		if strings.Contains(rec, want[0]) && strings.Contains(rec, want[1]) && strings.Contains(rec, want[2]) {
			return
		}
	}
	t.Errorf("no kernel log record with %q", want)
}

func TestParseMode(t *testing.T) {
	for s, want := range map[string]Mode{"true": Trap, "false": Off, "log": Log, "errno": Errno} {
		m, err := ParseMode(s)
		if err != nil || m != want || m.String() != s {
			t.Errorf("ParseMode(%q) = %v, %v", s, m, err)
		}
	}
	if _, err := ParseMode("maybe"); err == nil {
		t.Error("ParseMode(maybe) succeeded")
	}
}

// The lists only name calls the library knows for this architecture, and
// the vCPU list is a subset of the process one.
func TestProgramsAssemble(t *testing.T) {
	for _, m := range []Mode{Trap, Log, Errno} {
		for _, list := range [][]string{processList(), vcpuList()} {
			if _, err := program(m, list); err != nil {
				t.Fatalf("%v: %v", m, err)
			}
		}
	}
	proc := map[string]bool{}
	for _, n := range processList() {
		if proc[n] {
			t.Errorf("%s listed twice", n)
		}
		proc[n] = true
	}
	for _, forbidden := range []string{"execve", "execveat", "fork", "vfork", "ptrace", "mount", "init_module", "kexec_load", "bpf", "setuid"} {
		if proc[forbidden] {
			t.Errorf("%s is allowed", forbidden)
		}
	}
	for _, n := range []string{"openat", "socket", "connect", "clone", "clone3", "memfd_create", "unlinkat"} {
		for _, v := range vcpuList() {
			if v == n {
				t.Errorf("vCPU threads may call %s", n)
			}
		}
	}
}
