// Package blk is the virtio-blk device (virtio 1.2 §5.2) over a raw image
// file: read/write, flush, GET_ID, discard and write-zeroes, read-only
// disks, O_DIRECT, multiple queues, OFD image locking and upstream's
// counters. Each queue is served by its own goroutine doing synchronous
// file I/O, straight into guest memory where the buffer allows.
package blk

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nimbus-vmm/nimbus/internal/config"
	"github.com/nimbus-vmm/nimbus/internal/directio"
	"github.com/nimbus-vmm/nimbus/internal/qcow2"
	"github.com/nimbus-vmm/nimbus/internal/ratelimit"
	"github.com/nimbus-vmm/nimbus/internal/virtio"
)

// Device is one virtio-blk disk. Create it with New.
type Device struct {
	img      *image
	features uint64
	nq       int
	qsize    uint16

	life virtio.Lifecycle

	mu        sync.Mutex // guards cfg
	cfg       Config
	writeback atomic.Bool

	stats counters
	// limiter, if any, paces requests (rate_limiter_config).
	limiter *ratelimit.Limiter
}

var _ virtio.Device = (*Device)(nil)

// New opens and locks the image of cfg (defaults as upstream: one queue of
// 128 when zero).
func New(cfg config.DiskConfig) (*Device, error) {
	img, err := openImage(&cfg)
	if err != nil {
		return nil, err
	}
	nq := max(int(cfg.NumQueues), 1)
	qs := cfg.QueueSize
	if qs == 0 {
		qs = 128
	}
	if qs&(qs-1) != 0 || qs > virtio.MaxQueueSize || qs < 2 {
		img.close()
		return nil, fmt.Errorf("queue_size %d: %w", qs, virtio.ErrInvalid)
	}
	d := &Device{img: img, nq: nq, qsize: qs}
	d.features = virtio.CommonFeatures | FFlush | FConfigWCE | FBlkSize | FSegMax
	d.cfg = Config{
		Capacity:  uint64(img.size) / SectorSize,
		SegMax:    uint32(qs) - 2, // two descriptors go to header and status
		BlkSize:   SectorSize,
		Writeback: 1,
	}
	if nq > 1 {
		d.features |= FMQ
		d.cfg.NumQueues = uint16(nq)
	}
	if cfg.Readonly {
		d.features |= FRO
	} else if img.regular {
		d.features |= FWriteZeroes
		d.cfg.MaxWriteZeroesSectors = math.MaxUint32
		d.cfg.MaxWriteZeroesSeg = 1
		if cfg.Sparse {
			d.features |= FDiscard
			d.cfg.WriteZeroesMayUnmap = 1
			d.cfg.MaxDiscardSectors = math.MaxUint32
			d.cfg.MaxDiscardSeg = 1
			d.cfg.DiscardSectorAlignment = 8 // 4 KiB, the usual hole granularity
		}
	}
	d.writeback.Store(true)
	d.stats.init()
	d.life.Init(virtio.LifecycleHooks{
		Name: "block device", Queues: nq,
		Bind: d.bind, Start: d.start, Forget: d.forget, Release: img.close,
	})
	return d, nil
}

// Type implements virtio.Device.
func (d *Device) Type() virtio.DeviceType { return virtio.TypeBlock }

// Features implements virtio.Device.
func (d *Device) Features() uint64 { return d.features }

// QueueSizes implements virtio.Device.
func (d *Device) QueueSizes() []uint16 {
	s := make([]uint16, d.nq)
	for i := range s {
		s[i] = d.qsize
	}
	return s
}

// Capacity is the disk size in 512-byte sectors.
func (d *Device) Capacity() uint64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cfg.Capacity
}

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

// WriteConfig implements virtio.Device: only writeback is writable (with
// VIRTIO_BLK_F_CONFIG_WCE); 0 switches the disk to write-through.
func (d *Device) WriteConfig(off uint64, p []byte) {
	if off != offWriteback || len(p) != 1 {
		return
	}
	d.mu.Lock()
	d.cfg.Writeback = p[0] & 1
	d.writeback.Store(d.cfg.Writeback == 1)
	d.mu.Unlock()
}

// SetLimiter makes the device consult l (rate_limiter_config or the
// rate_limit_group's shared limiter) before each request; call it before
// Activate. A nil l limits nothing.
func (d *Device) SetLimiter(l *ratelimit.Limiter) { d.limiter = l }

