package virtiotest

import (
	"encoding/binary"
	"fmt"

	"github.com/nimbus-vmm/nimbus/internal/virtio"
)

// Driver plays the guest driver of one split queue in a Mem: it lays out
// the rings, allocates data buffers from a bump allocator, makes chains
// available and collects used elements. It is not safe for concurrent use;
// tests call it from one goroutine while the device runs on its own.
type Driver struct {
	Mem   *Mem
	Queue *virtio.Queue
	// Indirect makes Submit put each chain in an indirect table.
	Indirect bool

	size     uint16
	nextDesc uint16
	availIdx uint16
	usedSeen uint16
	heap     uint64
	heapEnd  uint64
	free     []uint16
}

// Used is one used element.
type Used struct {
	Head uint16
	Len  uint32
}

// In describes one device-writable buffer a request offers.
type In struct {
	Addr uint64
	Len  uint32
}

// NewDriver lays out a queue of size entries at base in m (the rings take
// under 20 KiB per 1024 entries) and uses [heap, heapEnd) for buffers. It
// programs q as a transport would and marks it ready.
func NewDriver(m *Mem, q *virtio.Queue, size uint16, base, heap, heapEnd uint64) *Driver {
	d := &Driver{Mem: m, Queue: q, size: size, heap: heap, heapEnd: heapEnd}
	q.Size = size
	q.DescAddr = base
	q.AvailAddr = base + virtio.DescTableSize(size)
	q.UsedAddr = (q.AvailAddr + virtio.AvailRingSize(size) + 3) &^ 3
	q.Ready = true
	for i := range size {
		d.free = append(d.free, i)
	}
	return d
}

// Alloc reserves n bytes of buffer space (8-byte aligned).
func (d *Driver) Alloc(n uint64) uint64 {
	a := d.heap
	d.heap = (d.heap + n + 7) &^ 7
	if d.heap > d.heapEnd {
		panic("virtiotest: driver heap exhausted") // test bug, not guest input
	}
	return a
}

// ResetHeap reuses buffer space from start (for long-running benchmarks).
func (d *Driver) ResetHeap(start uint64) { d.heap = start }

func (d *Driver) putDesc(table uint64, i uint16, addr uint64, n uint32, flags, next uint16) {
	var b [16]byte
	binary.LittleEndian.PutUint64(b[0:], addr)
	binary.LittleEndian.PutUint32(b[8:], n)
	binary.LittleEndian.PutUint16(b[12:], flags)
	binary.LittleEndian.PutUint16(b[14:], next)
	copy(d.Mem.B[table+uint64(i)*16:], b[:])
}

// Submit makes a chain available: one readable buffer per out slice
// (copied into guest memory) and one writable buffer per in length. It
// returns the head and the writable buffers' addresses. It does not
// notify; call Kick.
func (d *Driver) Submit(out [][]byte, in []uint32) (uint16, []In) {
	d.Mem.mu.Lock()
	defer d.Mem.mu.Unlock()
	type seg struct {
		addr  uint64
		n     uint32
		write bool
	}
	var segs []seg
	for _, o := range out {
		a := d.Alloc(uint64(len(o)))
		copy(d.Mem.B[a:], o)
		segs = append(segs, seg{a, uint32(len(o)), false})
	}
	var ins []In
	for _, n := range in {
		a := d.Alloc(uint64(n))
		ins = append(ins, In{a, n})
		segs = append(segs, seg{a, n, true})
	}
	flagsOf := func(s seg, last bool) uint16 {
		var f uint16
		if s.write {
			f |= virtio.DescFWrite
		}
		if !last {
			f |= virtio.DescFNext
		}
		return f
	}
	if len(d.free) == 0 {
		panic("virtiotest: no free descriptors") // test bug
	}
	var head uint16
	if d.Indirect {
		head, d.free = d.free[0], d.free[1:]
		table := d.Alloc(uint64(16 * len(segs)))
		for i, s := range segs {
			d.putDesc(table, uint16(i), s.addr, s.n, flagsOf(s, i == len(segs)-1), uint16(i+1))
		}
		d.putDesc(d.Queue.DescAddr, head, table, uint32(16*len(segs)), virtio.DescFIndirect, 0)
	} else {
		if len(d.free) < len(segs) {
			panic("virtiotest: not enough free descriptors") // test bug
		}
		idx := d.free[:len(segs)]
		d.free = d.free[len(segs):]
		head = idx[0]
		for i, s := range segs {
			var next uint16
			if i+1 < len(segs) {
				next = idx[i+1]
			}
			d.putDesc(d.Queue.DescAddr, idx[i], s.addr, s.n, flagsOf(s, i == len(segs)-1), next)
		}
	}
	d.publish(head)
	return head, ins
}

