package mem

import (
	"bytes"
	"encoding/hex"
	"errors"
	"strings"
	"sync"
	"testing"

	"go.uber.org/goleak"

	"github.com/nimbus-vmm/nimbus/internal/virtio"
	"github.com/nimbus-vmm/nimbus/internal/virtio/virtiotest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestLayouts(t *testing.T) {
	c := Config{BlockSize: 0x200000, NodeID: 0x0102, Addr: 0x1_0000_0000, RegionSize: 0x4000_0000,
		UsableRegionSize: 0x4000_0000, PluggedSize: 0x600000, RequestedSize: 0x800000}
	b, _ := c.MarshalBinary()
	want := "0000200000000000" + "0201" + "000000000000" + "0000000001000000" + "0000004000000000" +
		"0000004000000000" + "0000600000000000" + "0000800000000000"
	if hex.EncodeToString(b) != want {
		t.Fatalf("config\n got %x\nwant %s", b, want)
	}
	r, _ := Request{Type: ReqUnplug, Addr: 0x1_0020_0000, NbBlocks: 3}.MarshalBinary()
	if hex.EncodeToString(r) != "0100000000000000"+"0000200001000000"+"0300000000000000" {
		t.Fatalf("request %x", r)
	}
	var back Request
	if err := back.UnmarshalBinary(r); err != nil || back != (Request{ReqUnplug, 0x1_0020_0000, 3}) {
		t.Fatalf("request round trip %+v, %v", back, err)
	}
	if err := back.UnmarshalBinary(r[:RequestSize-1]); err == nil {
		t.Fatal("short request accepted")
	}
	p, _ := Response{Type: RespAck, State: StateMixed}.MarshalBinary()
	if hex.EncodeToString(p) != "0000"+"000000000000"+"0200" {
		t.Fatalf("response %x", p)
	}
}

// fakeRAM records discards.
type fakeRAM struct {
	mu    sync.Mutex
	spans [][2]uint64
	err   error
}

func (f *fakeRAM) Discard(gpa, size uint64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.spans = append(f.spans, [2]uint64{gpa, size})
	return f.err
}

const region = 0x1_0000_0000

type rig struct {
	d   *Device
	ram *fakeRAM
	drv *virtiotest.Driver
	irq *virtiotest.Interrupt
}

func newRig(t *testing.T, initial uint64) *rig {
	t.Helper()
	ram := &fakeRAM{}
	d, err := New(region, 256<<20, initial, ram, nil)
	if err != nil {
		t.Fatal(err)
	}
	m := virtiotest.NewMem(1 << 20)
	q, _ := virtio.NewQueue(QueueSize)
	t.Cleanup(func() { q.Close() })
	t.Cleanup(func() { d.Close() })
	drv := virtiotest.NewDriver(m, q, 64, 0x1000, 0x10000, 1<<20)
	irq := virtiotest.NewInterrupt()
	if err := d.Activate(m, d.Features(), []*virtio.Queue{q}, irq); err != nil {
		t.Fatal(err)
	}
	return &rig{d: d, ram: ram, drv: drv, irq: irq}
}

// do sends one request as the Linux driver does and returns the response.
func (r *rig) do(t *testing.T, req Request) Response {
	t.Helper()
	b, _ := req.MarshalBinary()
	_, ins := r.drv.Submit([][]byte{b}, []uint32{ResponseSize})
	r.drv.Kick()
	<-r.irq.Signals
	u := r.drv.Poll()
	if len(u) != 1 || u[0].Len != ResponseSize {
		t.Fatalf("used %v", u)
	}
	out := r.drv.Bytes(ins[0], u[0].Len)
	return Response{Type: uint16(out[0]) | uint16(out[1])<<8, State: uint16(out[8]) | uint16(out[9])<<8}
}

func (r *rig) config(t *testing.T) Config {
	b := make([]byte, ConfigSize)
	r.d.ReadConfig(0, b)
	want, _ := r.d.cfg.MarshalBinary()
	if !bytes.Equal(b, want) {
		t.Fatalf("ReadConfig %x", b)
	}
	return r.d.cfg
}