// Activate implements virtio.Device.
func (d *Device) Activate(mem virtio.GuestMemory, features uint64, queues []*virtio.Queue, irq virtio.Interrupt) error {
	return d.life.Activate(mem, features, queues, irq)
}

func (d *Device) bind(features uint64) error {
	// Without CONFIG_WCE the cache mode follows FLUSH (§5.2.5.1).
	if features&FConfigWCE == 0 {
		d.writeback.Store(features&FFlush != 0)
	}
	return nil
}

func (d *Device) start() {
	r := d.life.Runner()
	for i, q := range d.life.Queues() {
		if !q.Ready {
			continue
		}
		r.Watch(q.Notify)
		w := &worker{d: d, r: r, mem: d.life.Mem(), bounce: directio.AlignedBuf(1 << 17)}
		r.Go(func() { virtio.ServeQueue(r, q, i, d.life.Irq(), w.handle) })
	}
}

// ErrInvalidSize is upstream's VirtioBlockError::InvalidSize: a resize
// to a size that is not whole sectors.
var ErrInvalidSize = fmt.Errorf("Disk image size is not a multiple of %d: %w", SectorSize, virtio.ErrInvalid)

// Resize changes the disk's size (upstream's Block::resize, for
// vm.resize-disk): the image grows (a raw file may also shrink) with the
// queues stopped, the capacity follows, and the driver hears of it
// through a configuration change.
func (d *Device) Resize(size uint64) error {
	if size%SectorSize != 0 || size > math.MaxInt64 {
		return ErrInvalidSize
	}
	irq, err := d.life.Quiesced(func() error {
		if err := d.img.resize(int64(size)); err != nil {
			return fmt.Errorf("Disk resize failed: %w", err)
		}
		d.mu.Lock()
		d.cfg.Capacity = size / SectorSize
		d.mu.Unlock()
		return nil
	})
	if err != nil {
		return err
	}
	if irq != nil {
		if err := irq.ConfigChanged(); err != nil {
			return fmt.Errorf("Failed to signal the configuration change: %w", err)
		}
	}
	return nil
}

// Pause implements virtio.Device.
func (d *Device) Pause() error { return d.life.Pause() }

// Resume implements virtio.Device.
func (d *Device) Resume() error { return d.life.Resume() }

// Reset implements virtio.Device.
func (d *Device) Reset() error { return d.life.Reset() }

// forget returns the cache mode to its default after a reset.
func (d *Device) forget() {
	d.mu.Lock()
	d.cfg.Writeback = 1
	d.writeback.Store(true)
	d.mu.Unlock()
}

// Close implements virtio.Device: it also unlocks and closes the image.
func (d *Device) Close() error { return d.life.Close() }

// Counters implements virtio.Device with upstream's names; latencies are
// in microseconds (min is MaxUint64 until the first request, as upstream).
func (d *Device) Counters() map[string]uint64 { return d.stats.snapshot() }

// worker is one queue's request processor; bounce is its own buffer.
type worker struct {
	d      *Device
	r      *virtio.Runner
	mem    virtio.GuestMemory
	bounce []byte
	iov    [][]byte // reused across requests
	gather []byte   // a qcow2 request's pages, reused (transferQcow2)
	// hdr and status are scratch that would escape (one allocation each
	// per request) if declared in handle.
	hdr    [headerSize]byte
	status [1]byte
}

// handle runs one request (§5.2.6): header in the readable part, status
// byte as the last writable byte. It returns the bytes written to the guest.
func (w *worker) handle(c *virtio.Chain) uint32 {
	d := w.d
	start := time.Now()
	wlen := c.WritableLen()
	if wlen == 0 {
		return 0 // nowhere to put a status: fail the chain
	}
	data, statusBuf := virtio.SplitBuffers(c.Writable, wlen-1)
	hdr := w.hdr[:]
	r := virtio.NewReader(w.mem, c.Readable)
	status := SIOErr
	var written uint32
	if _, err := io.ReadFull(r, hdr); err == nil {
		typ := binary.LittleEndian.Uint32(hdr[0:])
		sector := binary.LittleEndian.Uint64(hdr[8:])
		_, payload := virtio.SplitBuffers(c.Readable, headerSize)
		switch typ {
		case TIn:
			w.throttle(total(data))
		case TOut:
			w.throttle(total(payload))
		default:
			w.throttle(0) // an operation without bytes, as upstream
		}
		status, written = w.execute(typ, sector, payload, data)
		if status == SOK {
			switch typ {
			case TIn:
				d.stats.read.record(uint64(written), time.Since(start))
			case TOut:
				d.stats.write.record(total(payload), time.Since(start))
			}
		}
	}
	w.status[0] = status
	if _, err := w.mem.WriteAt(w.status[:], int64(statusBuf[0].Addr)); err != nil {
		return 0
	}
	return written + 1
}

