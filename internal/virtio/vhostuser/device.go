// Package vhostuser is Nimbus's vhost-user front end (QEMU's
// docs/interop/vhost-user.rst; upstream's vhost_user/vu_common_ctrl.rs):
// a virtio device whose queues are served by another process, the back
// end, over a Unix socket. Nimbus hands it the guest's RAM (the memfds
// behind memory shared=on), each queue's addresses, the queue's
// notification eventfd (a KVM ioeventfd: guest kicks reach the back end
// without Nimbus) and the eventfd of the queue's MSI-X vector (a KVM
// irqfd: the back end interrupts the guest without Nimbus). The device
// types on it (virtio-fs, ...) only add their config space.
package vhostuser

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/nimbus-vmm/nimbus/internal/memory"
	"github.com/nimbus-vmm/nimbus/internal/virtio"
)

// RAM is the guest memory's region table; *memory.Memory implements it.
type RAM interface {
	Regions() []memory.RegionInfo
}

// Spec is what one device type adds to the generic front end.
type Spec struct {
	Name       string // "vhost-user-fs", for errors and logs
	Type       virtio.DeviceType
	QueueSizes []uint16
	// Features are the virtio features offered to the guest where the back
	// end has them too.
	Features uint64
	// FrontendFeatures are features the front end serves itself (the MAC
	// in virtio-net's config space): always offered, never sent to the
	// back end.
	FrontendFeatures uint64
	// Config is the device's config space when the front end builds it
	// (virtio-fs's tag); with nil, ConfigSize bytes are read from the back
	// end (GET_CONFIG).
	Config     []byte
	ConfigSize uint64
}

// DefaultFeatures is upstream's DEFAULT_VIRTIO_FEATURES less the
// vhost-user transport bits, which the guest never sees.
const DefaultFeatures = virtio.FIndirectDesc | virtio.FEventIdx | virtio.FVersion1 |
	virtio.FInOrder | virtio.FOrderPlatform | virtio.FNotificationData

// wantedProtocol are the protocol features Nimbus uses: more queues,
// acknowledged requests, memory slots for hot-added RAM, and the config
// space for devices that take it from the back end.
const wantedProtocol = ProtocolMQ | ProtocolReplyAck | ProtocolConfigureMemSlots | ProtocolConfig

// Device is a virtio device served by a vhost-user back end.
type Device struct {
	spec    Spec
	socket  string
	conn    *Conn
	ram     RAM
	log     *slog.Logger
	offered uint64 // spec.Features the back end has, plus FProtocolFeatures if it speaks them
	proto   uint64 // acked protocol features
	config  []byte

	mu     sync.Mutex
	rings  []uint32 // ring indexes set up by Activate
	kicks  []*virtio.EventFD
	relays []*virtio.EventFD
	queues []int // relays[i] serves queue index queues[i]
	irq    virtio.Interrupt
	runner virtio.Runner
	// sent are the RAM regions (by guest address) the back end has, so
	// that hot-added RAM and a second activation send each one once.
	sent map[uint64]bool
	// added are the regions sent with ADD_MEM_REG since the last
	// SET_MEM_TABLE (which replaces them all).
	added  []memory.RegionInfo
	warned bool // gone logged the back end's disappearance
	paused bool // Pause disabled the rings; a reconnection leaves them so
	closed bool
	hangup *hangupWatch
	// act is the running activation, replayed on a new connection.
	act *activation
	// quit ends a reconnection in progress (Close); bg is that goroutine.
	quit chan struct{}
	bg   sync.WaitGroup
	// reconnectTimeout is ReconnectTimeout when the device was made.
	reconnectTimeout time.Duration
}

// activation is what Activate was given and worked out: replayed to a
// back end that reconnects.
type activation struct {
	mem      virtio.GuestMemory
	features uint64
	queues   []*virtio.Queue
	calls    []int // per ring (rings order): the call eventfd
}

// ReconnectTimeout bounds the wait for a back end that hung up to listen
// again (upstream's client-mode connect timeout); past it the guest is
// told the device needs a reset. A device takes the value it has when
// made.
var ReconnectTimeout = ConnectTimeout

var _ virtio.Device = (*Device)(nil)

