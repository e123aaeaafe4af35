package vsock

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/nimbus-vmm/nimbus/internal/config"
	"github.com/nimbus-vmm/nimbus/internal/virtio"
	"github.com/nimbus-vmm/nimbus/internal/virtio/virtiotest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestHeaderLayout(t *testing.T) {
	h := Header{SrcCID: 2, DstCID: 3, SrcPort: 0x4000_0000, DstPort: 1024, Len: 5, Type: TypeStream, Op: OpRW,
		Flags: 3, BufAlloc: 65536, FwdCnt: 0x0102_0304}
	b, _ := h.MarshalBinary()
	want := "0200000000000000" + "0300000000000000" + "00000040" + "00040000" + "05000000" +
		"0100" + "0500" + "03000000" + "00000100" + "04030201"
	if hex.EncodeToString(b) != want {
		t.Fatalf("header\n got %x\nwant %s", b, want)
	}
	var back Header
	if err := back.UnmarshalBinary(b); err != nil || back != h {
		t.Fatalf("round trip %+v, %v", back, err)
	}
	if err := back.UnmarshalBinary(b[:HeaderSize-1]); err == nil {
		t.Fatal("short header accepted")
	}
}

// guest is a test driver for the device's RX and TX queues.
type guest struct {
	t      *testing.T
	d      *Device
	rx, tx *virtiotest.Driver
	irq    *virtiotest.Interrupt
	got    []Header // RX packets seen, in order
	data   map[uint32][]byte
	bufs   map[uint16]virtiotest.In // posted RX buffers by head
}

func newGuest(t *testing.T, sock string) *guest {
	t.Helper()
	d, err := New(config.VsockConfig{Cid: 3, Socket: sock}, nil)
	if err != nil {
		t.Fatal(err)
	}
	m := virtiotest.NewMem(4 << 20)
	var qs []*virtio.Queue
	for range 3 {
		q, _ := virtio.NewQueue(QueueSize)
		qs = append(qs, q)
		t.Cleanup(func() { q.Close() })
	}
	t.Cleanup(func() { d.Close() })
	g := &guest{t: t, d: d, irq: virtiotest.NewInterrupt(), data: map[uint32][]byte{}, bufs: map[uint16]virtiotest.In{},
		rx: virtiotest.NewDriver(m, qs[0], 128, 0x1000, 0x100000, 0x300000),
		tx: virtiotest.NewDriver(m, qs[1], 128, 0x10000, 0x300000, 0x3f0000)}
	virtiotest.NewDriver(m, qs[2], 16, 0x20000, 0x3f0000, 0x400000)
	if err := d.Activate(m, d.Features(), qs, g.irq); err != nil {
		t.Fatal(err)
	}
	return g
}

// post offers n RX buffers of a header and 4 KiB.
func (g *guest) post(n int) {
	for range n {
		head, ins := g.rx.Submit(nil, []uint32{HeaderSize + 4096})
		g.bufs[head] = ins[0]
	}
	g.rx.Kick()
}

// send puts one packet on the TX queue.
func (g *guest) send(h Header, payload []byte) {
	h.Len = uint32(len(payload))
	if h.Type == 0 {
		h.Type = TypeStream
	}
	hb, _ := h.MarshalBinary()
	g.tx.Submit([][]byte{append(hb, payload...)}, nil)
	g.tx.Kick()
}

// await collects RX packets until one matches, or fails after 5 s.
func (g *guest) await(what string, match func(Header) bool) Header {
	g.t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		for _, u := range g.rx.Poll() {
			b := g.rx.Bytes(g.bufs[u.Head], u.Len)
			var h Header
			if err := h.UnmarshalBinary(b); err != nil {
				g.t.Fatalf("short RX packet %x", b)
			}
			g.got = append(g.got, h)
			g.data[h.SrcPort] = append(g.data[h.SrcPort], b[HeaderSize:HeaderSize+int(h.Len)]...)
			g.post(1)
		}
		for i, h := range g.got {
			if match(h) {
				g.got = append(g.got[:i:i], g.got[i+1:]...)
				return h
			}
		}
		select {
		case <-g.irq.Signals:
		case <-time.After(20 * time.Millisecond):
		case <-deadline:
			g.t.Fatalf("no %s; RX packets %+v", what, g.got)
		}
	}
}