// throttle waits for the rate limiter's tokens for one request of n
// bytes.
func (w *worker) throttle(n uint64) { w.d.limiter.Wait(n, w.r.Stopping) }

func total(bs []virtio.Buffer) uint64 {
	var n uint64
	for _, b := range bs {
		n += uint64(b.Len)
	}
	return n
}

// span checks a data transfer of n bytes at sector against the disk.
func (d *Device) span(sector, n uint64) (int64, bool) {
	if n%SectorSize != 0 || sector > d.cfg.Capacity || n/SectorSize > d.cfg.Capacity-sector {
		return 0, false
	}
	return int64(sector * SectorSize), true
}

func (w *worker) execute(typ uint32, sector uint64, out, in []virtio.Buffer) (uint8, uint32) {
	d := w.d
	switch typ {
	case TIn:
		n := total(in)
		off, ok := d.span(sector, n)
		if !ok || n > math.MaxUint32-1 {
			return SIOErr, 0
		}
		if err := w.transfer(in, off, false); err != nil {
			return SIOErr, 0
		}
		return SOK, uint32(n)
	case TOut:
		if d.img.readonly {
			return SIOErr, 0
		}
		off, ok := d.span(sector, total(out))
		if !ok {
			return SIOErr, 0
		}
		if err := w.transfer(out, off, true); err != nil {
			return SIOErr, 0
		}
		if !d.writeback.Load() {
			if err := d.img.sync(); err != nil {
				return SIOErr, 0
			}
		}
		return SOK, 0
	case TFlush:
		if err := d.img.sync(); err != nil {
			return SIOErr, 0
		}
		return SOK, 0
	case TGetID:
		wr := virtio.NewWriter(w.mem, in)
		n := min(uint64(IDBytes), wr.Remaining())
		if _, err := wr.Write(d.img.id[:n]); err != nil {
			return SIOErr, 0
		}
		return SOK, uint32(n)
	case TDiscard, TWriteZeroes:
		return w.discard(typ, out), 0
	}
	return SUnsupp, 0
}

// transfer moves the bytes of bufs to (write) or from the image at off.
// Runs of buffers that alias guest RAM (and, for O_DIRECT, are aligned)
// go in one preadv/pwritev each, as QEMU does: a 1 MiB request from Linux
// is ~256 page-sized segments, and a syscall per segment dominated the
// cost. Other buffers go through the bounce buffer.
func (w *worker) transfer(bufs []virtio.Buffer, off int64, write bool) error {
	if q := w.d.img.qcow; q != nil {
		return w.transferQcow2(q, bufs, off, write)
	}
	w.iov = w.iov[:0]
	var run int64 // bytes in w.iov
	flush := func() error {
		if len(w.iov) == 0 {
			return nil
		}
		err := vectored(w.d.img.fd, w.iov, off, write)
		off += run
		w.iov, run = w.iov[:0], 0
		return err
	}
	for _, b := range bufs {
		if b.Len == 0 {
			continue
		}
		if s, err := w.mem.Slice(b.Addr, uint64(b.Len)); err == nil && (!w.d.img.direct || (directio.AddrAligned(s, directio.MemAlign) && len(s)%SectorSize == 0)) {
			if len(w.iov) == maxIOV {
				if err := flush(); err != nil {
					return err
				}
			}
			w.iov = append(w.iov, s)
			run += int64(len(s))
			continue
		}
		if err := flush(); err != nil {
			return err
		}
		if err := w.bounced(b, off, write); err != nil {
			return err
		}
		off += int64(b.Len)
	}
	return flush()
}