// New connects to the back end at socket (retrying for ConnectTimeout as
// upstream's client mode) and negotiates as upstream's
// negotiate_features_vhost_user: SET_OWNER, the features both sides have,
// the protocol features, and the queue count the back end allows. Where
// the previous machine handed over its connection to socket (h, nil at a
// first boot), the device takes it instead and negotiates again without
// SET_OWNER (the back end is owned already); if that connection fails,
// it dials anew.
func New(spec Spec, socket string, ram RAM, h *Handover, log *slog.Logger) (_ *Device, err error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	// The back end maps guest RAM from its file descriptors: refuse at
	// once what would only fail when the guest's driver starts.
	for _, r := range ram.Regions() {
		if r.FD < 0 {
			return nil, fmt.Errorf("%s: %w: guest RAM %v is not shared with the back end (memory shared=on)", spec.Name, ErrProtocol, r.Region)
		}
	}
	d := &Device{spec: spec, socket: socket, ram: ram, log: log, config: spec.Config, sent: map[uint64]bool{},
		quit: make(chan struct{}), reconnectTimeout: ReconnectTimeout}
	if c := h.take(socket, spec.Name); c != nil {
		d.conn = c
		if err := d.negotiate(false); err == nil {
			log.Info("vhost-user back end taken over from the previous machine", "device", spec.Name, "socket", socket)
		} else {
			log.Warn("vhost-user: the connection handed over failed; dialling again", "device", spec.Name, "socket", socket, "err", err)
			c.Close()
			d.conn = nil
		}
	}
	dialled := d.conn == nil
	if dialled {
		if d.conn, err = Dial(socket, ConnectTimeout); err != nil {
			return nil, err
		}
	}
	c := d.conn
	defer func() {
		if err != nil {
			c.Close()
			err = fmt.Errorf("%s (%s): %w", spec.Name, socket, err)
		}
	}()
	if dialled {
		if err := d.negotiate(true); err != nil {
			return nil, err
		}
	}
	if d.config == nil && spec.ConfigSize > 0 {
		if d.proto&ProtocolConfig == 0 {
			return nil, fmt.Errorf("%w: the back end cannot report the config space (no CONFIG protocol feature)", ErrProtocol)
		}
		if d.config, err = c.Config(0, uint32(spec.ConfigSize)); err != nil {
			return nil, err
		}
	}
	if d.hangup, err = watchHangup(c, d.lost); err != nil {
		return nil, err
	}
	return d, nil
}

// negotiate is upstream's negotiate_features_vhost_user on d.conn:
// SET_OWNER (unless the connection is owned already: handed over), the
// features (on a reconnection the new back end must offer what was
// negotiated before), the protocol features, the queue count. mu held, or
// d unshared.
func (d *Device) negotiate(setOwner bool) error {
	c := d.conn
	if setOwner {
		if err := c.SetOwner(); err != nil {
			return err
		}
	}
	f, err := c.Features()
	if err != nil {
		return err
	}
	if f&virtio.FVersion1 == 0 {
		return fmt.Errorf("%w: the back end does not offer VIRTIO_F_VERSION_1 (features %#x)", ErrProtocol, f)
	}
	if d.act != nil && f&d.offered != d.offered {
		return fmt.Errorf("%w: the back end came back with features %#x, not the %#x negotiated", ErrProtocol, f, d.offered)
	}
	d.offered = f & (d.spec.Features | FProtocolFeatures)
	if f&FProtocolFeatures != 0 {
		p, err := c.ProtocolFeatures()
		if err != nil {
			return err
		}
		d.proto = p & wantedProtocol
		if err := c.SetProtocolFeatures(d.proto); err != nil {
			return err
		}
	}
	if d.proto&ProtocolMQ != 0 {
		n, err := c.QueueNum()
		if err != nil {
			return err
		}
		if uint64(len(d.spec.QueueSizes)) > n {
			return fmt.Errorf("%w: %d queues requested, the back end supports %d", ErrProtocol, len(d.spec.QueueSizes), n)
		}
	}
	return nil
}

// lost is called once per connection when the back end hangs up: Nimbus
// reconnects as upstream's client mode does (a restarted virtiofsd or
// SPDK) and replays the activation; past ReconnectTimeout the guest is
// told (DEVICE_NEEDS_RESET) instead of waiting on queues nobody serves.
func (d *Device) lost(err error) {
	d.log.Warn("vhost-user back end hung up; reconnecting", "device", d.spec.Name, "socket", d.socket, "err", err)
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return
	}
	d.bg.Add(1)
	go d.reconnect(err)
}

