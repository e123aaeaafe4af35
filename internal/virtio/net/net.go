// Package net is virtio-net (virtio 1.2 §5.1) on a Linux tap: one tap
// queue per virtqueue pair (IFF_MULTI_QUEUE), 12-byte vnet headers passed
// through unchanged, checksum/TSO/UFO offloads negotiated with the guest
// and programmed with TUNSETOFFLOAD, and a control queue for MQ and guest
// offload changes. Each pair has an RX goroutine (tap to guest, woken by
// the tap or by the RX queue when it ran out of buffers) and a TX
// goroutine (guest to tap, woken by the TX queue).
package net

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"golang.org/x/sys/unix"
	"io"
	"net"
	"sync/atomic"

	"github.com/nimbus-vmm/nimbus/internal/config"
	"github.com/nimbus-vmm/nimbus/internal/ratelimit"
	"github.com/nimbus-vmm/nimbus/internal/virtio"
)

// Defaults as upstream: 2 queues (one pair) of 256.
const (
	DefaultQueueSize = 256
	ctrlQueueSize    = 64
)

// maxFrame is the largest frame plus header the device moves: a 64 KiB
// GSO frame with its Ethernet and vnet headers.
const maxFrame = HeaderSize + 65535 + 14 + 4

// Device is one virtio-net device. Create it with New.
type Device struct {
	virtio.Stateless // the transport holds the rest (snapshots)

	taps     []*tap
	tapName  string
	pairs    int
	qsize    uint16
	features uint64
	cfg      Config

	life  virtio.Lifecycle
	acked uint64 // negotiated features, while active
	// skipOffload is for tests whose "tap" is a socket.
	skipOffload bool

	rxBytes, rxFrames, txBytes, txFrames atomic.Uint64
	// limits is rate_limiter_config: at each activation every queue of
	// every pair gets a limiter of its own from it (upstream's rx and tx
	// limiters), kept across pause and resume. lims[q] is queue q's.
	limits *config.RateLimiterConfig
	lims   []*ratelimit.Limiter
}

var _ virtio.Device = (*Device)(nil)

// closeFds closes fds New owns but did not wrap.
func closeFds(fds []int32) {
	for _, fd := range fds {
		unix.Close(int(fd))
	}
}

// New opens the tap of cfg: the given fds (one per queue pair, from the
// CLI fd=[…] or SCM_RIGHTS; the device takes ownership), or the
// interface cfg.Tap, created if missing (vmtap%d when empty) and
// configured on the host side with host_mac, ip/mask and mtu.
func New(cfg config.NetConfig) (*Device, error) {
	nq := int(cfg.NumQueues)
	if nq == 0 {
		nq = 2
	}
	if nq < 2 || nq%2 != 0 {
		closeFds(cfg.Fds)
		return nil, fmt.Errorf("num_queues %d must be an even number >= 2: %w", nq, virtio.ErrInvalid)
	}
	pairs := nq / 2
	var taps []*tap
	name := cfg.Tap
	if len(cfg.Fds) > 0 {
		if len(cfg.Fds) != pairs {
			closeFds(cfg.Fds)
			return nil, fmt.Errorf("%d fds for %d queue pairs: %w", len(cfg.Fds), pairs, virtio.ErrInvalid)
		}
		for i, fd := range cfg.Fds {
			t, err := newTap(int(fd)) // closes fd on error
			if err != nil {
				closeTaps(taps)
				closeFds(cfg.Fds[i+1:])
				return nil, fmt.Errorf("tap fd %d: %w: %w", fd, virtio.ErrBackend, err)
			}
			taps = append(taps, t)
		}
	} else {
		var err error
		taps, name, err = openTaps(cfg.Tap, pairs)
		if err != nil {
			return nil, err
		}
		if err := configureHost(name, cfg.HostMAC, cfg.IP, cfg.Mask, cfg.MTU); err != nil {
			closeTaps(taps)
			return nil, fmt.Errorf("tap %s: %w: %w", name, virtio.ErrBackend, err)
		}
	}
	d, err := newDevice(cfg, taps)
	if err != nil {
		closeTaps(taps)
		return nil, err
	}
	d.tapName = name
	return d, nil
}

func closeTaps(taps []*tap) {
	for _, t := range taps {
		t.f.Close()
	}
}

