package console

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/creack/pty"
	"go.uber.org/goleak"
	"golang.org/x/sys/unix"
	"golang.org/x/term"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeInput is a device FIFO with a small capacity, like serial.UART.
type fakeInput struct {
	mu      sync.Mutex
	buf     []byte
	cap     int
	space   chan struct{}
	arrived chan struct{}
}

func newFakeInput(capacity int) *fakeInput {
	return &fakeInput{cap: capacity, space: make(chan struct{}, 1), arrived: make(chan struct{}, 1)}
}

func (f *fakeInput) Enqueue(p []byte) int {
	f.mu.Lock()
	n := min(len(p), f.cap-len(f.buf))
	f.buf = append(f.buf, p[:n]...)
	f.mu.Unlock()
	if n > 0 {
		select {
		case f.arrived <- struct{}{}:
		default:
		}
	}
	return n
}

func (f *fakeInput) Writable() <-chan struct{} { return f.space }

// drainAll plays the guest reading its FIFO.
func (f *fakeInput) drainAll() []byte {
	f.mu.Lock()
	b := f.buf
	f.buf = nil
	f.mu.Unlock()
	select {
	case f.space <- struct{}{}:
	default:
	}
	return b
}

// hangGuard bounds waits for goroutines so a bug fails instead of hanging;
// it is not a performance assertion.
const hangGuard = 10 * time.Second

// collect reads from the fake guest until it has want.
func (f *fakeInput) collect(t *testing.T, want string) {
	t.Helper()
	var got []byte
	deadline := time.After(hangGuard)
	for string(got) != want {
		got = append(got, f.drainAll()...)
		if len(got) >= len(want) {
			break
		}
		select {
		case <-f.arrived:
		case <-deadline:
			t.Fatalf("guest input = %q, want %q", got, want)
		}
	}
	if string(got) != want {
		t.Fatalf("guest input = %q, want %q", got, want)
	}
}

func readFull(t *testing.T, r io.Reader, n int) string {
	t.Helper()
	buf := make([]byte, n)
	done := make(chan error, 1)
	go func() { _, err := io.ReadFull(r, buf); done <- err }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("read: %v", err)
		}
	case <-time.After(hangGuard):
		t.Fatalf("read of %d bytes hung", n)
	}
	return string(buf)
}

func TestRingDropsOldest(t *testing.T) {
	r := newRing()
	big := make([]byte, OutputBufferSize+100)
	for i := range big {
		big[i] = byte(i)
	}
	r.Write(big[:10])
	r.Write(big[10:])
	got := make([]byte, 2*OutputBufferSize)
	n := r.take(got)
	if n != OutputBufferSize || !bytes.Equal(got[:n], big[100:]) {
		t.Fatalf("took %d bytes, content matches: %v", n, bytes.Equal(got[:n], big[100:]))
	}
	if r.dropped != 100 {
		t.Errorf("dropped = %d", r.dropped)
	}
	r.Write(big) // one write larger than the ring
	n = r.take(got)
	if n != OutputBufferSize || !bytes.Equal(got[:n], big[100:]) || r.dropped != 200 {
		t.Errorf("oversized write: n=%d dropped=%d", n, r.dropped)
	}
}

func TestRingWriteAllocationFree(t *testing.T) {
	r := newRing()
	b := []byte{'x'}
	if a := testing.AllocsPerRun(100, func() { r.Write(b) }); a != 0 {
		t.Errorf("ring write allocates %.1f", a)
	}
}

func TestOpenModes(t *testing.T) {
	if b, err := Open(Options{Mode: ModeOff}); b != nil || err != nil {
		t.Errorf("Off = %v, %v", b, err)
	}
	for _, o := range []Options{{Mode: "Serial"}, {Mode: ModeFile}, {Mode: ModeSocket}} {
		if _, err := Open(o); !errors.Is(err, ErrBadMode) {
			t.Errorf("Open(%+v) = %v, want ErrBadMode", o, err)
		}
	}
	n, err := Open(Options{Mode: ModeNull})
	if err != nil {
		t.Fatal(err)
	}
	if c, err := n.Write([]byte("gone")); c != 4 || err != nil {
		t.Errorf("null write = %d, %v", c, err)
	}
	n.Start(newFakeInput(1))
	if n.Path() != "" || n.Close() != nil {
		t.Error("null path/close")
	}
}

