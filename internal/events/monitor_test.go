package events

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/sys/unix"

	"github.com/nimbus-vmm/nimbus/internal/syncbuf"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeClock returns start, then start+steps[0], start+steps[1], ...
func fakeClock(steps ...time.Duration) func() time.Time {
	base := time.Unix(1_000_000, 0)
	var mu sync.Mutex
	i := -1
	return func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		i++
		if i == 0 {
			return base
		}
		return base.Add(steps[i-1])
	}
}

// The example from upstream's event_monitor output (reference §7).
const upstreamExample = `{
  "timestamp": {
    "secs": 0,
    "nanos": 4664404
  },
  "source": "virtio-device",
  "event": "activated",
  "properties": {
    "id": "__rng"
  }
}

`

func TestEventBytesMatchesUpstream(t *testing.T) {
	ev := Event{
		Timestamp:  TimestampOf(4664404 * time.Nanosecond),
		Source:     "virtio-device",
		Event:      "activated",
		Properties: map[string]string{"id": "__rng"},
	}
	if got := string(ev.Bytes()); got != upstreamExample {
		t.Fatalf("got\n%q\nwant\n%q", got, upstreamExample)
	}
}

func TestMonitorWritesSinkByteExact(t *testing.T) {
	var sink syncbuf.Buffer
	m := New(&sink, WithClock(fakeClock(4664404, 2*time.Second+7)))
	m.Emit("virtio-device", "activated", map[string]string{"id": "__rng"})
	m.Emit("vm", "booted", map[string]string{}) // empty map -> null
	m.Close()

	want := upstreamExample + `{
  "timestamp": {
    "secs": 2,
    "nanos": 7
  },
  "source": "vm",
  "event": "booted",
  "properties": null
}

`
	if got := sink.String(); got != want {
		t.Fatalf("got\n%s\nwant\n%s", got, want)
	}
	// Consumers split on a blank line (test_infra, performance-metrics).
	parts := strings.Split(strings.TrimSuffix(sink.String(), "\n\n"), "\n\n")
	if len(parts) != 2 {
		t.Fatalf("split into %d parts, want 2", len(parts))
	}
}

func TestNoHTMLEscaping(t *testing.T) {
	ev := Event{Source: "guest", Event: "panic", Properties: map[string]string{"event": "a<b>&c"}}
	if !bytes.Contains(ev.Bytes(), []byte(`"event": "a<b>&c"`)) {
		t.Fatalf("escaped: %s", ev.Bytes())
	}
}

func TestSubscribersGetEventsInOrder(t *testing.T) {
	m := New(nil, WithClock(fakeClock(1, 2, 3)))
	defer m.Close()
	ch1, cancel1 := m.Subscribe()
	defer cancel1()
	ch2, cancel2 := m.Subscribe()
	defer cancel2()

	props := map[string]string{"id": "_disk0", "bdf": "0000:00:06.0"}
	m.Emit("vm", "booting", nil)
	m.Emit("vm", "device-removed", props)
	props["id"] = "mutated" // the monitor keeps its own copy
	m.Emit("vm", "booted", nil)

	for _, ch := range []<-chan Event{ch1, ch2} {
		var names []string
		for range 3 {
			ev := <-ch
			names = append(names, ev.Source+"/"+ev.Event)
			if ev.Event == "device-removed" && ev.Properties["id"] != "_disk0" {
				t.Fatalf("properties aliased the caller's map: %v", ev.Properties)
			}
			if ev.Event == "booted" && ev.Timestamp != (Timestamp{0, 3}) {
				t.Fatalf("timestamp %+v", ev.Timestamp)
			}
		}
		if got := strings.Join(names, ","); got != "vm/booting,vm/device-removed,vm/booted" {
			t.Fatalf("got %s", got)
		}
	}
}

func TestSlowSubscriberIsDisconnectedNotBlocking(t *testing.T) {
	m := New(nil)
	defer m.Close()
	slow, cancelSlow := m.Subscribe()
	defer cancelSlow()
	fast, cancelFast := m.Subscribe()
	defer cancelFast()

	for i := 0; i < SubscriberBuffer+10; i++ {
		m.Emit("vm", "resized", nil) // must not block although nobody reads slow
		<-fast
	}
	got := 0
	for range slow {
		got++
	}
	if got != SubscriberBuffer {
		t.Fatalf("slow subscriber got %d events before disconnect, want %d", got, SubscriberBuffer)
	}
	// The fast one is still connected.
	m.Emit("vm", "paused", nil)
	if ev, ok := <-fast; !ok || ev.Event != "paused" {
		t.Fatalf("fast subscriber: %v %v", ev, ok)
	}
}

