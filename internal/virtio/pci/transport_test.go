package pci

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"strings"
	"testing"

	"github.com/nimbus-vmm/nimbus/internal/arch/x86"
	"github.com/nimbus-vmm/nimbus/internal/devices/bus"
	devpci "github.com/nimbus-vmm/nimbus/internal/devices/pci"
	"github.com/nimbus-vmm/nimbus/internal/virtio"
	"github.com/nimbus-vmm/nimbus/internal/virtio/virtiotest"
)

// fakeDev is a block-typed virtio device recording transport calls.
type fakeDev struct {
	features   uint64
	cfg        [8]byte
	activated  int
	resets     int
	gotFeat    uint64
	gotQueues  []virtio.Queue
	irq        virtio.Interrupt
	activateFn func() error
}

func (f *fakeDev) Type() virtio.DeviceType { return virtio.TypeBlock }
func (f *fakeDev) Features() uint64        { return f.features }
func (f *fakeDev) QueueSizes() []uint16    { return []uint16{256, 128} }
func (f *fakeDev) ReadConfig(off uint64, p []byte) {
	if off < uint64(len(f.cfg)) {
		copy(p, f.cfg[off:])
	}
}
func (f *fakeDev) WriteConfig(off uint64, p []byte) {}
func (f *fakeDev) ConfigSize() uint64               { return 8 }
func (f *fakeDev) Activate(mem virtio.GuestMemory, features uint64, qs []*virtio.Queue, irq virtio.Interrupt) error {
	if f.activateFn != nil {
		if err := f.activateFn(); err != nil {
			return err
		}
	}
	f.activated++
	f.gotFeat = features
	f.gotQueues = nil
	for _, q := range qs {
		f.gotQueues = append(f.gotQueues, virtio.Queue{MaxSize: q.MaxSize, Size: q.Size, Ready: q.Ready,
			DescAddr: q.DescAddr, AvailAddr: q.AvailAddr, UsedAddr: q.UsedAddr})
	}
	f.irq = irq
	return nil
}
func (f *fakeDev) Reset() error                { f.resets++; return nil }
func (f *fakeDev) Pause() error                { return nil }
func (f *fakeDev) Resume() error               { return nil }
func (f *fakeDev) Close() error                { return nil }
func (f *fakeDev) Counters() map[string]uint64 { return nil }

type router struct{ calls []string }

func (r *router) Route(v int, addr uint64, data uint32, masked bool) error {
	r.calls = append(r.calls, fmt.Sprintf("route %d %#x %#x %v", v, addr, data, masked))
	return nil
}
func (r *router) Trigger(v int) error {
	r.calls = append(r.calls, fmt.Sprintf("trigger %d", v))
	return nil
}

type rig struct {
	t    *testing.T
	dev  *fakeDev
	r    *router
	tr   *Device
	pio  *bus.Bus
	mmio *bus.Bus
	bar  uint64
	slot int
}

func newRig(t *testing.T) *rig {
	t.Helper()
	g := &rig{t: t, dev: &fakeDev{features: virtio.CommonFeatures | 1<<9, cfg: [8]byte{0, 0x10}}, r: &router{}}
	var err error
	g.tr, err = New(Config{Device: g.dev, Memory: virtiotest.NewMem(1 << 20), Router: g.r})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = g.tr.Close() })
	g.pio, g.mmio = bus.NewIO(), bus.NewMMIO()
	root, _ := devpci.NewRoot(devpci.RootConfig{MMIO: g.mmio,
		Window32: devpci.NewAllocator(x86.Region{Start: 0xc000_0000, Size: 640 << 20}),
		Window64: devpci.NewAllocator(x86.Region{Start: 1 << 40, Size: 1 << 40})})
	_ = g.pio.Insert(root.ConfigIO(), devpci.ConfigIOPort, devpci.ConfigIOSize)
	_ = g.mmio.Insert(root.ConfigMMIO(), devpci.ECAMBase(0), devpci.ECAMSizePerSegment)
	bdf, err := root.Add(g.tr, 3)
	if err != nil {
		t.Fatal(err)
	}
	if bdf.String() != "0000:00:03.0" {
		t.Errorf("bdf %s", bdf)
	}
	g.slot = 3
	g.bar = g.tr.BARs()[0].Base
	return g
}

