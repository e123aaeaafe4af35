package migration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestWireFormat(t *testing.T) {
	b, _ := Request{Command: CmdMemory, Length: 0x20}.MarshalBinary()
	if want := []byte{4, 0, 0, 0, 0, 0, 0, 0, 0x20, 0, 0, 0, 0, 0, 0, 0}; !bytes.Equal(b, want) {
		t.Errorf("Memory request % x, want % x", b, want)
	}
	b, _ = Response{Status: StatusError}.MarshalBinary()
	if want := []byte{2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}; !bytes.Equal(b, want) {
		t.Errorf("Error response % x, want % x", b, want)
	}
	var r Request
	if err := r.UnmarshalBinary(make([]byte, 16)); !errors.Is(err, ErrProtocol) {
		t.Errorf("command 0: %v", err)
	}
	table := EncodeRanges([]Range{{GPA: 0x1000, Length: 0x2000}})
	if want := []byte{0, 0x10, 0, 0, 0, 0, 0, 0, 0, 0x20, 0, 0, 0, 0, 0, 0}; !bytes.Equal(table, want) {
		t.Errorf("range table % x, want % x", table, want)
	}
	for _, c := range []struct{ url, network, addr string }{
		{"unix:/tmp/m.sock", "unix", "/tmp/m.sock"}, {"tcp:127.0.0.1:6000", "tcp", "127.0.0.1:6000"}, {"tcp:[::1]:6000", "tcp", "[::1]:6000"},
	} {
		if n, a, err := Endpoint(c.url); err != nil || n != c.network || a != c.addr {
			t.Errorf("Endpoint(%q) = %q %q %v", c.url, n, a, err)
		}
	}
	for _, bad := range []string{"unix:", "tcp:host", "file:///x", "http://x:1"} {
		if _, _, err := Endpoint(bad); !errors.Is(err, ErrURL) {
			t.Errorf("Endpoint(%q): %v", bad, err)
		}
	}
}

// ram is guest RAM as two ranges at 0 and 1 MiB.
type ram map[uint64][]byte

func newRAM() ram { return ram{0: make([]byte, 64<<10), 1 << 20: make([]byte, 64<<10)} }

func (r ram) Slice(gpa, n uint64) ([]byte, error) {
	for base, b := range r {
		if gpa >= base && gpa+n <= base+uint64(len(b)) {
			return b[gpa-base : gpa-base+n], nil
		}
	}
	return nil, fmt.Errorf("no RAM at %#x+%#x", gpa, n)
}

// source writes to its RAM in the first dirty rounds, as a running guest.
type source struct {
	ram           ram
	rounds        [][]Range // what DirtyRanges(false) returns, in turn
	final         []Range
	logging       bool
	paused        bool
	pausedAtRound int
	calls         int
}

func (s *source) RAM() ([]Range, error) {
	return []Range{{0, 64 << 10}, {1 << 20, 64 << 10}}, nil
}
func (s *source) Slice(gpa, n uint64) ([]byte, error) { return s.ram.Slice(gpa, n) }
func (s *source) StartDirtyLog() error                { s.logging = true; return nil }
func (s *source) StopDirtyLog() error                 { s.logging = false; return nil }
func (s *source) DirtyRanges(final bool) ([]Range, error) {
	if final {
		return s.final, nil
	}
	s.calls++
	if len(s.rounds) == 0 {
		return nil, nil
	}
	r := s.rounds[0]
	s.rounds = s.rounds[1:]
	for _, rg := range r {
		b, _ := s.ram.Slice(rg.GPA, rg.Length)
		for i := range b {
			b[i] = byte(s.calls)
		}
	}
	return r, nil
}
func (s *source) Pause() error           { s.paused = true; return nil }
func (s *source) State() ([]byte, error) { return []byte(`{"state":1}`), nil }

type target struct {
	ram     ram
	config  []byte
	state   []byte
	resumed bool
	failCfg error
}

func (t *target) Configure(c []byte) (RAM, error) { t.config = c; return t.ram, t.failCfg }
func (t *target) MemoryFd(slot uint32, f *os.File) error {
	// Map the source's RAM: what a local migration's destination does.
	b, err := unix.Mmap(int(f.Fd()), 0, 64<<10, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return err
	}
	t.ram[uint64(slot)<<20] = b
	return nil
}
func (t *target) Restore(s []byte) error     { t.state = s; return nil }
func (t *target) Complete(resume bool) error { t.resumed = resume; return nil }

func run(t *testing.T, src *source, dst *target, opts SendOptions) (Stats, error, error) {
	t.Helper()
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	recv := make(chan error, 1)
	go func() { recv <- Receive(b, dst) }()
	st, err := Send(a, []byte(`{"vm_config":{}}`), src, opts)
	a.Close()
	select {
	case rerr := <-recv:
		return st, err, rerr
	case <-time.After(10 * time.Second):
		t.Fatal("the receiver did not finish")
	}
	return st, err, nil
}

