package virtio

import (
	"encoding/binary"
	"fmt"
	"sync/atomic"
)

// Split virtqueue layout, virtio 1.2 §2.7:
//
//	descriptor table  16 bytes per entry {addr u64, len u32, flags u16, next u16}, align 16
//	available ring    {flags u16, idx u16, ring [size]u16, used_event u16},      align 2
//	used ring         {flags u16, idx u16, ring [size]{id u32, len u32}, avail_event u16}, align 4
const (
	descSize     = 16
	usedElemSize = 8
)

// DescTableSize, AvailRingSize and UsedRingSize are the byte sizes of a
// split queue's three areas for a queue of size n (§2.7, with event idx).
func DescTableSize(n uint16) uint64 { return descSize * uint64(n) }

// AvailRingSize is the available ring's size in bytes, used_event included.
func AvailRingSize(n uint16) uint64 { return 6 + 2*uint64(n) }

// UsedRingSize is the used ring's size in bytes, avail_event included.
func UsedRingSize(n uint16) uint64 { return 6 + usedElemSize*uint64(n) }

// Queue is one split virtqueue.
//
// The transport owns the exported fields until Device.Activate: it sets
// Size, the three ring addresses and Ready as the driver programs them.
// From Activate to Reset the device owns the Queue; only the device's
// goroutine for the queue calls Pop, Push, NeedsInterrupt and the
// notification methods.
type Queue struct {
	// MaxSize is the largest size the device supports (fixed by NewQueue).
	MaxSize uint16
	// Size is the driver-chosen size, a power of two <= MaxSize.
	Size uint16
	// Ready is the queue_enable register.
	Ready bool
	// DescAddr, AvailAddr and UsedAddr are the guest-physical addresses of
	// the descriptor table, available ring and used ring.
	DescAddr, AvailAddr, UsedAddr uint64
	// Notify is signalled for every driver notification of this queue.
	// It lives as long as the Queue (Close).
	Notify *EventFD

	mem       GuestMemory
	eventIdx  bool
	indirect  bool
	lastAvail uint16 // next available-ring slot to consume (free running)
	nextUsed  uint16 // next used-ring slot to fill (free running)
	// signalledUsed is nextUsed at the last interrupt decision; valid once
	// a decision was made (event idx, §2.7.10).
	signalledUsed  uint16
	signalledValid bool
	broken         error
	closed         bool // Close ran
	fenceWord      uint32
	// descBuf is readDesc's scratch: a local array passed to the
	// GuestMemory interface escapes, costing an allocation per descriptor.
	descBuf [descSize]byte
}

// NewQueue returns a queue of at most maxSize entries with its notify
// eventfd, reset to the state after device reset (Size = MaxSize, not
// ready, addresses 0).
func NewQueue(maxSize uint16) (*Queue, error) {
	if maxSize == 0 || maxSize > MaxQueueSize || maxSize&(maxSize-1) != 0 {
		return nil, fmt.Errorf("queue max size %d: %w", maxSize, ErrInvalid)
	}
	efd, err := NewEventFD()
	if err != nil {
		return nil, err
	}
	return &Queue{MaxSize: maxSize, Size: maxSize, Notify: efd}, nil
}

// Reset returns the queue to its post-reset state, keeping MaxSize and
// Notify. The transport calls it after Device.Reset.
func (q *Queue) Reset() {
	*q = Queue{MaxSize: q.MaxSize, Size: q.MaxSize, Notify: q.Notify, closed: q.closed}
}

// Close releases the notify eventfd. Notify stays set (a closed eventfd
// fails Signal with os.ErrClosed): a vCPU may still be in the transport's
// notify handler of a device being removed. Close is idempotent.
func (q *Queue) Close() error {
	if q.Notify == nil || q.closed {
		return nil
	}
	q.closed = true
	return q.Notify.Close()
}

// QueueState is the device-side position of a queue, for pause/snapshot.
type QueueState struct {
	LastAvail, NextUsed uint16
}

// State reports the queue's ring positions.
func (q *Queue) State() QueueState { return QueueState{q.lastAvail, q.nextUsed} }

// SetState restores ring positions (restore from snapshot), before the
// device's goroutines start.
func (q *Queue) SetState(s QueueState) { q.lastAvail, q.nextUsed = s.LastAvail, s.NextUsed }