func (g *rig) cfg32(off int) uint32 {
	d := make([]byte, 4)
	g.mmio.Read(devpci.ECAMBase(0)+uint64(g.slot)<<15+uint64(off), d)
	return binary.LittleEndian.Uint32(d)
}

func (g *rig) cfgW(off int, data []byte) {
	g.mmio.Write(devpci.ECAMBase(0)+uint64(g.slot)<<15+uint64(off), data)
}

func (g *rig) r8(off uint64) uint8 {
	d := make([]byte, 1)
	g.mmio.Read(g.bar+off, d)
	return d[0]
}
func (g *rig) r16(off uint64) uint16 {
	d := make([]byte, 2)
	g.mmio.Read(g.bar+off, d)
	return binary.LittleEndian.Uint16(d)
}
func (g *rig) r32(off uint64) uint32 {
	d := make([]byte, 4)
	g.mmio.Read(g.bar+off, d)
	return binary.LittleEndian.Uint32(d)
}
func (g *rig) w8(off uint64, v uint8) { g.mmio.Write(g.bar+off, []byte{v}) }
func (g *rig) w16(off uint64, v uint16) {
	g.mmio.Write(g.bar+off, binary.LittleEndian.AppendUint16(nil, v))
}
func (g *rig) w32(off uint64, v uint32) {
	g.mmio.Write(g.bar+off, binary.LittleEndian.AppendUint32(nil, v))
}

func TestConfigSpaceBytes(t *testing.T) {
	g := newRig(t)
	want := map[int]uint32{
		0x00: 0x1042_1af4,         // vendor, device 0x1040+2
		0x04: 0x0010_0000,         // status: capability list
		0x08: 0x0180_0001,         // mass storage / 0x80, revision 1
		0x10: uint32(g.bar) | 0x4, // 64-bit memory BAR
		0x14: uint32(g.bar >> 32), //
		0x2c: 0x1042_1af4,         // subsystem
		0x34: 0x40,                // first capability
	}
	for off, w := range want {
		if got := g.cfg32(off); got != w {
			t.Errorf("config %#x = %#08x, want %#08x", off, got, w)
		}
	}
	if g.bar != 2<<40-BARAlign {
		t.Errorf("BAR at %#x", g.bar)
	}
	// Walk the capability chain as Linux's virtio_pci_find_capability does.
	type cp struct {
		Off, ID, Len, Type, BAR int
		Offset, Length          uint32
	}
	var caps []cp
	for off := int(g.cfg32(0x34) & 0xff); off != 0; off = int(g.cfg32(off)>>8) & 0xff {
		w0 := g.cfg32(off)
		c := cp{Off: off, ID: int(w0 & 0xff)}
		if c.ID == devpci.CapVendorSpecific {
			c.Len, c.Type, c.BAR = int(w0>>16)&0xff, int(w0>>24), int(g.cfg32(off+4)&0xff)
			c.Offset, c.Length = g.cfg32(off+8), g.cfg32(off+12)
		}
		caps = append(caps, c)
		if len(caps) > 10 {
			t.Fatal("capability loop")
		}
	}
	wantCaps := []cp{
		{0x40, 9, 16, capCommon, 0, 0, 56},
		{0x50, 9, 16, capISR, 0, 0x2000, 1},
		{0x60, 9, 16, capDevice, 0, 0x4000, 8},
		{0x70, 9, 20, capNotify, 0, 0x6000, 0x1000},
		{0x84, 9, 20, capPCI, 0, 0, 0},
		{0x98, 0x11, 0, 0, 0, 0, 0},
	}
	if !reflect.DeepEqual(caps, wantCaps) {
		t.Errorf("caps %+v\nwant %+v", caps, wantCaps)
	}
	if m := g.cfg32(0x70 + 16); m != NotifyOffMultiplier {
		t.Errorf("notify_off_multiplier %d", m)
	}
	// MSI-X: 3 vectors (2 queues + config), table and PBA in BAR 0.
	if got := []uint32{g.cfg32(0x98), g.cfg32(0x9c), g.cfg32(0xa0)}; !reflect.DeepEqual(got, []uint32{0x0002_0011, 0x8000, 0x48000}) {
		t.Errorf("MSI-X cap %#x", got)
	}
	// BAR sizing.
	g.cfgW(0x10, []byte{0xff, 0xff, 0xff, 0xff})
	if got := g.cfg32(0x10); got != 0xfff8_0004 {
		t.Errorf("BAR size probe %#x", got)
	}
	g.cfgW(0x10, binary.LittleEndian.AppendUint32(nil, uint32(g.bar)))
	// device_tree resources.
	js, _ := json.Marshal(devpci.BARResources(g.tr))
	if want := fmt.Sprintf(`[{"PciBar":{"index":0,"base":%d,"size":524288,"type_":"Mmio64","prefetchable":false}}]`, g.bar); string(js) != want {
		t.Errorf("resources %s", js)
	}
}

