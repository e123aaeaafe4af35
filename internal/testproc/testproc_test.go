package testproc

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestOutputAndExit(t *testing.T) {
	p := Start(t, "sh", "-c", "echo out; echo err >&2; exit 3")
	exited, err := p.Wait(context.Background())
	var ee *exec.ExitError
	if !exited || !errors.As(err, &ee) || ee.ExitCode() != 3 {
		t.Fatalf("exited %v err %v", exited, err)
	}
	if got := p.Output(); got != "out\nerr\n" {
		t.Fatalf("output %q", got)
	}
}

func TestWaitGivesUpAndCleanupKills(t *testing.T) {
	var p *Proc
	t.Run("inner", func(t *testing.T) {
		p = Start(t, "sleep", "60")
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		if exited, _ := p.Wait(ctx); exited {
			t.Fatal("sleep 60 exited")
		}
	})
	// The inner test's cleanup killed and reaped it.
	select {
	case <-p.exited:
	default:
		t.Fatal("process still running after the test ended")
	}
}

func TestThreadNames(t *testing.T) {
	names, err := ThreadNames(os.Getpid())
	comm, cerr := os.ReadFile("/proc/self/comm")
	if err != nil || cerr != nil || len(names) == 0 || names[0] != strings.TrimSpace(string(comm)) {
		t.Fatalf("ThreadNames(self) = %q, %v; main thread comm %q, %v", names, err, comm, cerr)
	}
	if _, err := ThreadNames(-1); err == nil {
		t.Fatal("ThreadNames(-1) succeeded")
	}
}

// TestStartViaInheritsTheThreadsNamespace: a process started from a thread
// that via moved into a new UTS namespace sees that namespace's hostname,
// which is how the network tests start nimbus inside their namespace.
func TestStartViaInheritsTheThreadsNamespace(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for a new UTS namespace")
	}
	via := func(start func() error) error {
		errc := make(chan error, 1)
		go func() {
			runtime.LockOSThread() // never unlocked: the thread dies with its namespace
			if err := unix.Unshare(unix.CLONE_NEWUTS); err != nil {
				errc <- err
				return
			}
			if err := unix.Sethostname([]byte("nimbus-via")); err != nil {
				errc <- err
				return
			}
			errc <- start()
		}()
		return <-errc
	}
	p := StartVia(t, via, "hostname")
	if exited, err := p.Wait(context.Background()); !exited || err != nil {
		t.Fatalf("exited %v err %v", exited, err)
	}
	if got := strings.TrimSpace(p.Output()); got != "nimbus-via" {
		t.Fatalf("hostname in the child %q, want nimbus-via", got)
	}
	if h, _ := os.Hostname(); h == "nimbus-via" {
		t.Fatal("the test's own hostname changed")
	}
}

// TestDiagnose: a running Go program's threads are listed and its
// goroutines dumped by SIGQUIT; the process is gone afterwards.
func TestDiagnose(t *testing.T) {
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go")
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "main.go")
	// "ready" is printed from sleeper, so the dump shows sleeper's frame
	// whether it is still printing or already asleep.
	os.WriteFile(src, []byte("package main\nimport \"time\"\n//go:noinline\nfunc sleeper() { println(\"ready\"); time.Sleep(time.Hour) }\nfunc main() { sleeper() }\n"), 0o644)
	bin := filepath.Join(dir, "sleeper")
	if out, err := exec.Command(gobin, "build", "-o", bin, src).CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	p := Start(t, bin)
	for !strings.Contains(p.Output(), "ready") {
		time.Sleep(10 * time.Millisecond)
	}
	d := p.Diagnose(10 * time.Second)
	for _, want := range []string{"threads of ", "SIGQUIT", "main.sleeper"} {
		if !strings.Contains(d, want) {
			t.Errorf("diagnosis lacks %q:\n%s", want, d)
		}
	}
	// Every thread is listed with its name and a scheduler state (which
	// one, R or S, depends on the moment).
	if !regexp.MustCompile(`\n  \d+ sleeper [RSD] `).MatchString(d) {
		t.Errorf("no thread line with a state:\n%s", d)
	}
	if exited, _ := p.Wait(context.Background()); !exited {
		t.Error("still running")
	}
}
