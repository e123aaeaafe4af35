// Package mem is the virtio memory device (virtio 1.2 §5.15), as
// upstream's virtio-mem (virtio-devices/src/mem.rs): a region of guest
// physical memory, mapped at boot but outside the e820 map, whose 2 MiB
// blocks the driver plugs and unplugs on one request queue, up to the
// requested size the VMM sets (Resize, vm.resize with
// hotplug_method=virtio-mem). Unplugged blocks are given back to the host.
package mem

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/nimbus-vmm/nimbus/internal/virtio"
)

// Upstream's constants.
const (
	QueueSize = 128     // QUEUE_SIZE
	BlockSize = 2 << 20 // VIRTIO_MEM_DEFAULT_BLOCK_SIZE
	// Align is VIRTIO_MEM_ALIGN_SIZE: the region's size (and, as the
	// VMM places it, address) is a multiple of it.
	Align = 128 << 20
)

var errShort = errors.New("virtio-mem: short buffer")

// Discarder gives the host memory behind guest RAM back (the guest reads
// zeros there afterwards); *memory.Memory implements it.
type Discarder interface {
	Discard(gpa, size uint64) error
}

// Device is a virtio-mem device. Create it with New.
type Device struct {
	ram Discarder
	log *slog.Logger

	life virtio.Lifecycle

	mu      sync.Mutex // cfg, plugged, irq; held by the queue goroutine per request
	cfg     Config
	plugged []bool           // one per block
	irq     virtio.Interrupt // while active, for Resize's notification
}

var _ virtio.Device = (*Device)(nil)

// New makes the device for the region [addr, addr+size), with initial
// (upstream's hotplugged_size) already requested. ram discards unplugged
// blocks.
func New(addr, size, initial uint64, ram Discarder, log *slog.Logger) (*Device, error) {
	if size == 0 || size%Align != 0 {
		return nil, fmt.Errorf("Virtio-mem size is not aligned with %d: %w", Align, virtio.ErrInvalid)
	}
	if addr%BlockSize != 0 {
		return nil, fmt.Errorf("addr 0x%x is not aligned on block_size 0x%x: %w", addr, BlockSize, virtio.ErrInvalid)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	d := &Device{ram: ram, log: log, plugged: make([]bool, size/BlockSize), cfg: Config{
		BlockSize: BlockSize, Addr: addr, RegionSize: size, UsableRegionSize: size,
	}}
	if initial != 0 {
		if err := d.cfg.resize(initial); err != nil {
			return nil, fmt.Errorf("Failed to resize virtio-mem configuration to %d: %w", initial, err)
		}
	}
	d.life.Init(virtio.LifecycleHooks{Name: "virtio-mem", Queues: 1, Start: d.start, Forget: d.forget})
	return d, nil
}

// ErrResize is upstream's Error::ResizeError, "Resize invalid argument".
var ErrResize = errors.New("Resize invalid argument")

// resize is upstream's VirtioMemConfig::resize.
func (c *Config) resize(size uint64) error {
	switch {
	case c.RequestedSize == size:
		return fmt.Errorf("new size 0x%x and requested_size are identical", size)
	case size > c.RegionSize:
		return fmt.Errorf("new size 0x%x is bigger than region_size 0x%x", size, c.RegionSize)
	case size%c.BlockSize != 0:
		return fmt.Errorf("new size 0x%x is not aligned on block_size 0x%x", size, c.BlockSize)
	}
	c.RequestedSize = size
	return nil
}

// Resize asks the driver for size bytes of plugged memory (upstream's
// Mem::resize): the requested size changes and, once the driver is up,
// it is told through a configuration change notification. Errors carry
// upstream's chain: ErrResize, then the reason.
func (d *Device) Resize(size uint64) error {
	d.mu.Lock()
	err := d.cfg.resize(size)
	irq := d.irq
	d.mu.Unlock()
	if err != nil {
		return resizeError{fmt.Errorf("Failed to update virtio configuration: ResizeError(%v)", err)}
	}
	if irq != nil {
		if err := irq.ConfigChanged(); err != nil {
			return resizeError{fmt.Errorf("Failed to signal the guest about resize: %v", err)}
		}
	}
	return nil
}

// resizeError is ErrResize over its reason, one level each in an error
// chain.
type resizeError struct{ err error }

func (e resizeError) Error() string        { return ErrResize.Error() + ": " + e.err.Error() }
func (e resizeError) Unwrap() error        { return e.err }
func (e resizeError) Is(target error) bool { return target == ErrResize }

// PluggedSize is the memory the driver has plugged (vm.info's
// memory_actual_size counts it).
func (d *Device) PluggedSize() uint64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cfg.PluggedSize
}

// Type implements virtio.Device.
func (d *Device) Type() virtio.DeviceType { return virtio.TypeMem }

// Features implements virtio.Device: upstream offers VERSION_1 only
// (ACPI_PXM with a NUMA node, which Nimbus does not build).
func (d *Device) Features() uint64 { return virtio.FVersion1 }

// QueueSizes implements virtio.Device.
func (d *Device) QueueSizes() []uint16 { return []uint16{QueueSize} }

// ReadConfig implements virtio.Device.
func (d *Device) ReadConfig(off uint64, p []byte) {
	d.mu.Lock()
	b, _ := d.cfg.MarshalBinary()
	d.mu.Unlock()
	clear(p)
	if off < uint64(len(b)) {
		copy(p, b[off:])
	}
}

