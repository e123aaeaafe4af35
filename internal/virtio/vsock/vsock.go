// Package vsock is the virtio socket device (virtio 1.2 §5.10) with
// Cloud Hypervisor's hybrid Unix-socket backend (virtio-devices/src/vsock
// upstream): guest AF_VSOCK streams to the host become Unix-socket
// streams. A host program connects to the device's socket and writes
// "CONNECT <port>\n" to reach guest port <port>, and reads "OK <host
// port>\n" once the guest accepted; a guest connection to host port P
// becomes a connection to the Unix socket "<socket>_P". Kata Containers
// reaches its agent this way.
package vsock

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/nimbus-vmm/nimbus/internal/config"
	"github.com/nimbus-vmm/nimbus/internal/virtio"
)

// QueueSize is upstream's size of each of the three queues.
const QueueSize = 256

// Queue indices.
const (
	rxQueue  = 0
	txQueue  = 1
	evtQueue = 2
)

// Device is a virtio-vsock device. Create it with New.
type Device struct {
	cid uint64
	mux *muxer
	log *slog.Logger

	life virtio.Lifecycle

	heldMu sync.Mutex
	held   *virtio.Chain // an RX buffer taken when the packet for it went away

	// txBuf is the TX goroutine's payload scratch: the backend copies
	// what it keeps, so no packet allocates.
	txBuf [MaxPayload]byte
}

var _ virtio.Device = (*Device)(nil)

// New binds the host socket cfg.Socket (it must not exist, as upstream)
// and starts accepting host connections; the guest sees them once its
// driver is up.
func New(cfg config.VsockConfig, log *slog.Logger) (*Device, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	mux, err := newMuxer(cfg.Socket, uint64(cfg.Cid), log)
	if err != nil {
		return nil, fmt.Errorf("Cannot create virtio-vsock backend: %w: %w", virtio.ErrBackend, err)
	}
	d := &Device{cid: uint64(cfg.Cid), mux: mux, log: log}
	d.life.Init(virtio.LifecycleHooks{Name: "vsock", Queues: 3, Start: d.start, Forget: d.forget, Release: mux.close})
	return d, nil
}

// Type implements virtio.Device.
func (d *Device) Type() virtio.DeviceType { return virtio.TypeVsock }

// Features implements virtio.Device.
func (d *Device) Features() uint64 { return virtio.CommonFeatures }

// QueueSizes implements virtio.Device.
func (d *Device) QueueSizes() []uint16 { return []uint16{QueueSize, QueueSize, QueueSize} }

// ReadConfig implements virtio.Device: struct virtio_vsock_config, the
// guest's CID as a 64-bit little-endian value.
func (d *Device) ReadConfig(off uint64, p []byte) {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], d.cid)
	clear(p)
	if off < 8 {
		copy(p, b[off:])
	}
}

// WriteConfig implements virtio.Device: nothing is writable.
func (d *Device) WriteConfig(off uint64, p []byte) {}

// Activate implements virtio.Device.
func (d *Device) Activate(mem virtio.GuestMemory, features uint64, queues []*virtio.Queue, irq virtio.Interrupt) error {
	return d.life.Activate(mem, features, queues, irq)
}

func (d *Device) start() {
	qs := d.life.Queues()
	r := d.life.Runner()
	irq := d.life.Irq()
	if tx := qs[txQueue]; tx.Ready {
		r.Watch(tx.Notify)
		r.Go(func() { virtio.ServeQueue(r, tx, txQueue, irq, d.tx) })
	}
	if rx := qs[rxQueue]; rx.Ready {
		r.Watch(rx.Notify)
		r.Go(func() { d.serveRx(r, rx, irq) })
		d.mux.setWake(func() { _ = rx.Notify.Signal() })
	}
	// The event queue carries nothing (upstream never posts an event).
}

func (d *Device) forget() {
	d.mux.setWake(nil)
	d.heldMu.Lock()
	d.held = nil // the driver's buffers are gone with the reset
	d.heldMu.Unlock()
}

