package vsock_test

import (
	"io"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/nimbus-vmm/nimbus/internal/config"
	"github.com/nimbus-vmm/nimbus/internal/virtio/virtiotest"
	"github.com/nimbus-vmm/nimbus/internal/virtio/vsock"
)

// echoServer accepts host connections on path and echoes what they read
// until the peer closes, so that guest streams to its port carry data
// both ways.
func echoServer(f *testing.F, path string) {
	l, err := net.Listen("unix", path)
	if err != nil {
		f.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
	f.Cleanup(func() {
		l.Close()
		wg.Wait()
	})
}

func vsockPacket(op uint16, src, dst uint32, payload []byte) []byte {
	h := vsock.Header{SrcCID: 3, DstCID: vsock.HostCID, SrcPort: src, DstPort: dst, Len: uint32(len(payload)),
		Type: vsock.TypeStream, Op: op, BufAlloc: 64 << 10}
	b, _ := h.MarshalBinary()
	return append(b, payload...)
}

// FuzzVsockQueues lets fuzzer-chosen descriptor tables, available rings
// and packets reach virtio-vsock's TX queue (streams to a host echo
// server at port 1024, to absent ports, resets, credit and shutdown) and
// its RX queue the replies, while a host client may write a fuzzer-chosen
// handshake to the device's socket. The device must not panic, hang, nor
// write guest RAM outside the used rings and the device-writable buffers.
func FuzzVsockQueues(f *testing.F) {
	dir := f.TempDir()
	sock := filepath.Join(dir, "v.sock")
	echoServer(f, sock+"_1024")
	var heap []byte
	rx := virtiotest.FuzzSeed(&heap,
		virtiotest.SeedChain{In: []uint32{vsock.HeaderSize + 256}},
		virtiotest.SeedChain{In: []uint32{vsock.HeaderSize, 64}},
		virtiotest.SeedChain{In: []uint32{8}},
		virtiotest.SeedChain{In: []uint32{vsock.HeaderSize + 256}})
	tx := virtiotest.FuzzSeed(&heap,
		virtiotest.SeedChain{Out: [][]byte{vsockPacket(vsock.OpRequest, 5000, 1024, nil)}},
		virtiotest.SeedChain{Out: [][]byte{vsockPacket(vsock.OpRW, 5000, 1024, []byte("hello"))}},
		virtiotest.SeedChain{Out: [][]byte{vsockPacket(vsock.OpCreditRequest, 5000, 1024, nil)}},
		virtiotest.SeedChain{Out: [][]byte{vsockPacket(vsock.OpRequest, 5001, 77, nil)}},
		virtiotest.SeedChain{Out: [][]byte{vsockPacket(vsock.OpShutdown, 5000, 1024, nil)}},
		virtiotest.SeedChain{Out: [][]byte{vsockPacket(vsock.OpRW, 5000, 1024, nil)[:20]}})
	f.Add(^uint64(0), heap, rx, tx, []byte(nil), []byte("CONNECT 52\n"))
	f.Add(^uint64(0), heap, rx, tx, []byte{1}, []byte("CONNECT 4294967296\nxx"))
	f.Fuzz(func(t *testing.T, features uint64, heap, rxq, txq, evq, host []byte) {
		d, err := vsock.New(config.VsockConfig{Cid: 3, Socket: sock}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(host) > 0 {
			c, err := net.Dial("unix", sock)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetWriteDeadline(time.Now().Add(time.Second))
			c.Write(host)
		}
		r := virtiotest.NewFuzzRig(t, d, heap, rxq, txq, evq)
		defer r.Finish(t)
		if err := r.Activate(features); err != nil {
			return
		}
		// TX first (its packets queue replies), then RX twice: the device
		// has filled RX buffers with the replies after the second.
		virtiotest.Settle(t, r.Queues[1], r.Queues[0], r.Queues[0])
	})
}