// WriteConfig implements virtio.Device: the config space is read-only.
func (d *Device) WriteConfig(off uint64, p []byte) {}

// Activate implements virtio.Device.
func (d *Device) Activate(m virtio.GuestMemory, features uint64, queues []*virtio.Queue, irq virtio.Interrupt) error {
	return d.life.Activate(m, features, queues, irq)
}

func (d *Device) start() {
	d.mu.Lock()
	d.irq = d.life.Irq()
	d.mu.Unlock()
	q := d.life.Queues()[0]
	if !q.Ready {
		return
	}
	r := d.life.Runner()
	r.Watch(q.Notify)
	r.Go(func() { virtio.ServeQueue(r, q, 0, d.life.Irq(), d.serve) })
}

func (d *Device) forget() {
	d.mu.Lock()
	d.irq = nil
	d.mu.Unlock()
}

// serve handles one request: a readable virtio_mem_req, then a writable
// virtio_mem_resp. A chain without both is returned unanswered, as
// upstream.
func (d *Device) serve(c *virtio.Chain) uint32 {
	mem := d.life.Mem()
	buf := make([]byte, RequestSize)
	if _, err := virtio.NewReader(mem, c.Readable).Read(buf); err != nil || c.ReadableLen() < RequestSize || c.WritableLen() < ResponseSize {
		d.log.Warn("virtio-mem: malformed request", "readable", c.ReadableLen(), "writable", c.WritableLen())
		return 0
	}
	var req Request
	req.UnmarshalBinary(buf)
	resp := d.handle(req)
	out, _ := resp.MarshalBinary()
	w := virtio.NewWriter(mem, c.Writable)
	if _, err := w.Write(out); err != nil {
		return 0
	}
	return w.Written()
}

// handle is upstream's process_queue dispatch.
func (d *Device) handle(r Request) Response {
	d.mu.Lock()
	defer d.mu.Unlock()
	switch r.Type {
	case ReqPlug:
		return Response{Type: d.change(r.Addr, r.NbBlocks, true)}
	case ReqUnplug:
		return Response{Type: d.change(r.Addr, r.NbBlocks, false)}
	case ReqUnplugAll:
		return Response{Type: d.unplugAll()}
	case ReqState:
		return d.state(r.Addr, r.NbBlocks)
	}
	d.log.Warn("virtio-mem: unknown request type", "type", r.Type)
	return Response{Type: RespError}
}

// blocks checks [addr, addr+n blocks) against the usable region (upstream's
// is_valid_range) and returns its first block index.
func (d *Device) blocks(addr uint64, n uint16) (int, bool) {
	size := uint64(n) * d.cfg.BlockSize
	c := d.cfg
	if n == 0 || addr+size < addr || addr%c.BlockSize != 0 || addr < c.Addr || addr+size > c.Addr+c.UsableRegionSize {
		return 0, false
	}
	return int((addr - c.Addr) / c.BlockSize), true
}

func (d *Device) all(first int, n uint16, plugged bool) bool {
	for _, p := range d.plugged[first : first+int(n)] {
		if p != plugged {
			return false
		}
	}
	return true
}

// change is upstream's state_change_request: plugging past the requested
// size is NACKed; a bad range, or blocks not all in the other state, is
// an ERROR; unplugged blocks are discarded first.
func (d *Device) change(addr uint64, n uint16, plug bool) uint16 {
	size := uint64(n) * d.cfg.BlockSize
	if plug && d.cfg.PluggedSize+size > d.cfg.RequestedSize {
		return RespNack
	}
	first, ok := d.blocks(addr, n)
	if !ok || !d.all(first, n, !plug) {
		return RespError
	}
	if !plug {
		if err := d.ram.Discard(addr, size); err != nil {
			d.log.Error("virtio-mem: failed discarding memory range", "err", err)
			return RespError
		}
	}
	for i := first; i < first+int(n); i++ {
		d.plugged[i] = plug
	}
	if plug {
		d.cfg.PluggedSize += size
	} else {
		d.cfg.PluggedSize -= size
	}
	return RespAck
}

// unplugAll is upstream's unplug_all.
func (d *Device) unplugAll() uint16 {
	if err := d.ram.Discard(d.cfg.Addr, d.cfg.RegionSize); err != nil {
		d.log.Error("virtio-mem: failed discarding memory range", "err", err)
		return RespError
	}
	clear(d.plugged)
	d.cfg.PluggedSize = 0
	return RespAck
}

// state is upstream's state_request.
func (d *Device) state(addr uint64, n uint16) Response {
	first, ok := d.blocks(addr, n)
	switch {
	case !ok:
		return Response{Type: RespError}
	case d.all(first, n, true):
		return Response{Type: RespAck, State: StatePlugged}
	case d.all(first, n, false):
		return Response{Type: RespAck, State: StateUnplugged}
	}
	return Response{Type: RespAck, State: StateMixed}
}

// Pause implements virtio.Device.
func (d *Device) Pause() error { return d.life.Pause() }

// Resume implements virtio.Device.
func (d *Device) Resume() error { return d.life.Resume() }

// Reset implements virtio.Device. Plugged blocks stay plugged, as
// upstream; a new driver unplugs them (UNPLUG_ALL) when it starts.
func (d *Device) Reset() error { return d.life.Reset() }

// Close implements virtio.Device.
func (d *Device) Close() error { return d.life.Close() }

// Counters implements virtio.Device: upstream's virtio-mem has none.
func (d *Device) Counters() map[string]uint64 { return nil }
