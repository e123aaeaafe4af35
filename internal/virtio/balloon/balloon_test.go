package balloon

import (
	"encoding/binary"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/nimbus-vmm/nimbus/internal/config"
	"github.com/nimbus-vmm/nimbus/internal/virtio"
	"github.com/nimbus-vmm/nimbus/internal/virtio/virtiotest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type fakeRAM struct {
	mu    sync.Mutex
	spans [][2]uint64
}

func (f *fakeRAM) Discard(gpa, size uint64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.spans = append(f.spans, [2]uint64{gpa, size})
	return nil
}

func (f *fakeRAM) got() [][2]uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.spans)
}

// TestInflateReportAndConfig: the driver's view: num_pages from the
// config size and Resize (with a notification), inflated PFNs and
// reported ranges discarded, deflate doing nothing, actual written back.
func TestInflateReportAndConfig(t *testing.T) {
	ram := &fakeRAM{}
	d := New(config.BalloonConfig{Size: 64 << 20, DeflateOnOOM: true, FreePageReporting: true}, ram, nil)
	if d.Features()&(FDeflateOnOOM|FReporting) != FDeflateOnOOM|FReporting || len(d.QueueSizes()) != 3 {
		t.Fatalf("features %#x, queues %v", d.Features(), d.QueueSizes())
	}
	cfg := make([]byte, ConfigSize)
	d.ReadConfig(0, cfg)
	if binary.LittleEndian.Uint32(cfg) != 16384 {
		t.Fatalf("num_pages %d, want 16384 (64 MiB)", binary.LittleEndian.Uint32(cfg))
	}
	m := virtiotest.NewMem(1 << 20)
	var qs []*virtio.Queue
	var drv []*virtiotest.Driver
	for i, size := range d.QueueSizes() {
		q, _ := virtio.NewQueue(size)
		defer q.Close()
		qs = append(qs, q)
		base := uint64(0x1000 + i*0x8000)
		drv = append(drv, virtiotest.NewDriver(m, q, 16, base, uint64(0x40000+i*0x20000), uint64(0x60000+i*0x20000)))
	}
	defer d.Close()
	irq := virtiotest.NewInterrupt()
	if err := d.Activate(m, d.Features(), qs, irq); err != nil {
		t.Fatal(err)
	}
	pfns := make([]byte, 12)
	for i, p := range []uint32{0x100, 0x101, 0x2000} {
		binary.LittleEndian.PutUint32(pfns[4*i:], p)
	}
	wait := func(q int) {
		t.Helper()
		select {
		case <-irq.Signals:
		case <-time.After(5 * time.Second):
			t.Fatalf("no interrupt for queue %d", q)
		}
		drv[q].Poll()
	}
	drv[1].Submit([][]byte{pfns}, nil) // deflate: nothing discarded
	drv[1].Kick()
	wait(1)
	drv[0].Submit([][]byte{pfns, {1, 2, 3}}, nil) // the 3-byte buffer is skipped
	drv[0].Kick()
	wait(0)
	drv[2].Submit(nil, []uint32{64 << 10})
	drv[2].Kick()
	wait(2)
	// PFNs 0x100 and 0x101 are one run, 0x2000 another; then the report.
	want := [][2]uint64{{0x100000, 2 * 4096}, {0x2000000, 4096}}
	got := ram.got()
	if len(got) != 3 || !slices.Equal(got[:2], want) || got[2][1] != 64<<10 {
		t.Fatalf("discards %#x", got)
	}
	before := irq.Configs()
	if err := d.Resize(128 << 20); err != nil || irq.Configs() != before+1 {
		t.Fatalf("resize: %v, %d notifications", err, irq.Configs()-before)
	}
	d.ReadConfig(0, cfg)
	if binary.LittleEndian.Uint32(cfg) != 32768 {
		t.Fatalf("num_pages after resize %d", binary.LittleEndian.Uint32(cfg))
	}
	d.WriteConfig(4, []byte{0, 0x40, 0, 0}) // actual = 16384 pages
	d.WriteConfig(0, []byte{1, 2, 3, 4})    // num_pages is not the driver's
	if d.Actual() != 64<<20 {
		t.Fatalf("actual %d", d.Actual())
	}
	d.ReadConfig(0, cfg)
	if binary.LittleEndian.Uint32(cfg) != 32768 {
		t.Fatal("the driver changed num_pages")
	}
}
