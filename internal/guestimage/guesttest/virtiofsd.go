package guesttest

import (
	"bytes"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nimbus-vmm/nimbus/internal/sandbox"
)

// Virtiofsd is a running Debian virtiofsd sharing one directory on one
// socket. It serves one front end and exits when that one hangs up.
type Virtiofsd struct {
	Sock, Dir string
	cmd       *exec.Cmd
	mu        sync.Mutex
	out       bytes.Buffer
	done      chan struct{}
}

func (v *Virtiofsd) Write(p []byte) (int, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.out.Write(p)
}

// Done is closed when the daemon has exited.
func (v *Virtiofsd) Done() <-chan struct{} { return v.done }

// StartVirtiofsd runs $NIMBUS_VIRTIOFSD (the C daemon of bookworm's QEMU
// 7.2, or the Rust one of Debian's virtiofsd package) sharing dir on sock
// with no caching, and waits for the socket. It skips without one, or
// fails where the sandbox promised one; the test's cleanup kills it.
func StartVirtiofsd(t testing.TB, sock, dir string) *Virtiofsd {
	t.Helper()
	bin := os.Getenv(sandbox.EnvVirtiofsd)
	if bin == "" {
		if sandbox.RequireKVM() {
			t.Fatalf("%s unset: the sandbox ships Debian's virtiofsd (see its log for why not)", sandbox.EnvVirtiofsd)
		}
		t.Skipf("%s unset (run under nimbus-sandbox)", sandbox.EnvVirtiofsd)
	}
	ver, _ := exec.Command(bin, "--version").CombinedOutput()
	// The C daemon takes -o options; the Rust one its own flags.
	args := []string{"--socket-path=" + sock, "-o", "source=" + dir, "-o", "cache=none", "-o", "sandbox=chroot"}
	if !strings.Contains(string(ver), "virtiofsd version") {
		args = []string{"--socket-path=" + sock, "--shared-dir=" + dir, "--cache=never", "--sandbox=chroot"}
	}
	v := &Virtiofsd{Sock: sock, Dir: dir, cmd: exec.Command(bin, args...), done: make(chan struct{})}
	v.cmd.Stdout, v.cmd.Stderr = v, v
	if err := v.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { v.cmd.Wait(); close(v.done) }()
	t.Cleanup(func() {
		v.cmd.Process.Kill()
		<-v.done
		if t.Failed() {
			v.mu.Lock()
			t.Logf("virtiofsd %s (%s):\n%s", sock, strings.TrimSpace(string(ver)), v.out.String())
			v.mu.Unlock()
		}
	})
	WaitSocket(t, "virtiofsd", sock, v.done, func() string {
		v.mu.Lock()
		defer v.mu.Unlock()
		return v.out.String()
	})
	return v
}

// WaitSocket waits up to 30 s for a helper daemon (what) to create sock,
// failing early when exited is closed; out is its output for the message.
func WaitSocket(t testing.TB, what, sock string, exited <-chan struct{}, out func() string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat(sock); err == nil {
			return
		}
		select {
		case <-exited:
			t.Fatalf("%s exited before creating %s:\n%s", what, sock, out())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never created %s:\n%s", what, sock, out())
		}
		time.Sleep(50 * time.Millisecond)
	}
}
