package blk_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nimbus-vmm/nimbus/internal/config"
	"github.com/nimbus-vmm/nimbus/internal/qcow2"
	"github.com/nimbus-vmm/nimbus/internal/testproc"
	"github.com/nimbus-vmm/nimbus/internal/virtio"
	"github.com/nimbus-vmm/nimbus/internal/virtio/blk"
	"github.com/nimbus-vmm/nimbus/internal/virtio/virtiotest"
	"go.uber.org/goleak"
)

const diskSize = 1 << 20

type rig struct {
	t    testing.TB
	dev  *blk.Device
	drv  *virtiotest.Driver
	irq  *virtiotest.Interrupt
	path string
}

func newImage(t testing.TB) string {
	p := filepath.Join(t.TempDir(), "disk.raw")
	if err := os.WriteFile(p, make([]byte, diskSize), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func start(t testing.TB, cfg config.DiskConfig) *rig {
	t.Helper()
	dev, err := blk.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	m := virtiotest.NewMem(4 << 20)
	q, err := virtio.NewQueue(dev.QueueSizes()[0])
	if err != nil {
		t.Fatal(err)
	}
	drv := virtiotest.NewDriver(m, q, 128, 0x1000, 0x10000, 4<<20)
	irq := virtiotest.NewInterrupt()
	if err := dev.Activate(m, dev.Features(), []*virtio.Queue{q}, irq); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := dev.Close(); err != nil {
			t.Error(err)
		}
		q.Close()
	})
	return &rig{t: t, dev: dev, drv: drv, irq: irq, path: cfg.Path}
}

func header(typ uint32, sector uint64) []byte {
	b := make([]byte, 16)
	binary.LittleEndian.PutUint32(b, typ)
	binary.LittleEndian.PutUint64(b[8:], sector)
	return b
}

// do submits one request and waits for its completion; it returns the
// status byte, the used length and the data buffer contents.
func (r *rig) do(out [][]byte, dataIn uint32) (status uint8, used uint32, data []byte) {
	r.t.Helper()
	ins := []uint32{1}
	if dataIn > 0 {
		ins = []uint32{dataIn, 1}
	}
	_, bufs := r.drv.Submit(out, ins)
	if err := r.drv.Kick(); err != nil {
		r.t.Fatal(err)
	}
	for {
		select {
		case <-r.irq.Signals:
		case <-time.After(10 * time.Second): // a hang guard, not a timing assertion
			r.t.Fatal("no completion")
		}
		if u := r.drv.Poll(); len(u) > 0 {
			st := r.drv.Bytes(bufs[len(bufs)-1], 1)[0]
			if dataIn > 0 {
				data = r.drv.Bytes(bufs[0], dataIn)
			}
			r.drv.ResetHeap(0x10000)
			return st, u[0].Len, data
		}
	}
}

