// Package pmem is the virtio persistent-memory device (virtio 1.2 §5.19)
// as upstream's virtio-pmem (virtio-devices/src/pmem.rs and
// DeviceManager::make_virtio_pmem_device): a host file mapped into the
// guest's physical address space, which the guest's nvdimm driver turns
// into /dev/pmemN (DAX-capable), and one queue on which the guest asks
// for the file to be flushed to stable storage.
package pmem

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/nimbus-vmm/nimbus/internal/config"
	"github.com/nimbus-vmm/nimbus/internal/virtio"
)

// QueueSize is upstream's.
const QueueSize = 256

// Align is the alignment of the size and of the guest address: 2 MiB,
// for huge pages (upstream).
const Align = 2 << 20

// Upstream's error texts (DeviceManagerError).
var (
	ErrDirNoSize  = errors.New("Trying to use a directory for pmem but no size specified")
	ErrNotAligned = errors.New("Trying to use a size that is not multiple of 2MiB")
)

// Device is a virtio-pmem device. Create it with New; the VM places its
// Mapping in guest-physical space and calls SetStart before the guest
// can see it.
type Device struct {
	file    *os.File
	data    []byte // the file, mapped MAP_SHARED (MAP_PRIVATE with discard_writes)
	start   atomic.Uint64
	flushes atomic.Uint64
	keep    atomic.Bool // KeepMapping: Close leaves data mapped

	life virtio.Lifecycle
}

var _ virtio.Device = (*Device)(nil)

// New opens and maps cfg.File as upstream does: a directory gets an
// unnamed temporary file of cfg.Size; a file is used whole, or its first
// cfg.Size bytes; discard_writes opens it read-only and maps it private,
// so the guest's writes never reach it. The size must be a multiple of
// 2 MiB. Unlike upstream, a size beyond the end of the file is refused
// here: the guest touching the missing pages would stop the VM.
func New(cfg config.PmemConfig) (*Device, error) {
	fi, err := os.Stat(cfg.File)
	if err != nil {
		return nil, fmt.Errorf("Cannot open persistent memory file: %w", err)
	}
	flags := os.O_RDWR
	if cfg.DiscardWrites {
		flags = os.O_RDONLY
	}
	path := cfg.File
	if fi.IsDir() {
		if cfg.Size == nil {
			return nil, ErrDirNoSize
		}
		flags |= unix.O_TMPFILE
	}
	f, err := os.OpenFile(path, flags, 0o600)
	if err != nil {
		return nil, fmt.Errorf("Cannot open persistent memory file: %w", err)
	}
	d, err := mapFile(f, cfg, fi.IsDir())
	if err != nil {
		f.Close()
		return nil, err
	}
	d.life.Init(virtio.LifecycleHooks{Name: "pmem", Queues: 1, Start: d.startQueue, Release: d.release})
	return d, nil
}

func mapFile(f *os.File, cfg config.PmemConfig, dir bool) (*Device, error) {
	end, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return nil, fmt.Errorf("Cannot set persistent memory file size: %w", err)
	}
	size := uint64(end)
	if cfg.Size != nil {
		size = *cfg.Size
		if dir {
			if err := f.Truncate(int64(size)); err != nil {
				return nil, fmt.Errorf("Cannot set persistent memory file size: %w", err)
			}
		} else if size > uint64(end) {
			return nil, fmt.Errorf("size %d is beyond the end of %s (%d bytes): %w", size, cfg.File, end, virtio.ErrInvalid)
		}
	}
	if size == 0 || size%Align != 0 {
		return nil, ErrNotAligned
	}
	share := unix.MAP_SHARED
	if cfg.DiscardWrites {
		share = unix.MAP_PRIVATE
	}
	data, err := unix.Mmap(int(f.Fd()), 0, int(size), unix.PROT_READ|unix.PROT_WRITE, share|unix.MAP_NORESERVE)
	if err != nil {
		return nil, fmt.Errorf("map persistent memory file: %w: %w", virtio.ErrBackend, err)
	}
	return &Device{file: f, data: data}, nil
}

