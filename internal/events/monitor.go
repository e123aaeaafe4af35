package events

import (
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// SubscriberBuffer is how many events a subscriber may fall behind before
// it is disconnected. Emit never blocks on a subscriber: when a
// subscriber's buffer is full its channel is closed (rather than events
// silently dropped), so a stream reader sees the end of the stream and can
// reconnect instead of missing, say, "vm booted" without noticing.
const SubscriberBuffer = 256

// DefaultCloseTimeout is how long Close waits for the sink writer to flush
// the queued events before it gives up on a reader that does not read.
const DefaultCloseTimeout = time.Second

// Monitor fans events out to an optional sink (the --event-monitor file or
// fd) and to any number of subscribers (the API event stream).
//
// The sink is written by one goroutine owned by the Monitor, so a slow
// reader of an event-monitor fd never blocks the VMM; like upstream's
// unbounded flume channel, the queue to the sink is unbounded so the file
// gets every event (events are rare, a few per lifecycle change).
//
// Close is bounded (see WithCloseTimeout): a reader that stops reading
// the event-monitor pipe must not hang VMM shutdown.
//
// A nil *Monitor is valid and discards everything, so components can emit
// unconditionally.
type Monitor struct {
	start        time.Time
	now          func() time.Time
	logger       *slog.Logger
	closeTimeout time.Duration

	mu      sync.Mutex
	closed  bool
	queue   [][]byte      // encoded events waiting for the sink writer
	wake    chan struct{} // 1-buffered: the writer has work or must stop
	subs    map[*subscriber]struct{}
	done    chan struct{} // closed when the writer goroutine has returned
	sink    io.Writer
	sinkErr error
}

type subscriber struct {
	ch     chan Event
	closed bool // guarded by Monitor.mu
}

// Option configures a Monitor.
type Option func(*Monitor)

// WithLogger logs every event at info level as upstream does
// ("Event: source = X event = Y k = v") and reports sink write errors.
func WithLogger(l *slog.Logger) Option { return func(m *Monitor) { m.logger = l } }

// WithClock replaces time.Now (tests use it for byte-exact timestamps).
// The monitor's start is the clock's first reading, taken in New.
func WithClock(now func() time.Time) Option { return func(m *Monitor) { m.now = now } }

// WithCloseTimeout replaces DefaultCloseTimeout.
func WithCloseTimeout(d time.Duration) Option { return func(m *Monitor) { m.closeTimeout = d } }

// deadliner is a sink whose blocked Write can be interrupted; *os.File
// for a pipe, FIFO or socket opened by OpenPath or OpenFd is one.
type deadliner interface{ SetWriteDeadline(time.Time) error }

// New starts a monitor that writes every event to w (nil: subscribers
// only). The caller keeps ownership of w and closes it after Close.
func New(w io.Writer, opts ...Option) *Monitor {
	m := &Monitor{
		now:          time.Now,
		closeTimeout: DefaultCloseTimeout,
		wake:         make(chan struct{}, 1),
		subs:         make(map[*subscriber]struct{}),
		done:         make(chan struct{}),
		sink:         w,
	}
	for _, o := range opts {
		o(m)
	}
	m.start = m.now()
	if w == nil {
		close(m.done)
	} else {
		go m.writer()
	}
	return m
}

// OpenPath opens the --event-monitor path=<p> sink as upstream does:
// created or truncated and write-only, opened blocking, then switched to
// non-blocking. Opened blocking, a FIFO without a reader waits for one:
// libvirt creates the FIFO, starts the VMM and only then opens its end.
// Non-blocking afterwards, the pipe joins Go's poller, so its writes
// honour the deadline Close sets.
func OpenPath(path string) (*os.File, error) {
	fd, err := unix.Open(path, unix.O_WRONLY|unix.O_CREAT|unix.O_TRUNC|unix.O_CLOEXEC, 0o666)
	if err != nil {
		return nil, fmt.Errorf("cannot open event monitor file: %w", &os.PathError{Op: "open", Path: path, Err: err})
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("cannot open event monitor file: %w", &os.PathError{Op: "fcntl", Path: path, Err: err})
	}
	// NewFile sees O_NONBLOCK and makes the file pollable.
	return os.NewFile(uintptr(fd), path), nil
}

// OpenFd adopts the inherited --event-monitor fd=<n> sink, checking that
// the descriptor is open so a wrong number fails at start-up. The fd is
// switched to non-blocking so that a pipe or socket joins Go's poller and
// Close can interrupt a write its reader never takes (the flag lives on
// the open file description, which the parent only reads from).
func OpenFd(fd int) (*os.File, error) {
	if fd < 0 {
		return nil, fmt.Errorf("invalid event monitor fd %d: %w", fd, unix.EBADF)
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != nil {
		return nil, fmt.Errorf("invalid event monitor fd %d: %w", fd, err)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		return nil, fmt.Errorf("invalid event monitor fd %d: %w", fd, err)
	}
	unix.CloseOnExec(fd)
	return os.NewFile(uintptr(fd), fmt.Sprintf("event-monitor-fd-%d", fd)), nil
}

// Emit records one event. It never blocks on the sink or on subscribers.
// Empty props become "properties": null. Emit after Close is a no-op.
func (m *Monitor) Emit(source, event string, props map[string]string) {
	if m == nil {
		return
	}
	if len(props) == 0 {
		props = nil
	} else {
		// Subscribers get their own copy; the caller may reuse its map.
		props = maps.Clone(props)
	}

	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return
	}
	// Stamped under the lock so the stream's timestamps never go backwards.
	ev := Event{
		Timestamp:  TimestampOf(m.now().Sub(m.start)),
		Source:     source,
		Event:      event,
		Properties: props,
	}
	if m.sink != nil {
		m.queue = append(m.queue, ev.Bytes())
		select {
		case m.wake <- struct{}{}:
		default:
		}
	}
	for s := range m.subs {
		select {
		case s.ch <- ev:
		default:
			m.dropLocked(s)
		}
	}
	m.mu.Unlock()

	if m.logger != nil {
		m.logger.Info(logLine(ev))
	}
}

func logLine(ev Event) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Event: source = %s event = %s", ev.Source, ev.Event)
	for _, k := range slices.Sorted(maps.Keys(ev.Properties)) {
		fmt.Fprintf(&b, " %s = %s", k, ev.Properties[k])
	}
	return b.String()
}

