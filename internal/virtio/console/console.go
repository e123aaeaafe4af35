// Package console is virtio-console (virtio 1.2 §5.3) with a single port
// and no multiport: receiveq 0 carries host input to the guest, transmitq
// 1 guest output to a backend of internal/devices/console (pty, tty,
// file, null). With console=hvc0 on the kernel command line it is the
// guest's console.
package console

import (
	"encoding/binary"
	"io"
	"sync"

	hostconsole "github.com/nimbus-vmm/nimbus/internal/devices/console"
	"github.com/nimbus-vmm/nimbus/internal/virtio"
)

// QueueSize is upstream's virtio-console queue size.
const QueueSize = 256

// Queue indices (§5.3.2).
const (
	RxQueue = 0
	TxQueue = 1
)

// ConfigSize is struct virtio_console_config: cols, rows, max_nr_ports,
// emerg_write (§5.3.4).
const ConfigSize = 12

// inputLimit bounds host input buffered for the guest; beyond it the
// backend waits (backpressure) instead of the VMM growing memory.
const inputLimit = 64 << 10

// maxOut bounds one transmit copy.
const maxOut = 64 << 10

// Device is a virtio-console device. Create it with New or Open.
type Device struct {
	virtio.Stateless // the transport holds the rest (snapshots)

	backend hostconsole.Backend

	inMu     sync.Mutex
	in       []byte
	inReady  chan struct{} // capacity 1: input arrived
	writable chan struct{} // capacity 1: input space freed

	life virtio.Lifecycle
	stop chan struct{} // closed to stop receive, which waits on channels
}

var _ virtio.Device = (*Device)(nil)

// New creates the device on backend and starts taking its input. The
// backend stays the caller's (the control loop made it at vm.create):
// Close leaves it open, and the caller closes it after the device.
func New(backend hostconsole.Backend) *Device {
	d := &Device{
		backend:  backend,
		inReady:  make(chan struct{}, 1),
		writable: make(chan struct{}, 1),
	}
	d.life.Init(virtio.LifecycleHooks{
		Name: "console", Queues: 2,
		Start: d.start, Halt: func() { close(d.stop) },
	})
	backend.Start(d)
	return d
}

// Path is the backend's pty path ("" for other modes), for vm.info.
func (d *Device) Path() string { return d.backend.Path() }

// Enqueue implements console.Input: it buffers host input for the guest.
func (d *Device) Enqueue(p []byte) int {
	d.inMu.Lock()
	n := min(len(p), inputLimit-len(d.in))
	d.in = append(d.in, p[:n]...)
	d.inMu.Unlock()
	if n > 0 {
		notify(d.inReady)
	}
	return n
}

// Writable implements console.Input.
func (d *Device) Writable() <-chan struct{} { return d.writable }

func notify(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// Type implements virtio.Device.
func (d *Device) Type() virtio.DeviceType { return virtio.TypeConsole }

// Features implements virtio.Device.
func (d *Device) Features() uint64 { return virtio.CommonFeatures }

// QueueSizes implements virtio.Device.
func (d *Device) QueueSizes() []uint16 { return []uint16{QueueSize, QueueSize} }

// ReadConfig implements virtio.Device: cols/rows 0 (no VIRTIO_CONSOLE_F_SIZE),
// max_nr_ports 1.
func (d *Device) ReadConfig(off uint64, p []byte) {
	var b [ConfigSize]byte
	binary.LittleEndian.PutUint32(b[4:], 1)
	clear(p)
	if off < ConfigSize {
		copy(p, b[off:])
	}
}

// WriteConfig implements virtio.Device: emerg_write is not offered; ignored.
func (d *Device) WriteConfig(off uint64, p []byte) {}

// Activate implements virtio.Device.
func (d *Device) Activate(mem virtio.GuestMemory, features uint64, queues []*virtio.Queue, irq virtio.Interrupt) error {
	return d.life.Activate(mem, features, queues, irq)
}

func (d *Device) start() {
	d.stop = make(chan struct{})
	r := d.life.Runner()
	if tx := d.life.Queues()[TxQueue]; tx.Ready {
		r.Watch(tx.Notify)
		r.Go(func() { virtio.ServeQueue(r, tx, TxQueue, d.life.Irq(), d.transmit) })
	}
	if rx := d.life.Queues()[RxQueue]; rx.Ready {
		r.Watch(rx.Notify)
		stop := d.stop
		r.Go(func() { d.receive(rx, stop) })
	}
}

// transmit sends one chain's readable bytes to the backend.
func (d *Device) transmit(c *virtio.Chain) uint32 {
	var buf [4096]byte
	r := io.LimitReader(virtio.NewReader(d.life.Mem(), c.Readable), maxOut)
	for {
		n, err := r.Read(buf[:])
		if n > 0 {
			_, _ = d.backend.Write(buf[:n]) // never blocks; host-side loss is not the guest's fault
		}
		if err != nil || n == 0 {
			return 0
		}
	}
}

// receive moves buffered host input into receiveq buffers: it waits for
// input, then for a buffer (sleeping on the queue's eventfd when the
// driver has none posted), copies, and signals.
func (d *Device) receive(q *virtio.Queue, stop <-chan struct{}) {
	for {
		d.inMu.Lock()
		pending := len(d.in)
		d.inMu.Unlock()
		if pending == 0 {
			select {
			case <-d.inReady:
				continue
			case <-stop:
				return
			}
		}
		c, err := q.Pop()
		switch {
		case err != nil && c != nil: // bad chain: fail it
			_ = q.Push(c.Head, 0)
			continue
		case err != nil: // broken queue
			d.life.Irq().NeedsReset(err)
			<-stop
			return
		case c == nil:
			more, err := q.EnableNotification()
			if err != nil {
				d.life.Irq().NeedsReset(err)
				<-stop
				return
			}
			if !more {
				if _, err := q.Notify.Wait(); err != nil {
					return // interrupted: stopping
				}
			}
			continue
		}
		w := virtio.NewWriter(d.life.Mem(), c.Writable)
		d.inMu.Lock()
		n := min(uint64(len(d.in)), w.Remaining())
		_, _ = w.Write(d.in[:n])
		d.in = d.in[w.Written():]
		d.inMu.Unlock()
		notify(d.writable)
		if err := q.Push(c.Head, w.Written()); err != nil {
			continue // broken: the next Pop reports it
		}
		if q.NeedsInterrupt() {
			_ = d.life.Irq().Signal(RxQueue)
		}
	}
}

// Pause implements virtio.Device.
func (d *Device) Pause() error { return d.life.Pause() }

// Resume implements virtio.Device.
func (d *Device) Resume() error { return d.life.Resume() }

// Reset implements virtio.Device.
func (d *Device) Reset() error { return d.life.Reset() }

// Close implements virtio.Device; it closes the backend.
func (d *Device) Close() error { return d.life.Close() }

// Counters implements virtio.Device: upstream's console has none.
func (d *Device) Counters() map[string]uint64 { return nil }
