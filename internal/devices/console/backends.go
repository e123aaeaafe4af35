package console

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"
	"golang.org/x/term"
)

// pollable returns a non-blocking duplicate of f that Go's poller manages,
// so Close on it unblocks a goroutine parked in Read or Write. (pty.Open
// and os.Stdin hand out blocking files whose reads Close cannot interrupt.)
func pollable(f *os.File) (*os.File, error) {
	sc, err := f.SyscallConn()
	if err != nil {
		return nil, err
	}
	var fd int
	var dupErr error
	if err := sc.Control(func(raw uintptr) {
		fd, dupErr = unix.FcntlInt(raw, unix.F_DUPFD_CLOEXEC, 0)
	}); err != nil {
		return nil, err
	}
	if dupErr != nil {
		return nil, fmt.Errorf("dup %s: %w", f.Name(), dupErr)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("set %s non-blocking: %w", f.Name(), err)
	}
	return os.NewFile(uintptr(fd), f.Name()), nil
}

// reopenTerminal opens the terminal behind fd again, non-blocking, so the
// reader is poller-managed and Close can stop it. A fresh open (rather than
// a dup) gets its own file description: making it non-blocking does not
// change stdin for the rest of the process, and another package calling
// os.Stdin.Fd() (which forces blocking mode) cannot wedge our reader.
func reopenTerminal(fd int) (*os.File, error) {
	f, err := os.OpenFile(fmt.Sprintf("/proc/self/fd/%d", fd), os.O_RDONLY|unix.O_NOCTTY|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("reopen terminal: %w", err)
	}
	return f, nil
}

// worker owns the goroutines of one backend.
type worker struct {
	done      chan struct{}
	wg        sync.WaitGroup
	closeOnce sync.Once
	startOnce sync.Once
}

func newWorker() worker { return worker{done: make(chan struct{})} }

func (w *worker) goroutine(f func()) {
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		f()
	}()
}

// fileBackend writes guest output to a file (File mode); it has no input.
type fileBackend struct {
	worker
	out *ring
	f   *os.File
}

func openFile(path string) (*fileBackend, error) {
	// Upstream creates or truncates the file (File::create).
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, fmt.Errorf("console file: %w", err)
	}
	b := &fileBackend{worker: newWorker(), out: newRing(), f: f}
	b.goroutine(func() { drain(b.out, b.done, func() io.Writer { return f }) })
	return b, nil
}

func (b *fileBackend) Write(p []byte) (int, error) { return b.out.Write(p) }
func (b *fileBackend) Start(Input)                 {}
func (b *fileBackend) Path() string                { return "" }

// Close flushes buffered output to the file, then closes it.
func (b *fileBackend) Close() error {
	var err error
	b.closeOnce.Do(func() {
		close(b.done)
		b.wg.Wait()
		err = b.f.Close()
	})
	return err
}

// ttyBackend writes to the host's stdout and, when stdin is a terminal,
// puts it in raw mode and forwards keystrokes (upstream only reads stdin
// when isatty(0)).
type ttyBackend struct {
	worker
	out      *ring
	in       *os.File // pollable dup of stdin, nil when not a terminal
	stdinFd  int
	oldState *term.State
}

func openTty(stdin *os.File, stdout io.Writer) (*ttyBackend, error) {
	b := &ttyBackend{worker: newWorker(), out: newRing(), stdinFd: -1}
	if term.IsTerminal(int(stdin.Fd())) {
		fd := int(stdin.Fd())
		st, err := term.MakeRaw(fd)
		if err != nil {
			return nil, fmt.Errorf("console tty raw mode: %w", err)
		}
		in, err := reopenTerminal(fd)
		if err != nil {
			_ = term.Restore(fd, st)
			return nil, fmt.Errorf("console tty: %w", err)
		}
		b.in, b.stdinFd, b.oldState = in, fd, st
	}
	b.goroutine(func() { drain(b.out, b.done, func() io.Writer { return stdout }) })
	return b, nil
}

func (b *ttyBackend) Write(p []byte) (int, error) { return b.out.Write(p) }
func (b *ttyBackend) Path() string                { return "" }

func (b *ttyBackend) Start(in Input) {
	if b.in == nil || in == nil {
		return
	}
	b.startOnce.Do(func() { b.goroutine(func() { pump(b.in, in, b.done) }) })
}