// reconnect dials the socket again until ReconnectTimeout or Close.
func (d *Device) reconnect(cause error) {
	defer d.bg.Done()
	deadline := time.Now().Add(d.reconnectTimeout)
	for {
		select {
		case <-d.quit:
			return
		case <-time.After(connectRetry):
		}
		c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: d.socket, Net: "unix"})
		if err == nil {
			if err = d.resume(&Conn{c: c}); err == nil {
				d.log.Info("vhost-user back end reconnected", "device", d.spec.Name, "socket", d.socket)
				return
			}
			d.log.Warn("vhost-user reconnection failed", "device", d.spec.Name, "err", err)
		}
		if time.Now().After(deadline) {
			d.mu.Lock()
			irq := d.irq
			d.warned = true
			d.mu.Unlock()
			if irq != nil {
				irq.NeedsReset(fmt.Errorf("%s: %w; no back end on %s within %v", d.spec.Name, cause, d.socket, d.reconnectTimeout))
			}
			return
		}
	}
}

// resume takes c as the connection: negotiation, the running activation
// replayed (upstream's reinitialize_vhost_user: rings start where the
// driver's available index is), a new hang-up watch.
func (d *Device) resume(c *Conn) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		c.Close()
		return nil
	}
	old, oldWatch := d.conn, d.hangup
	d.conn = c
	err := d.negotiate(true)
	if err == nil && d.act != nil {
		clear(d.sent)
		d.added = nil
		err = d.setup()
	}
	if err == nil {
		d.hangup, err = watchHangup(c, d.lost)
	}
	if err != nil {
		d.conn, d.hangup = old, oldWatch
		c.Close()
		return err
	}
	d.warned = false
	// The old watch has returned (it called lost); release what it held.
	return errors.Join(oldWatch.stop(), old.Close())
}

// Type implements virtio.Device.
func (d *Device) Type() virtio.DeviceType { return d.spec.Type }

// Features implements virtio.Device.
func (d *Device) Features() uint64 {
	return (d.offered | d.spec.FrontendFeatures) &^ FProtocolFeatures
}

// QueueSizes implements virtio.Device.
func (d *Device) QueueSizes() []uint16 { return d.spec.QueueSizes }

// ConfigSize implements vpci.ConfigSizer.
func (d *Device) ConfigSize() uint64 { return uint64(len(d.config)) }

// ReadConfig implements virtio.Device.
func (d *Device) ReadConfig(off uint64, p []byte) {
	clear(p)
	if off < uint64(len(d.config)) {
		copy(p, d.config[off:])
	}
}

// WriteConfig implements virtio.Device: the config space is read-only, as
// upstream's virtio-fs.
func (d *Device) WriteConfig(off uint64, p []byte) {}

// ringsEnabledByMessage: with VHOST_USER_F_PROTOCOL_FEATURES negotiated,
// rings start disabled and SET_VRING_ENABLE turns them on and off.
func (d *Device) ringsEnabledByMessage() bool { return d.offered&FProtocolFeatures != 0 }

// Activate implements virtio.Device: upstream's setup_vhost_user.
func (d *Device) Activate(mem virtio.GuestMemory, features uint64, queues []*virtio.Queue, irq virtio.Interrupt) (err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed || len(d.rings) > 0 {
		return fmt.Errorf("%s: activate: %w", d.spec.Name, virtio.ErrState)
	}
	defer func() {
		if err != nil {
			d.reset()
			err = fmt.Errorf("%s: %w", d.spec.Name, err)
		}
	}()
	notifier, _ := irq.(virtio.Notifier)
	act := &activation{mem: mem, features: features, queues: queues}
	for i, q := range queues {
		if !q.Ready {
			continue
		}
		d.rings = append(d.rings, uint32(i))
		d.kicks = append(d.kicks, q.Notify)
		call, ok := -1, false
		if notifier != nil {
			call, ok = notifier.Notifier(i)
		}
		if !ok {
			// No vector eventfd: relay the back end's calls through Nimbus.
			r, err := virtio.NewEventFD()
			if err != nil {
				return err
			}
			d.relays, d.queues = append(d.relays, r), append(d.queues, i)
			d.runner.Watch(r)
			call = r.FD()
		}
		act.calls = append(act.calls, call)
	}
	d.act = act
	if err := d.setup(); err != nil {
		return err
	}
	d.irq = irq
	d.startRelays()
	return nil
}

