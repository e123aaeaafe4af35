package virtio_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"testing"

	"github.com/nimbus-vmm/nimbus/internal/memory"
	"github.com/nimbus-vmm/nimbus/internal/virtio"
	"github.com/nimbus-vmm/nimbus/internal/virtio/virtiotest"
)

const (
	ringBase = 0x1000
	heap     = 0x10000
	memSize  = 0x40000
)

func setup(t testing.TB, size uint16, features uint64) (*virtiotest.Mem, *virtio.Queue, *virtiotest.Driver) {
	t.Helper()
	m := virtiotest.NewMem(memSize)
	q, err := virtio.NewQueue(256)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close() })
	d := virtiotest.NewDriver(m, q, size, ringBase, heap, memSize)
	if err := virtio.ActivateQueues(m, features, []*virtio.Queue{q}); err != nil {
		t.Fatal(err)
	}
	return m, q, d
}

func putDesc(m *virtiotest.Mem, table uint64, i uint16, addr uint64, n uint32, flags, next uint16) {
	b := m.B[table+uint64(i)*16:]
	binary.LittleEndian.PutUint64(b, addr)
	binary.LittleEndian.PutUint32(b[8:], n)
	binary.LittleEndian.PutUint16(b[12:], flags)
	binary.LittleEndian.PutUint16(b[14:], next)
}

func TestPopDirectAndIndirect(t *testing.T) {
	for _, indirect := range []bool{false, true} {
		m, q, d := setup(t, 16, virtio.CommonFeatures)
		d.Indirect = indirect
		head, ins := d.Submit([][]byte{[]byte("hello "), []byte("world")}, []uint32{3, 5})
		c, err := q.Pop()
		if err != nil || c == nil {
			t.Fatalf("indirect=%v: Pop = %v, %v", indirect, c, err)
		}
		if c.Head != head || len(c.Readable) != 2 || len(c.Writable) != 2 || c.ReadableLen() != 11 || c.WritableLen() != 8 {
			t.Fatalf("indirect=%v: chain %+v", indirect, c)
		}
		got, err := io.ReadAll(virtio.NewReader(m, c.Readable))
		if err != nil || string(got) != "hello world" {
			t.Fatalf("read %q, %v", got, err)
		}
		w := virtio.NewWriter(m, c.Writable)
		if _, err := w.Write([]byte("abcdefgh")); err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write([]byte("x")); !errors.Is(err, io.ErrShortWrite) {
			t.Fatalf("overfull write: %v", err)
		}
		if err := q.Push(c.Head, w.Written()); err != nil {
			t.Fatal(err)
		}
		if string(d.Bytes(ins[0], 3)) != "abc" || string(d.Bytes(ins[1], 5)) != "defgh" {
			t.Fatalf("written %q %q", d.Bytes(ins[0], 3), d.Bytes(ins[1], 5))
		}
		used := d.Poll()
		if len(used) != 1 || used[0] != (virtiotest.Used{Head: head, Len: 8}) {
			t.Fatalf("used %+v", used)
		}
		if c, err := q.Pop(); c != nil || err != nil {
			t.Fatalf("empty ring popped %v, %v", c, err)
		}
	}
}

func TestIndexWrap(t *testing.T) {
	_, q, d := setup(t, 4, virtio.CommonFeatures)
	for i := range 70000 { // past 2^16 indices
		head, _ := d.Submit([][]byte{{byte(i)}}, nil)
		c, err := q.Pop()
		if err != nil || c == nil || c.Head != head {
			t.Fatalf("iteration %d: %v %v", i, c, err)
		}
		if err := q.Push(c.Head, 0); err != nil {
			t.Fatal(err)
		}
		if u := d.Poll(); len(u) != 1 {
			t.Fatalf("iteration %d: used %v", i, u)
		}
		d.ResetHeap(heap)
	}
}

