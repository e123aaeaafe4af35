package console_test

import (
	"testing"
	"time"

	hostconsole "github.com/nimbus-vmm/nimbus/internal/devices/console"
	"github.com/nimbus-vmm/nimbus/internal/virtio/console"
	"github.com/nimbus-vmm/nimbus/internal/virtio/virtiotest"
)

// sinkBackend discards output and hands the fuzz target the device's Input.
type sinkBackend struct{ in hostconsole.Input }

func (b *sinkBackend) Write(p []byte) (int, error) { return len(p), nil }
func (b *sinkBackend) Start(in hostconsole.Input)  { b.in = in }
func (b *sinkBackend) Path() string                { return "" }
func (b *sinkBackend) Close() error                { return nil }

// FuzzConsoleQueues lets fuzzer-chosen descriptor tables and available
// rings reach virtio-console's transmit queue (output to the backend) and
// receive queue (fuzzer-chosen host input to the guest). The device must
// not panic, hang, nor write guest RAM outside the used rings and the
// device-writable buffers.
func FuzzConsoleQueues(f *testing.F) {
	var heap []byte
	rx := virtiotest.FuzzSeed(&heap, virtiotest.SeedChain{In: []uint32{4}}, virtiotest.SeedChain{In: []uint32{2, 64}})
	tx := virtiotest.FuzzSeed(&heap, virtiotest.SeedChain{Out: [][]byte{[]byte("Linux version\n"), []byte("x")}}, virtiotest.SeedChain{In: []uint32{8}})
	f.Add(^uint64(0), heap, rx, tx, []byte("root\nls -l\n"))
	f.Add(uint64(0), heap, []byte(nil), tx, []byte(nil))
	f.Fuzz(func(t *testing.T, features uint64, heap, rxq, txq, input []byte) {
		be := &sinkBackend{}
		d := console.New(be)
		if len(input) > 0 && be.in.Enqueue(input) != len(input) {
			t.Fatalf("input of %d bytes not taken", len(input))
		}
		r := virtiotest.NewFuzzRig(t, d, heap, rxq, txq)
		defer r.Finish(t)
		rx := r.Queues[console.RxQueue]
		// The receive goroutine reads this notification only once it has
		// run out of receive buffers.
		if err := rx.Notify.Signal(); err != nil {
			t.Fatal(err)
		}
		if err := r.Activate(features); err != nil {
			return
		}
		virtiotest.Settle(t, r.Queues[console.TxQueue])
		if !rx.Ready || len(input) == 0 {
			return
		}
		// Done when the device waits for buffers, gave the queue up, or
		// has taken no buffer for a while (the input is all delivered).
		quiet := time.Now()
		virtiotest.WaitTaken(t, rx, func() bool {
			select {
			case <-be.in.Writable():
				quiet = time.Now()
			default:
			}
			return r.Irq.ResetCause() != nil || time.Since(quiet) > 2*time.Millisecond
		})
	})
}