// setup sends the activation d.act to the back end: upstream's
// setup_vhost_user. mu held.
func (d *Device) setup() error {
	c, a := d.conn, d.act
	if err := c.SetFeatures(a.features&^d.spec.FrontendFeatures | d.offered&FProtocolFeatures); err != nil {
		return err
	}
	if err := d.sendMemory(); err != nil {
		return err
	}
	regions := d.ram.Regions()
	// Every ring's size first, as upstream's setup_vhost_user: some back
	// ends (SPDK) size the device from these.
	for _, idx := range d.rings {
		if err := c.SetVringNum(idx, a.queues[idx].Size); err != nil {
			return err
		}
	}
	for r, idx := range d.rings {
		q := a.queues[idx]
		n := uint64(q.Size)
		v := VringAddr{Index: idx}
		var err error
		if v.Desc, err = hostAddr(regions, q.DescAddr, 16*n); err != nil {
			return err
		}
		if v.Used, err = hostAddr(regions, q.UsedAddr, 6+8*n); err != nil {
			return err
		}
		if v.Avail, err = hostAddr(regions, q.AvailAddr, 6+2*n); err != nil {
			return err
		}
		if err := c.SetVringAddr(v); err != nil {
			return err
		}
		// Where the driver is: its available index (0 on a fresh ring).
		base, err := a.mem.ReadU16(q.AvailAddr + 2)
		if err != nil {
			return err
		}
		if err := c.SetVringBase(idx, base); err != nil {
			return err
		}
		if err := c.SetVringCall(idx, a.calls[r]); err != nil {
			return err
		}
		if err := c.SetVringKick(idx, q.Notify.FD()); err != nil {
			return err
		}
	}
	if d.ringsEnabledByMessage() && !d.paused {
		for _, idx := range d.rings {
			if err := c.SetVringEnable(idx, true); err != nil {
				return err
			}
		}
	}
	return nil
}

// sendMemory gives the back end the guest's RAM: the whole table with
// SET_MEM_TABLE (which replaces what it had), or, where the table is too
// long for it, ADD_MEM_REG for each region it does not have yet. mu held.
func (d *Device) sendMemory() error {
	regions := d.ram.Regions()
	var t MemTable
	var fds []int
	for _, r := range regions {
		if r.FD < 0 {
			return fmt.Errorf("%w: guest RAM %v is not shared with the back end (memory shared=on)", ErrProtocol, r.Region)
		}
		t = append(t, memRegion(r))
		fds = append(fds, r.FD)
	}
	switch {
	case len(t) <= MaxMemTableRegions:
		if err := d.conn.SetMemTable(t, fds); err != nil {
			return err
		}
		clear(d.sent)
		d.added = nil
		for _, r := range regions {
			d.sent[r.GPA] = true
		}
	case d.proto&ProtocolConfigureMemSlots != 0:
		for _, r := range regions {
			if err := d.addRegion(r); err != nil {
				return err
			}
		}
	default:
		return fmt.Errorf("%w: %d RAM regions, the back end takes %d", ErrProtocol, len(t), MaxMemTableRegions)
	}
	return nil
}

// addRegion sends r with ADD_MEM_REG unless the back end has it. mu held.
func (d *Device) addRegion(r memory.RegionInfo) error {
	if d.sent[r.GPA] {
		return nil
	}
	if err := d.conn.AddMemReg(memRegion(r), r.FD); err != nil {
		return err
	}
	d.sent[r.GPA] = true
	d.added = append(d.added, r)
	return nil
}

func memRegion(r memory.RegionInfo) MemoryRegion {
	return MemoryRegion{GuestPhysAddr: r.GPA, MemorySize: r.Size, UserspaceAddr: r.HostAddr, MmapOffset: r.FileOffset}
}

// AddRegion tells the back end about hot-added RAM (upstream's
// add_memory_region): ADD_MEM_REG where the back end has memory slots,
// the whole table again otherwise. Before the first activation there is
// nothing to do: Activate sends the table.
func (d *Device) AddRegion(r memory.RegionInfo) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed || len(d.sent) == 0 || d.sent[r.GPA] {
		return nil
	}
	if r.FD < 0 {
		return fmt.Errorf("%s: %w: hot-added RAM %v is not shared", d.spec.Name, ErrProtocol, r.Region)
	}
	if d.proto&ProtocolConfigureMemSlots != 0 {
		return d.addRegion(r)
	}
	return d.sendMemory()
}

// hostAddr translates guest range [gpa, gpa+n) to Nimbus's address of it;
// the range must lie in one region.
func hostAddr(regions []memory.RegionInfo, gpa, n uint64) (uint64, error) {
	for _, r := range regions {
		if gpa >= r.GPA && gpa+n <= r.End() && gpa+n >= gpa {
			return r.HostAddr + (gpa - r.GPA), nil
		}
	}
	return 0, fmt.Errorf("%w: ring at %#x (+%#x) is outside guest RAM", virtio.ErrInvalid, gpa, n)
}

