package balloon_test

import (
	"encoding/binary"
	"testing"

	"github.com/nimbus-vmm/nimbus/internal/config"
	"github.com/nimbus-vmm/nimbus/internal/memory"
	"github.com/nimbus-vmm/nimbus/internal/virtio/balloon"
	"github.com/nimbus-vmm/nimbus/internal/virtio/virtiotest"
)

// checkedRAM is real guest RAM (internal/memory) whose Discard must refuse
// every range outside it: the balloon passes the guest's PFNs and
// reported ranges straight through.
type checkedRAM struct {
	t *testing.T
	m *memory.Memory
}

func (c checkedRAM) Discard(gpa, size uint64) error {
	err := c.m.Discard(gpa, size)
	if err == nil && (gpa+size < gpa || gpa+size > c.m.Size()) {
		c.t.Errorf("Discard(%#x, %#x) of RAM of %#x bytes succeeded", gpa, size, c.m.Size())
	}
	return err
}

func pfns(p ...uint32) []byte {
	var b []byte
	for _, v := range p {
		b = binary.LittleEndian.AppendUint32(b, v)
	}
	return b
}

// FuzzBalloonQueues lets fuzzer-chosen descriptor tables, available rings
// and PFN arrays reach the balloon's inflate, deflate and (with free page
// reporting) reporting queues, and the device discard what they name
// from real guest RAM. It must not panic, hang, write the virtqueues'
// guest RAM outside the used rings and the device-writable buffers, nor
// discard outside guest RAM.
func FuzzBalloonQueues(f *testing.F) {
	ram, err := memory.New(1<<20, memory.Options{})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { ram.Close() })
	var heap []byte
	inflate := virtiotest.FuzzSeed(&heap, virtiotest.SeedChain{Out: [][]byte{pfns(1, 2, 3, 0xff), {1, 2, 3}}})
	deflate := virtiotest.FuzzSeed(&heap, virtiotest.SeedChain{Out: [][]byte{pfns(1, 2)}})
	report := virtiotest.FuzzSeed(&heap, virtiotest.SeedChain{In: []uint32{4096}}, virtiotest.SeedChain{Out: [][]byte{make([]byte, 16)}})
	f.Add(true, ^uint64(0), heap, inflate, deflate, report)
	heap = nil
	inflate = virtiotest.FuzzSeed(&heap, virtiotest.SeedChain{Out: [][]byte{pfns(0xffffffff, 0xfffff, 0x100, 0x101)}})
	f.Add(false, ^uint64(0), heap, inflate, []byte(nil), []byte(nil))
	f.Fuzz(func(t *testing.T, reporting bool, features uint64, heap, inflate, deflate, report []byte) {
		d := balloon.New(config.BalloonConfig{Size: 1 << 20, DeflateOnOOM: true, FreePageReporting: reporting}, checkedRAM{t, ram}, nil)
		r := virtiotest.NewFuzzRig(t, d, heap, inflate, deflate, report)
		defer r.Finish(t)
		if err := r.Activate(features); err != nil {
			return
		}
		virtiotest.Settle(t, r.Queues...)
	})
}