func TestHostInitiatedStream(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "v.sock")
	g := newGuest(t, sock)
	g.post(16)
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "CONNECT 1024\nearly")
	req := g.await("REQUEST", func(h Header) bool { return h.Op == OpRequest })
	if req.SrcCID != HostCID || req.DstCID != 3 || req.DstPort != 1024 || req.SrcPort != firstLocalPort || req.BufAlloc != BufAlloc {
		t.Fatalf("REQUEST %+v", req)
	}
	g.send(Header{SrcCID: 3, DstCID: 2, SrcPort: 1024, DstPort: req.SrcPort, Op: OpResponse, BufAlloc: 1 << 20}, nil)
	r := bufio.NewReader(c)
	if line, err := r.ReadString('\n'); err != nil || line != fmt.Sprintf("OK %d\n", firstLocalPort) {
		t.Fatalf("handshake answer %q, %v", line, err)
	}
	// What followed the CONNECT line is the stream's first data.
	fmt.Fprintf(c, "-hello")
	g.await("the host's data", func(h Header) bool {
		return bytes.Equal(g.data[req.SrcPort], []byte("early-hello"))
	})
	g.send(Header{SrcCID: 3, DstCID: 2, SrcPort: 1024, DstPort: req.SrcPort, Op: OpRW, BufAlloc: 1 << 20}, []byte("from the guest"))
	buf := make([]byte, 14)
	if _, err := io.ReadFull(r, buf); err != nil || string(buf) != "from the guest" {
		t.Fatalf("host read %q, %v", buf, err)
	}
	// The host shuts its write side: the guest hears SHUTDOWN(SEND).
	c.(*net.UnixConn).CloseWrite()
	if h := g.await("SHUTDOWN", func(h Header) bool { return h.Op == OpShutdown }); h.Flags != ShutdownSend {
		t.Fatalf("SHUTDOWN flags %d", h.Flags)
	}
	// The guest closes: the host sees EOF.
	g.send(Header{SrcCID: 3, DstCID: 2, SrcPort: 1024, DstPort: req.SrcPort, Op: OpShutdown, Flags: ShutdownRcv | ShutdownSend}, nil)
	if _, err := r.ReadByte(); err != io.EOF {
		t.Fatalf("host read after the guest's shutdown: %v", err)
	}
	g.await("RST", func(h Header) bool { return h.Op == OpRst && h.SrcPort == req.SrcPort })
}

func TestGuestInitiatedAndRefused(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "v.sock")
	g := newGuest(t, sock)
	g.post(16)
	ln, err := net.Listen("unix", sock+"_5000")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	g.send(Header{SrcCID: 3, DstCID: 2, SrcPort: 999, DstPort: 5000, Op: OpRequest, BufAlloc: 1 << 20}, nil)
	resp := g.await("RESPONSE", func(h Header) bool { return h.Op == OpResponse })
	if resp.SrcPort != 5000 || resp.DstPort != 999 {
		t.Fatalf("RESPONSE %+v", resp)
	}
	hc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer hc.Close()
	hc.Write([]byte("pong"))
	g.await("data from the host listener", func(h Header) bool { return bytes.Equal(g.data[5000], []byte("pong")) })
	// No listener at port 6000: RST. A packet for no connection: RST.
	g.send(Header{SrcCID: 3, DstCID: 2, SrcPort: 998, DstPort: 6000, Op: OpRequest, BufAlloc: 1 << 20}, nil)
	g.await("RST for a refused connection", func(h Header) bool { return h.Op == OpRst && h.SrcPort == 6000 && h.DstPort == 998 })
	g.send(Header{SrcCID: 3, DstCID: 2, SrcPort: 997, DstPort: 7000, Op: OpRW}, []byte("x"))
	g.await("RST for an unknown connection", func(h Header) bool { return h.Op == OpRst && h.SrcPort == 7000 })
	// A bad CONNECT line closes the host client.
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "HELLO 5\n")
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("bad command: read %v, want EOF", err)
	}
}

// TestUnansweredConnect: a guest that never answers a REQUEST gets the
// host client closed after the timeout, and the socket file goes with
// the device.
func TestUnansweredConnect(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "v.sock")
	g := newGuest(t, sock)
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "connect 77\n")
	c.SetReadDeadline(time.Now().Add(connectTimeout + 5*time.Second))
	if _, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("read %v, want EOF after the connect timeout", err)
	}
	// The REQUEST never reached the guest (no RX buffers): nothing is left
	// queued for it.
	if g.d.mux.hasWork() {
		t.Error("work queued for a connection the guest never heard of")
	}
	g.d.Close()
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Errorf("socket file after Close: %v", err)
	}
}