// linuxProbe drives the device the way virtio_pci_modern + virtio core do.
func (g *rig) linuxProbe(features uint64) {
	g.w8(ccDeviceStatus, 0)
	for g.r8(ccDeviceStatus) != 0 {
	}
	g.w8(ccDeviceStatus, virtio.StatusAcknowledge)
	g.w8(ccDeviceStatus, virtio.StatusAcknowledge|virtio.StatusDriver)
	g.w32(ccDriverFeatureSelect, 0)
	g.w32(ccDriverFeature, uint32(features))
	g.w32(ccDriverFeatureSelect, 1)
	g.w32(ccDriverFeature, uint32(features>>32))
	g.w8(ccDeviceStatus, virtio.StatusAcknowledge|virtio.StatusDriver|virtio.StatusFeaturesOK)
}

func TestLinuxDriverSequence(t *testing.T) {
	g := newRig(t)
	// Enable MSI-X (function masked while programming, as pci_msix_enable does).
	g.cfgW(0x98+2, []byte{0x00, 0xc0})
	for v := 0; v < 3; v++ {
		base := MSIXTableOffset + uint64(v)*16
		g.w32(base, 0xfee0_0000)
		g.w32(base+4, 0)
		g.w32(base+8, 0x4020+uint32(v))
		g.w32(base+12, 0)
	}
	g.cfgW(0x98+2, []byte{0x00, 0x80})
	if !g.tr.MSIX().Enabled() || g.tr.MSIX().FunctionMasked() {
		t.Fatal("MSI-X not enabled")
	}
	g.r.calls = nil

	if f := g.r32(ccDeviceFeature); f != uint32(g.dev.features) {
		t.Errorf("feature word 0 %#x", f)
	}
	g.w32(ccDeviceFeatureSelect, 1)
	if f := g.r32(ccDeviceFeature); f != 1 {
		t.Errorf("feature word 1 %#x", f)
	}
	want := virtio.FVersion1 | virtio.FEventIdx
	g.linuxProbe(want)
	if s := g.r8(ccDeviceStatus); s != 0xb {
		t.Fatalf("status after FEATURES_OK %#x", s)
	}
	if n := g.r16(ccNumQueues); n != 2 {
		t.Errorf("num_queues %d", n)
	}
	g.w16(ccMSIXConfig, 2)
	if v := g.r16(ccMSIXConfig); v != 2 {
		t.Errorf("msix_config %d", v)
	}
	for q := uint16(0); q < 2; q++ {
		g.w16(ccQueueSelect, q)
		if max := g.r16(ccQueueSize); max != []uint16{256, 128}[q] {
			t.Errorf("queue %d max %d", q, max)
		}
		g.w16(ccQueueSize, 64)
		g.w16(ccQueueMSIXVector, q)
		if v := g.r16(ccQueueMSIXVector); v != q {
			t.Errorf("queue %d vector %d", q, v)
		}
		if off := g.r16(ccQueueNotifyOff); off != q {
			t.Errorf("queue %d notify_off %d", q, off)
		}
		base := 0x1_0000_0000*uint64(q) + 0x10000
		for i, reg := range []uint64{ccQueueDesc, ccQueueDriver, ccQueueDevice} {
			a := base + uint64(i)*0x1000
			g.w32(reg, uint32(a))
			g.w32(reg+4, uint32(a>>32))
		}
		if q == 0 {
			g.w16(ccQueueEnable, 1)
		}
	}
	// Out-of-range vector reads back NO_VECTOR.
	g.w16(ccQueueSelect, 1)
	g.w16(ccQueueMSIXVector, 7)
	if v := g.r16(ccQueueMSIXVector); v != NoVector {
		t.Errorf("bad vector read back %#x", v)
	}
	g.w16(ccQueueMSIXVector, 1)
	d := make([]byte, 8)
	g.mmio.Read(g.bar+ccQueueDevice, d)
	if binary.LittleEndian.Uint64(d) != 0x1_0001_2000 {
		t.Errorf("queue 1 device addr % x", d)
	}
	if g.dev.activated != 0 {
		t.Fatal("activated before DRIVER_OK")
	}
	g.w8(ccDeviceStatus, 0xf)
	if g.dev.activated != 1 || g.dev.gotFeat != want {
		t.Fatalf("activate: %d times, features %#x", g.dev.activated, g.dev.gotFeat)
	}
	wantQ := []virtio.Queue{
		{MaxSize: 256, Size: 64, Ready: true, DescAddr: 0x10000, AvailAddr: 0x11000, UsedAddr: 0x12000},
		{MaxSize: 128, Size: 64, Ready: false, DescAddr: 0x1_0001_0000, AvailAddr: 0x1_0001_1000, UsedAddr: 0x1_0001_2000},
	}
	if !reflect.DeepEqual(g.dev.gotQueues, wantQ) {
		t.Errorf("queues %+v\nwant %+v", g.dev.gotQueues, wantQ)
	}
	// Queue registers are frozen while active.
	g.w16(ccQueueSelect, 0)
	g.w16(ccQueueSize, 8)
	if g.tr.Queues()[0].Size != 64 {
		t.Error("queue size changed while active")
	}
	// Notify without ioeventfd signals the eventfd; the addresses match.
	na := g.tr.NotifyAddresses()
	if na[1].Addr != g.bar+NotifyOffset+4 || na[1].FD != g.tr.Queues()[1].Notify.FD() {
		t.Errorf("notify addresses %+v", na)
	}
	g.mmio.Write(na[1].Addr, []byte{1, 0})
	if ok, _ := g.tr.Queues()[1].Notify.TryWait(); !ok {
		t.Error("notify did not signal queue 1")
	}
	if ok, _ := g.tr.Queues()[0].Notify.TryWait(); ok {
		t.Error("queue 0 signalled")
	}
	// Interrupts go to the assigned vectors.
	g.r.calls = nil
	_ = g.dev.irq.Signal(1)
	_ = g.dev.irq.ConfigChanged()
	if !reflect.DeepEqual(g.r.calls, []string{"trigger 1", "trigger 2"}) {
		t.Errorf("interrupts %v", g.r.calls)
	}
	if gen := g.r8(ccConfigGeneration); gen != 1 {
		t.Errorf("config generation %d", gen)
	}
	if isr := g.r8(ISROffset); isr != isrConfig {
		t.Errorf("ISR %#x", isr)
	}
	if isr := g.r8(ISROffset); isr != 0 {
		t.Errorf("ISR not cleared by read: %#x", isr)
	}
	// Device config reads reach the device.
	if v := g.r16(DeviceOffset); v != 0x1000 {
		t.Errorf("device config %#x", v)
	}
	// Reset.
	g.w8(ccDeviceStatus, 0)
	if g.dev.resets != 1 || g.r8(ccDeviceStatus) != 0 || g.r16(ccMSIXConfig) != NoVector {
		t.Errorf("reset: %d resets, status %#x", g.dev.resets, g.r8(ccDeviceStatus))
	}
	g.w16(ccQueueSelect, 1)
	if g.r16(ccQueueSize) != 128 || g.r16(ccQueueEnable) != 0 || g.r32(ccQueueDesc) != 0 || g.r16(ccQueueMSIXVector) != NoVector {
		t.Error("queue 1 not reset")
	}
	// And it can be driven again.
	g.linuxProbe(want)
	g.w8(ccDeviceStatus, 0xf)
	if g.dev.activated != 2 {
		t.Errorf("reactivation: %d", g.dev.activated)
	}
}

