// Package rng is the virtio entropy device (virtio 1.2 §5.4): one request
// queue whose device-writable buffers are filled from a host source file
// (upstream's --rng src=, default /dev/urandom).
package rng

import (
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/nimbus-vmm/nimbus/internal/config"
	"github.com/nimbus-vmm/nimbus/internal/virtio"
)

// DefaultSource is upstream's default entropy source.
const DefaultSource = "/dev/urandom"

// QueueSize is upstream's virtio-rng queue size.
const QueueSize = 256

// maxRequest bounds one fill, so a guest offering a 4 GiB buffer cannot
// make the host allocate it.
const maxRequest = 64 << 10

// Device is a virtio-rng device. Create it with New.
type Device struct {
	src *os.File

	mu     sync.Mutex
	runner virtio.Runner
	active bool
	paused bool
	closed bool
	mem    virtio.GuestMemory
	queues []*virtio.Queue
	irq    virtio.Interrupt
	buf    []byte
}

var _ virtio.Device = (*Device)(nil)

// New opens cfg.Src (DefaultSource when empty).
func New(cfg config.RngConfig) (*Device, error) {
	src := cfg.Src
	if src == "" {
		src = DefaultSource
	}
	f, err := os.Open(src)
	if err != nil {
		return nil, fmt.Errorf("open entropy source: %w: %w", virtio.ErrBackend, err)
	}
	return &Device{src: f, buf: make([]byte, maxRequest)}, nil
}

// Type implements virtio.Device.
func (d *Device) Type() virtio.DeviceType { return virtio.TypeRng }

// Features implements virtio.Device.
func (d *Device) Features() uint64 { return virtio.CommonFeatures }

// QueueSizes implements virtio.Device.
func (d *Device) QueueSizes() []uint16 { return []uint16{QueueSize} }

// ReadConfig implements virtio.Device: there is no config space.
func (d *Device) ReadConfig(off uint64, p []byte) { clear(p) }

// WriteConfig implements virtio.Device.
func (d *Device) WriteConfig(off uint64, p []byte) {}

// Activate implements virtio.Device.
func (d *Device) Activate(mem virtio.GuestMemory, features uint64, queues []*virtio.Queue, irq virtio.Interrupt) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed || d.active {
		return fmt.Errorf("activate rng: %w", virtio.ErrState)
	}
	if len(queues) != 1 {
		return fmt.Errorf("rng has 1 queue, got %d: %w", len(queues), virtio.ErrInvalid)
	}
	if err := virtio.ActivateQueues(mem, features, queues); err != nil {
		return err
	}
	d.mem, d.queues, d.irq = mem, queues, irq
	d.active, d.paused = true, false
	d.start()
	return nil
}

func (d *Device) start() {
	q := d.queues[0]
	if !q.Ready {
		return
	}
	d.runner.Watch(q.Notify)
	d.runner.Go(func() { virtio.ServeQueue(&d.runner, q, 0, d.irq, d.fill) })
}

// fill writes entropy into the chain's writable buffers.
func (d *Device) fill(c *virtio.Chain) uint32 {
	n := min(c.WritableLen(), maxRequest)
	got, err := io.ReadFull(d.src, d.buf[:n])
	if err != nil && got == 0 {
		return 0
	}
	w := virtio.NewWriter(d.mem, c.Writable)
	w.Write(d.buf[:got])
	return w.Written()
}

// Pause implements virtio.Device.
func (d *Device) Pause() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.active || d.paused {
		return nil
	}
	d.paused = true
	return d.runner.Stop(true)
}

// Resume implements virtio.Device.
func (d *Device) Resume() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.active || !d.paused {
		return nil
	}
	d.paused = false
	d.start()
	return nil
}

// Reset implements virtio.Device.
func (d *Device) Reset() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.reset()
}

func (d *Device) reset() error {
	if !d.active {
		return nil
	}
	err := d.runner.Stop(true)
	d.active, d.paused = false, false
	d.mem, d.queues, d.irq = nil, nil, nil
	return err
}

// Close implements virtio.Device.
func (d *Device) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil
	}
	d.closed = true
	err := d.reset()
	if cerr := d.src.Close(); err == nil {
		err = cerr
	}
	return err
}

// Counters implements virtio.Device: upstream's rng has none.
func (d *Device) Counters() map[string]uint64 { return nil }
