package virtio

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// EventFD is a Linux eventfd(2) used as a queue's notification source. It
// is non-blocking and registered with Go's poller, so a goroutine blocked
// in Wait parks without holding an OS thread and can be woken by Interrupt.
//
// The VM registers FD as a KVM ioeventfd on the queue's notify address;
// without ioeventfd the transport calls Signal on a notify write. Either
// way, a queue notification is always an eventfd signal.
type EventFD struct {
	f  *os.File
	fd int
}

// NewEventFD creates an eventfd with counter 0 (EFD_CLOEXEC|EFD_NONBLOCK).
func NewEventFD() (*EventFD, error) {
	fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	return &EventFD{f: os.NewFile(uintptr(fd), "eventfd"), fd: fd}, nil
}

// FD is the descriptor to register with KVM (KVM_IOEVENTFD / KVM_IRQFD).
// It stays valid until Close. (Unlike os.File.Fd it leaves the descriptor
// non-blocking.)
func (e *EventFD) FD() int { return e.fd }

// Signal adds 1 to the counter, waking a waiter.
func (e *EventFD) Signal() error {
	var b [8]byte
	binary.NativeEndian.PutUint64(b[:], 1)
	_, err := e.f.Write(b[:])
	if err != nil {
		return fmt.Errorf("signal eventfd: %w", err)
	}
	return nil
}

// Wait blocks until the counter is non-zero, then reads and clears it,
// returning its value. After Interrupt it returns an error wrapping
// os.ErrDeadlineExceeded, until Rearm.
func (e *EventFD) Wait() (uint64, error) {
	var b [8]byte
	if _, err := e.f.Read(b[:]); err != nil {
		return 0, fmt.Errorf("wait eventfd: %w", err)
	}
	return binary.NativeEndian.Uint64(b[:]), nil
}

// TryWait clears the counter without blocking and reports whether it was
// non-zero.
func (e *EventFD) TryWait() (bool, error) {
	var b [8]byte
	_, err := unix.Read(e.fd, b[:])
	if errors.Is(err, unix.EAGAIN) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read eventfd: %w", err)
	}
	return true, nil
}

// Interrupt makes current and future Waits return os.ErrDeadlineExceeded
// without consuming the counter: it is how an owner stops the goroutine
// waiting on this eventfd.
func (e *EventFD) Interrupt() error { return e.f.SetReadDeadline(time.Unix(1, 0)) }

// Rearm undoes Interrupt.
func (e *EventFD) Rearm() error { return e.f.SetReadDeadline(time.Time{}) }

// Close releases the eventfd.
func (e *EventFD) Close() error { return e.f.Close() }

// IsInterrupted reports whether err came from a Wait cut short by Interrupt.
func IsInterrupted(err error) bool { return errors.Is(err, os.ErrDeadlineExceeded) }
