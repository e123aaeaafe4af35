// Package rng is the virtio entropy device (virtio 1.2 §5.4): one request
// queue whose device-writable buffers are filled from a host source file
// (upstream's --rng src=, default /dev/urandom).
package rng

import (
	"fmt"
	"io"
	"os"

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
	virtio.Stateless // the transport holds the rest (snapshots)

	src *os.File

	life virtio.Lifecycle
	buf  []byte
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
	d := &Device{src: f, buf: make([]byte, maxRequest)}
	d.life.Init(virtio.LifecycleHooks{Name: "rng", Queues: 1, Start: d.start, Release: f.Close})
	return d, nil
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
	return d.life.Activate(mem, features, queues, irq)
}

func (d *Device) start() {
	q := d.life.Queues()[0]
	if !q.Ready {
		return
	}
	r := d.life.Runner()
	r.Watch(q.Notify)
	r.Go(func() { virtio.ServeQueue(r, q, 0, d.life.Irq(), d.fill) })
}

// fill writes entropy into the chain's writable buffers.
func (d *Device) fill(c *virtio.Chain) uint32 {
	n := min(c.WritableLen(), maxRequest)
	got, err := io.ReadFull(d.src, d.buf[:n])
	if err != nil && got == 0 {
		return 0
	}
	w := virtio.NewWriter(d.life.Mem(), c.Writable)
	w.Write(d.buf[:got])
	return w.Written()
}

// Pause implements virtio.Device.
func (d *Device) Pause() error { return d.life.Pause() }

// Resume implements virtio.Device.
func (d *Device) Resume() error { return d.life.Resume() }

// Reset implements virtio.Device.
func (d *Device) Reset() error { return d.life.Reset() }

// Close implements virtio.Device: it also closes the entropy source.
func (d *Device) Close() error { return d.life.Close() }

// Counters implements virtio.Device: upstream's rng has none.
func (d *Device) Counters() map[string]uint64 { return nil }