// Subscribe returns a channel receiving every event emitted from now on,
// and a cancel func (idempotent) that unsubscribes and closes the channel.
// The channel is also closed when the subscriber falls SubscriberBuffer
// events behind (see SubscriberBuffer) and when the monitor is closed.
func (m *Monitor) Subscribe() (<-chan Event, func()) {
	s := &subscriber{ch: make(chan Event, SubscriberBuffer)}
	if m == nil {
		var once sync.Once
		return s.ch, func() { once.Do(func() { close(s.ch) }) }
	}
	m.mu.Lock()
	if m.closed {
		close(s.ch)
		s.closed = true
	} else {
		m.subs[s] = struct{}{}
	}
	m.mu.Unlock()
	return s.ch, func() {
		m.mu.Lock()
		m.dropLocked(s)
		m.mu.Unlock()
	}
}

func (m *Monitor) dropLocked(s *subscriber) {
	if s.closed {
		return
	}
	s.closed = true
	delete(m.subs, s)
	close(s.ch)
}

// Close stops accepting events, writes the ones already emitted to the
// sink, closes every subscriber channel and waits for the writer goroutine
// to return. It does not close the sink. Safe to call more than once.
//
// If the sink has not taken the queued events within the close timeout
// and supports write deadlines, Close interrupts the blocked write and
// drops the events still queued (a reader that stopped reading loses
// them; shutdown does not hang). A sink without deadlines (a regular
// file, a plain io.Writer) is waited for.
func (m *Monitor) Close() {
	if m == nil {
		return
	}
	m.mu.Lock()
	if !m.closed {
		m.closed = true
		for s := range m.subs {
			m.dropLocked(s)
		}
		select {
		case m.wake <- struct{}{}:
		default:
		}
	}
	m.mu.Unlock()

	timer := time.NewTimer(m.closeTimeout)
	defer timer.Stop()
	select {
	case <-m.done:
		return
	case <-timer.C:
	}
	if d, ok := m.sink.(deadliner); ok {
		// A deadline in the past fails the blocked Write and every later
		// one, so the writer marks the sink broken and skips the rest.
		if err := d.SetWriteDeadline(time.Unix(1, 0)); err != nil && m.logger != nil {
			m.logger.Warn("event monitor: cannot interrupt the event sink; waiting for its reader", "err", err)
		}
	}
	<-m.done
}

// writer is the sink goroutine: it drains the queue, one Write per event
// so a reader of a pipe or socket never sees half an event.
func (m *Monitor) writer() {
	defer close(m.done)
	for range m.wake {
		for {
			m.mu.Lock()
			if len(m.queue) == 0 {
				closed := m.closed
				m.mu.Unlock()
				if closed {
					return
				}
				break
			}
			batch := m.queue
			m.queue = nil
			m.mu.Unlock()
			for _, b := range batch {
				m.write(b)
			}
		}
	}
}

func (m *Monitor) write(b []byte) {
	if m.sinkErr != nil {
		return // the sink is broken; keep serving subscribers
	}
	if _, err := m.sink.Write(b); err != nil {
		m.sinkErr = err
		if m.logger != nil {
			m.logger.Error("event monitor: writing the event sink failed; no more events will be written to it", "err", err)
		}
	}
}