// startRelays starts one goroutine per relayed call eventfd (watched by
// the runner since Activate). mu held.
func (d *Device) startRelays() {
	for i, r := range d.relays {
		q := d.queues[i]
		d.runner.Go(func() {
			for {
				if _, err := r.Wait(); err != nil {
					return
				}
				if err := d.irq.Signal(q); err != nil {
					d.log.Warn("vhost-user: relaying a queue interrupt failed", "device", d.spec.Name, "queue", q, "err", err)
				}
			}
		})
	}
}

// Reset implements virtio.Device: upstream's reset_vhost_user, each ring
// disabled and stopped (GET_VRING_BASE).
func (d *Device) Reset() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.reset()
}

func (d *Device) reset() error {
	var errs []error
	for _, idx := range d.rings {
		if d.ringsEnabledByMessage() {
			errs = append(errs, d.gone(d.conn.SetVringEnable(idx, false)))
		}
		_, err := d.conn.VringBase(idx)
		errs = append(errs, d.gone(err))
	}
	d.rings, d.kicks, d.act, d.paused = nil, nil, nil, false
	errs = append(errs, d.runner.Stop(true))
	for _, r := range d.relays {
		errs = append(errs, r.Close())
	}
	d.relays, d.queues, d.irq = nil, nil, nil
	return errors.Join(errs...)
}

// Pause implements virtio.Device: the rings are disabled (upstream's
// pause_vhost_user), the back end keeps their state.
func (d *Device) Pause() error { return d.enableRings(false) }

// Resume implements virtio.Device.
func (d *Device) Resume() error { return d.enableRings(true) }

func (d *Device) enableRings(on bool) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.rings) == 0 {
		return nil
	}
	if !d.ringsEnabledByMessage() {
		return fmt.Errorf("%s: cannot pause a back end without VHOST_USER_F_PROTOCOL_FEATURES: %w", d.spec.Name, virtio.ErrState)
	}
	var errs []error
	for _, idx := range d.rings {
		errs = append(errs, d.gone(d.conn.SetVringEnable(idx, on)))
	}
	d.paused = !on
	if !on {
		return errors.Join(append(errs, d.runner.Stop(false))...)
	}
	if !d.runner.Running() {
		d.startRelays()
	}
	// A kick or a used buffer may have gone by while the rings were off:
	// kick every ring and raise every queue's interrupt, as upstream's
	// resume does (spurious ones are harmless).
	for i, idx := range d.rings {
		errs = append(errs, d.kicks[i].Signal(), d.irq.Signal(int(idx)))
	}
	return errors.Join(errs...)
}

// gone turns a request's failure because the back end went away into a
// warning (once): the VM can still pause, reset and shut down without it,
// as upstream skips a disconnected back end. Other errors pass.
func (d *Device) gone(err error) error {
	if !errors.Is(err, ErrDisconnected) {
		return err
	}
	if !d.warned {
		d.warned = true
		d.log.Warn("vhost-user back end gone; the device stays stopped", "device", d.spec.Name, "socket", d.socket, "err", err)
	}
	return nil
}

// Close implements virtio.Device: a reset, then the connection is closed.
func (d *Device) Close() error { return d.shutdown(nil) }

// HandOver is Close for a machine that reboots: the rings stop as at a
// reset and the back end forgets the RAM it was given region by region,
// but the connection goes to h for the next machine's device on the same
// socket instead of being closed. A connection that failed is closed as
// by Close.
func (d *Device) HandOver(h *Handover) error { return d.shutdown(h) }

// shutdown is Close (h nil) and HandOver.
func (d *Device) shutdown(h *Handover) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil
	}
	d.closed = true
	err := d.reset()
	if h != nil {
		// Regions added one by one stay until removed, and the next
		// machine's may overlap them if it adds its own one by one too
		// (SET_MEM_TABLE would replace them all).
		for _, r := range d.added {
			if err == nil {
				err = d.conn.RemMemReg(memRegion(r))
			}
		}
		d.added = nil
	}
	close(d.quit)
	d.mu.Unlock()
	// Outside mu: the watcher's lost() and a reconnection take it.
	d.bg.Wait()
	err = errors.Join(err, d.hangup.stop())
	d.mu.Lock()
	if h == nil || err != nil || d.warned || d.conn.failed() {
		return errors.Join(err, d.conn.Close())
	}
	h.put(d.socket, &handedConn{name: d.spec.Name, conn: d.conn})
	return nil
}

// Counters implements virtio.Device: the back end keeps the counts.
func (d *Device) Counters() map[string]uint64 { return nil }
