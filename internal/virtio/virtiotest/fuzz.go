package virtiotest

import (
	"encoding/binary"
	"runtime"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nimbus-vmm/nimbus/internal/virtio"
)

// Fuzz layout: the device fuzz targets (fuzz_test.go of each device
// package) put fuzzer-chosen rings and buffers in a FuzzMem, activate the
// device on them and let it serve its queues.
//
//	[0, FuzzHeap)            the rings, queue i at i*fuzzQueueStride:
//	                         descriptor table, +0x100 available ring, +0x200 used ring
//	[FuzzHeap, FuzzMemSize)  buffers: request headers, payloads, indirect tables
const (
	// FuzzQueueSize is the size the layout gives every queue.
	FuzzQueueSize = 16
	// FuzzMemSize is the guest RAM of a FuzzMem.
	FuzzMemSize = 64 << 10
	// FuzzHeap is where the heap bytes go.
	FuzzHeap = 0x1000
	// FuzzMaxQueues is the most queues the layout has room for.
	FuzzMaxQueues = FuzzHeap / fuzzQueueStride

	fuzzQueueStride = 0x400
	fuzzAvailOff    = 0x100
	fuzzUsedOff     = 0x200
	fuzzDescBytes   = 8 // one descriptor in a queue spec
)

// FuzzMem is a Mem that remembers every device-writable descriptor the
// device read (any 16-byte read that parses as one with VIRTQ_DESC_F_WRITE:
// the queue code reads descriptors, direct or indirect, 16 bytes at a
// time), so that CheckWrites can tell whether the device wrote to guest
// memory it was not given.
type FuzzMem struct {
	*Mem
	mu       sync.Mutex
	writable []virtio.Buffer
}

var _ virtio.GuestMemory = (*FuzzMem)(nil)

// NewFuzzMem returns FuzzMemSize bytes of zeroed guest RAM.
func NewFuzzMem() *FuzzMem { return &FuzzMem{Mem: NewMem(FuzzMemSize)} }

// ReadAt implements virtio.GuestMemory.
func (m *FuzzMem) ReadAt(p []byte, off int64) (int, error) {
	n, err := m.Mem.ReadAt(p, off)
	if len(p) == 16 && n == 16 {
		if flags := binary.LittleEndian.Uint16(p[12:]); flags&virtio.DescFWrite != 0 {
			m.mu.Lock()
			m.writable = append(m.writable, virtio.Buffer{Addr: binary.LittleEndian.Uint64(p), Len: binary.LittleEndian.Uint32(p[8:])})
			m.mu.Unlock()
		}
	}
	return n, err
}

// Lay programs q as queue i of the layout and writes its rings from spec;
// the queue is ready unless spec is empty (the driver did not enable it). spec is, byte by byte:
//
//	[0]                   the available index, modulo FuzzQueueSize+2 (FuzzQueueSize+1 breaks the queue)
//	[1]                   bit 0: VIRTQ_AVAIL_F_NO_INTERRUPT; bits 1-7: used_event
//	[2, 2+FuzzQueueSize)  the available ring's heads, modulo the queue size (0xf0-0xff: out of range)
//	then 8 bytes per descriptor, at most FuzzQueueSize of them:
//	  addr u16, len u16, flags u8 (NEXT|WRITE|INDIRECT), next u8 (0xf0-0xff: out of range),
//	  ext u8 (bit 0: addr += (ext2+1)<<16, outside RAM; bit 1: addr = 2^64-1-addr, wrapping;
//	  bit 2: len |= 0xffff0000), ext2 u8
//
// Missing bytes are zero. Indirect tables are raw descriptors in the heap.
func (m *FuzzMem) Lay(q *virtio.Queue, i int, spec []byte) {
	if i >= FuzzMaxQueues {
		panic("virtiotest: too many fuzz queues") // test bug
	}
	m.Mem.mu.Lock()
	defer m.Mem.mu.Unlock()
	base := uint64(i * fuzzQueueStride)
	q.Size = FuzzQueueSize
	q.DescAddr, q.AvailAddr, q.UsedAddr = base, base+fuzzAvailOff, base+fuzzUsedOff
	q.Ready = len(spec) > 0
	clear(m.B[base : base+fuzzQueueStride])
	if !q.Ready {
		return
	}
	at := func(k int) byte {
		if k < len(spec) {
			return spec[k]
		}
		return 0
	}
	le := binary.LittleEndian
	const size = FuzzQueueSize
	le.PutUint16(m.B[q.AvailAddr:], uint16(at(1)&1))
	le.PutUint16(m.B[q.AvailAddr+2:], uint16(at(0))%(size+2))
	for k := range size {
		h := uint16(at(2 + k))
		if h < 0xf0 {
			h %= size
		}
		le.PutUint16(m.B[q.AvailAddr+4+2*uint64(k):], h)
	}
	le.PutUint16(m.B[q.AvailAddr+4+2*size:], uint16(at(1)>>1))
	for k := range size {
		o := 2 + size + k*fuzzDescBytes
		if o >= len(spec) {
			break
		}
		addr := uint64(le.Uint16([]byte{at(o), at(o + 1)}))
		n := uint32(le.Uint16([]byte{at(o + 2), at(o + 3)}))
		flags := uint16(at(o+4) & 7)
		next := uint16(at(o + 5))
		if next < 0xf0 {
			next %= size
		}
		ext, ext2 := at(o+6), at(o+7)
		if ext&1 != 0 {
			addr += (uint64(ext2) + 1) << 16
		}
		if ext&2 != 0 {
			addr = ^uint64(0) - addr
		}
		if ext&4 != 0 {
			n |= 0xffff0000
		}
		d := m.B[q.DescAddr+16*uint64(k):]
		le.PutUint64(d, addr)
		le.PutUint32(d[8:], n)
		le.PutUint16(d[12:], flags)
		le.PutUint16(d[14:], next)
	}
}

