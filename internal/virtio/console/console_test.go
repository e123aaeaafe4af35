package console_test

import (
	"bytes"
	"sync"
	"testing"

	"go.uber.org/goleak"

	hostconsole "github.com/nimbus-vmm/nimbus/internal/devices/console"
	"github.com/nimbus-vmm/nimbus/internal/virtio"
	"github.com/nimbus-vmm/nimbus/internal/virtio/console"
	"github.com/nimbus-vmm/nimbus/internal/virtio/virtiotest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// backend records output and hands the test the device's Input.
type backend struct {
	mu     sync.Mutex
	out    bytes.Buffer
	wrote  chan struct{}
	in     hostconsole.Input
	closed bool
}

func (b *backend) Write(p []byte) (int, error) {
	b.mu.Lock()
	b.out.Write(p)
	b.mu.Unlock()
	select {
	case b.wrote <- struct{}{}:
	default:
	}
	return len(p), nil
}
func (b *backend) Start(in hostconsole.Input) { b.in = in }
func (b *backend) Path() string               { return "" }
func (b *backend) Close() error               { b.closed = true; return nil }

func TestOutputAndInput(t *testing.T) {
	be := &backend{wrote: make(chan struct{}, 1)}
	d := console.New(be)
	m := virtiotest.NewMem(1 << 20)
	rxq, _ := virtio.NewQueue(console.QueueSize)
	txq, _ := virtio.NewQueue(console.QueueSize)
	defer rxq.Close()
	defer txq.Close()
	rx := virtiotest.NewDriver(m, rxq, 16, 0x1000, 0x10000, 0x20000)
	tx := virtiotest.NewDriver(m, txq, 16, 0x4000, 0x20000, 0x30000)
	irq := virtiotest.NewInterrupt()
	if err := d.Activate(m, d.Features(), []*virtio.Queue{rxq, txq}, irq); err != nil {
		t.Fatal(err)
	}

	// Guest output reaches the backend.
	tx.Submit([][]byte{[]byte("Linux version 6.1\n")}, nil)
	tx.Kick()
	for {
		<-be.wrote
		be.mu.Lock()
		s := be.out.String()
		be.mu.Unlock()
		if s == "Linux version 6.1\n" {
			break
		}
	}

	// Host input typed before the guest posts buffers is kept, then
	// delivered once it does.
	if n := be.in.Enqueue([]byte("root\n")); n != 5 {
		t.Fatalf("Enqueue took %d", n)
	}
	_, ins := rx.Submit(nil, []uint32{64})
	rx.Kick()
	for {
		if q := <-irq.Signals; q == console.RxQueue {
			break
		}
	}
	u := rx.Poll()
	if len(u) != 1 || u[0].Len != 5 || string(rx.Bytes(ins[0], 5)) != "root\n" {
		t.Fatalf("rx used %v data %q", u, rx.Bytes(ins[0], 5))
	}

	var cfg [12]byte
	d.ReadConfig(0, cfg[:])
	if cfg[4] != 1 {
		t.Fatalf("max_nr_ports %v", cfg)
	}
	if err := d.Pause(); err != nil {
		t.Fatal(err)
	}
	if err := d.Resume(); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil || be.closed {
		t.Fatalf("Close: %v; backend closed %v, want it left to its owner", err, be.closed)
	}
}