// Mapping is the file's host mapping, to register with KVM at Start.
func (d *Device) Mapping() []byte { return d.data }

// Size is the device's size in bytes.
func (d *Device) Size() uint64 { return uint64(len(d.data)) }

// SetStart sets the guest-physical address the mapping is registered at.
func (d *Device) SetStart(gpa uint64) { d.start.Store(gpa) }

// Type implements virtio.Device.
func (d *Device) Type() virtio.DeviceType { return virtio.TypePmem }

// Features implements virtio.Device: no device-specific features.
func (d *Device) Features() uint64 { return virtio.CommonFeatures }

// QueueSizes implements virtio.Device.
func (d *Device) QueueSizes() []uint16 { return []uint16{QueueSize} }

// ConfigSize implements vpci.ConfigSizer.
func (d *Device) ConfigSize() uint64 { return ConfigSize }

// ReadConfig implements virtio.Device.
func (d *Device) ReadConfig(off uint64, p []byte) {
	b, _ := Config{Start: d.start.Load(), Size: d.Size()}.MarshalBinary()
	clear(p)
	if off < uint64(len(b)) {
		copy(p, b[off:])
	}
}

// WriteConfig implements virtio.Device: the config space is read-only.
func (d *Device) WriteConfig(off uint64, p []byte) {}

// Activate implements virtio.Device.
func (d *Device) Activate(mem virtio.GuestMemory, features uint64, queues []*virtio.Queue, irq virtio.Interrupt) error {
	return d.life.Activate(mem, features, queues, irq)
}

func (d *Device) startQueue() {
	q := d.life.Queues()[0]
	if !q.Ready {
		return
	}
	r := d.life.Runner()
	r.Watch(q.Notify)
	r.Go(func() { virtio.ServeQueue(r, q, 0, d.life.Irq(), d.request) })
}

// request serves one chain: a readable request, a writable response.
// Malformed chains are returned unanswered (length 0), as upstream.
func (d *Device) request(c *virtio.Chain) uint32 {
	if c.ReadableLen() < reqSize || c.WritableLen() < respSize {
		return 0
	}
	var req [reqSize]byte
	if _, err := io.ReadFull(virtio.NewReader(d.life.Mem(), c.Readable), req[:]); err != nil {
		return 0
	}
	ret := uint32(RespEIO)
	if binary.LittleEndian.Uint32(req[:]) == ReqFlush {
		d.flushes.Add(1)
		// fsync of the file, as upstream's sync_all: a MAP_SHARED
		// mapping's dirty pages are the file's page cache.
		if err := d.file.Sync(); err == nil {
			ret = RespOK
		}
	}
	w := virtio.NewWriter(d.life.Mem(), c.Writable)
	w.Write(binary.LittleEndian.AppendUint32(nil, ret))
	return w.Written()
}

// Pause implements virtio.Device.
func (d *Device) Pause() error { return d.life.Pause() }

// Resume implements virtio.Device.
func (d *Device) Resume() error { return d.life.Resume() }

// Reset implements virtio.Device.
func (d *Device) Reset() error { return d.life.Reset() }

// Close implements virtio.Device: it stops the queue, then unmaps and
// closes the file. The VM must have deleted the KVM slot first.
func (d *Device) Close() error { return d.life.Close() }

func (d *Device) release() error {
	if d.keep.Load() {
		return d.file.Close()
	}
	return errors.Join(unix.Munmap(d.data), d.file.Close())
}

// KeepMapping makes Close leave the file mapped: the VM could not delete
// the KVM slot over it, and a guest access to unmapped memory would stop
// the VM.
func (d *Device) KeepMapping() { d.keep.Store(true) }

// Counters implements virtio.Device: upstream's pmem has none.
func (d *Device) Counters() map[string]uint64 { return nil }