func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7) ^ seed
	}
	return b
}

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestWriteReadBack(t *testing.T) {
	p := newImage(t)
	r := start(t, config.DiskConfig{Path: p, Sparse: true})
	if got := r.dev.Capacity(); got != diskSize/512 {
		t.Fatalf("capacity %d", got)
	}
	cfg := make([]byte, 8)
	r.dev.ReadConfig(0, cfg)
	if binary.LittleEndian.Uint64(cfg) != diskSize/512 {
		t.Fatalf("config capacity %x", cfg)
	}
	data := pattern(8192, 1)
	if st, used, _ := r.do([][]byte{header(blk.TOut, 4), data[:4096], data[4096:]}, 0); st != blk.SOK || used != 1 {
		t.Fatalf("write: status %d used %d", st, used)
	}
	host, _ := os.ReadFile(p)
	if !bytes.Equal(host[4*512:4*512+8192], data) {
		t.Fatal("pattern not in the host file")
	}
	// The reverse: host writes, guest reads.
	other := pattern(4096, 9)
	f, _ := os.OpenFile(p, os.O_WRONLY, 0)
	f.WriteAt(other, 100*512)
	f.Close()
	st, used, got := r.do([][]byte{header(blk.TIn, 100)}, 4096)
	if st != blk.SOK || used != 4097 || !bytes.Equal(got, other) {
		t.Fatalf("read: status %d used %d equal %v", st, used, bytes.Equal(got, other))
	}
	// Out of range and unaligned requests fail with IOERR.
	if st, _, _ := r.do([][]byte{header(blk.TIn, diskSize/512-1)}, 1024); st != blk.SIOErr {
		t.Fatalf("read past end: status %d", st)
	}
	if st, _, _ := r.do([][]byte{header(blk.TOut, 0), make([]byte, 100)}, 0); st != blk.SIOErr {
		t.Fatalf("unaligned write: status %d", st)
	}
	if st, _, _ := r.do([][]byte{header(99, 0)}, 0); st != blk.SUnsupp {
		t.Fatalf("unknown type: status %d", st)
	}
	if st, _, _ := r.do([][]byte{header(blk.TFlush, 0)}, 0); st != blk.SOK {
		t.Fatalf("flush: status %d", st)
	}
	c := r.dev.Counters()
	if c["write_bytes"] != 8192 || c["write_ops"] != 1 || c["read_bytes"] != 4096 || c["read_ops"] != 1 {
		t.Fatalf("counters %v", c)
	}
	if c["read_latency_min"] > c["read_latency_max"] || c["read_latency_avg"] > c["read_latency_max"] {
		t.Fatalf("latency counters %v", c)
	}
}

func TestIndirectRequests(t *testing.T) {
	r := start(t, config.DiskConfig{Path: newImage(t)})
	r.drv.Indirect = true
	data := pattern(1024, 3)
	if st, _, _ := r.do([][]byte{header(blk.TOut, 8), data}, 0); st != blk.SOK {
		t.Fatalf("write: %d", st)
	}
	if st, _, got := r.do([][]byte{header(blk.TIn, 8)}, 1024); st != blk.SOK || !bytes.Equal(got, data) {
		t.Fatalf("read: %d", st)
	}
}

func TestReadonly(t *testing.T) {
	p := newImage(t)
	r := start(t, config.DiskConfig{Path: p, Readonly: true})
	if r.dev.Features()&blk.FRO == 0 {
		t.Fatal("VIRTIO_BLK_F_RO not offered")
	}
	if st, _, _ := r.do([][]byte{header(blk.TOut, 0), pattern(512, 5)}, 0); st != blk.SIOErr {
		t.Fatalf("write to read-only disk: status %d", st)
	}
	host, _ := os.ReadFile(p)
	if !bytes.Equal(host[:512], make([]byte, 512)) {
		t.Fatal("read-only image modified")
	}
}

func TestGetID(t *testing.T) {
	r := start(t, config.DiskConfig{Path: newImage(t), Serial: "nimbus-disk-0"})
	st, used, id := r.do([][]byte{header(blk.TGetID, 0)}, 20)
	want := append([]byte("nimbus-disk-0"), make([]byte, 7)...)
	if st != blk.SOK || used != 21 || !bytes.Equal(id, want) {
		t.Fatalf("GET_ID: status %d used %d id %q", st, used, id)
	}
}

// segment is a DISCARD / WRITE_ZEROES segment.
func segment(sector uint64, n, flags uint32) []byte {
	b := make([]byte, 16)
	binary.LittleEndian.PutUint64(b, sector)
	binary.LittleEndian.PutUint32(b[8:], n)
	binary.LittleEndian.PutUint32(b[12:], flags)
	return b
}