func TestBadChains(t *testing.T) {
	cases := []struct {
		name     string
		features uint64
		build    func(m *virtiotest.Mem, q *virtio.Queue)
	}{
		{"loop", virtio.CommonFeatures, func(m *virtiotest.Mem, q *virtio.Queue) {
			putDesc(m, q.DescAddr, 0, heap, 8, virtio.DescFNext, 1)
			putDesc(m, q.DescAddr, 1, heap, 8, virtio.DescFNext, 0)
		}},
		{"next out of table", virtio.CommonFeatures, func(m *virtiotest.Mem, q *virtio.Queue) {
			putDesc(m, q.DescAddr, 0, heap, 8, virtio.DescFNext, 9999)
		}},
		{"readable after writable", virtio.CommonFeatures, func(m *virtiotest.Mem, q *virtio.Queue) {
			putDesc(m, q.DescAddr, 0, heap, 8, virtio.DescFNext|virtio.DescFWrite, 1)
			putDesc(m, q.DescAddr, 1, heap, 8, 0, 0)
		}},
		{"indirect not negotiated", virtio.FVersion1, func(m *virtiotest.Mem, q *virtio.Queue) {
			putDesc(m, q.DescAddr, 0, heap, 16, virtio.DescFIndirect, 0)
		}},
		{"indirect with next", virtio.CommonFeatures, func(m *virtiotest.Mem, q *virtio.Queue) {
			putDesc(m, q.DescAddr, 0, heap, 16, virtio.DescFIndirect|virtio.DescFNext, 1)
		}},
		{"indirect odd length", virtio.CommonFeatures, func(m *virtiotest.Mem, q *virtio.Queue) {
			putDesc(m, q.DescAddr, 0, heap, 17, virtio.DescFIndirect, 0)
		}},
		{"indirect empty", virtio.CommonFeatures, func(m *virtiotest.Mem, q *virtio.Queue) {
			putDesc(m, q.DescAddr, 0, heap, 0, virtio.DescFIndirect, 0)
		}},
		{"indirect outside RAM", virtio.CommonFeatures, func(m *virtiotest.Mem, q *virtio.Queue) {
			putDesc(m, q.DescAddr, 0, memSize-16, 32, virtio.DescFIndirect, 0)
		}},
		{"nested indirect", virtio.CommonFeatures, func(m *virtiotest.Mem, q *virtio.Queue) {
			putDesc(m, q.DescAddr, 0, heap, 16, virtio.DescFIndirect, 0)
			putDesc(m, heap, 0, heap+64, 16, virtio.DescFIndirect, 0)
		}},
		{"indirect loop", virtio.CommonFeatures, func(m *virtiotest.Mem, q *virtio.Queue) {
			putDesc(m, q.DescAddr, 0, heap, 32, virtio.DescFIndirect, 0)
			putDesc(m, heap, 0, heap+64, 16, virtio.DescFNext, 1)
			putDesc(m, heap, 1, heap+64, 16, virtio.DescFNext, 0)
		}},
		{"buffer wraps address space", virtio.CommonFeatures, func(m *virtiotest.Mem, q *virtio.Queue) {
			putDesc(m, q.DescAddr, 0, ^uint64(0)-4, 8, 0, 0)
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m, q, d := setup(t, 16, tc.features)
			tc.build(m, q)
			d.Publish(0)
			c, err := q.Pop()
			if !errors.Is(err, virtio.ErrBadChain) || c == nil || c.Head != 0 || c.Readable != nil || c.Writable != nil {
				t.Fatalf("Pop = %+v, %v; want ErrBadChain with head 0", c, err)
			}
			// The request is failed and the queue goes on.
			if err := q.Push(c.Head, 0); err != nil {
				t.Fatal(err)
			}
			if u := d.Poll(); len(u) != 1 || u[0].Len != 0 {
				t.Fatalf("used %v", u)
			}
			if q.Broken() != nil {
				t.Fatalf("queue broken by one bad chain: %v", q.Broken())
			}
		})
	}
}

func TestBrokenQueue(t *testing.T) {
	t.Run("avail index jumps", func(t *testing.T) {
		m, q, _ := setup(t, 16, virtio.CommonFeatures)
		binary.LittleEndian.PutUint16(m.B[q.AvailAddr+2:], 17)
		if _, err := q.Pop(); !errors.Is(err, virtio.ErrBroken) {
			t.Fatalf("Pop: %v", err)
		}
		if !errors.Is(q.Broken(), virtio.ErrBroken) {
			t.Fatal("queue not marked broken")
		}
		if err := q.Push(0, 0); !errors.Is(err, virtio.ErrBroken) {
			t.Fatalf("Push on broken queue: %v", err)
		}
	})
	t.Run("head out of range", func(t *testing.T) {
		m, q, d := setup(t, 16, virtio.CommonFeatures)
		d.Publish(16)
		_ = m
		if _, err := q.Pop(); !errors.Is(err, virtio.ErrBroken) {
			t.Fatalf("Pop: %v", err)
		}
	})
	t.Run("reactivation clears", func(t *testing.T) {
		m, q, d := setup(t, 16, virtio.CommonFeatures)
		d.Publish(16)
		q.Pop()
		q.Reset()
		d = virtiotest.NewDriver(m, q, 16, ringBase, heap, memSize)
		clear(m.B[ringBase:heap])
		if err := virtio.ActivateQueues(m, virtio.CommonFeatures, []*virtio.Queue{q}); err != nil {
			t.Fatal(err)
		}
		d.Submit([][]byte{{1}}, nil)
		if c, err := q.Pop(); err != nil || c == nil {
			t.Fatalf("after reset: %v %v", c, err)
		}
	})
}