// Close flushes output, stops the stdin reader and restores the terminal.
func (b *ttyBackend) Close() error {
	var err error
	b.closeOnce.Do(func() {
		close(b.done)
		if b.in != nil {
			err = b.in.Close()
		}
		b.wg.Wait()
		if b.oldState != nil {
			err = errors.Join(err, term.Restore(b.stdinFd, b.oldState))
		}
	})
	return err
}

// ptyBackend allocates a pseudo-terminal; the guest talks to its main side
// and the user opens Path() (e.g. with screen). The subordinate side is
// kept open in raw mode so output waits in the kernel until someone reads
// it and nothing is echoed back to the guest.
type ptyBackend struct {
	worker
	out  *ring
	main *os.File // pollable
	sub  *os.File
	path string
}

func openPty() (*ptyBackend, error) {
	m, s, err := pty.Open()
	if err != nil {
		return nil, fmt.Errorf("console pty: %w", err)
	}
	defer m.Close() // replaced by a pollable duplicate
	if _, err := term.MakeRaw(int(s.Fd())); err != nil {
		s.Close()
		return nil, fmt.Errorf("console pty raw mode: %w", err)
	}
	pm, err := pollable(m)
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("console pty: %w", err)
	}
	b := &ptyBackend{worker: newWorker(), out: newRing(), main: pm, sub: s, path: s.Name()}
	b.goroutine(func() { drain(b.out, b.done, func() io.Writer { return pm }) })
	return b, nil
}

func (b *ptyBackend) Write(p []byte) (int, error) { return b.out.Write(p) }
func (b *ptyBackend) Path() string                { return b.path }

func (b *ptyBackend) Start(in Input) {
	if in == nil {
		return
	}
	b.startOnce.Do(func() { b.goroutine(func() { pump(b.main, in, b.done) }) })
}

func (b *ptyBackend) Close() error {
	var err error
	b.closeOnce.Do(func() {
		close(b.done)
		err = b.main.Close() // unblocks the drainer and the reader
		b.wg.Wait()
		err = errors.Join(err, b.sub.Close())
	})
	return err
}

// socketBackend serves a Unix socket: one client at a time gets guest
// output and sends input; a new connection replaces the previous one, as
// upstream's serial manager does. Output produced while no client is
// connected stays in the ring (latest 16 KiB) and goes to the next client.
type socketBackend struct {
	worker
	out  *ring
	ln   *net.UnixListener
	path string

	mu      sync.Mutex
	client  *net.UnixConn
	in      Input
	started chan struct{} // closed by Start
}

func openSocket(path string) (*socketBackend, error) {
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("console socket: %w", err)
	}
	b := &socketBackend{worker: newWorker(), out: newRing(), ln: ln, path: path, started: make(chan struct{})}
	b.goroutine(b.acceptLoop)
	b.goroutine(func() { drain(b.out, b.done, b.dest) })
	return b, nil
}

func (b *socketBackend) dest() io.Writer {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.client == nil {
		return nil
	}
	return b.client
}

func (b *socketBackend) acceptLoop() {
	for {
		c, err := b.ln.AcceptUnix()
		if err != nil {
			return // listener closed
		}
		b.mu.Lock()
		if b.client != nil {
			b.client.Close() // its reader goroutine exits on the error
		}
		b.client = c
		b.mu.Unlock()
		b.out.kick() // send what was buffered while nobody listened
		b.goroutine(func() { b.serve(c) })
	}
}

func (b *socketBackend) serve(c *net.UnixConn) {
	select {
	case <-b.started:
	case <-b.done:
		return
	}
	pump(c, b.in, b.done)
	b.mu.Lock()
	if b.client == c {
		b.client = nil
	}
	b.mu.Unlock()
	c.Close()
}

func (b *socketBackend) Write(p []byte) (int, error) { return b.out.Write(p) }
func (b *socketBackend) Path() string                { return "" }

func (b *socketBackend) Start(in Input) {
	if in == nil {
		return
	}
	b.startOnce.Do(func() {
		b.in = in
		close(b.started)
	})
}

func (b *socketBackend) Close() error {
	var err error
	b.closeOnce.Do(func() {
		close(b.done)
		err = b.ln.Close() // also removes the socket file
		b.mu.Lock()
		if b.client != nil {
			b.client.Close()
		}
		b.mu.Unlock()
		b.wg.Wait()
	})
	return err
}