// Fill copies heap to FuzzHeap, truncated to the memory, and zeroes the
// rest of the heap.
func (m *FuzzMem) Fill(heap []byte) {
	m.Mem.mu.Lock()
	defer m.Mem.mu.Unlock()
	n := copy(m.B[FuzzHeap:], heap)
	clear(m.B[FuzzHeap+n:])
}

// Snapshot returns a copy of guest RAM (for CheckWrites).
func (m *FuzzMem) Snapshot() []byte {
	m.Mem.mu.Lock()
	defer m.Mem.mu.Unlock()
	return append([]byte(nil), m.B...)
}

// CheckWrites fails tb if a byte changed since before outside the used
// rings of qs and the device-writable buffers the device read. Call it
// once the device's goroutines are joined (after Close).
func (m *FuzzMem) CheckWrites(tb testing.TB, before []byte, qs ...*virtio.Queue) {
	tb.Helper()
	m.mu.Lock()
	allowed := append([]virtio.Buffer(nil), m.writable...)
	m.mu.Unlock()
	for _, q := range qs {
		if q.Ready {
			allowed = append(allowed, virtio.Buffer{Addr: q.UsedAddr, Len: uint32(virtio.UsedRingSize(q.Size))})
		}
	}
	after := m.Snapshot()
	for off := range after {
		if after[off] == before[off] {
			continue
		}
		ok := false
		for _, b := range allowed {
			if uint64(off) >= b.Addr && uint64(off)-b.Addr < uint64(b.Len) {
				ok = true
				break
			}
		}
		if !ok {
			tb.Fatalf("device wrote guest RAM at %#x (%#x -> %#x), outside every used ring and device-writable buffer", off, before[off], after[off])
		}
	}
}

// Pending reports whether q has a notification its device has not read.
func Pending(q *virtio.Queue) bool {
	fds := []unix.PollFd{{Fd: int32(q.Notify.FD()), Events: unix.POLLIN}}
	n, err := unix.Poll(fds, 0)
	return err != nil || n > 0
}

// settleTimeout bounds the wait for a device to read a notification: a
// device still busy after it is stuck on guest input, which is a bug.
const settleTimeout = 10 * time.Second

// WaitTaken waits until q's device has read its notifications or done()
// (nil: never) says to stop, and fails tb after settleTimeout.
func WaitTaken(tb testing.TB, q *virtio.Queue, done func() bool) {
	tb.Helper()
	deadline := time.Now().Add(settleTimeout)
	for i := 0; Pending(q); i++ {
		if done != nil && done() {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("the device did not take a queue notification in %v: stuck on the guest's requests", settleTimeout)
		}
		if i < 200 {
			runtime.Gosched()
		} else {
			time.Sleep(20 * time.Microsecond)
		}
	}
}