func TestDiscardAndWriteZeroes(t *testing.T) {
	p := newImage(t)
	r := start(t, config.DiskConfig{Path: p, Sparse: true})
	if r.dev.Features()&(blk.FDiscard|blk.FWriteZeroes) != blk.FDiscard|blk.FWriteZeroes {
		t.Fatal("discard/write-zeroes not offered")
	}
	r.do([][]byte{header(blk.TOut, 0), pattern(16384, 7)}, 0)
	if st, _, _ := r.do([][]byte{header(blk.TWriteZeroes, 0), segment(0, 8, 0)}, 0); st != blk.SOK {
		t.Fatalf("write zeroes: %d", st)
	}
	if st, _, _ := r.do([][]byte{header(blk.TDiscard, 0), segment(8, 8, 0)}, 0); st != blk.SOK {
		t.Fatalf("discard: %d", st)
	}
	host, _ := os.ReadFile(p)
	if !bytes.Equal(host[:8192], make([]byte, 8192)) {
		t.Fatal("zeroed/discarded range still has data")
	}
	if !bytes.Equal(host[8192:16384], pattern(16384, 7)[8192:]) {
		t.Fatal("data beyond the range lost")
	}
	if st, _, _ := r.do([][]byte{header(blk.TDiscard, 0), segment(diskSize/512, 8, 0)}, 0); st != blk.SIOErr {
		t.Fatalf("discard past end: %d", st)
	}
}

