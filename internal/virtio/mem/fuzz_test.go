package mem_test

import (
	"sync"
	"testing"

	"github.com/nimbus-vmm/nimbus/internal/virtio/mem"
	"github.com/nimbus-vmm/nimbus/internal/virtio/virtiotest"
)

// regionDiscarder fails the test when the device discards outside its
// region: that would give back guest RAM the device does not manage.
type regionDiscarder struct {
	t          *testing.T
	mu         sync.Mutex
	start, end uint64
}

func (r *regionDiscarder) Discard(gpa, size uint64) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if gpa < r.start || gpa+size < gpa || gpa+size > r.end || size == 0 {
		r.t.Errorf("discard [%#x, +%#x) outside the region [%#x, %#x)", gpa, size, r.start, r.end)
	}
	return nil
}

func memRequest(typ uint16, addr uint64, blocks uint16) []byte {
	b, _ := mem.Request{Type: typ, Addr: addr, NbBlocks: blocks}.MarshalBinary()
	return b
}

// FuzzMemQueue lets fuzzer-chosen descriptor tables, available rings and
// plug/unplug/state requests reach virtio-mem (a 128 MiB region at
// regionAddr, of which initial*2 MiB requested) and the device serve them.
// It must not panic, hang, write guest RAM outside the used ring and the
// device-writable buffers, discard outside its region, nor plug more than
// the region.
func FuzzMemQueue(f *testing.F) {
	const regionAddr, regionSize = mem.Align, mem.Align
	for _, chains := range [][]virtiotest.SeedChain{
		{
			{Out: [][]byte{memRequest(mem.ReqPlug, regionAddr, 2)}, In: []uint32{mem.ResponseSize}},
			{Out: [][]byte{memRequest(mem.ReqState, regionAddr, 4)}, In: []uint32{mem.ResponseSize}},
			{Out: [][]byte{memRequest(mem.ReqUnplug, regionAddr+mem.BlockSize, 1)}, In: []uint32{mem.ResponseSize}},
			{Out: [][]byte{memRequest(mem.ReqUnplugAll, 0, 0)}, In: []uint32{mem.ResponseSize}},
		},
		{
			{Out: [][]byte{memRequest(mem.ReqPlug, regionAddr+regionSize-mem.BlockSize, 1)}, In: []uint32{mem.ResponseSize}},
			{Out: [][]byte{memRequest(mem.ReqUnplug, ^uint64(0)&^(mem.BlockSize-1), 0xffff)}, In: []uint32{mem.ResponseSize}},
			{Out: [][]byte{memRequest(7, 0, 0)}, In: []uint32{1}},
		},
	} {
		var heap []byte
		q := virtiotest.FuzzSeed(&heap, chains...)
		f.Add(uint8(8), ^uint64(0), heap, q)
	}
	f.Fuzz(func(t *testing.T, initial uint8, features uint64, heap, q []byte) {
		ram := &regionDiscarder{t: t, start: regionAddr, end: regionAddr + regionSize}
		d, err := mem.New(regionAddr, regionSize, uint64(initial%65)*mem.BlockSize, ram, nil)
		if err != nil {
			t.Fatal(err)
		}
		r := virtiotest.NewFuzzRig(t, d, heap, q)
		defer r.Finish(t)
		if err := r.Activate(features); err != nil {
			return
		}
		virtiotest.Settle(t, r.Queues...)
		if p := d.PluggedSize(); p > regionSize || p%mem.BlockSize != 0 {
			t.Fatalf("plugged size %#x in a region of %#x", p, uint64(regionSize))
		}
	})
}