func TestFileBackend(t *testing.T) {
	path := filepath.Join(t.TempDir(), "serial.log")
	if err := os.WriteFile(path, []byte("old contents"), 0o600); err != nil {
		t.Fatal(err)
	}
	b, err := Open(Options{Mode: ModeFile, Path: path})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []byte("Linux version 6.x\r\n") {
		b.Write([]byte{c})
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(path)
	if string(got) != "Linux version 6.x\r\n" {
		t.Errorf("file = %q", got)
	}
	if err := b.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := Open(Options{Mode: ModeFile, Path: filepath.Join(t.TempDir(), "no", "dir")}); err == nil {
		t.Error("file in a missing directory opened")
	}
}

func TestPtyBackend(t *testing.T) {
	b, err := Open(Options{Mode: ModePty})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if b.Path() == "" {
		t.Fatal("no pty path")
	}
	in := newFakeInput(3) // smaller than the message: exercises backpressure
	b.Start(in)
	b.Write([]byte("login: ")) // before anyone opened the path

	user, err := os.OpenFile(b.Path(), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer user.Close()
	if got := readFull(t, user, 7); got != "login: " {
		t.Errorf("user read %q", got)
	}
	if _, err := user.Write([]byte("root\n")); err != nil {
		t.Fatal(err)
	}
	in.collect(t, "root\n") // raw mode: no echo, no CR/LF mangling
	b.Write([]byte("\r\n# "))
	if got := readFull(t, user, 4); got != "\r\n# " {
		t.Errorf("user read %q", got)
	}
	if err := b.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
}

func TestSocketBackend(t *testing.T) {
	path := filepath.Join(t.TempDir(), "serial.sock")
	b, err := Open(Options{Mode: ModeSocket, Path: path})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Open(Options{Mode: ModeSocket, Path: path}); err == nil {
		t.Error("second listener on the same path")
	}
	in := newFakeInput(2)
	b.Start(in)
	b.Write([]byte("early ")) // no client yet: kept for the first one

	c1, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c1.Close()
	if got := readFull(t, c1, 6); got != "early " {
		t.Errorf("client 1 got %q", got)
	}
	c1.Write([]byte("ping"))
	in.collect(t, "ping")
	b.Write([]byte("pong"))
	if got := readFull(t, c1, 4); got != "pong" {
		t.Errorf("client 1 got %q", got)
	}

	// A second client replaces the first, which sees EOF.
	c2, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	eof := make(chan error, 1)
	go func() { _, err := c1.Read(make([]byte, 1)); eof <- err }()
	select {
	case err := <-eof:
		if err == nil {
			t.Error("client 1 still connected")
		}
	case <-time.After(hangGuard):
		t.Fatal("client 1 not disconnected")
	}
	b.Write([]byte("two"))
	if got := readFull(t, c2, 3); got != "two" {
		t.Errorf("client 2 got %q", got)
	}
	c2.Write([]byte("x"))
	in.collect(t, "x")

	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("socket file left behind: %v", err)
	}
}

func TestTtyBackendRawModeRestored(t *testing.T) {
	m, s, err := pty.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	defer s.Close()
	before, err := unix.IoctlGetTermios(int(s.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	var outMu sync.Mutex
	b, err := Open(Options{Mode: ModeTty, Stdin: s, Stdout: lockedWriter{&outMu, &out}})
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := unix.IoctlGetTermios(int(s.Fd()), unix.TCGETS)
	if raw.Lflag&(unix.ICANON|unix.ECHO) != 0 {
		t.Error("stdin not in raw mode")
	}
	in := newFakeInput(64)
	b.Start(in)
	m.Write([]byte("ls\r"))
	in.collect(t, "ls\r")
	b.Write([]byte("bin\r\n"))
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	outMu.Lock()
	if out.String() != "bin\r\n" {
		t.Errorf("stdout = %q", out.String())
	}
	outMu.Unlock()
	after, _ := unix.IoctlGetTermios(int(s.Fd()), unix.TCGETS)
	if after.Lflag != before.Lflag || after.Iflag != before.Iflag || after.Oflag != before.Oflag {
		t.Error("terminal not restored")
	}
	if !term.IsTerminal(int(s.Fd())) {
		t.Error("stdin lost")
	}
}

func TestTtyBackendNotATerminal(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	var out bytes.Buffer
	var mu sync.Mutex
	b, err := Open(Options{Mode: ModeTty, Stdin: r, Stdout: lockedWriter{&mu, &out}})
	if err != nil {
		t.Fatal(err)
	}
	b.Start(newFakeInput(8)) // no input forwarding from a non-terminal, as upstream
	b.Write([]byte("ok"))
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if out.String() != "ok" {
		t.Errorf("stdout = %q", out.String())
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func TestPumpBackpressure(t *testing.T) {
	in := newFakeInput(1)
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		pump(bytes.NewReader([]byte("abcdef")), in, done)
	}()
	in.collect(t, "abcdef")
	<-finished
	// A pump blocked on a full device stops when done closes.
	full := newFakeInput(0)
	finished = make(chan struct{})
	go func() {
		defer close(finished)
		pump(bytes.NewReader([]byte("z")), full, done)
	}()
	close(done)
	<-finished
}

func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc/self/fd")
	}
	return len(ents)
}

func TestBackendsReleaseFDs(t *testing.T) {
	dir := t.TempDir()
	before := openFDs(t)
	for i := 0; i < 5; i++ {
		for _, o := range []Options{
			{Mode: ModePty},
			{Mode: ModeSocket, Path: filepath.Join(dir, "s.sock")},
			{Mode: ModeFile, Path: filepath.Join(dir, "f.log")},
		} {
			b, err := Open(o)
			if err != nil {
				t.Fatal(err)
			}
			b.Start(newFakeInput(4))
			b.Write([]byte("x"))
			if err := b.Close(); err != nil {
				t.Fatal(err)
			}
		}
	}
	if after := openFDs(t); after != before {
		t.Errorf("open fds %d -> %d", before, after)
	}
}