func TestRefusals(t *testing.T) {
	t.Run("qcow2", func(t *testing.T) {
		dir := t.TempDir()
		bad := filepath.Join(dir, "bad.qcow2")
		os.WriteFile(bad, append([]byte("QFI\xfb\x00\x00\x00\x03"), make([]byte, 4096)...), 0o600)
		if _, err := blk.New(config.DiskConfig{Path: bad}); !errors.Is(err, qcow2.ErrFormat) || !errors.Is(err, virtio.ErrBackend) {
			t.Fatalf("broken qcow2 header: %v", err)
		}
		good := qemuImg(t, "1M")
		raw := newImage(t)
		backed := filepath.Join(dir, "backed.qcow2")
		tool(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", raw, "-F", "raw", backed)
		for _, c := range []struct {
			cfg  config.DiskConfig
			want error
			says string
		}{
			{config.DiskConfig{Path: good, ImageType: config.ImageRaw}, blk.ErrFormat, "not raw (image_type=raw)"},
			{config.DiskConfig{Path: raw, ImageType: config.ImageQcow2}, blk.ErrFormat, "not a qcow2 image"},
			{config.DiskConfig{Path: backed}, qcow2.ErrBacking, "backing_files=on"},
		} {
			if _, err := blk.New(c.cfg); !errors.Is(err, c.want) || !errors.Is(err, virtio.ErrBackend) || !strings.Contains(err.Error(), c.says) {
				t.Errorf("%+v: %v, want %v saying %q", c.cfg, err, c.want, c.says)
			}
		}
	})
	t.Run("lock conflict", func(t *testing.T) {
		p := newImage(t)
		d1, err := blk.New(config.DiskConfig{Path: p})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := blk.New(config.DiskConfig{Path: p}); !errors.Is(err, blk.ErrLocked) {
			t.Fatalf("second writable open: %v", err)
		}
		if _, err := blk.New(config.DiskConfig{Path: p, Readonly: true}); !errors.Is(err, blk.ErrLocked) {
			t.Fatalf("read-only open of a write-locked image: %v", err)
		}
		d1.Close()
		d2, err := blk.New(config.DiskConfig{Path: p, LockGranularity: config.LockFull})
		if err != nil {
			t.Fatalf("open after close: %v", err)
		}
		d2.Close()
		r1, _ := blk.New(config.DiskConfig{Path: p, Readonly: true})
		r2, err := blk.New(config.DiskConfig{Path: p, Readonly: true})
		if err != nil {
			t.Fatalf("two read-only opens: %v", err)
		}
		r1.Close()
		r2.Close()
	})
}

func TestPauseResume(t *testing.T) {
	r := start(t, config.DiskConfig{Path: newImage(t)})
	if err := r.dev.Pause(); err != nil {
		t.Fatal(err)
	}
	// A request made while paused completes after Resume.
	r.drv.Submit([][]byte{header(blk.TOut, 0), pattern(512, 1)}, []uint32{1})
	r.drv.Kick()
	if err := r.dev.Resume(); err != nil {
		t.Fatal(err)
	}
	<-r.irq.Signals
	if u := r.drv.Poll(); len(u) != 1 {
		t.Fatalf("used after resume: %v", u)
	}
	if err := r.dev.Reset(); err != nil {
		t.Fatal(err)
	}
}

// benchOps are the request types the benchmarks time.
var benchOps = []struct {
	name string
	typ  uint32
}{{"read", blk.TIn}, {"write", blk.TOut}}

func BenchmarkRequest4K(b *testing.B) {
	for _, op := range benchOps {
		b.Run(op.name, func(b *testing.B) {
			r := start(b, config.DiskConfig{Path: newImage(b)})
			buf := pattern(4096, 1)
			b.SetBytes(4096)
			b.ResetTimer()
			for i := range b.N {
				sector := uint64(i%200) * 8
				if op.typ == blk.TIn {
					r.do([][]byte{header(blk.TIn, sector)}, 4096)
				} else {
					r.do([][]byte{header(blk.TOut, sector), buf}, 0)
				}
			}
		})
	}
}

// TestMultiSegment checks requests of many data segments, which the
// device moves with one preadv/pwritev (and, with O_DIRECT, a mix of
// vectored and bounced segments since the driver's heap is 8-aligned).
func TestMultiSegment(t *testing.T) {
	for _, direct := range []bool{false, true} {
		p := newImage(t)
		if direct {
			f, err := os.OpenFile(p, os.O_RDWR|syscall.O_DIRECT, 0)
			if err != nil {
				t.Logf("no O_DIRECT on the temp dir: %v", err)
				continue
			}
			f.Close()
		}
		r := start(t, config.DiskConfig{Path: p, Direct: direct})
		sizes := []int{512, 4096, 1536, 8192, 512}
		var segs [][]byte
		var want []byte
		ins := []uint32{}
		for i, n := range sizes {
			b := pattern(n, byte(i+3))
			segs = append(segs, b)
			want = append(want, b...)
			ins = append(ins, uint32(n))
		}
		// Pad so that segments 1 and 2 are page aligned (vectored under
		// O_DIRECT) and 0, 3 and 4 are not (bounced).
		pad := func() { r.drv.Alloc(0x1000 - 16 - 512) }
		pad()
		if st, _, _ := r.do(append([][]byte{header(blk.TOut, 16)}, segs...), 0); st != blk.SOK {
			t.Fatalf("direct=%v: write status %d", direct, st)
		}
		got, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got[16*512:16*512+len(want)], want) {
			t.Fatalf("direct=%v: image does not hold the written segments", direct)
		}
		pad()
		_, bufs := r.drv.Submit([][]byte{header(blk.TIn, 16)}, append(ins, 1))
		if bufs[1].Addr%4096 != 0 || bufs[3].Addr%4096 == 0 {
			t.Fatalf("layout: segment addresses %#x", bufs)
		}
		if err := r.drv.Kick(); err != nil {
			t.Fatal(err)
		}
		for len(r.drv.Poll()) == 0 {
			select {
			case <-r.irq.Signals:
			case <-time.After(10 * time.Second): // hang guard
				t.Fatal("no completion")
			}
		}
		var read []byte
		for i, n := range sizes {
			read = append(read, r.drv.Bytes(bufs[i], uint32(n))...)
		}
		if st := r.drv.Bytes(bufs[len(sizes)], 1)[0]; st != blk.SOK || !bytes.Equal(read, want) {
			t.Fatalf("direct=%v: read status %d, data equal %v", direct, st, bytes.Equal(read, want))
		}
		r.drv.ResetHeap(0x10000)
	}
}