// ActivateQueues validates every ready queue against mem and binds it to
// mem with the negotiated features. Devices call it first thing in
// Activate. A queue that is not ready is left unbound.
func ActivateQueues(mem GuestMemory, features uint64, queues []*Queue) error {
	for i, q := range queues {
		if q == nil || !q.Ready {
			continue
		}
		if err := q.activate(mem, features); err != nil {
			return fmt.Errorf("queue %d: %w", i, err)
		}
	}
	return nil
}

func (q *Queue) activate(mem GuestMemory, features uint64) error {
	n := q.Size
	switch {
	case n == 0 || n&(n-1) != 0 || n > q.MaxSize:
		return fmt.Errorf("size %d (max %d): %w", n, q.MaxSize, ErrInvalid)
	case q.DescAddr%16 != 0 || q.AvailAddr%2 != 0 || q.UsedAddr%4 != 0:
		return fmt.Errorf("misaligned rings desc %#x avail %#x used %#x: %w",
			q.DescAddr, q.AvailAddr, q.UsedAddr, ErrInvalid)
	}
	for _, r := range [...]struct {
		name      string
		addr, len uint64
	}{{"descriptor table", q.DescAddr, DescTableSize(n)}, {"available ring", q.AvailAddr, AvailRingSize(n)}, {"used ring", q.UsedAddr, UsedRingSize(n)}} {
		if err := probe(mem, r.addr, r.len); err != nil {
			return fmt.Errorf("%s: %w: %w", r.name, ErrInvalid, err)
		}
	}
	q.mem = mem
	q.eventIdx = features&FEventIdx != 0
	q.indirect = features&FIndirectDesc != 0
	q.broken = nil
	q.signalledValid = false
	return nil
}

// probe checks that [addr, addr+n) is guest RAM.
func probe(mem GuestMemory, addr, n uint64) error {
	if addr+n < addr {
		return fmt.Errorf("range %#x+%d wraps: %w", addr, n, ErrInvalid)
	}
	var buf [512]byte
	for n > 0 {
		k := min(n, uint64(len(buf)))
		if _, err := mem.ReadAt(buf[:k], int64(addr)); err != nil {
			return err
		}
		addr += k
		n -= k
	}
	return nil
}

// Broken is the error that broke the queue, or nil.
func (q *Queue) Broken() error { return q.broken }

func (q *Queue) breakQueue(err error) error {
	if q.broken == nil {
		q.broken = fmt.Errorf("%w: %w", ErrBroken, err)
	}
	return q.broken
}

// fence is a full memory barrier (LOCK-prefixed on amd64) and a compiler
// barrier. The driver side pairs it with virtio_mb(); it orders our used
// index store before the load of used_event/flags, and our avail_event
// store before re-reading the available index (§2.7.7.2, §2.7.10).
func (q *Queue) fence() { atomic.AddUint32(&q.fenceWord, 1) }

// Buffer is one guest buffer of a descriptor chain.
type Buffer struct {
	Addr uint64
	Len  uint32
}

// Chain is one descriptor chain popped from the available ring: the
// device-readable buffers (driver to device) followed by the
// device-writable ones (device to driver), indirect tables flattened.
type Chain struct {
	// Head is the index to return with Push.
	Head     uint16
	Readable []Buffer
	Writable []Buffer
}

// ReadableLen is the total length of the readable buffers.
func (c *Chain) ReadableLen() uint64 { return total(c.Readable) }

// WritableLen is the total length of the writable buffers.
func (c *Chain) WritableLen() uint64 { return total(c.Writable) }

func total(bs []Buffer) uint64 {
	var n uint64
	for _, b := range bs {
		n += uint64(b.Len)
	}
	return n
}

// Pending is the number of chains the driver has made available that Pop
// has not taken yet. A corrupt available index breaks the queue.
func (q *Queue) Pending() (uint16, error) {
	if q.broken != nil {
		return 0, q.broken
	}
	if q.mem == nil {
		return 0, fmt.Errorf("queue not activated: %w", ErrState)
	}
	idx, err := q.mem.ReadU16(q.AvailAddr + 2)
	if err != nil {
		return 0, q.breakQueue(err)
	}
	n := idx - q.lastAvail
	if n > q.Size {
		return 0, q.breakQueue(fmt.Errorf("available index %d is %d ahead of %d, queue size %d", idx, n, q.lastAvail, q.Size))
	}
	return n, nil
}

