// Package console connects guest character devices (the legacy UART, the
// debug console, later virtio-console) to the host, one backend per
// --serial / --console / --debug-console mode of Cloud Hypervisor:
// off, null, tty, file=, socket= and pty (vmm/src/console_devices.rs and
// vmm/src/serial_manager.rs upstream).
//
// Guest output enters a backend through Write on a vCPU thread, so Write
// never blocks: bytes go into a bounded ring (16 KiB, oldest dropped first,
// as upstream's SerialBuffer) that a goroutine drains to the host side.
// Host input is read by another goroutine and offered to the device through
// Input with backpressure. Close stops every goroutine and waits for it.
package console

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
)

// Mode is a console mode, spelled as upstream's ConsoleOutputMode JSON values.
type Mode string

// The modes. Socket is valid for the serial port only (upstream rejects it
// for virtio-console at create time).
const (
	ModeOff    Mode = "Off"
	ModePty    Mode = "Pty"
	ModeTty    Mode = "Tty"
	ModeFile   Mode = "File"
	ModeSocket Mode = "Socket"
	ModeNull   Mode = "Null"
)

// ErrBadMode classifies an unknown mode or a mode missing its path.
var ErrBadMode = errors.New("invalid console mode")

// Input is the guest side of host input, implemented by serial.UART.
// Enqueue takes what fits and returns the count; Writable is signalled when
// the device frees space after a short Enqueue.
type Input interface {
	Enqueue(p []byte) int
	Writable() <-chan struct{}
}

// Backend is one host endpoint of a guest console.
type Backend interface {
	// Write takes guest output; it never blocks.
	io.Writer
	// Start begins forwarding host input to in. Call it at most once, after
	// the device exists; output flows from Open on.
	Start(in Input)
	// Path is the allocated pty path (Pty mode), else "". The VMM reports it
	// in vm.info as serial.file / console.file.
	Path() string
	// Close stops the backend's goroutines, waits for them and releases
	// host resources (restoring the terminal in Tty mode).
	Close() error
}

// Options selects and configures a backend.
type Options struct {
	Mode Mode
	// Path is the output file (File) or the socket to listen on (Socket).
	Path string
	// Stdin and Stdout replace the process's for Tty mode (tests).
	Stdin  *os.File
	Stdout io.Writer
}

// Open creates the backend for opts. ModeOff returns (nil, nil): the VMM
// creates no device at all.
func Open(opts Options) (Backend, error) {
	switch opts.Mode {
	case ModeOff:
		return nil, nil
	case ModeNull:
		return Null{}, nil
	case ModeFile:
		if opts.Path == "" {
			return nil, fmt.Errorf("console mode File needs a path: %w", ErrBadMode)
		}
		return openFile(opts.Path)
	case ModeSocket:
		if opts.Path == "" {
			return nil, fmt.Errorf("console mode Socket needs a path: %w", ErrBadMode)
		}
		return openSocket(opts.Path)
	case ModePty:
		return openPty()
	case ModeTty:
		stdin, stdout := opts.Stdin, opts.Stdout
		if stdin == nil {
			stdin = os.Stdin
		}
		if stdout == nil {
			stdout = os.Stdout
		}
		return openTty(stdin, stdout)
	}
	return nil, fmt.Errorf("console mode %q: %w", opts.Mode, ErrBadMode)
}

// Null discards output and never produces input.
type Null struct{}

// Write implements Backend.
func (Null) Write(p []byte) (int, error) { return len(p), nil }

// Start implements Backend.
func (Null) Start(Input) {}

// Path implements Backend.
func (Null) Path() string { return "" }

// Close implements Backend.
func (Null) Close() error { return nil }

// OutputBufferSize bounds guest output waiting for the host side, as
// upstream's SerialBuffer MAX_BUFFER_SIZE.
const OutputBufferSize = 16 << 10

// ring is the non-blocking output buffer between a vCPU and a drainer.
type ring struct {
	mu      sync.Mutex
	buf     [OutputBufferSize]byte
	head, n int
	dropped uint64
	ready   chan struct{} // capacity 1: "there may be data"
}

func newRing() *ring { return &ring{ready: make(chan struct{}, 1)} }

// Write appends p, overwriting the oldest bytes when full.
func (r *ring) Write(p []byte) (int, error) {
	total := len(p)
	r.mu.Lock()
	if len(p) > len(r.buf) {
		r.dropped += uint64(len(p) - len(r.buf))
		p = p[len(p)-len(r.buf):]
	}
	if over := r.n + len(p) - len(r.buf); over > 0 {
		r.head = (r.head + over) % len(r.buf)
		r.n -= over
		r.dropped += uint64(over)
	}
	for len(p) > 0 {
		tail := (r.head + r.n) % len(r.buf)
		c := copy(r.buf[tail:min(len(r.buf), tail+len(p))], p)
		r.n += c
		p = p[c:]
	}
	r.mu.Unlock()
	r.kick()
	return total, nil
}

func (r *ring) kick() {
	select {
	case r.ready <- struct{}{}:
	default:
	}
}

// take moves up to len(dst) buffered bytes into dst.
func (r *ring) take(dst []byte) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	got := 0
	for got < len(dst) && r.n > 0 {
		c := copy(dst[got:], r.buf[r.head:min(len(r.buf), r.head+r.n)])
		r.head = (r.head + c) % len(r.buf)
		r.n -= c
		got += c
	}
	return got
}

// drain copies ring contents to dest() until done is closed, then makes
// one last pass. dest returning nil means "nowhere to write yet": bytes
// stay buffered (socket with no client).
func drain(r *ring, done <-chan struct{}, dest func() io.Writer) {
	var tmp [4096]byte
	flush := func() {
		for {
			w := dest()
			if w == nil {
				return
			}
			n := r.take(tmp[:])
			if n == 0 {
				return
			}
			_, _ = w.Write(tmp[:n]) // host-side loss is not the guest's problem
		}
	}
	for {
		select {
		case <-r.ready:
			flush()
		case <-done:
			flush()
			return
		}
	}
}

// pump forwards host input from src to in, waiting on in.Writable when the
// device is full, until src fails or done is closed.
func pump(src io.Reader, in Input, done <-chan struct{}) {
	var buf [1024]byte
	for {
		n, err := src.Read(buf[:])
		p := buf[:n]
		for len(p) > 0 {
			p = p[in.Enqueue(p):]
			if len(p) == 0 {
				break
			}
			select {
			case <-in.Writable():
			case <-done:
				return
			}
		}
		if err != nil {
			return
		}
		select {
		case <-done:
			return
		default:
		}
	}
}