// TestSendReceive: precopy rounds go on while memory is dirtied, the last
// round and the state go with the source paused, and the destination's
// RAM equals the source's.
func TestSendReceive(t *testing.T) {
	src := &source{ram: newRAM(), final: []Range{{0x3000, 0x1000}}}
	for i := range src.ram[0] {
		src.ram[0][i] = byte(i)
	}
	// Two rounds with dirty memory (far too much for a zero downtime),
	// then none: the loop converges.
	src.rounds = [][]Range{{{0x1000, 0x2000}, {1<<20 + 0x4000, 0x1000}}, {{0x2000, 0x1000}}}
	dst := &target{ram: newRAM()}
	var iters []int
	st, err, rerr := run(t, src, dst, SendOptions{Timeout: time.Minute, Iteration: func(n int) { iters = append(iters, n) }})
	if err != nil || rerr != nil {
		t.Fatalf("send: %v, receive: %v", err, rerr)
	}
	if !src.paused || string(dst.state) != `{"state":1}` || string(dst.config) != `{"vm_config":{}}` || !dst.resumed {
		t.Fatalf("paused %v state %q config %q resumed %v", src.paused, dst.state, dst.config, dst.resumed)
	}
	for base := range src.ram {
		if !bytes.Equal(src.ram[base], dst.ram[base]) {
			t.Errorf("RAM at %#x differs", base)
		}
	}
	if !slices.Equal(iters, []int{0, 1, 2}) || st.Rounds != 4 || st.LastBytes != 0x1000 {
		t.Errorf("rounds %v, stats %+v", iters, st)
	}
}

// TestSendTimeout: a guest dirtying faster than it converges fails the
// migration at the timeout (cancel), or goes to the last round (ignore).
func TestSendTimeout(t *testing.T) {
	busy := func() *source {
		s := &source{ram: newRAM()}
		for range 1000 {
			s.rounds = append(s.rounds, []Range{{0, 64 << 10}})
		}
		return s
	}
	_, err, rerr := run(t, busy(), &target{ram: newRAM()}, SendOptions{Timeout: 0})
	if err == nil || !errors.Is(rerr, ErrAbandoned) {
		t.Fatalf("cancel at timeout: send %v, receive %v", err, rerr)
	}
	dst := &target{ram: newRAM()}
	_, err, rerr = run(t, busy(), dst, SendOptions{Timeout: 0, IgnoreTimeout: true, WasPaused: true})
	if err != nil || rerr != nil || dst.resumed {
		t.Fatalf("ignore at timeout: send %v, receive %v, resumed %v", err, rerr, dst.resumed)
	}
}

// TestDestinationRefuses: a Config the destination cannot build fails both
// ends.
func TestDestinationRefuses(t *testing.T) {
	_, err, rerr := run(t, &source{ram: newRAM()}, &target{ram: newRAM(), failCfg: errors.New("bad config")}, SendOptions{Timeout: time.Minute})
	if !errors.Is(err, ErrRefused) || rerr == nil {
		t.Fatalf("send %v, receive %v", err, rerr)
	}
}

// TestLocalMigration: over a Unix socket, guest RAM goes as memfds
// (MemoryFd with SCM_RIGHTS) and no memory round is sent; the destination
// maps the very same memory.
func TestLocalMigration(t *testing.T) {
	src := &source{ram: ram{}}
	var fds []int
	for slot := range 2 {
		fd, err := unix.MemfdCreate("ram", unix.MFD_CLOEXEC)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { unix.Close(fd) })
		unix.Ftruncate(fd, 64<<10)
		b, err := unix.Mmap(fd, 0, 64<<10, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
		if err != nil {
			t.Fatal(err)
		}
		copy(b, fmt.Sprintf("slot %d", slot))
		src.ram[uint64(slot)<<20] = b
		fds = append(fds, fd)
	}
	sock := filepath.Join(t.TempDir(), "m.sock")
	ln, err := Listen("unix:" + sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	dst := &target{ram: ram{}}
	recv := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			recv <- err
			return
		}
		defer c.Close()
		recv <- Receive(c, dst)
	}()
	conn, err := Dial(context.Background(), "unix:"+sock)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	st, err := Send(conn, []byte(`{}`), src, SendOptions{MemoryFDs: fds, Timeout: time.Minute})
	if err != nil || <-recv != nil {
		t.Fatalf("local migration: %v", err)
	}
	if st.Bytes != 0 || src.logging || !src.paused {
		t.Errorf("stats %+v, dirty log %v, paused %v", st, src.logging, src.paused)
	}
	copy(src.ram[1<<20][8:], "written after")
	if got := string(dst.ram[1<<20][:21]); got != "slot 1\x00\x00written after" {
		t.Errorf("destination sees %q: not the same memory", got)
	}
}

func TestMerge(t *testing.T) {
	got := merge([]Range{{0x3000, 0x1000}, {0, 0x1000}}, []Range{{0x3800, 0x1000}, {0x1000, 0x1000}})
	want := []Range{{0, 0x1000}, {0x1000, 0x1000}, {0x3000, 0x1800}}
	if !slices.Equal(got, want) {
		t.Fatalf("merge = %v, want %v", got, want)
	}
}

// A peer that announces a large payload and sends little makes the
// receiver hold only what arrived (found by fuzzing: it allocated the
// announced 256 MiB up front).
func TestPayloadGrowsAsItArrives(t *testing.T) {
	b, err := readPayload(bytes.NewReader([]byte("0123456789")), Request{Command: CmdState, Length: maxPayload})
	if !errors.Is(err, io.ErrUnexpectedEOF) || string(b) != "0123456789" || cap(b) > 1<<20 {
		t.Fatalf("got %d bytes (cap %d), %v", len(b), cap(b), err)
	}
	b, err = readPayload(bytes.NewReader([]byte("abc")), Request{Command: CmdState, Length: 3})
	if err != nil || string(b) != "abc" {
		t.Fatalf("got %q, %v", b, err)
	}
}