// Pop takes the next available descriptor chain. It returns (nil, nil)
// when the ring is empty. An error wrapping ErrBadChain comes with a Chain
// whose Head is valid and whose buffers are empty: the device must fail
// the request by pushing Head with length 0, and go on. An error wrapping
// ErrBroken means the queue is unusable until reset (Broken reports it).
func (q *Queue) Pop() (*Chain, error) {
	n, err := q.Pending()
	if err != nil || n == 0 {
		return nil, err
	}
	// The available index load above must precede the ring entry load;
	// both are loads, ordered on amd64 and by the call boundary here.
	slot := uint64(q.lastAvail % q.Size)
	head, err := q.mem.ReadU16(q.AvailAddr + 4 + 2*slot)
	if err != nil {
		return nil, q.breakQueue(err)
	}
	if head >= q.Size {
		return nil, q.breakQueue(fmt.Errorf("available ring slot %d holds head %d >= size %d", slot, head, q.Size))
	}
	q.lastAvail++
	c := &Chain{Head: head}
	if err := q.walk(c); err != nil {
		return &Chain{Head: head}, fmt.Errorf("chain at head %d: %w: %w", head, ErrBadChain, err)
	}
	return c, nil
}

type desc struct {
	addr  uint64
	len   uint32
	flags uint16
	next  uint16
}

func (q *Queue) readDesc(table uint64, i uint16) (desc, error) {
	b := q.descBuf[:]
	if _, err := q.mem.ReadAt(b, int64(table+uint64(i)*descSize)); err != nil {
		return desc{}, err
	}
	return desc{
		addr:  binary.LittleEndian.Uint64(b[0:]),
		len:   binary.LittleEndian.Uint32(b[8:]),
		flags: binary.LittleEndian.Uint16(b[12:]),
		next:  binary.LittleEndian.Uint16(b[14:]),
	}, nil
}

// walk follows the chain at c.Head (§2.7.5), checking: indices within the
// table, at most as many descriptors as the table has (which also ends
// loops), indirect tables only with VIRTIO_F_INDIRECT_DESC, never nested
// nor combined with NEXT, of a non-zero multiple of 16 bytes in guest RAM;
// readable buffers never after writable ones; buffer ranges not wrapping.
func (q *Queue) walk(c *Chain) error {
	table, tableLen := q.DescAddr, uint32(q.Size)
	idx := c.Head
	budget := tableLen
	indirect := false
	var totalLen uint64
	for {
		if uint32(idx) >= tableLen {
			return fmt.Errorf("descriptor index %d outside table of %d", idx, tableLen)
		}
		if budget == 0 {
			return fmt.Errorf("chain longer than its table (%d): loop", tableLen)
		}
		budget--
		d, err := q.readDesc(table, idx)
		if err != nil {
			return err
		}
		if d.flags&DescFIndirect != 0 {
			switch {
			case !q.indirect:
				return fmt.Errorf("indirect descriptor without VIRTIO_F_INDIRECT_DESC")
			case indirect:
				return fmt.Errorf("nested indirect descriptor")
			case d.flags&DescFNext != 0:
				return fmt.Errorf("indirect descriptor with NEXT")
			case d.len == 0 || d.len%descSize != 0 || d.len/descSize > MaxQueueSize:
				return fmt.Errorf("indirect table length %d", d.len)
			}
			if err := probe(q.mem, d.addr, uint64(d.len)); err != nil {
				return fmt.Errorf("indirect table: %w", err)
			}
			indirect = true
			table, tableLen, idx = d.addr, d.len/descSize, 0
			budget = tableLen
			continue
		}
		if d.addr+uint64(d.len) < d.addr {
			return fmt.Errorf("buffer %#x+%d wraps", d.addr, d.len)
		}
		totalLen += uint64(d.len)
		if totalLen > 1<<32 {
			return fmt.Errorf("chain longer than 4 GiB")
		}
		b := Buffer{Addr: d.addr, Len: d.len}
		if d.flags&DescFWrite != 0 {
			c.Writable = append(c.Writable, b)
		} else {
			if len(c.Writable) > 0 {
				return fmt.Errorf("readable descriptor after writable one")
			}
			c.Readable = append(c.Readable, b)
		}
		if d.flags&DescFNext == 0 {
			return nil
		}
		idx = d.next
	}
}