func TestFeaturesRefused(t *testing.T) {
	for name, f := range map[string]uint64{"unoffered": virtio.FVersion1 | 1<<10, "no VERSION_1": virtio.FEventIdx} {
		g := newRig(t)
		g.linuxProbe(f)
		if s := g.r8(ccDeviceStatus); s != virtio.StatusAcknowledge|virtio.StatusDriver {
			t.Errorf("%s: status %#x, FEATURES_OK should stay clear", name, s)
		}
		g.w8(ccDeviceStatus, 0xf)
		if g.dev.activated != 0 {
			t.Errorf("%s: activated", name)
		}
	}
}

func TestActivationFailureNeedsReset(t *testing.T) {
	g := newRig(t)
	g.dev.activateFn = func() error { return errors.New("backend gone") }
	var logged bytes.Buffer
	g.tr.log = slog.New(slog.NewTextHandler(&logged, nil))
	g.linuxProbe(virtio.FVersion1)
	g.w8(ccDeviceStatus, 0xf)
	if s := g.r8(ccDeviceStatus); s&virtio.StatusDeviceNeedsReset == 0 {
		t.Errorf("status %#x", s)
	}
	if !errors.Is(g.tr.ActivateError(), ErrActivate) {
		t.Errorf("err %v", g.tr.ActivateError())
	}
	// The host operator sees why, not only the guest.
	if l := logged.String(); !strings.Contains(l, "level=WARN") || !strings.Contains(l, "backend gone") {
		t.Errorf("log %q", l)
	}
}