// BenchmarkRequest512K is a large request as Linux sends it: 128 page
// segments in an indirect table (seg_max is 126 + header + status), to a
// raw image and to a fresh qcow2 image (writes there allocate clusters
// until the benchmark wraps around at 256 MiB).
func BenchmarkRequest512K(b *testing.B) {
	images := []struct {
		name string
		path func(testing.TB) string
		wrap uint64 // requests before the offset starts again
	}{{"raw", newImage, 2}, {"qcow2", func(t testing.TB) string { return qemuImg(t, "1G") }, 512}}
	for _, img := range images {
		for _, op := range benchOps {
			b.Run(img.name+"-"+op.name, func(b *testing.B) {
				r := start(b, config.DiskConfig{Path: img.path(b)})
				r.drv.Indirect = true
				const segs = 126
				page := pattern(4096, 1)
				b.SetBytes(segs * 4096)
				b.ResetTimer()
				for i := range b.N {
					sector := uint64(i) % img.wrap * segs * 8
					out := [][]byte{header(op.typ, sector)}
					var ins []uint32
					for range segs {
						if op.typ == blk.TIn {
							ins = append(ins, 4096)
						} else {
							out = append(out, page)
						}
					}
					_, bufs := r.drv.Submit(out, append(ins, 1))
					if err := r.drv.Kick(); err != nil {
						b.Fatal(err)
					}
					for len(r.drv.Poll()) == 0 {
						<-r.irq.Signals
					}
					if st := r.drv.Bytes(bufs[len(bufs)-1], 1)[0]; st != blk.SOK {
						b.Fatalf("status %d", st)
					}
					r.drv.ResetHeap(0x10000)
				}
			})
		}
	}
}

func tool(t testing.TB, name string, args ...string) string {
	t.Helper()
	return testproc.Tool(t, name, args...)
}

// qemuImg makes an empty qcow2 image of size with qemu-img.
func qemuImg(t testing.TB, size string) string {
	p := filepath.Join(t.TempDir(), "disk.qcow2")
	tool(t, "qemu-img", "create", "-q", "-f", "qcow2", p, size)
	return p
}

