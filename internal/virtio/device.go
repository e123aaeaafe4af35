// Package virtio is the transport-independent core of Nimbus's virtio
// devices (virtio 1.2, split virtqueues only): the Device contract a
// transport (internal/virtio/pci) drives, the Queue a transport programs
// and a device consumes, and the Interrupt a device raises.
//
// Life of a device, as the transport sees it:
//
//	d := blk.New(cfg)                    // backend opened, nothing running
//	d.Type(), d.Features(), d.QueueSizes(), d.ReadConfig(...)
//	q := virtio.NewQueue(max)            // one per QueueSizes entry; owns an eventfd
//	... guest negotiates features, programs q.Size/DescAddr/AvailAddr/UsedAddr/Ready ...
//	d.Activate(mem, features, queues, irq) // on DRIVER_OK: device goroutines start
//	... guest notifies: q.Notify is signalled (KVM ioeventfd, or the transport) ...
//	d.Pause(); d.Resume()                // VM pause; goroutines stopped and joined
//	d.Reset()                            // guest wrote status 0: goroutines joined, queues released
//	d.Close()                            // VM teardown: also releases the backend
//
// Devices see only queues, guest memory and their backend, never PCI.
package virtio

import (
	"encoding/json"
	"errors"
)

// Sentinel error categories.
var (
	// ErrBadChain: one descriptor chain from the guest is malformed. The
	// request is failed (returned used with length 0); the queue goes on.
	ErrBadChain = errors.New("malformed virtio descriptor chain")
	// ErrBroken: the guest corrupted a queue beyond recovery (for example
	// the available index moved by more than the queue size). The device
	// stops using the queue and reports DEVICE_NEEDS_RESET.
	ErrBroken = errors.New("virtqueue broken by the driver")
	// ErrInvalid: a bad queue or device configuration (size not a power of
	// two, misaligned rings, rings outside guest RAM, wrong queue count).
	ErrInvalid = errors.New("invalid virtio configuration")
	// ErrState: an operation in the wrong device state (Activate twice,
	// Resume without Pause, use after Close).
	ErrState = errors.New("invalid virtio device state")
	// ErrBackend: the host backend (image file, tap, entropy source) failed.
	ErrBackend = errors.New("virtio backend error")
)

// GuestMemory is the subset of *memory.Memory the virtio code uses, so
// tests can substitute a fake. Every access is bounds checked; failures
// wrap memory.ErrBadAddress.
type GuestMemory interface {
	ReadAt(p []byte, gpa int64) (int, error)
	WriteAt(p []byte, gpa int64) (int, error)
	// Slice aliases n bytes of guest RAM at gpa (one region), valid for
	// the duration of one request.
	Slice(gpa, n uint64) ([]byte, error)
	ReadU16(gpa uint64) (uint16, error)
	ReadU32(gpa uint64) (uint32, error)
	ReadU64(gpa uint64) (uint64, error)
	WriteU16(gpa uint64, v uint16) error
	WriteU32(gpa uint64, v uint32) error
}

// Interrupt is how a device signals the driver. The transport implements
// it (virtio-pci: MSI-X vectors backed by KVM irqfds); it must be safe for
// concurrent use by the device's goroutines.
type Interrupt interface {
	// Signal raises the used-buffer notification of queue index queue
	// (an index into the queues passed to Activate). Devices call it only
	// when Queue.NeedsInterrupt says so.
	Signal(queue int) error
	// ConfigChanged raises the configuration change notification.
	ConfigChanged() error
	// NeedsReset sets DEVICE_NEEDS_RESET in the device status and raises
	// the configuration change notification (§2.1.2), after a device hit
	// ErrBroken. reason is for the log.
	NeedsReset(reason error)
}

// Notifier is implemented by Interrupts that can hand a device the
// eventfd behind a queue's interrupt (virtio-pci: the MSI-X vector's KVM
// irqfd), so that an external back end (vhost-user) signals the guest
// directly. ok is false when the queue has no such eventfd (no vector).
type Notifier interface {
	Notifier(queue int) (fd int, ok bool)
}

// Device is one virtio device behind a transport. Methods other than
// Counters are called by the transport from one goroutine at a time (the
// vCPU that accessed the transport, or the VM owner); Counters may be
// called concurrently with everything.
type Device interface {
	// Type is the virtio device ID.
	Type() DeviceType
	// Features is the 64-bit feature word offered to the driver,
	// including CommonFeatures.
	Features() uint64
	// QueueSizes has one entry per virtqueue: its maximum size (the
	// transport's queue_size register default).
	QueueSizes() []uint16
	// ReadConfig fills p from device-specific config space at off; bytes
	// beyond the config space read as zero.
	ReadConfig(off uint64, p []byte)
	// WriteConfig writes device-specific config space; writes to
	// read-only or absent fields are ignored.
	WriteConfig(off uint64, p []byte)
	// Activate starts the device after DRIVER_OK with the negotiated
	// features (a subset of Features, always including FVersion1) and
	// the queues, len(queues) == len(QueueSizes()), in index order; a
	// queue the driver did not enable has Ready == false. The device
	// calls ActivateQueues, then starts its goroutines, which wait on
	// each queue's Notify eventfd. The transport must not touch the
	// queues again until Reset returns.
	Activate(mem GuestMemory, features uint64, queues []*Queue, irq Interrupt) error
	// Reset stops and joins the device's goroutines and forgets the
	// queues and features (the guest wrote status 0). The backend stays
	// open; the device may be activated again. Reset of an inactive
	// device is a no-op.
	Reset() error
	// Pause stops and joins the device's goroutines, leaving queue state
	// in place; notifications arriving while paused stay pending in the
	// eventfds. Pause of an inactive device is a no-op.
	Pause() error
	// Resume restarts what Pause stopped and processes pending work.
	Resume() error
	// Close stops everything (as Reset) and releases the backend. The
	// device is unusable afterwards. Close is idempotent.
	Close() error
	// Counters are the device's statistics, upstream's names and units
	// (vm.counters); nil for devices without counters.
	Counters() map[string]uint64
}

// Snapshotter is a device that a snapshot can carry. The transport saves
// what it holds (status, features, queues) and activates a restored
// device as the driver left it; the device adds its own state (nil when
// it has none beyond that). RestoreSnapshot runs before that activation,
// on a device built from the same configuration. Devices without it make
// a snapshot fail rather than come back wrong.
type Snapshotter interface {
	SaveSnapshot() (json.RawMessage, error)
	RestoreSnapshot(json.RawMessage) error
}

// Stateless is embedded by devices whose whole state the transport holds
// (queues, features, status): it implements Snapshotter with no state.
type Stateless struct{}

// SaveSnapshot implements Snapshotter.
func (Stateless) SaveSnapshot() (json.RawMessage, error) { return nil, nil }

// RestoreSnapshot implements Snapshotter.
func (Stateless) RestoreSnapshot(json.RawMessage) error { return nil }
