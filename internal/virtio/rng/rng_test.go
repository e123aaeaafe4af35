package rng_test

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"go.uber.org/goleak"

	"github.com/nimbus-vmm/nimbus/internal/config"
	"github.com/nimbus-vmm/nimbus/internal/virtio"
	"github.com/nimbus-vmm/nimbus/internal/virtio/rng"
	"github.com/nimbus-vmm/nimbus/internal/virtio/virtiotest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func run(t *testing.T, src string, n uint32) ([]byte, uint32) {
	t.Helper()
	d, err := rng.New(config.RngConfig{Src: src})
	if err != nil {
		t.Fatal(err)
	}
	m := virtiotest.NewMem(1 << 20)
	q, _ := virtio.NewQueue(rng.QueueSize)
	defer q.Close()
	// Deferred after q.Close so it runs first: the device's goroutine
	// waits on q's eventfd until the device is closed.
	defer d.Close()
	drv := virtiotest.NewDriver(m, q, 64, 0x1000, 0x10000, 1<<20)
	irq := virtiotest.NewInterrupt()
	if err := d.Activate(m, d.Features(), []*virtio.Queue{q}, irq); err != nil {
		t.Fatal(err)
	}
	_, ins := drv.Submit(nil, []uint32{n})
	drv.Kick()
	<-irq.Signals
	u := drv.Poll()
	if len(u) != 1 {
		t.Fatalf("used %v", u)
	}
	return drv.Bytes(ins[0], u[0].Len), u[0].Len
}

func TestBytesArrive(t *testing.T) {
	src := filepath.Join(t.TempDir(), "entropy")
	want := bytes.Repeat([]byte("0123456789abcdef"), 8)
	os.WriteFile(src, want, 0o600)
	got, n := run(t, src, 64)
	if n != 64 || !bytes.Equal(got, want[:64]) {
		t.Fatalf("got %d bytes %q", n, got)
	}
}

func TestURandom(t *testing.T) {
	got, n := run(t, "", 256)
	if n != 256 || bytes.Equal(got, make([]byte, 256)) {
		t.Fatalf("got %d bytes, all zero: %v", n, bytes.Equal(got, make([]byte, 256)))
	}
}

func TestMissingSource(t *testing.T) {
	if _, err := rng.New(config.RngConfig{Src: "/nonexistent/rng"}); err == nil {
		t.Fatal("opened a missing source")
	}
}
