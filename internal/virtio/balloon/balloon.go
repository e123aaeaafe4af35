// Package balloon is the traditional virtio memory balloon (virtio 1.2
// §5.5) as upstream's virtio-balloon (virtio-devices/src/balloon.rs): the
// VMM asks for a balloon size (num_pages), the driver inflates by handing
// page frame numbers back on the inflate queue, which the host discards,
// and takes them again on the deflate queue; with free page reporting the
// driver also reports free ranges, which are discarded too.
package balloon

import (
	"encoding/binary"
	"fmt"
	"log/slog"
	"sync"

	"github.com/nimbus-vmm/nimbus/internal/config"
	"github.com/nimbus-vmm/nimbus/internal/virtio"
)

// Upstream's constants.
const (
	QueueSize          = 128
	ReportingQueueSize = 32
	pfnShift           = 12      // VIRTIO_BALLOON_PFN_SHIFT: PFNs count 4 KiB pages
	maxPFNBytes        = 256 * 4 // VIRTIO_BALLOON_MAX_PFN_BYTES per descriptor
	FDeflateOnOOM      = 1 << 2  // VIRTIO_BALLOON_F_DEFLATE_ON_OOM
	FReporting         = 1 << 5  // VIRTIO_BALLOON_F_REPORTING
	ConfigSize         = 8       // struct virtio_balloon_config as upstream: num_pages, actual
	actualOffset       = 4       // CONFIG_ACTUAL_OFFSET, the one field the driver writes
)

// Discarder gives the host memory behind guest RAM back; *memory.Memory
// implements it.
type Discarder interface {
	Discard(gpa, size uint64) error
}

// Device is a virtio-balloon device. Create it with New.
type Device struct {
	ram      Discarder
	log      *slog.Logger
	features uint64
	queues   int

	life virtio.Lifecycle

	mu       sync.Mutex
	numPages uint32 // requested balloon size, in 4 KiB pages
	actual   uint32 // what the driver says it holds
	irq      virtio.Interrupt
}

var _ virtio.Device = (*Device)(nil)

// New makes the balloon cfg describes over ram.
func New(cfg config.BalloonConfig, ram Discarder, log *slog.Logger) *Device {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	d := &Device{ram: ram, log: log, features: virtio.CommonFeatures, queues: 2, numPages: uint32(cfg.Size >> pfnShift)}
	if cfg.DeflateOnOOM {
		d.features |= FDeflateOnOOM
	}
	if cfg.FreePageReporting {
		d.features |= FReporting
		d.queues = 3
	}
	d.life.Init(virtio.LifecycleHooks{Name: "balloon", Queues: d.queues, Start: d.start, Forget: d.forget})
	return d
}

// Resize sets the balloon size the driver is asked for (upstream's
// Balloon::resize) and tells it once it is up.
func (d *Device) Resize(size uint64) error {
	d.mu.Lock()
	d.numPages = uint32(size >> pfnShift)
	irq := d.irq
	d.mu.Unlock()
	if irq != nil {
		if err := irq.ConfigChanged(); err != nil {
			return fmt.Errorf("Failed to signal: %w", err)
		}
	}
	return nil
}

// Actual is the memory the driver holds in the balloon (upstream's
// get_actual), which vm.info's memory_actual_size takes off.
func (d *Device) Actual() uint64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return uint64(d.actual) << pfnShift
}

// Type implements virtio.Device.
func (d *Device) Type() virtio.DeviceType { return virtio.TypeBalloon }

// Features implements virtio.Device.
func (d *Device) Features() uint64 { return d.features }

// QueueSizes implements virtio.Device: inflate, deflate and, with free
// page reporting, the reporting queue.
func (d *Device) QueueSizes() []uint16 {
	if d.queues == 3 {
		return []uint16{QueueSize, QueueSize, ReportingQueueSize}
	}
	return []uint16{QueueSize, QueueSize}
}