func newDevice(cfg config.NetConfig, taps []*tap) (*Device, error) {
	d := &Device{taps: taps, pairs: len(taps), qsize: cfg.QueueSize, limits: cfg.RateLimiterConfig}
	if d.qsize == 0 {
		d.qsize = DefaultQueueSize
	}
	if cfg.MAC != "" {
		hw, err := net.ParseMAC(cfg.MAC)
		if err != nil || len(hw) != 6 {
			return nil, fmt.Errorf("mac %q: %w", cfg.MAC, virtio.ErrInvalid)
		}
		copy(d.cfg.MAC[:], hw)
	} else {
		// Upstream: a random, locally administered unicast address.
		_, _ = rand.Read(d.cfg.MAC[:])
		d.cfg.MAC[0] = d.cfg.MAC[0]&^1 | 2
	}
	d.cfg.Status = StatusLinkUp
	d.cfg.MaxVirtqueuePairs = uint16(d.pairs)
	d.features = virtio.CommonFeatures | FMAC | FStatus | FCtrlVQ
	if d.pairs > 1 {
		d.features |= FMQ
	}
	if cfg.MTU != nil {
		d.features |= FMTU
		d.cfg.MTU = *cfg.MTU
	}
	if cfg.OffloadCsum {
		d.features |= FCsum | FGuestCsum | FCtrlGuestOffloads
		if cfg.OffloadTSO {
			d.features |= FHostTSO4 | FHostTSO6 | FHostECN | FGuestTSO4 | FGuestTSO6 | FGuestECN
		}
		if cfg.OffloadUFO {
			d.features |= FHostUFO | FGuestUFO
		}
	}
	d.life.Init(virtio.LifecycleHooks{
		Name: "net", Queues: 2*d.pairs + 1,
		Bind: d.bind, Start: d.start, Forget: func() { d.acked = 0 }, Release: d.closeTaps,
	})
	return d, nil
}

// TapName is the host interface name ("" when built from fds without a tap= name).
func (d *Device) TapName() string { return d.tapName }

// MAC is the guest MAC address, for writing back into the config.
func (d *Device) MAC() string { return net.HardwareAddr(d.cfg.MAC[:]).String() }

// Type implements virtio.Device.
func (d *Device) Type() virtio.DeviceType { return virtio.TypeNet }

// Features implements virtio.Device.
func (d *Device) Features() uint64 { return d.features }

// QueueSizes implements virtio.Device: rx0, tx0, rx1, tx1, …, control.
func (d *Device) QueueSizes() []uint16 {
	s := make([]uint16, 2*d.pairs+1)
	for i := range s {
		s[i] = d.qsize
	}
	s[len(s)-1] = ctrlQueueSize
	return s
}

// ReadConfig implements virtio.Device.
func (d *Device) ReadConfig(off uint64, p []byte) {
	b, _ := d.cfg.MarshalBinary()
	clear(p)
	if off < uint64(len(b)) {
		copy(p, b[off:])
	}
}

// WriteConfig implements virtio.Device: the config is read-only for a
// VERSION_1 driver (§5.1.4.2).
func (d *Device) WriteConfig(off uint64, p []byte) {}

// Activate implements virtio.Device.
func (d *Device) Activate(mem virtio.GuestMemory, features uint64, queues []*virtio.Queue, irq virtio.Interrupt) error {
	return d.life.Activate(mem, features, queues, irq)
}

func (d *Device) bind(features uint64) error {
	if err := d.setOffloads(features); err != nil {
		return err
	}
	d.acked = features
	d.lims = make([]*ratelimit.Limiter, 2*d.pairs)
	for q := range d.lims {
		d.lims[q] = ratelimit.New(d.limits)
	}
	return nil
}

func (d *Device) setOffloads(features uint64) error {
	if d.skipOffload {
		return nil
	}
	for _, t := range d.taps {
		err := t.setOffload(features)
		if err != nil && features&FGuestUFO != 0 {
			err = t.setOffload(features &^ FGuestUFO) // kernels without tap UFO
		}
		if err != nil {
			return fmt.Errorf("TUNSETOFFLOAD: %w: %w", virtio.ErrBackend, err)
		}
	}
	return nil
}

func (d *Device) start() {
	r, queues, irq := d.life.Runner(), d.life.Queues(), d.life.Irq()
	for p, t := range d.taps {
		rx, tx := queues[2*p], queues[2*p+1]
		r.Watch(t)
		if rx.Ready {
			r.Watch(rx.Notify)
			r.Go(func() { d.receive(t, rx, 2*p, d.lims[2*p], r.Stopping) })
		}
		if tx.Ready {
			r.Watch(tx.Notify)
			w := &txWorker{d: d, t: t, buf: make([]byte, maxFrame), lim: d.lims[2*p+1], stopping: r.Stopping}
			r.Go(func() { virtio.ServeQueue(r, tx, 2*p+1, irq, w.handle) })
		}
	}
	if ctrl := queues[2*d.pairs]; ctrl.Ready {
		r.Watch(ctrl.Notify)
		r.Go(func() { virtio.ServeQueue(r, ctrl, 2*d.pairs, irq, d.control) })
	}
}

type txWorker struct {
	d        *Device
	t        *tap
	buf      []byte
	lim      *ratelimit.Limiter
	stopping func() bool
}