func TestActivateValidates(t *testing.T) {
	m := virtiotest.NewMem(memSize)
	q, err := virtio.NewQueue(256)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	for _, tc := range []struct {
		name string
		set  func()
	}{
		{"size not power of two", func() { q.Size = 100 }},
		{"size above max", func() { q.Size = 512 }},
		{"size zero", func() { q.Size = 0 }},
		{"misaligned desc", func() { q.DescAddr = 8 }},
		{"misaligned used", func() { q.UsedAddr = 0x3002 }},
		{"ring outside RAM", func() { q.UsedAddr = memSize - 8 }},
		{"ring wraps", func() { q.DescAddr = ^uint64(0) &^ 15 }},
	} {
		q.Reset()
		q.Size, q.DescAddr, q.AvailAddr, q.UsedAddr, q.Ready = 64, 0x1000, 0x2000, 0x3000, true
		tc.set()
		if err := virtio.ActivateQueues(m, virtio.CommonFeatures, []*virtio.Queue{q}); !errors.Is(err, virtio.ErrInvalid) {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
	if _, err := virtio.NewQueue(100); !errors.Is(err, virtio.ErrInvalid) {
		t.Errorf("NewQueue(100): %v", err)
	}
}

func TestReaderOutsideRAM(t *testing.T) {
	m := virtiotest.NewMem(memSize)
	r := virtio.NewReader(m, []virtio.Buffer{{Addr: memSize - 2, Len: 8}})
	_, err := io.ReadAll(r)
	if !errors.Is(err, memory.ErrBadAddress) {
		t.Fatalf("read past RAM: %v", err)
	}
	w := virtio.NewWriter(m, []virtio.Buffer{{Addr: memSize + 100, Len: 8}})
	if _, err := w.Write([]byte("12345678")); !errors.Is(err, memory.ErrBadAddress) {
		t.Fatalf("write past RAM: %v", err)
	}
}

func TestEventIdx(t *testing.T) {
	_, q, d := setup(t, 16, virtio.CommonFeatures)
	push := func() {
		t.Helper()
		d.Submit([][]byte{{1}}, nil)
		c, err := q.Pop()
		if err != nil || c == nil {
			t.Fatal(c, err)
		}
		if err := q.Push(c.Head, 0); err != nil {
			t.Fatal(err)
		}
		d.ResetHeap(heap) // no Poll: it would move used_event
	}
	push() // used idx 1
	if !q.NeedsInterrupt() {
		t.Fatal("first decision must interrupt")
	}
	d.SetUsedEvent(2) // driver: interrupt me when used idx passes 2 (i.e. reaches 3)
	push()            // 2
	if q.NeedsInterrupt() {
		t.Fatal("used idx 2 did not pass used_event 2")
	}
	push() // 3
	if !q.NeedsInterrupt() {
		t.Fatal("used idx 3 passed used_event 2")
	}
	if q.NeedsInterrupt() {
		t.Fatal("nothing new since the last interrupt")
	}
	// avail_event tells the driver where to notify.
	if more, err := q.EnableNotification(); err != nil || more {
		t.Fatalf("EnableNotification = %v, %v", more, err)
	}
	if got := d.AvailEvent(); got != 3 {
		t.Fatalf("avail_event %d, want 3", got)
	}
	d.Submit([][]byte{{1}}, nil)
	if more, _ := q.EnableNotification(); !more {
		t.Fatal("EnableNotification missed a new buffer")
	}
	if !virtio.NeedEvent(0xffff, 0, 0xfffe) || virtio.NeedEvent(5, 5, 4) {
		t.Fatal("NeedEvent wraparound")
	}
}

func TestNoInterruptFlag(t *testing.T) {
	_, q, d := setup(t, 16, virtio.FVersion1)
	d.Submit([][]byte{{1}}, nil)
	c, _ := q.Pop()
	q.Push(c.Head, 0)
	if !q.NeedsInterrupt() {
		t.Fatal("no suppression set")
	}
	d.SetAvailFlags(virtio.AvailFNoInterrupt)
	if q.NeedsInterrupt() {
		t.Fatal("VIRTQ_AVAIL_F_NO_INTERRUPT ignored")
	}
	if err := q.DisableNotification(); err != nil || d.UsedFlags() != virtio.UsedFNoNotify {
		t.Fatalf("DisableNotification: %v flags %d", err, d.UsedFlags())
	}
	if _, err := q.EnableNotification(); err != nil || d.UsedFlags() != 0 {
		t.Fatalf("EnableNotification: %v flags %d", err, d.UsedFlags())
	}
}

func TestEventFD(t *testing.T) {
	e, err := virtio.NewEventFD()
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if ok, err := e.TryWait(); ok || err != nil {
		t.Fatalf("TryWait on fresh eventfd: %v %v", ok, err)
	}
	e.Signal()
	e.Signal()
	if n, err := e.Wait(); n != 2 || err != nil {
		t.Fatalf("Wait = %d, %v", n, err)
	}
	done := make(chan error)
	go func() { _, err := e.Wait(); done <- err }()
	e.Interrupt()
	if err := <-done; !virtio.IsInterrupted(err) {
		t.Fatalf("interrupted Wait: %v", err)
	}
	e.Rearm()
	e.Signal()
	if n, err := e.Wait(); n != 1 || err != nil {
		t.Fatalf("Wait after Rearm = %d, %v", n, err)
	}
	if e.FD() < 0 {
		t.Fatal("bad fd")
	}
}

// FuzzQueue lets guest-controlled bytes fill the descriptor table, rings
// and an indirect area; popping and pushing must never panic nor touch
// memory outside the fake RAM (which would panic in Mem).
func FuzzQueue(f *testing.F) {
	f.Add([]byte{}, uint16(8))
	seed := make([]byte, 0x400)
	binary.LittleEndian.PutUint16(seed[0x100+2:], 3)
	f.Add(seed, uint16(16))
	f.Fuzz(fuzzOne)
}

func fuzzOne(t *testing.T, data []byte, size uint16) {
	{
		size = 1 << (size % 9) // 1..256
		m := virtiotest.NewMem(0x8000)
		copy(m.B, data)
		q, err := virtio.NewQueue(256)
		if err != nil {
			t.Fatal(err)
		}
		defer q.Close()
		q.Size, q.Ready = size, true
		q.DescAddr, q.AvailAddr, q.UsedAddr = 0, 0x1000, 0x1400
		if err := virtio.ActivateQueues(m, virtio.CommonFeatures, []*virtio.Queue{q}); err != nil {
			t.Fatal(err)
		}
		for range 2 * int(size) {
			c, err := q.Pop()
			if err != nil && !errors.Is(err, virtio.ErrBadChain) {
				if !errors.Is(err, virtio.ErrBroken) {
					t.Fatalf("unexpected error class: %v", err)
				}
				return
			}
			if c == nil {
				return
			}
			var buf bytes.Buffer
			io.CopyN(&buf, virtio.NewReader(m, c.Readable), 1<<16)
			w := virtio.NewWriter(m, c.Writable)
			w.Write(make([]byte, 64))
			q.Push(c.Head, w.Written())
			q.NeedsInterrupt()
			q.EnableNotification()
		}
	}
}

func TestSplitBuffers(t *testing.T) {
	bufs := []virtio.Buffer{{0x100, 4}, {0x200, 0}, {0x300, 1}}
	head, tail := virtio.SplitBuffers(bufs, 4)
	if len(head) != 2 || len(tail) != 1 || tail[0] != (virtio.Buffer{0x300, 1}) {
		t.Fatalf("split at 4: %v | %v", head, tail)
	}
	head, tail = virtio.SplitBuffers(bufs, 2)
	if len(head) != 1 || head[0] != (virtio.Buffer{0x100, 2}) || tail[0] != (virtio.Buffer{0x102, 2}) || len(tail) != 3 {
		t.Fatalf("split at 2: %v | %v", head, tail)
	}
	if head, tail = virtio.SplitBuffers(bufs, 10); len(head) != 3 || tail != nil {
		t.Fatalf("split past end: %v | %v", head, tail)
	}
}
