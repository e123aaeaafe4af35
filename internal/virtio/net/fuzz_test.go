package net_test

import (
	"encoding/binary"
	"os"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/nimbus-vmm/nimbus/internal/config"
	vnet "github.com/nimbus-vmm/nimbus/internal/virtio/net"
	"github.com/nimbus-vmm/nimbus/internal/virtio/virtiotest"
)

// splitFrames cuts b into at most 4 frames, each a length byte (the
// frame is 2*length bytes) and then the frame. Empty frames are left out:
// a tap never reads 0 bytes, and the socket standing in for it would
// (os.File reports that as EOF, which ends the device's receive loop).
func splitFrames(b []byte) [][]byte {
	var out [][]byte
	for len(b) > 0 && len(out) < 4 {
		n := min(2*int(b[0]), len(b)-1)
		if n > 0 {
			out = append(out, b[1:1+n])
		}
		b = b[1+n:]
	}
	return out
}

// readable reports whether fd has data to read.
func readable(fd int) bool {
	p := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	n, err := unix.Poll(p, 0)
	return err == nil && n > 0
}

// FuzzNetQueues lets fuzzer-chosen descriptor tables, available rings,
// vnet headers, frames and control commands reach virtio-net's TX and
// control queues, and fuzzer-chosen host frames (over a datagram socket
// standing in for the tap) its RX queue, the offloads as mode says. The
// device must not panic, hang, nor write guest RAM outside the used rings
// and the device-writable buffers.
func FuzzNetQueues(f *testing.F) {
	hdr := make([]byte, vnet.HeaderSize)
	frame := append(append([]byte(nil), hdr...), []byte("\xff\xff\xff\xff\xff\xff\x52\x54\x00\x00\x00\x01\x08\x00payload")...)
	mq := []byte{4, 0}
	offloads := binary.LittleEndian.AppendUint64([]byte{5, 0}, 1)
	var heap []byte
	rx := virtiotest.FuzzSeed(&heap, virtiotest.SeedChain{In: []uint32{1526}}, virtiotest.SeedChain{In: []uint32{12, 64}})
	tx := virtiotest.FuzzSeed(&heap, virtiotest.SeedChain{Out: [][]byte{hdr, frame[12:]}}, virtiotest.SeedChain{Out: [][]byte{frame}})
	ctrl := virtiotest.FuzzSeed(&heap,
		virtiotest.SeedChain{Out: [][]byte{mq, {1, 0}}, In: []uint32{1}},
		virtiotest.SeedChain{Out: [][]byte{offloads}, In: []uint32{1}},
		virtiotest.SeedChain{Out: [][]byte{{9, 9}}, In: []uint32{1}})
	frames := append([]byte{byte(len(frame) / 2)}, frame...)
	frames = append(frames, 3, 1, 2, 3, 4, 5, 6)
	f.Add(uint8(7), ^uint64(0), heap, rx, tx, ctrl, frames)
	f.Add(uint8(0), uint64(0), heap, []byte(nil), tx, ctrl, frames)
	f.Fuzz(func(t *testing.T, mode uint8, features uint64, heap, rxq, txq, ctrlq, frames []byte) {
		fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		// Non-blocking, so that Close ends the drain's pending Read.
		if err := unix.SetNonblock(fds[1], true); err != nil {
			t.Fatal(err)
		}
		peer := os.NewFile(uintptr(fds[1]), "peer")
		watch, err := unix.Dup(fds[0])
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(watch)
		d, err := vnet.NewOnSockets(config.NetConfig{MAC: "12:34:56:78:90:ab",
			OffloadCsum: mode&1 != 0, OffloadTSO: mode&2 != 0, OffloadUFO: mode&4 != 0}, fds[:1])
		if err != nil {
			t.Fatal(err)
		}
		// Frames the device sends: drained so that it never blocks on a
		// full socket.
		var drain sync.WaitGroup
		drain.Add(1)
		go func() {
			defer drain.Done()
			b := make([]byte, 1<<17)
			for {
				if _, err := peer.Read(b); err != nil {
					return
				}
			}
		}()
		defer func() {
			peer.Close()
			drain.Wait()
		}()
		for _, fr := range splitFrames(frames) {
			if _, err := unix.Write(fds[1], fr); err != nil {
				t.Fatal(err)
			}
		}
		r := virtiotest.NewFuzzRig(t, d, heap, rxq, txq, ctrlq)
		defer r.Finish(t)
		rx := r.Queues[0]
		// A notification for RX from the start: the receive goroutine
		// reads it only once it has run out of RX buffers.
		if err := rx.Notify.Signal(); err != nil {
			t.Fatal(err)
		}
		if err := r.Activate(features); err != nil {
			return
		}
		virtiotest.Settle(t, r.Queues[1:]...)
		if rx.Ready {
			// Done when every host frame was taken, or when the device
			// waits for RX buffers or gave the queue up.
			virtiotest.WaitTaken(t, rx, func() bool { return !readable(watch) || r.Irq.ResetCause() != nil })
		}
	})
}