// transferQcow2 moves bufs through a qcow2 image. A request of several
// buffers (the guest's pages) goes through the image as one transfer
// when it fits maxGather: buffer by buffer, the first page written into a
// fresh cluster makes the image allocate the whole cluster and write it
// filled, and every later page of it is written again, and each page is a
// system call of its own. Otherwise buffer by buffer, straight to and
// from guest RAM where a buffer lies in one region.
func (w *worker) transferQcow2(q *qcow2.Image, bufs []virtio.Buffer, off int64, write bool) error {
	if n := total(bufs); len(bufs) > 1 && n <= maxGather {
		if uint64(cap(w.gather)) < n {
			w.gather = make([]byte, n)
		}
		buf := w.gather[:n]
		if write {
			if _, err := io.ReadFull(virtio.NewReader(w.mem, bufs), buf); err != nil {
				return err
			}
			_, err := q.WriteAt(buf, off)
			return err
		}
		if _, err := q.ReadAt(buf, off); err != nil {
			return err
		}
		_, err := virtio.NewWriter(w.mem, bufs).Write(buf)
		return err
	}
	for _, b := range bufs {
		if b.Len == 0 {
			continue
		}
		if s, err := w.mem.Slice(b.Addr, uint64(b.Len)); err == nil {
			if write {
				_, err = q.WriteAt(s, off)
			} else {
				_, err = q.ReadAt(s, off)
			}
			if err != nil {
				return err
			}
		} else if err := w.bounced(b, off, write); err != nil {
			return err
		}
		off += int64(b.Len)
	}
	return nil
}

// maxGather bounds the buffer a worker keeps for a qcow2 request's
// pages; Linux's virtio-blk requests are 1.25 MiB at most by default
// (max_sectors_kb).
const maxGather = 4 << 20

// maxIOV is Linux's IOV_MAX: the most iovecs one preadv/pwritev takes.
const maxIOV = 1024

// vectored reads or writes all of iov at off, resuming after short
// transfers and EINTR. It consumes iov's slice headers.
func vectored(fd int, iov [][]byte, off int64, write bool) error {
	for len(iov) > 0 {
		var n int
		var err error
		if write {
			n, err = unix.Pwritev(fd, iov, off)
		} else {
			n, err = unix.Preadv(fd, iov, off)
		}
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("disk I/O at %d: %w", off, err)
		}
		if n == 0 {
			return fmt.Errorf("disk I/O at %d: %w", off, io.ErrUnexpectedEOF)
		}
		off += int64(n)
		for n > 0 {
			k := min(n, len(iov[0]))
			iov[0] = iov[0][k:]
			n -= k
			if len(iov[0]) == 0 {
				iov = iov[1:]
			}
		}
	}
	return nil
}

// bounced moves one buffer that is not directly usable (it straddles RAM
// regions, or is unaligned for O_DIRECT) through the bounce buffer.
func (w *worker) bounced(b virtio.Buffer, off int64, write bool) error {
	f := w.d.img.rw()
	rest := uint64(b.Len)
	addr := b.Addr
	for rest > 0 {
		k := min(rest, uint64(len(w.bounce)))
		buf := w.bounce[:k]
		if write {
			if _, err := w.mem.ReadAt(buf, int64(addr)); err != nil {
				return err
			}
			if _, err := f.WriteAt(buf, off); err != nil {
				return err
			}
		} else {
			if _, err := f.ReadAt(buf, off); err != nil {
				return err
			}
			if _, err := w.mem.WriteAt(buf, int64(addr)); err != nil {
				return err
			}
		}
		addr += k
		off += int64(k)
		rest -= k
	}
	return nil
}

// discard handles DISCARD and WRITE_ZEROES: an array of
// {sector u64, num_sectors u32, flags u32} segments.
func (w *worker) discard(typ uint32, out []virtio.Buffer) uint8 {
	d := w.d
	want := FDiscard
	if typ == TWriteZeroes {
		want = FWriteZeroes
	}
	if d.features&want == 0 {
		return SUnsupp
	}
	n := total(out)
	if n == 0 || n%segmentSize != 0 || n/segmentSize > 1 {
		return SIOErr // max_discard_seg / max_write_zeroes_seg is 1
	}
	var seg [segmentSize]byte
	if _, err := io.ReadFull(virtio.NewReader(w.mem, out), seg[:]); err != nil {
		return SIOErr
	}
	sector := binary.LittleEndian.Uint64(seg[0:])
	count := uint64(binary.LittleEndian.Uint32(seg[8:]))
	flags := binary.LittleEndian.Uint32(seg[12:])
	if flags&^segFlagUnmap != 0 || (typ == TDiscard && flags != 0) {
		return SUnsupp
	}
	off, ok := d.span(sector, count*SectorSize)
	if !ok {
		return SIOErr
	}
	var err error
	if typ == TDiscard {
		err = d.img.punch(off, int64(count*SectorSize))
	} else {
		err = d.img.zero(off, int64(count*SectorSize), flags&segFlagUnmap != 0 && d.features&FDiscard != 0)
	}
	if err != nil {
		return SIOErr
	}
	return SOK
}