func TestCancelAndCloseCloseChannels(t *testing.T) {
	m := New(nil)
	ch, cancel := m.Subscribe()
	cancel()
	cancel() // idempotent
	if _, ok := <-ch; ok {
		t.Fatal("channel open after cancel")
	}
	ch2, cancel2 := m.Subscribe()
	m.Close()
	if _, ok := <-ch2; ok {
		t.Fatal("channel open after Close")
	}
	cancel2() // after Close: no double close
	m.Close()
	m.Emit("vm", "booted", nil) // after Close: no-op, no panic
	ch3, cancel3 := m.Subscribe()
	if _, ok := <-ch3; ok {
		t.Fatal("subscribing to a closed monitor gave an open channel")
	}
	cancel3()
}

func TestNilMonitor(t *testing.T) {
	var m *Monitor
	m.Emit("vm", "booted", nil)
	ch, cancel := m.Subscribe()
	cancel()
	if _, ok := <-ch; ok {
		t.Fatal("open channel")
	}
	m.Close()
}

// A sink whose reader never reads (a full pipe) must not block Emit, and
// Close must still write everything once the reader catches up.
func TestBlockedSinkDoesNotBlockEmit(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	m := New(w)
	// Far more than a 64 KiB pipe buffer holds.
	for range 2000 {
		m.Emit("vm", "resizing", map[string]string{"pad": strings.Repeat("x", 100)})
	}
	read := make(chan int)
	go func() {
		b, _ := io.ReadAll(r)
		read <- strings.Count(string(b), "\n\n")
	}()
	m.Close()
	w.Close()
	if got := <-read; got != 2000 {
		t.Fatalf("read %d events, want 2000", got)
	}
}

func TestSinkErrorDoesNotStopSubscribers(t *testing.T) {
	m := New(failingWriter{})
	defer m.Close()
	ch, cancel := m.Subscribe()
	defer cancel()
	m.Emit("vm", "booting", nil)
	m.Emit("vm", "booted", nil)
	<-ch
	if ev := <-ch; ev.Event != "booted" {
		t.Fatalf("got %v", ev)
	}
}

type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("broken") }