// TestPlugUnplugAsTheDriver walks what Linux's virtio_mem does: plug up
// to the requested size, a NACK past it, state queries, unplug (memory
// discarded), and UNPLUG_ALL.
func TestPlugUnplugAsTheDriver(t *testing.T) {
	r := newRig(t, 0)
	if err := r.d.Resize(8 << 20); err != nil {
		t.Fatal(err)
	}
	if c := r.config(t); c.RequestedSize != 8<<20 || c.BlockSize != BlockSize || c.Addr != region || c.UsableRegionSize != 256<<20 {
		t.Fatalf("config %+v", c)
	}
	for _, c := range []struct {
		req  Request
		want Response
	}{
		{Request{ReqState, region, 4}, Response{RespAck, StateUnplugged}},
		{Request{ReqPlug, region, 3}, Response{RespAck, 0}},
		{Request{ReqState, region, 4}, Response{RespAck, StateMixed}},
		{Request{ReqState, region, 3}, Response{RespAck, StatePlugged}},
		{Request{ReqPlug, region + 2<<20, 1}, Response{RespError, 0}}, // already plugged
		{Request{ReqPlug, region + 6<<20, 2}, Response{RespNack, 0}},  // past the requested 8 MiB
		{Request{ReqPlug, region + 6<<20, 1}, Response{RespAck, 0}},
		{Request{ReqState, region + 1, 1}, Response{RespError, 0}},        // misaligned
		{Request{ReqUnplug, region + 256<<20, 1}, Response{RespError, 0}}, // outside
		{Request{ReqUnplug, region + 2<<20, 1}, Response{RespAck, 0}},
		{Request{ReqUnplug, region + 2<<20, 1}, Response{RespError, 0}}, // already unplugged
		{Request{9, region, 1}, Response{RespError, 0}},
	} {
		if got := r.do(t, c.req); got != c.want {
			t.Errorf("%+v: %+v, want %+v", c.req, got, c.want)
		}
	}
	if p := r.d.PluggedSize(); p != 6<<20 {
		t.Fatalf("plugged %#x, want 6 MiB", p)
	}
	if len(r.ram.spans) != 1 || r.ram.spans[0] != [2]uint64{region + 2<<20, 2 << 20} {
		t.Fatalf("discards %v", r.ram.spans)
	}
	if got := r.do(t, Request{Type: ReqUnplugAll}); got.Type != RespAck || r.d.PluggedSize() != 0 {
		t.Fatalf("unplug all: %+v, plugged %#x", got, r.d.PluggedSize())
	}
	r.ram.err = errors.New("boom")
	if got := r.do(t, Request{Type: ReqUnplugAll}); got.Type != RespError {
		t.Fatalf("unplug all with a failing discard: %+v", got)
	}
}

// TestResize: upstream's refusals and texts; a change notifies the driver.
func TestResize(t *testing.T) {
	r := newRig(t, 4<<20)
	if c := r.config(t); c.RequestedSize != 4<<20 {
		t.Fatalf("initial requested %#x", c.RequestedSize)
	}
	for size, text := range map[uint64]string{
		4 << 20:   "new size 0x400000 and requested_size are identical",
		512 << 20: "new size 0x20000000 is bigger than region_size 0x10000000",
		5 << 20:   "new size 0x500000 is not aligned on block_size 0x200000",
	} {
		err := r.d.Resize(size)
		if !errors.Is(err, ErrResize) || !strings.HasSuffix(err.Error(), "Failed to update virtio configuration: ResizeError("+text+")") {
			t.Errorf("Resize(%#x): %v", size, err)
		}
	}
	before := r.irq.Configs()
	if err := r.d.Resize(0); err != nil {
		t.Fatal(err)
	}
	if n := r.irq.Configs(); n != before+1 {
		t.Fatalf("%d configuration change notifications for a resize, want 1", n-before)
	}
	if _, err := New(region, 100<<20, 0, &fakeRAM{}, nil); err == nil {
		t.Fatal("unaligned region accepted")
	}
}
