package virtio

import (
	"errors"
	"fmt"
	"sync"
)

// LifecycleHooks are what a device adds to the shared Lifecycle. Every
// hook runs with the Lifecycle's lock held; only Start is required.
type LifecycleHooks struct {
	// Name is the device in errors ("activate <Name>: ...").
	Name string
	// Queues is the number of queues Activate must be given.
	Queues int
	// Bind applies the negotiated features after the queues are
	// validated and bound (cache mode, tap offloads). An error aborts
	// Activate with the device still inactive.
	Bind func(features uint64) error
	// Start launches the device's goroutines on Runner, at Activate and
	// at Resume; Mem, Queues and Irq are set.
	Start func()
	// Halt runs before the Runner stops the goroutines (Pause, Reset,
	// Close), for devices with a wait the Runner does not watch.
	Halt func()
	// Forget clears device state the driver negotiated, at Reset once the
	// goroutines are joined.
	Forget func()
	// Release closes the backend at Close, after the reset.
	Release func() error
}

// Lifecycle is the Activate/Pause/Resume/Reset/Close state machine of the
// Device contract, shared by every device: a device embeds one (as a
// field), sets its hooks with Init, and forwards those methods to it.
type Lifecycle struct {
	hooks LifecycleHooks

	mu     sync.Mutex
	runner Runner
	active bool
	paused bool
	closed bool
	mem    GuestMemory
	queues []*Queue
	irq    Interrupt
}

// Init sets the hooks; call it once, before any other method.
func (l *Lifecycle) Init(h LifecycleHooks) { l.hooks = h }

// Runner owns the device's goroutines; Start hooks launch them on it.
func (l *Lifecycle) Runner() *Runner { return &l.runner }

// Mem, Queues and Irq are what Activate was given. They are read without
// the lock: they are set before Start and cleared only after the Runner
// joined the goroutines, so hooks and device goroutines may use them.
func (l *Lifecycle) Mem() GuestMemory { return l.mem }

// Queues is the queues passed to Activate (see Mem).
func (l *Lifecycle) Queues() []*Queue { return l.queues }

// Irq is the Interrupt passed to Activate (see Mem).
func (l *Lifecycle) Irq() Interrupt { return l.irq }

// Activate implements Device.Activate: state and queue count checks,
// ActivateQueues, the Bind hook, then Start.
func (l *Lifecycle) Activate(mem GuestMemory, features uint64, queues []*Queue, irq Interrupt) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	h := &l.hooks
	switch {
	case l.closed || l.active:
		return fmt.Errorf("activate %s: %w", h.Name, ErrState)
	case len(queues) != h.Queues:
		s := "s"
		if h.Queues == 1 {
			s = ""
		}
		return fmt.Errorf("%s has %d queue%s, got %d: %w", h.Name, h.Queues, s, len(queues), ErrInvalid)
	}
	if err := ActivateQueues(mem, features, queues); err != nil {
		return err
	}
	if h.Bind != nil {
		if err := h.Bind(features); err != nil {
			return err
		}
	}
	l.mem, l.queues, l.irq = mem, queues, irq
	l.active, l.paused = true, false
	h.Start()
	return nil
}

// halt stops and joins the goroutines, forgetting the watched waits (the
// next Start watches them again).
func (l *Lifecycle) halt() error {
	if l.hooks.Halt != nil {
		l.hooks.Halt()
	}
	return l.runner.Stop(true)
}

// Pause implements Device.Pause.
func (l *Lifecycle) Pause() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.active || l.paused {
		return nil
	}
	l.paused = true
	return l.halt()
}

// Resume implements Device.Resume.
func (l *Lifecycle) Resume() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.active || !l.paused {
		return nil
	}
	l.paused = false
	l.hooks.Start()
	return nil
}

// Quiesced runs fn with the device's goroutines stopped (when they run)
// and starts them again after; irq is the driver's Interrupt when the
// device is active (nil otherwise), for a configuration change
// notification once fn changed what the driver reads.
func (l *Lifecycle) Quiesced(fn func() error) (irq Interrupt, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	running := l.active && !l.paused
	if running {
		if err := l.halt(); err != nil {
			return nil, err
		}
	}
	err = fn()
	if running {
		l.hooks.Start()
	}
	if l.active {
		irq = l.irq
	}
	return irq, err
}

// Reset implements Device.Reset.
func (l *Lifecycle) Reset() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.reset()
}

func (l *Lifecycle) reset() error {
	if !l.active {
		return nil
	}
	var err error
	if !l.paused { // Pause already halted
		err = l.halt()
	}
	l.active, l.paused = false, false
	l.mem, l.queues, l.irq = nil, nil, nil
	if l.hooks.Forget != nil {
		l.hooks.Forget()
	}
	return err
}

// Close implements Device.Close: a reset, then the Release hook. It is
// idempotent.
func (l *Lifecycle) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil
	}
	l.closed = true
	err := l.reset()
	if l.hooks.Release != nil {
		err = errors.Join(err, l.hooks.Release())
	}
	return err
}
