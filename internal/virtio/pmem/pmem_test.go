package pmem_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"go.uber.org/goleak"

	"github.com/nimbus-vmm/nimbus/internal/config"
	"github.com/nimbus-vmm/nimbus/internal/virtio"
	"github.com/nimbus-vmm/nimbus/internal/virtio/pmem"
	"github.com/nimbus-vmm/nimbus/internal/virtio/virtiotest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const mib = 1 << 20

func TestConfigLayout(t *testing.T) {
	b, _ := pmem.Config{Start: 0x1_2345_6789_abcd, Size: 0x20_0000}.MarshalBinary()
	want := []byte{0xcd, 0xab, 0x89, 0x67, 0x45, 0x23, 0x01, 0, 0, 0, 0x20, 0, 0, 0, 0, 0}
	if !bytes.Equal(b, want) {
		t.Fatalf("% x, want % x", b, want)
	}
}

func file(t *testing.T, size int64, fill byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "pmem.img")
	if err := os.WriteFile(p, bytes.Repeat([]byte{fill}, int(size)), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func newDev(t *testing.T, cfg config.PmemConfig) *pmem.Device {
	t.Helper()
	d, err := pmem.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// TestConfigSpace: the guest reads the address the VM placed the mapping
// at and the file's size, at any offset and width.
func TestConfigSpace(t *testing.T) {
	d := newDev(t, config.PmemConfig{File: file(t, 4*mib, 0)})
	d.SetStart(0x40_0000_0000)
	var b [8]byte
	d.ReadConfig(0, b[:])
	if binary.LittleEndian.Uint64(b[:]) != 0x40_0000_0000 {
		t.Fatalf("start % x", b)
	}
	d.ReadConfig(8, b[:])
	if binary.LittleEndian.Uint64(b[:]) != 4*mib {
		t.Fatalf("size % x", b)
	}
	d.ReadConfig(12, b[:4])
	if !bytes.Equal(b[:4], []byte{0, 0, 0, 0}) {
		t.Fatalf("size high % x", b[:4])
	}
	if d.ConfigSize() != 16 || d.Type() != virtio.TypePmem || d.Size() != 4*mib {
		t.Fatalf("config size %d, type %v, size %d", d.ConfigSize(), d.Type(), d.Size())
	}
}

// TestWritesReachTheFile: the mapping is the file (MAP_SHARED), unless
// discard_writes, which maps a read-only file privately.
func TestWritesReachTheFile(t *testing.T) {
	for _, discard := range []bool{false, true} {
		p := file(t, 2*mib, 0xaa)
		d, err := pmem.New(config.PmemConfig{File: p, DiscardWrites: discard})
		if err != nil {
			t.Fatal(err)
		}
		copy(d.Mapping()[4096:], "written by the guest")
		if err := d.Close(); err != nil {
			t.Fatal(err)
		}
		got, _ := os.ReadFile(p)
		reached := bytes.HasPrefix(got[4096:], []byte("written by the guest"))
		if reached == discard {
			t.Errorf("discard_writes=%v: write reached the file: %v", discard, reached)
		}
	}
}

// TestSizes: upstream's rules, and a size past the file's end refused.
func TestSizes(t *testing.T) {
	dir := t.TempDir()
	sz := uint64(4 * mib)
	d := newDev(t, config.PmemConfig{File: dir, Size: &sz})
	if d.Size() != sz {
		t.Fatalf("directory-backed size %d", d.Size())
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Fatalf("O_TMPFILE left a name: %v", ents)
	}
	two := uint64(2 * mib)
	if d := newDev(t, config.PmemConfig{File: file(t, 4*mib, 0), Size: &two}); d.Size() != two {
		t.Fatalf("size option ignored: %d", d.Size())
	}
	for name, c := range map[string]struct {
		cfg  config.PmemConfig
		want error
	}{
		"dir without size": {config.PmemConfig{File: dir}, pmem.ErrDirNoSize},
		"unaligned file":   {config.PmemConfig{File: file(t, mib, 0)}, pmem.ErrNotAligned},
		"empty file":       {config.PmemConfig{File: file(t, 0, 0)}, pmem.ErrNotAligned},
		"past the end":     {config.PmemConfig{File: file(t, 2*mib, 0), Size: &sz}, virtio.ErrInvalid},
		"missing":          {config.PmemConfig{File: filepath.Join(dir, "nope")}, os.ErrNotExist},
	} {
		if _, err := pmem.New(c.cfg); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", name, err, c.want)
		}
	}
}

// TestFlush: a flush request answers OK, an unknown type EIO, a chain
// without room for the response is returned unanswered.
func TestFlush(t *testing.T) {
	d := newDev(t, config.PmemConfig{File: file(t, 2*mib, 0)})
	m := virtiotest.NewMem(1 << 20)
	q, _ := virtio.NewQueue(pmem.QueueSize)
	defer q.Close()
	defer d.Close()
	drv := virtiotest.NewDriver(m, q, 64, 0x1000, 0x10000, 1<<20)
	irq := virtiotest.NewInterrupt()
	if err := d.Activate(m, d.Features(), []*virtio.Queue{q}, irq); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		req     uint32
		respLen uint32
		wantLen uint32
		want    uint32
	}{{pmem.ReqFlush, 4, 4, pmem.RespOK}, {7, 4, 4, pmem.RespEIO}, {pmem.ReqFlush, 2, 0, 0}} {
		_, ins := drv.Submit([][]byte{binary.LittleEndian.AppendUint32(nil, c.req)}, []uint32{c.respLen})
		drv.Kick()
		<-irq.Signals
		u := drv.Poll()
		if len(u) != 1 || u[0].Len != c.wantLen {
			t.Fatalf("request %d: used %+v", c.req, u)
		}
		if c.wantLen > 0 {
			if got := binary.LittleEndian.Uint32(drv.Bytes(ins[0], 4)); got != c.want {
				t.Errorf("request %d: ret %d, want %d", c.req, got, c.want)
			}
		}
	}
}