// handle sends one TX chain (vnet header + frame) as one tap write.
func (w *txWorker) handle(c *virtio.Chain) uint32 {
	n, err := io.ReadFull(virtio.NewReader(w.d.life.Mem(), c.Readable), w.buf[:min(c.ReadableLen(), uint64(len(w.buf)))])
	if err != nil || n < HeaderSize {
		return 0
	}
	w.lim.Wait(uint64(n), w.stopping)
	if _, err := w.t.f.Write(w.buf[:n]); err != nil {
		return 0 // dropped, as a NIC drops; interrupted writes end here too
	}
	w.d.txFrames.Add(1)
	w.d.txBytes.Add(uint64(n - HeaderSize))
	return 0
}

// receive moves frames from the tap into RX buffers until stopped, each
// once lim allows it.
func (d *Device) receive(t *tap, q *virtio.Queue, idx int, lim *ratelimit.Limiter, stopping func() bool) {
	buf := make([]byte, maxFrame)
	for {
		n, err := t.f.Read(buf)
		if err != nil {
			return // interrupted (Stop) or the tap is gone
		}
		if n < HeaderSize {
			continue
		}
		binary.LittleEndian.PutUint16(buf[offNumBuffers:], 1)
		lim.Wait(uint64(n), stopping)
		if !d.deliver(q, idx, buf[:n]) {
			return
		}
	}
}

// deliver puts one frame in the next RX chain, waiting for the driver to
// post one if needed. It returns false when stopped or the queue broke.
func (d *Device) deliver(q *virtio.Queue, idx int, frame []byte) bool {
	for {
		c, err := q.Pop()
		if errors.Is(err, virtio.ErrBadChain) {
			_ = q.Push(c.Head, 0)
			continue
		}
		if err != nil {
			d.life.Irq().NeedsReset(err)
			return false
		}
		if c == nil {
			more, err := q.EnableNotification()
			if err != nil {
				d.life.Irq().NeedsReset(err)
				return false
			}
			if !more {
				if _, err := q.Notify.Wait(); err != nil {
					return false
				}
			}
			continue
		}
		var used uint32
		if c.WritableLen() >= uint64(len(frame)) {
			w := virtio.NewWriter(d.life.Mem(), c.Writable)
			if _, err := w.Write(frame); err == nil {
				used = w.Written()
				d.rxFrames.Add(1)
				d.rxBytes.Add(uint64(len(frame) - HeaderSize))
			}
		} // else: the frame does not fit and is dropped; the buffer returns empty
		if err := q.Push(c.Head, used); err != nil {
			d.life.Irq().NeedsReset(err)
			return false
		}
		if q.NeedsInterrupt() {
			_ = d.life.Irq().Signal(idx)
		}
		return true
	}
}

// control serves one control-queue command (§5.1.6.5): {class, command},
// data, and an ack byte as the last writable byte.
func (d *Device) control(c *virtio.Chain) uint32 {
	if c.WritableLen() == 0 {
		return 0
	}
	_, ackBuf := virtio.SplitBuffers(c.Writable, c.WritableLen()-1)
	var cmd [2 + 8]byte
	r := virtio.NewReader(d.life.Mem(), c.Readable)
	n, _ := io.ReadFull(r, cmd[:min(c.ReadableLen(), uint64(len(cmd)))])
	ack := byte(ctrlErr)
	switch {
	case n == 4 && cmd[0] == ctrlClassMQ && cmd[1] == ctrlMQVQPairsSet:
		// All pairs are always served; the guest may use fewer.
		if p := binary.LittleEndian.Uint16(cmd[2:]); p >= 1 && int(p) <= d.pairs {
			ack = ctrlOK
		}
	case n == 10 && cmd[0] == ctrlClassGuestOffloads && cmd[1] == ctrlGuestOffloadsSet:
		offloads := binary.LittleEndian.Uint64(cmd[2:])
		if offloads&^d.acked&(FGuestCsum|FGuestTSO4|FGuestTSO6|FGuestECN|FGuestUFO) == 0 && d.setOffloads(offloads) == nil {
			ack = ctrlOK
		}
	}
	if _, err := d.life.Mem().WriteAt([]byte{ack}, int64(ackBuf[0].Addr)); err != nil {
		return 0
	}
	return 1
}

// Pause implements virtio.Device.
func (d *Device) Pause() error { return d.life.Pause() }

// Resume implements virtio.Device.
func (d *Device) Resume() error { return d.life.Resume() }

// Reset implements virtio.Device.
func (d *Device) Reset() error { return d.life.Reset() }

// Close implements virtio.Device: it also closes the tap queues (a tap
// Nimbus created disappears with its last descriptor unless persistent).
func (d *Device) Close() error { return d.life.Close() }

func (d *Device) closeTaps() error {
	var err error
	for _, t := range d.taps {
		err = errors.Join(err, t.f.Close())
	}
	return err
}

// Counters implements virtio.Device with upstream's names.
func (d *Device) Counters() map[string]uint64 {
	return map[string]uint64{
		"rx_bytes":  d.rxBytes.Load(),
		"rx_frames": d.rxFrames.Load(),
		"tx_bytes":  d.txBytes.Load(),
		"tx_frames": d.txFrames.Load(),
	}
}