// TestQcow2: a qcow2 image (autodetected, and named by image_type) is the
// guest's disk: its virtual size is the capacity, writes read back
// through the device and through qemu-img, FLUSH works, discard is not
// offered, qemu-img check finds the image clean (also with direct=on,
// where the unaligned metadata writes are bounced); read-only refuses
// writes; with backing_files=on the backing file shows through.
func TestQcow2(t *testing.T) {
	p := qemuImg(t, "3M")
	var seed byte // each round writes other bytes
	for _, c := range []struct {
		typ    config.ImageType
		direct bool
	}{{"", false}, {config.ImageQcow2, false}, {"", true}} {
		typ := c.typ
		seed++
		r := start(t, config.DiskConfig{Path: p, ImageType: typ, Sparse: true, Direct: c.direct})
		if got := r.dev.Capacity(); got != 3<<20/512 {
			t.Fatalf("capacity %d sectors", got)
		}
		if r.dev.Features()&(blk.FDiscard|blk.FWriteZeroes) != blk.FDiscard|blk.FWriteZeroes {
			t.Fatal("discard/write-zeroes not offered for qcow2 with sparse=on")
		}
		data := pattern(65536+8192, seed)
		if st, _, _ := r.do([][]byte{header(blk.TOut, 120), data[:4096], data[4096:]}, 0); st != blk.SOK {
			t.Fatalf("write: %d", st)
		}
		if st, _, got := r.do([][]byte{header(blk.TIn, 120)}, uint32(len(data))); st != blk.SOK || !bytes.Equal(got, data) {
			t.Fatalf("read back: %d", st)
		}
		if st, _, _ := r.do([][]byte{header(blk.TFlush, 0)}, 0); st != blk.SOK {
			t.Fatalf("flush: %d", st)
		}
		// Discard the second 64 KiB cluster, zero 4 KiB of the first.
		if st, _, _ := r.do([][]byte{header(blk.TDiscard, 0), segment(128, 128, 0)}, 0); st != blk.SOK {
			t.Fatalf("discard: %d", st)
		}
		if st, _, _ := r.do([][]byte{header(blk.TWriteZeroes, 0), segment(120, 8, 0)}, 0); st != blk.SOK {
			t.Fatalf("write zeroes: %d", st)
		}
		copy(data[:4096], make([]byte, 4096))
		copy(data[65536-120*512:], make([]byte, 65536))
		if st, _, got := r.do([][]byte{header(blk.TIn, 120)}, uint32(len(data))); st != blk.SOK || !bytes.Equal(got, data) {
			t.Fatalf("read after discard: %d", st)
		}
		if st, _, _ := r.do([][]byte{header(blk.TIn, 3<<20/512-1)}, 1024); st != blk.SIOErr {
			t.Fatalf("read past the end: %d", st)
		}
		if err := r.dev.Close(); err != nil {
			t.Fatal(err)
		}
		// What the device wrote past the discarded cluster, as qemu reads it.
		out := tool(t, "qemu-io", "-r", "-c", fmt.Sprintf("read -v %d 16", 120*512+69632), p)
		if !strings.Contains(out, fmt.Sprintf("% x", data[69632:69632+16])) {
			t.Fatalf("qemu-io reads another thing:\n%s", out)
		}
		tool(t, "qemu-img", "check", "-q", p)
	}
	ro := start(t, config.DiskConfig{Path: p, Readonly: true})
	if st, _, _ := ro.do([][]byte{header(blk.TOut, 0), make([]byte, 512)}, 0); st != blk.SIOErr {
		t.Fatalf("write to a read-only qcow2 disk: %d", st)
	}
	raw := newImage(t)
	os.WriteFile(raw, pattern(diskSize, 3), 0o600)
	over := filepath.Join(t.TempDir(), "over.qcow2")
	tool(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", raw, "-F", "raw", over)
	r := start(t, config.DiskConfig{Path: over, BackingFiles: true})
	if st, _, got := r.do([][]byte{header(blk.TIn, 8)}, 4096); st != blk.SOK || !bytes.Equal(got, pattern(diskSize, 3)[4096:8192]) {
		t.Fatalf("backing file read: %d", st)
	}
}

// TestResize: vm.resize-disk's device half. A raw image grows (and
// shrinks), a qcow2 image grows; the capacity in the config space
// follows, the driver gets a configuration change interrupt, I/O reaches
// the new end; sizes that are not whole sectors and read-only disks are
// refused.
func TestResize(t *testing.T) {
	for _, p := range []string{newImage(t), qemuImg(t, "1M")} {
		r := start(t, config.DiskConfig{Path: p})
		if err := r.dev.Resize(diskSize + 100); !errors.Is(err, blk.ErrInvalidSize) {
			t.Fatalf("unaligned size: %v", err)
		}
		before := r.irq.Configs()
		if err := r.dev.Resize(2 * diskSize); err != nil {
			t.Fatal(err)
		}
		if r.irq.Configs() != before+1 {
			t.Fatal("no configuration change interrupt")
		}
		cfg := make([]byte, 8)
		r.dev.ReadConfig(0, cfg)
		if got := binary.LittleEndian.Uint64(cfg); got != 2*diskSize/512 || r.dev.Capacity() != got {
			t.Fatalf("capacity %d sectors after the resize", got)
		}
		last := uint64(2*diskSize/512 - 8)
		data := pattern(4096, 5)
		if st, _, _ := r.do([][]byte{header(blk.TOut, last), data}, 0); st != blk.SOK {
			t.Fatalf("write at the new end: %d", st)
		}
		if st, _, got := r.do([][]byte{header(blk.TIn, last)}, 4096); st != blk.SOK || !bytes.Equal(got, data) {
			t.Fatalf("read at the new end: %d", st)
		}
	}
	p := newImage(t)
	r := start(t, config.DiskConfig{Path: p})
	if err := r.dev.Resize(diskSize / 2); err != nil {
		t.Fatalf("shrinking a raw image: %v", err)
	}
	if fi, _ := os.Stat(p); fi.Size() != diskSize/2 {
		t.Fatalf("file of %d bytes", fi.Size())
	}
	ro := start(t, config.DiskConfig{Path: newImage(t), Readonly: true})
	if err := ro.dev.Resize(2 * diskSize); err == nil {
		t.Fatal("resized a read-only disk")
	}
}