func TestOpenPathTruncates(t *testing.T) {
	p := filepath.Join(t.TempDir(), "events.json")
	if err := os.WriteFile(p, []byte("old contents that must go"), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := OpenPath(p)
	if err != nil {
		t.Fatal(err)
	}
	m := New(f, WithClock(fakeClock(0)))
	m.Emit("vmm", "starting", nil)
	m.Close()
	f.Close()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	want := "{\n  \"timestamp\": {\n    \"secs\": 0,\n    \"nanos\": 0\n  },\n  \"source\": \"vmm\",\n  \"event\": \"starting\",\n  \"properties\": null\n}\n\n"
	if string(b) != want {
		t.Fatalf("got %q", b)
	}
	if _, err := OpenPath(filepath.Join(t.TempDir(), "no", "such", "dir")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("err = %v", err)
	}
}

// blockingPipe makes a pipe with both ends blocking, as an inherited
// --event-monitor fd= is, and returns the read end (closed when the test
// ends) and the write end's fd.
func blockingPipe(t *testing.T) (*os.File, int) {
	t.Helper()
	fds := make([]int, 2)
	if err := unix.Pipe2(fds, 0); err != nil {
		t.Fatal(err)
	}
	r := os.NewFile(uintptr(fds[0]), "r")
	t.Cleanup(func() { r.Close() })
	return r, fds[1]
}

func TestOpenFd(t *testing.T) {
	r, wfd := blockingPipe(t)
	f, err := OpenFd(wfd)
	if err != nil {
		t.Fatal(err)
	}
	m := New(f)
	m.Emit("vm", "booted", nil)
	m.Close()
	f.Close()
	b, _ := io.ReadAll(r)
	if !bytes.Contains(b, []byte(`"event": "booted"`)) {
		t.Fatalf("got %q", b)
	}
	// Far above any fd this process has open.
	if _, err := OpenFd(1 << 20); !errors.Is(err, unix.EBADF) {
		t.Fatalf("err = %v", err)
	}
	if _, err := OpenFd(-1); !errors.Is(err, unix.EBADF) {
		t.Fatalf("err = %v", err)
	}
}

// fillSink emits far more than a 64 KiB pipe buffer holds.
func fillSink(m *Monitor) {
	for range 2000 {
		m.Emit("vm", "resizing", map[string]string{"pad": strings.Repeat("x", 100)})
	}
}

// A reader that never reads must not hang Close: the blocked write is
// interrupted after the close timeout and the rest of the queue dropped.
func TestCloseGivesUpOnReaderThatNeverReads(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	m := New(w, WithCloseTimeout(10*time.Millisecond))
	fillSink(m)
	m.Close() // without the deadline this never returns
	w.Close()
	b, _ := io.ReadAll(r)
	if n := strings.Count(string(b), "\n\n"); n >= 2000 {
		t.Fatalf("read %d events; the stuck reader should have lost some", n)
	}
}

// An inherited blocking pipe fd (Conch's --event-monitor fd=) gets the
// same bounded Close.
func TestOpenFdBlockingPipeNobodyReads(t *testing.T) {
	_, wfd := blockingPipe(t) // the read end stays open, unread
	f, err := OpenFd(wfd)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m := New(f, WithCloseTimeout(10*time.Millisecond))
	fillSink(m)
	m.Close()
}

// Upstream opens the sink non-blocking: a FIFO without a reader fails at
// start-up instead of blocking it forever.
// TestOpenPathFIFOWaitsForItsReader: libvirt passes a FIFO it opens for
// reading only after the VMM started. Upstream opens the path blocking, so
// the open waits for that reader instead of failing with ENXIO, and then
// makes the fd non-blocking.
func TestOpenPathFIFOWaitsForItsReader(t *testing.T) {
	p := filepath.Join(t.TempDir(), "fifo")
	if err := unix.Mkfifo(p, 0o600); err != nil {
		t.Fatal(err)
	}
	type result struct {
		f   *os.File
		err error
	}
	opened := make(chan result, 1)
	go func() {
		f, err := OpenPath(p)
		opened <- result{f, err}
	}()
	time.Sleep(50 * time.Millisecond)
	select {
	case r := <-opened:
		t.Fatalf("OpenPath returned before the FIFO had a reader: %v", r.err)
	default:
	}
	rd, err := os.OpenFile(p, os.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	r := <-opened
	if r.err != nil {
		t.Fatalf("OpenPath: %v", r.err)
	}
	defer r.f.Close()
	// Not r.f.Fd(): that would put the fd back into blocking mode.
	var fl int
	var ferr error
	rc, err := r.f.SyscallConn()
	if err == nil {
		err = rc.Control(func(fd uintptr) { fl, ferr = unix.FcntlInt(fd, unix.F_GETFL, 0) })
	}
	err = errors.Join(err, ferr)
	if err != nil || fl&unix.O_NONBLOCK == 0 {
		t.Fatalf("flags %#x (%v): the sink is not non-blocking after the open", fl, err)
	}
	if _, err := r.f.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1)
	if n, err := rd.Read(buf); n != 1 || err != nil || buf[0] != 'x' {
		t.Fatalf("reader got %q, %v", buf[:n], err)
	}
}

func TestOpenPathFIFOReaderNeverReads(t *testing.T) {
	p := filepath.Join(t.TempDir(), "fifo")
	if err := unix.Mkfifo(p, 0o600); err != nil {
		t.Fatal(err)
	}
	r, err := os.OpenFile(p, os.O_RDONLY|unix.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	f, err := OpenPath(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m := New(f, WithCloseTimeout(10*time.Millisecond))
	m.Emit("vm", "booted", nil)
	fillSink(m)
	m.Close()
	buf := make([]byte, 64)
	if n, err := r.Read(buf); err != nil || !bytes.HasPrefix(buf[:n], []byte("{\n  \"timestamp\"")) {
		t.Fatalf("read %q, %v", buf[:n], err)
	}
}