// ReadConfig implements virtio.Device.
func (d *Device) ReadConfig(off uint64, p []byte) {
	var b [ConfigSize]byte
	d.mu.Lock()
	binary.LittleEndian.PutUint32(b[0:], d.numPages)
	binary.LittleEndian.PutUint32(b[actualOffset:], d.actual)
	d.mu.Unlock()
	clear(p)
	if off < ConfigSize {
		copy(p, b[off:])
	}
}

// WriteConfig implements virtio.Device: only a 4-byte write of actual
// counts, as upstream.
func (d *Device) WriteConfig(off uint64, p []byte) {
	if off != actualOffset || len(p) != 4 {
		d.log.Warn("balloon: attempt to write to read-only field", "offset", off, "len", len(p))
		return
	}
	d.mu.Lock()
	d.actual = binary.LittleEndian.Uint32(p)
	d.mu.Unlock()
}

// Activate implements virtio.Device.
func (d *Device) Activate(mem virtio.GuestMemory, features uint64, queues []*virtio.Queue, irq virtio.Interrupt) error {
	return d.life.Activate(mem, features, queues, irq)
}

func (d *Device) start() {
	d.mu.Lock()
	d.irq = d.life.Irq()
	d.mu.Unlock()
	r := d.life.Runner()
	for i, q := range d.life.Queues() {
		if !q.Ready {
			continue
		}
		handle := d.pfns(i == 0)
		if i == 2 {
			handle = d.report
		}
		r.Watch(q.Notify)
		r.Go(func() { virtio.ServeQueue(r, q, i, d.life.Irq(), handle) })
	}
}

func (d *Device) forget() {
	d.mu.Lock()
	d.irq = nil
	d.mu.Unlock()
}

// pfns handles an inflate (discard each 4 KiB page) or deflate (nothing
// to do: the pages come back on the guest's next touch) request: arrays
// of 32-bit PFNs, as upstream's process_queue skips malformed buffers.
func (d *Device) pfns(inflate bool) virtio.Handler {
	return func(c *virtio.Chain) uint32 {
		if !inflate {
			return 0
		}
		mem := d.life.Mem()
		// Runs of consecutive PFNs (the driver hands them out in order)
		// are discarded with one call instead of one per page.
		var run, n uint64
		flush := func() {
			if n > 0 {
				if err := d.ram.Discard(run<<pfnShift, n<<pfnShift); err != nil {
					d.log.Warn("balloon: failed to release memory", "pfn", run, "pages", n, "err", err)
				}
			}
			n = 0
		}
		for _, b := range c.Readable {
			if b.Len%4 != 0 || b.Len > maxPFNBytes {
				d.log.Warn("balloon: skipping a malformed PFN buffer", "len", b.Len)
				continue
			}
			for off := uint64(0); off < uint64(b.Len); off += 4 {
				v, err := mem.ReadU32(b.Addr + off)
				if err != nil {
					d.log.Warn("balloon: failed to read a PFN", "err", err)
					break
				}
				if pfn := uint64(v); n == 0 || pfn != run+n {
					flush()
					run = pfn
				}
				n++
			}
		}
		flush()
		return 0
	}
}

// report discards every free range the driver reports (upstream's
// process_reporting_queue).
func (d *Device) report(c *virtio.Chain) uint32 {
	var n uint32
	for _, b := range append(append([]virtio.Buffer(nil), c.Readable...), c.Writable...) {
		n += b.Len
		if err := d.ram.Discard(b.Addr, uint64(b.Len)); err != nil {
			d.log.Warn("balloon: failed to release a reported range", "addr", b.Addr, "len", b.Len, "err", err)
		}
	}
	return n
}

// Pause implements virtio.Device.
func (d *Device) Pause() error { return d.life.Pause() }

// Resume implements virtio.Device.
func (d *Device) Resume() error { return d.life.Resume() }

// Reset implements virtio.Device.
func (d *Device) Reset() error { return d.life.Reset() }

// Close implements virtio.Device.
func (d *Device) Close() error { return d.life.Close() }

// Counters implements virtio.Device: upstream's balloon has none.
func (d *Device) Counters() map[string]uint64 { return nil }