func TestPCICfgCapability(t *testing.T) {
	g := newRig(t)
	// Read num_queues through the pci_cfg window: bar 0, offset 0x12, length 2.
	g.cfgW(0x84+4, []byte{0})
	g.cfgW(0x84+8, binary.LittleEndian.AppendUint32(nil, ccNumQueues))
	g.cfgW(0x84+12, binary.LittleEndian.AppendUint32(nil, 2))
	if v := g.cfg32(0x84 + 16); v&0xffff != 2 {
		t.Errorf("num_queues via pci_cfg %#x", v)
	}
	// Write the status through it.
	g.cfgW(0x84+8, binary.LittleEndian.AppendUint32(nil, ccDeviceStatus))
	g.cfgW(0x84+12, binary.LittleEndian.AppendUint32(nil, 1))
	g.cfgW(0x84+16, []byte{1, 0, 0, 0})
	if s := g.r8(ccDeviceStatus); s != 1 {
		t.Errorf("status via pci_cfg %#x", s)
	}
}

func FuzzTransport(f *testing.F) {
	f.Add([]byte{0x14, 0, 1, 0xf, 0x16, 1, 2, 1})
	f.Fuzz(func(t *testing.T, ops []byte) {
		g := newRig(t)
		for len(ops) >= 4 {
			off := uint64(binary.LittleEndian.Uint16(ops)) % (BARSize + 16)
			w := []int{1, 2, 4, 8}[ops[2]%4]
			write := ops[3]&1 != 0
			ops = ops[4:]
			d := make([]byte, w)
			copy(d, ops)
			if write {
				g.mmio.Write(g.bar+off, d)
			} else {
				g.mmio.Read(g.bar+off, d)
			}
			if ops3 := len(ops); ops3 > 0 && ops[0]%17 == 0 {
				g.cfgW(int(off%256), d[:min(w, 4)])
			}
		}
	})
}