// Push returns the chain with head to the driver, written bytes having
// been stored into its writable buffers. The used element is stored before
// the used index (§2.7.8.2), so the driver never sees an index whose
// element is not there yet.
func (q *Queue) Push(head uint16, written uint32) error {
	if q.broken != nil {
		return q.broken
	}
	if q.mem == nil {
		return fmt.Errorf("queue not activated: %w", ErrState)
	}
	slot := uint64(q.nextUsed % q.Size)
	var b [usedElemSize]byte
	binary.LittleEndian.PutUint32(b[0:], uint32(head))
	binary.LittleEndian.PutUint32(b[4:], written)
	if _, err := q.mem.WriteAt(b[:], int64(q.UsedAddr+4+usedElemSize*slot)); err != nil {
		return q.breakQueue(err)
	}
	q.nextUsed++
	// Stores are not reordered with stores on amd64; the call boundary and
	// the atomic below keep the compiler from reordering them either.
	q.fence()
	if err := q.mem.WriteU16(q.UsedAddr+2, q.nextUsed); err != nil {
		return q.breakQueue(err)
	}
	return nil
}

// NeedsInterrupt decides, after one or more Push calls, whether the driver
// wants a used-buffer notification: with VIRTIO_F_EVENT_IDX when the used
// index passed used_event since the last decision (vring_need_event,
// §2.7.10), otherwise unless VIRTQ_AVAIL_F_NO_INTERRUPT is set (§2.7.7).
// If the ring cannot be read it answers true: a spurious interrupt is
// harmless, a lost one hangs the guest.
func (q *Queue) NeedsInterrupt() bool {
	if q.mem == nil {
		return false
	}
	// Our used index store must be globally visible before we read the
	// driver's suppression state, or we may miss its update (store->load).
	q.fence()
	if q.eventIdx {
		ev, err := q.mem.ReadU16(q.AvailAddr + 4 + 2*uint64(q.Size))
		if err != nil {
			return true
		}
		newIdx, old, valid := q.nextUsed, q.signalledUsed, q.signalledValid
		q.signalledUsed, q.signalledValid = newIdx, true
		if !valid {
			return true
		}
		return NeedEvent(ev, newIdx, old)
	}
	flags, err := q.mem.ReadU16(q.AvailAddr)
	if err != nil {
		return true
	}
	return flags&AvailFNoInterrupt == 0
}

// NeedEvent is vring_need_event from the spec (§2.7.10): whether moving an
// index from old to new crossed event.
func NeedEvent(event, newIdx, old uint16) bool {
	return newIdx-event-1 < newIdx-old
}

// DisableNotification asks the driver not to notify while the device is
// busy draining the queue (VIRTQ_USED_F_NO_NOTIFY; with event idx the
// stale avail_event has the same effect, so nothing is written).
func (q *Queue) DisableNotification() error {
	if q.mem == nil || q.eventIdx {
		return nil
	}
	if err := q.mem.WriteU16(q.UsedAddr, UsedFNoNotify); err != nil {
		return q.breakQueue(err)
	}
	return nil
}

// EnableNotification asks the driver to notify on the next available
// buffer (avail_event = our position with event idx, else clearing
// NO_NOTIFY), then re-reads the available index. It reports whether
// buffers arrived in the meantime: if so, the caller must drain again
// rather than sleep, or it would miss them.
func (q *Queue) EnableNotification() (bool, error) {
	if q.mem == nil {
		return false, fmt.Errorf("queue not activated: %w", ErrState)
	}
	if q.broken != nil {
		return false, q.broken
	}
	var err error
	if q.eventIdx {
		err = q.mem.WriteU16(q.UsedAddr+4+usedElemSize*uint64(q.Size), q.lastAvail)
	} else {
		err = q.mem.WriteU16(q.UsedAddr, 0)
	}
	if err != nil {
		return false, q.breakQueue(err)
	}
	q.fence() // store avail_event/flags before loading avail idx
	n, err := q.Pending()
	return n > 0, err
}
