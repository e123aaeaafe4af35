package virtio

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
)

// Interrupter is something a device goroutine blocks on that its owner
// can cut short: an EventFD, or a pollable *os.File (tap) through
// FileInterrupter.
type Interrupter interface {
	Interrupt() error
	Rearm() error
}

// Runner owns a device's goroutines. Start launches them; Stop interrupts
// every watched wait, joins them all and rearms the waits so a later Start
// works (Pause/Resume and Reset are Stop and Start).
type Runner struct {
	mu       sync.Mutex
	wg       sync.WaitGroup
	watched  []Interrupter
	stopping atomic.Bool
	running  bool
}

// Watch adds waits that Stop must interrupt. Call before Go.
func (r *Runner) Watch(is ...Interrupter) {
	r.mu.Lock()
	r.watched = append(r.watched, is...)
	r.mu.Unlock()
}

// Go starts fn on a goroutine the Runner owns. fn must return soon after
// Stopping becomes true, which it learns from a watched wait failing with
// IsInterrupted.
func (r *Runner) Go(fn func()) {
	r.mu.Lock()
	r.running = true
	r.wg.Add(1)
	r.mu.Unlock()
	go func() {
		defer r.wg.Done()
		fn()
	}()
}

// Stopping reports whether Stop is in progress; long loops check it.
func (r *Runner) Stopping() bool { return r.stopping.Load() }

// Running reports whether goroutines were started and not stopped.
func (r *Runner) Running() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.running
}

// Stop interrupts the watched waits, waits for every goroutine and rearms
// the waits. The watch list is kept (for a restart after Pause) unless
// forget is set (Reset: the next Activate brings new queues).
func (r *Runner) Stop(forget bool) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.stopping.Store(true)
	var errs []error
	for _, w := range r.watched {
		if err := w.Interrupt(); err != nil {
			errs = append(errs, err)
		}
	}
	r.wg.Wait()
	for _, w := range r.watched {
		if err := w.Rearm(); err != nil {
			errs = append(errs, err)
		}
	}
	if forget {
		r.watched = nil
	}
	r.stopping.Store(false)
	r.running = false
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("stop device goroutines: %w", err)
	}
	return nil
}

// Handler processes one descriptor chain and returns the number of bytes
// it wrote into the chain's writable buffers.
type Handler func(c *Chain) uint32

// ServeQueue is the usual queue loop for a device goroutine: drain q with
// handle, push each chain used, raise irq (queue index idx) when
// NeedsInterrupt says so, then sleep on q.Notify until the next
// notification. It first drains without waiting, so work that arrived
// while paused is not lost. Malformed chains are returned with length 0;
// a broken queue is reported through irq.NeedsReset and then left alone.
// It returns when the Runner stops (the wait is interrupted).
func ServeQueue(r *Runner, q *Queue, idx int, irq Interrupt, handle Handler) {
	broken := false
	for {
		if !broken {
			if err := DrainQueue(r, q, idx, irq, handle); err != nil {
				broken = true
				irq.NeedsReset(err)
			}
		}
		if _, err := q.Notify.Wait(); err != nil {
			return // interrupted by Stop, or the eventfd is gone
		}
	}
}

// DrainQueue handles every available chain until the ring is empty with
// notifications re-enabled (the EnableNotification race is closed). It
// returns an error wrapping ErrBroken if the queue broke.
func DrainQueue(r *Runner, q *Queue, idx int, irq Interrupt, handle Handler) error {
	for {
		if err := q.DisableNotification(); err != nil {
			return err
		}
		pushed := false
		for !r.Stopping() {
			c, err := q.Pop()
			if errors.Is(err, ErrBadChain) {
				if err := q.Push(c.Head, 0); err != nil {
					return err
				}
				pushed = true
				continue
			}
			if err != nil {
				return err
			}
			if c == nil {
				break
			}
			if err := q.Push(c.Head, handle(c)); err != nil {
				return err
			}
			pushed = true
		}
		if pushed && q.NeedsInterrupt() {
			_ = irq.Signal(idx) // the transport logs; nothing to retry here
		}
		if r.Stopping() {
			return nil
		}
		more, err := q.EnableNotification()
		if err != nil {
			return err
		}
		if !more {
			return nil
		}
	}
}