// Settle notifies each ready queue in turn and waits until its device has
// read the notification. A device goroutine serving a queue with
// virtio.ServeQueue drains the queue before each wait, so by then it has
// handled every chain that was available when it was activated.
func Settle(tb testing.TB, qs ...*virtio.Queue) {
	tb.Helper()
	for _, q := range qs {
		if !q.Ready {
			continue
		}
		if err := q.Notify.Signal(); err != nil {
			tb.Fatal(err)
		}
		WaitTaken(tb, q, nil)
	}
}

// SeedChain is one chain of a seed input: readable buffers with these
// bytes, then writable buffers of these lengths.
type SeedChain struct {
	Out [][]byte
	In  []uint32
}

// FuzzSeed encodes chains as a queue spec for Lay, with their buffers
// appended to *heap (a heap shared by the queues of one input). The
// available index is the number of chains.
func FuzzSeed(heap *[]byte, chains ...SeedChain) []byte {
	const size = FuzzQueueSize
	spec := make([]byte, 2+size)
	spec[0] = byte(len(chains))
	var descs []byte
	k := 0
	for c, ch := range chains {
		spec[2+c] = byte(k)
		type seg struct {
			addr  uint64
			n     int
			write bool
		}
		var segs []seg
		alloc := func(b []byte) uint64 {
			a := FuzzHeap + uint64(len(*heap))
			*heap = append(*heap, b...)
			for len(*heap)%8 != 0 {
				*heap = append(*heap, 0)
			}
			return a
		}
		for _, o := range ch.Out {
			segs = append(segs, seg{alloc(o), len(o), false})
		}
		for _, n := range ch.In {
			segs = append(segs, seg{alloc(make([]byte, n)), int(n), true})
		}
		for i, s := range segs {
			var flags byte
			if s.write {
				flags |= byte(virtio.DescFWrite)
			}
			next := byte(0)
			if i+1 < len(segs) {
				flags |= byte(virtio.DescFNext)
				next = byte(k + 1)
			}
			descs = binary.LittleEndian.AppendUint16(descs, uint16(s.addr))
			descs = binary.LittleEndian.AppendUint16(descs, uint16(s.n))
			descs = append(descs, flags, next, 0, 0)
			k++
		}
	}
	if k > size {
		panic("virtiotest: seed needs more descriptors than a fuzz queue has") // test bug
	}
	return append(spec, descs...)
}

// FuzzRig is a device on a fuzz layout: one queue per spec, the heap in
// a FuzzMem.
type FuzzRig struct {
	Mem    *FuzzMem
	Queues []*virtio.Queue
	Irq    *Interrupt
	dev    virtio.Device
	before []byte
}

// NewFuzzRig lays heap and one queue per entry of d.QueueSizes() from
// specs (a missing or empty spec leaves that queue disabled). The queues
// are closed by Finish.
func NewFuzzRig(tb testing.TB, d virtio.Device, heap []byte, specs ...[]byte) *FuzzRig {
	tb.Helper()
	r := &FuzzRig{Mem: NewFuzzMem(), Irq: NewInterrupt(), dev: d}
	r.Mem.Fill(heap)
	for i, max := range d.QueueSizes() {
		q, err := virtio.NewQueue(max)
		if err != nil {
			tb.Fatal(err)
		}
		r.Queues = append(r.Queues, q)
		var spec []byte
		if i < len(specs) {
			spec = specs[i]
		}
		r.Mem.Lay(q, i, spec)
	}
	return r
}

// Activate activates the device with the features it offers that are in
// features, always with VIRTIO_F_VERSION_1 (the transport refuses a
// driver without it).
func (r *FuzzRig) Activate(features uint64) error {
	r.before = r.Mem.Snapshot()
	return r.dev.Activate(r.Mem, r.dev.Features()&(features|virtio.FVersion1), r.Queues, r.Irq)
}

// Finish closes the device, which joins its goroutines, checks that it
// wrote only where the driver let it (when it was activated), and closes
// the queues.
func (r *FuzzRig) Finish(tb testing.TB) {
	tb.Helper()
	defer func() {
		for _, q := range r.Queues {
			q.Close()
		}
	}()
	if err := r.dev.Close(); err != nil {
		tb.Errorf("Close: %v", err)
	}
	if r.before != nil {
		r.Mem.CheckWrites(tb, r.before, r.Queues...)
	}
}