// Publish puts head in the available ring and bumps the index.
func (d *Driver) Publish(head uint16) {
	d.Mem.mu.Lock()
	defer d.Mem.mu.Unlock()
	d.publish(head)
}

func (d *Driver) publish(head uint16) {
	slot := uint64(d.availIdx % d.size)
	binary.LittleEndian.PutUint16(d.Mem.B[d.Queue.AvailAddr+4+2*slot:], head)
	d.availIdx++
	binary.LittleEndian.PutUint16(d.Mem.B[d.Queue.AvailAddr+2:], d.availIdx)
}

// Kick notifies the device (as the transport does on a notify write).
func (d *Driver) Kick() error { return d.Queue.Notify.Signal() }

// Poll returns the used elements added since the last Poll, returning
// their descriptors to the free list (direct chains are freed by walking
// NEXT links), and sets used_event to ask for an interrupt on the next one.
func (d *Driver) Poll() []Used {
	d.Mem.mu.Lock()
	defer d.Mem.mu.Unlock()
	idx := binary.LittleEndian.Uint16(d.Mem.B[d.Queue.UsedAddr+2:])
	var out []Used
	for d.usedSeen != idx {
		slot := uint64(d.usedSeen % d.size)
		e := d.Mem.B[d.Queue.UsedAddr+4+8*slot:]
		u := Used{Head: uint16(binary.LittleEndian.Uint32(e)), Len: binary.LittleEndian.Uint32(e[4:])}
		out = append(out, u)
		d.usedSeen++
		d.release(u.Head)
	}
	// As Linux's virtqueue_enable_cb: interrupt me for the next used one.
	binary.LittleEndian.PutUint16(d.Mem.B[d.Queue.AvailAddr+4+2*uint64(d.size):], d.usedSeen)
	return out
}

func (d *Driver) release(head uint16) {
	i := head
	for n := 0; n < int(d.size); n++ {
		d.free = append(d.free, i)
		f := binary.LittleEndian.Uint16(d.Mem.B[d.Queue.DescAddr+uint64(i)*16+12:])
		if f&virtio.DescFNext == 0 {
			return
		}
		i = binary.LittleEndian.Uint16(d.Mem.B[d.Queue.DescAddr+uint64(i)*16+14:])
	}
}

// SetUsedEvent writes used_event (event idx).
func (d *Driver) SetUsedEvent(v uint16) {
	d.Mem.mu.Lock()
	defer d.Mem.mu.Unlock()
	binary.LittleEndian.PutUint16(d.Mem.B[d.Queue.AvailAddr+4+2*uint64(d.size):], v)
}

// SetAvailFlags writes the available ring's flags.
func (d *Driver) SetAvailFlags(v uint16) {
	d.Mem.mu.Lock()
	defer d.Mem.mu.Unlock()
	binary.LittleEndian.PutUint16(d.Mem.B[d.Queue.AvailAddr:], v)
}

// AvailEvent reads avail_event (event idx).
func (d *Driver) AvailEvent() uint16 {
	d.Mem.mu.Lock()
	defer d.Mem.mu.Unlock()
	return binary.LittleEndian.Uint16(d.Mem.B[d.Queue.UsedAddr+4+8*uint64(d.size):])
}

// UsedFlags reads the used ring's flags.
func (d *Driver) UsedFlags() uint16 {
	d.Mem.mu.Lock()
	defer d.Mem.mu.Unlock()
	return binary.LittleEndian.Uint16(d.Mem.B[d.Queue.UsedAddr:])
}

// Bytes returns a copy of guest memory at b.
func (d *Driver) Bytes(b In, n uint32) []byte {
	d.Mem.mu.Lock()
	defer d.Mem.mu.Unlock()
	return append([]byte(nil), d.Mem.B[b.Addr:b.Addr+uint64(min(n, b.Len))]...)
}

// String describes the driver's indices.
func (d *Driver) String() string {
	return fmt.Sprintf("avail %d used-seen %d free %d", d.availIdx, d.usedSeen, len(d.free))
}