// tx handles one guest packet: a header and up to MaxPayload bytes in
// the readable buffers. A malformed one is dropped, as upstream.
func (d *Device) tx(c *virtio.Chain) uint32 {
	r := virtio.NewReader(d.life.Mem(), c.Readable)
	var hb [HeaderSize]byte
	if n, err := r.Read(hb[:]); err != nil || n < HeaderSize {
		d.log.Warn("vsock: error reading TX packet: short header")
		return 0
	}
	var h Header
	h.UnmarshalBinary(hb[:])
	if h.Len > MaxPayload || uint64(h.Len) > r.Remaining() {
		d.log.Warn("vsock: error reading TX packet: bad length", "len", h.Len)
		return 0
	}
	var payload []byte
	if h.Op == OpRW && h.Len > 0 {
		payload = d.txBuf[:h.Len]
		if _, err := r.Read(payload); err != nil {
			d.log.Warn("vsock: error reading TX packet", "err", err)
			return 0
		}
	}
	d.mux.fromGuest(h, payload)
	return 0
}

// serveRx fills the guest's RX buffers with what the backend has for
// it, waking on the RX queue's eventfd, which both the driver (new
// buffers) and the backend (new packets) signal.
func (d *Device) serveRx(r *virtio.Runner, q *virtio.Queue, irq virtio.Interrupt) {
	broken := false
	for !r.Stopping() {
		if !broken {
			pushed, err := d.fillRx(r, q)
			if pushed && q.NeedsInterrupt() {
				_ = irq.Signal(rxQueue)
			}
			if err != nil {
				broken = true // left alone until the driver resets the device
				irq.NeedsReset(err)
			}
		}
		if _, err := q.Notify.Wait(); err != nil {
			return
		}
	}
}

func (d *Device) fillRx(r *virtio.Runner, q *virtio.Queue) (pushed bool, err error) {
	mem := d.life.Mem()
	for !r.Stopping() && d.mux.hasWork() {
		d.heldMu.Lock()
		c := d.held
		d.held = nil
		d.heldMu.Unlock()
		if c == nil {
			if c, err = q.Pop(); errors.Is(err, virtio.ErrBadChain) {
				if err = q.Push(c.Head, 0); err != nil {
					return pushed, err
				}
				pushed = true
				continue
			}
			if err != nil {
				return pushed, err
			}
			if c == nil {
				// No buffer: ask for a kick when the driver adds one.
				more, err := q.EnableNotification()
				if err != nil || !more {
					return pushed, err
				}
				continue
			}
		}
		room := c.WritableLen()
		if room < HeaderSize {
			if err = q.Push(c.Head, 0); err != nil {
				return pushed, err
			}
			pushed = true
			continue
		}
		h, data, ok := d.mux.next(int(min(room-HeaderSize, MaxPayload)))
		if !ok {
			d.heldMu.Lock()
			d.held = c
			d.heldMu.Unlock()
			break
		}
		w := virtio.NewWriter(mem, c.Writable)
		var hb [HeaderSize]byte
		if _, err := w.Write(h.append(hb[:0])); err == nil {
			_, _ = w.Write(data)
		}
		if err = q.Push(c.Head, w.Written()); err != nil {
			return pushed, err
		}
		pushed = true
	}
	if !r.Stopping() {
		_, err = q.EnableNotification()
	}
	return pushed, err
}

// Pause implements virtio.Device; the backend keeps its connections.
func (d *Device) Pause() error { return d.life.Pause() }

// Resume implements virtio.Device.
func (d *Device) Resume() error { return d.life.Resume() }

// Reset implements virtio.Device. As upstream, the backend's connections
// survive a driver reset.
func (d *Device) Reset() error { return d.life.Reset() }

// Close implements virtio.Device: it also closes the host socket and
// every connection, and removes the socket file.
func (d *Device) Close() error { return d.life.Close() }

// Counters implements virtio.Device: upstream's vsock has none.
func (d *Device) Counters() map[string]uint64 { return nil }
