package vhostuser

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/sys/unix"

	"github.com/nimbus-vmm/nimbus/internal/config"
	"github.com/nimbus-vmm/nimbus/internal/memory"
	"github.com/nimbus-vmm/nimbus/internal/virtio"
	"github.com/nimbus-vmm/nimbus/internal/virtio/virtiotest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeBackend is a vhost-user back end that records every request and
// answers as libvhost-user does: GETs with their value, everything else
// with an acknowledgement when asked.
type fakeBackend struct {
	t        *testing.T
	ln       *net.UnixListener
	features uint64
	proto    uint64
	queues   uint64

	mu    sync.Mutex
	log   []string           // "REQUEST payload-hex fds=N"
	calls map[uint32]int     // ring -> call eventfd received
	fds   []int              // every descriptor received, closed at the end
	body  map[Request][]byte // last payload per request
	conn  *net.UnixConn
	done  chan struct{}
}

// hangup closes the connection, as an exiting back end does.
func (b *fakeBackend) hangup() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.conn != nil {
		b.conn.Close()
	}
}

func newFakeBackend(t *testing.T, features, proto uint64) (*fakeBackend, string) {
	t.Helper()
	return newFakeBackendQueues(t, features, proto, 4)
}

// newFakeBackendQueues is newFakeBackend answering GET_QUEUE_NUM with queues.
func newFakeBackendQueues(t *testing.T, features, proto, queues uint64) (*fakeBackend, string) {
	t.Helper()
	return newFakeBackendAt(t, filepath.Join(t.TempDir(), "vu.sock"), features, proto, queues)
}

// newFakeBackendAt is a fake back end listening on sock.
func newFakeBackendAt(t *testing.T, sock string, features, proto, queues uint64) (*fakeBackend, string) {
	t.Helper()
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	b := &fakeBackend{t: t, ln: ln, features: features, proto: proto, queues: queues,
		calls: map[uint32]int{}, body: map[Request][]byte{}, done: make(chan struct{})}
	go b.serve()
	t.Cleanup(func() {
		ln.Close()
		<-b.done
		for _, fd := range b.fds {
			unix.Close(fd)
		}
	})
	return b, sock
}

func (b *fakeBackend) serve() {
	defer close(b.done)
	c, err := b.ln.AcceptUnix()
	if err != nil {
		return
	}
	defer c.Close()
	b.mu.Lock()
	b.conn = c
	b.mu.Unlock()
	oob := make([]byte, unix.CmsgSpace(8*4))
	for {
		hb := make([]byte, headerSize)
		n, oobn, _, _, err := c.ReadMsgUnix(hb, oob)
		if err != nil || n != headerSize {
			return
		}
		var fds []int
		if oobn > 0 {
			msgs, _ := unix.ParseSocketControlMessage(oob[:oobn])
			for _, m := range msgs {
				f, _ := unix.ParseUnixRights(&m)
				fds = append(fds, f...)
			}
		}
		h := parseHeader(hb)
		body := make([]byte, h.Size)
		if _, err := io.ReadFull(c, body); err != nil {
			return
		}
		b.mu.Lock()
		b.fds = append(b.fds, fds...)
		b.log = append(b.log, fmt.Sprintf("%v fds=%d", h.Request, len(fds)))
		b.body[h.Request] = body
		if h.Request == SetVringCall && len(fds) == 1 {
			b.calls[binary.LittleEndian.Uint32(body)] = fds[0]
		}
		b.mu.Unlock()
		var reply []byte
		switch h.Request {
		case GetFeatures:
			reply = u64(b.features)
		case GetProtocolFeatures:
			reply = u64(b.proto)
		case GetQueueNum:
			reply = u64(b.queues)
		case GetVringBase:
			reply = append(body[:4:4], 7, 0, 0, 0)
		default:
			if h.Flags&flagNeedReply != 0 {
				reply = u64(0)
			}
		}
		if reply != nil {
			hdr, _ := Header{Request: h.Request, Flags: flagVersion | flagReply, Size: uint32(len(reply))}.MarshalBinary()
			if _, err := c.Write(append(hdr, reply...)); err != nil {
				return
			}
		}
	}
}

// requests returns the requests seen since mark, by name.
func (b *fakeBackend) requests(mark int) []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.log[mark:])
}

func (b *fakeBackend) count() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.log)
}

func (b *fakeBackend) payload(r Request) []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.body[r]
}

const allFeatures = virtio.FVersion1 | virtio.FIndirectDesc | virtio.FEventIdx | FProtocolFeatures | virtio.FRingPacked

func sharedRAM(t *testing.T) *memory.Memory {
	t.Helper()
	m, err := memory.New(16<<20, memory.Options{Shared: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// fsDevice is a virtio-fs device on the back end at sock over ram, with
// its two queues; the request queue (1) is set up and ready, the hiprio
// queue (0) is not. The caller defers the device's Close: it must run
// before the fake back ends' cleanups, which wait for the connection to end.
func fsDevice(t *testing.T, sock string, ram *memory.Memory) (*Device, []*virtio.Queue) {
	t.Helper()
	var qs []*virtio.Queue
	for range 2 {
		q, _ := virtio.NewQueue(256)
		t.Cleanup(func() { q.Close() })
		qs = append(qs, q)
	}
	qs[1].Size, qs[1].Ready, qs[1].DescAddr, qs[1].AvailAddr, qs[1].UsedAddr = 256, true, 0x10000, 0x11000, 0x12000
	d, err := NewFs(config.FsConfig{Tag: "t", Socket: sock, NumQueues: 1, QueueSize: 256}, ram, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return d, qs
}

// TestNegotiation: upstream's order (SET_OWNER, features, protocol
// features, queue count), only features both sides have offered to the
// guest, REPLY_ACK honoured from then on.
func TestNegotiation(t *testing.T) {
	b, sock := newFakeBackend(t, allFeatures, ProtocolMQ|ProtocolReplyAck|ProtocolLogShmfd)
	d, err := NewFs(config.FsConfig{Tag: "myfs", Socket: sock, NumQueues: 1, QueueSize: 1024}, sharedRAM(t), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	want := []string{"VHOST_USER_SET_OWNER fds=0", "VHOST_USER_GET_FEATURES fds=0", "VHOST_USER_GET_PROTOCOL_FEATURES fds=0",
		"VHOST_USER_SET_PROTOCOL_FEATURES fds=0", "VHOST_USER_GET_QUEUE_NUM fds=0"}
	if got := b.requests(0); !slices.Equal(got, want) {
		t.Fatalf("requests %v\nwant %v", got, want)
	}
	if p := binary.LittleEndian.Uint64(b.payload(SetProtocolFeatures)); p != ProtocolMQ|ProtocolReplyAck {
		t.Errorf("acked protocol features %#x", p)
	}
	if f := d.Features(); f != virtio.FVersion1|virtio.FIndirectDesc|virtio.FEventIdx {
		t.Errorf("guest features %#x: packed rings or the vhost-user bit leaked, or a common one is missing", f)
	}
	if d.Type() != virtio.TypeFs || !slices.Equal(d.QueueSizes(), []uint16{1024, 1024}) || d.ConfigSize() != FsConfigSize {
		t.Errorf("type %v, queues %v, config size %d", d.Type(), d.QueueSizes(), d.ConfigSize())
	}
	tag := make([]byte, 4)
	d.ReadConfig(0, tag)
	if string(tag) != "myfs" {
		t.Errorf("tag %q", tag)
	}
}

func TestRefusals(t *testing.T) {
	_, sock := newFakeBackend(t, virtio.FIndirectDesc, 0)
	if _, err := NewFs(config.FsConfig{Tag: "t", Socket: sock, NumQueues: 1, QueueSize: 128}, sharedRAM(t), nil, nil); err == nil ||
		!strings.Contains(err.Error(), "VERSION_1") {
		t.Errorf("a back end without VERSION_1: %v", err)
	}
	_, sock = newFakeBackendQueues(t, allFeatures, ProtocolMQ, 1)
	if _, err := NewFs(config.FsConfig{Tag: "t", Socket: sock, NumQueues: 1, QueueSize: 128}, sharedRAM(t), nil, nil); err == nil ||
		!strings.Contains(err.Error(), "2 queues requested, the back end supports 1") {
		t.Errorf("too many queues: %v", err)
	}
	start := time.Now()
	if _, err := Dial(filepath.Join(t.TempDir(), "none"), 300*time.Millisecond); err == nil || time.Since(start) < 300*time.Millisecond {
		t.Errorf("dial a missing socket: %v after %v", err, time.Since(start))
	}
}

// TestActivateAndReset: the rings' host addresses inside the memfd-backed
// RAM, the RAM's descriptors, the base from the driver's available index,
// the queue's kick eventfd, a relayed call when the transport has no
// vector eventfd, and upstream's reset.
func TestActivateAndReset(t *testing.T) {
	b, sock := newFakeBackend(t, allFeatures, ProtocolReplyAck)
	ram := sharedRAM(t)
	d, qs := fsDevice(t, sock, ram)
	defer d.Close()
	q := qs[1] // the request queue; the hiprio queue stays disabled
	if err := ram.WriteU16(q.AvailAddr+2, 5); err != nil {
		t.Fatal(err)
	}
	irq := virtiotest.NewInterrupt()
	if err := d.Activate(ram, virtio.FVersion1|virtio.FEventIdx, qs, irq); err != nil {
		t.Fatal(err)
	}
	// SET_PROTOCOL_FEATURES is not acknowledged (REPLY_ACK is not on yet):
	// the activation starts at SET_FEATURES.
	mark := slices.Index(b.requests(0), "VHOST_USER_SET_FEATURES fds=0")
	want := []string{"VHOST_USER_SET_FEATURES fds=0", "VHOST_USER_SET_MEM_TABLE fds=1", "VHOST_USER_SET_VRING_NUM fds=0",
		"VHOST_USER_SET_VRING_ADDR fds=0", "VHOST_USER_SET_VRING_BASE fds=0", "VHOST_USER_SET_VRING_CALL fds=1",
		"VHOST_USER_SET_VRING_KICK fds=1", "VHOST_USER_SET_VRING_ENABLE fds=0"}
	if got := b.requests(mark); !slices.Equal(got, want) {
		t.Fatalf("activation requests %v\nwant %v", got, want)
	}
	if f := binary.LittleEndian.Uint64(b.payload(SetFeatures)); f != virtio.FVersion1|virtio.FEventIdx|FProtocolFeatures {
		t.Errorf("SET_FEATURES %#x: the driver's features plus VHOST_USER_F_PROTOCOL_FEATURES", f)
	}
	host := ram.Regions()[0].HostAddr
	a, _ := VringAddr{Index: 1, Desc: host + 0x10000, Used: host + 0x12000, Avail: host + 0x11000}.MarshalBinary()
	if got := b.payload(SetVringAddr); string(got) != string(a) {
		t.Errorf("SET_VRING_ADDR % x\nwant % x", got, a)
	}
	if got := b.payload(SetVringBase); binary.LittleEndian.Uint32(got[4:]) != 5 {
		t.Errorf("SET_VRING_BASE % x: want the available index 5", got)
	}
	tbl, _ := MemTable{memRegion(ram.Regions()[0])}.MarshalBinary()
	if got := b.payload(SetMemTable); string(got) != string(tbl) {
		t.Errorf("SET_MEM_TABLE % x\nwant % x", got, tbl)
	}
	// The back end signals its call eventfd: the guest gets queue 1's interrupt.
	b.mu.Lock()
	call := b.calls[1]
	b.mu.Unlock()
	if _, err := unix.Write(call, u64(1)); err != nil {
		t.Fatal(err)
	}
	select {
	case q := <-irq.Signals:
		if q != 1 {
			t.Errorf("interrupt for queue %d", q)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the back end's call never reached the interrupt")
	}
	mark = b.count()
	if err := d.Reset(); err != nil {
		t.Fatal(err)
	}
	if got, want := b.requests(mark), []string{"VHOST_USER_SET_VRING_ENABLE fds=0", "VHOST_USER_GET_VRING_BASE fds=0"}; !slices.Equal(got, want) {
		t.Fatalf("reset requests %v, want %v", got, want)
	}
}

// TestPrivateRAMRefused: without memory shared=on there is nothing to
// hand the back end; the device is refused when built, saying why.
func TestPrivateRAMRefused(t *testing.T) {
	_, sock := newFakeBackend(t, allFeatures, 0)
	ram, err := memory.New(16<<20, memory.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer ram.Close()
	if _, err := NewFs(config.FsConfig{Tag: "t", Socket: sock, NumQueues: 1, QueueSize: 256}, ram, nil, nil); err == nil ||
		!strings.Contains(err.Error(), "shared=on") {
		t.Fatalf("a device over private RAM: %v", err)
	}
}

// TestBackendGone: a back end that exits and does not come back within
// ReconnectTimeout is reported to the guest (DEVICE_NEEDS_RESET); pause,
// resume, reset and close still succeed (the VM must stay manageable),
// and a new activation fails with ErrDisconnected.
func TestBackendGone(t *testing.T) {
	defer func(old time.Duration) { ReconnectTimeout = old }(ReconnectTimeout)
	ReconnectTimeout = 300 * time.Millisecond
	b, sock := newFakeBackend(t, allFeatures, ProtocolReplyAck)
	ram := sharedRAM(t)
	d, qs := fsDevice(t, sock, ram)
	defer d.Close()
	qs[0].Size, qs[0].Ready, qs[0].DescAddr, qs[0].AvailAddr, qs[0].UsedAddr = 256, true, 0x10000, 0x11000, 0x12000
	irq := virtiotest.NewInterrupt()
	if err := d.Activate(ram, virtio.FVersion1, qs, irq); err != nil {
		t.Fatal(err)
	}
	b.ln.Close() // nobody will listen again
	b.hangup()
	// The hang-up is noticed without a request; when no back end comes
	// back, the guest is told.
	deadline := time.Now().Add(5 * time.Second)
	for irq.ResetCause() == nil {
		if time.Now().After(deadline) {
			t.Fatal("the back end's hang-up never set DEVICE_NEEDS_RESET")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := d.Pause(); err != nil {
		t.Errorf("pause without a back end: %v", err)
	}
	if err := d.Resume(); err != nil {
		t.Errorf("resume without a back end: %v", err)
	}
	if err := d.Reset(); err != nil {
		t.Errorf("reset without a back end: %v", err)
	}
	if err := d.Activate(ram, virtio.FVersion1, qs, virtiotest.NewInterrupt()); !errors.Is(err, ErrDisconnected) {
		t.Errorf("activation without a back end: %v", err)
	}
	if err := d.Close(); err != nil {
		t.Errorf("close: %v", err)
	}
}

// TestReconnect: a back end that restarts on the same socket gets the
// whole activation again, as upstream's reinitialize_vhost_user: owner,
// features, protocol features, memory, every ring; the guest is not told.
func TestReconnect(t *testing.T) {
	b, sock := newFakeBackend(t, allFeatures, ProtocolReplyAck)
	ram := sharedRAM(t)
	d, qs := fsDevice(t, sock, ram)
	defer d.Close()
	irq := virtiotest.NewInterrupt()
	if err := d.Activate(ram, virtio.FVersion1, qs, irq); err != nil {
		t.Fatal(err)
	}
	ram.WriteU16(qs[1].AvailAddr+2, 9) // the driver moved on meanwhile
	b.ln.Close()
	b.hangup()
	b2, _ := newFakeBackendAt(t, sock, allFeatures, ProtocolReplyAck, 4)
	want := []string{"VHOST_USER_SET_OWNER fds=0", "VHOST_USER_GET_FEATURES fds=0", "VHOST_USER_GET_PROTOCOL_FEATURES fds=0",
		"VHOST_USER_SET_PROTOCOL_FEATURES fds=0", "VHOST_USER_SET_FEATURES fds=0", "VHOST_USER_SET_MEM_TABLE fds=1",
		"VHOST_USER_SET_VRING_NUM fds=0", "VHOST_USER_SET_VRING_ADDR fds=0", "VHOST_USER_SET_VRING_BASE fds=0",
		"VHOST_USER_SET_VRING_CALL fds=1", "VHOST_USER_SET_VRING_KICK fds=1", "VHOST_USER_SET_VRING_ENABLE fds=0"}
	deadline := time.Now().Add(5 * time.Second)
	for !slices.Equal(b2.requests(0), want) {
		if time.Now().After(deadline) {
			t.Fatalf("after the restart the back end got %v\nwant %v", b2.requests(0), want)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := b2.payload(SetVringBase); binary.LittleEndian.Uint32(got[4:]) != 9 {
		t.Errorf("SET_VRING_BASE % x: want the driver's available index 9", got)
	}
	if irq.ResetCause() != nil {
		t.Errorf("the guest was told to reset: %v", irq.ResetCause())
	}
	// The new connection works: a reset reaches the new back end.
	if err := d.Reset(); err != nil {
		t.Fatal(err)
	}
	if got := b2.requests(len(want)); !slices.Equal(got, []string{"VHOST_USER_SET_VRING_ENABLE fds=0", "VHOST_USER_GET_VRING_BASE fds=0"}) {
		t.Errorf("reset after the reconnection: %v", got)
	}
}

// TestHandOver: at a reboot the old machine's device stops its rings,
// takes back the regions it added one by one and hands the connection to
// the next machine's device on the same socket, which negotiates again
// without SET_OWNER and sends the new machine's RAM. The fake back end,
// like virtiofsd, accepts one front end only.
func TestHandOver(t *testing.T) {
	b, sock := newFakeBackend(t, allFeatures, ProtocolReplyAck|ProtocolConfigureMemSlots)
	ram := sharedRAM(t)
	d, qs := fsDevice(t, sock, ram)
	defer d.Close()
	if err := d.Activate(ram, virtio.FVersion1, qs, virtiotest.NewInterrupt()); err != nil {
		t.Fatal(err)
	}
	// Hot-added RAM goes with ADD_MEM_REG (the boot RAM went in the table).
	hot := ram.Regions()[0]
	hot.GPA += 1 << 32
	if err := d.AddRegion(hot); err != nil {
		t.Fatal(err)
	}
	h := NewHandover()
	defer h.Close()
	mark := b.count()
	if err := d.HandOver(h); err != nil {
		t.Fatal(err)
	}
	want := []string{"VHOST_USER_SET_VRING_ENABLE fds=0", "VHOST_USER_GET_VRING_BASE fds=0", "VHOST_USER_REM_MEM_REG fds=0"}
	if r, _ := SingleMemRegion(memRegion(hot)).MarshalBinary(); string(b.payload(RemMemReg)) != string(r) {
		t.Errorf("REM_MEM_REG % x\nwant the hot-added region % x", b.payload(RemMemReg), r)
	}
	if got := b.requests(mark); !slices.Equal(got, want) {
		t.Fatalf("hand-over requests %v\nwant %v", got, want)
	}
	if h.len() != 1 {
		t.Fatalf("%d connections handed over, want 1", h.len())
	}
	// Another kind of device on the socket does not take it.
	if c := h.take(sock, "vhost-user-blk"); c != nil {
		t.Fatal("a vhost-user-blk device took a vhost-user-fs connection")
	}

	ram2 := sharedRAM(t)
	mark = b.count()
	d2, err := NewFs(config.FsConfig{Tag: "t", Socket: sock, NumQueues: 1, QueueSize: 256}, ram2, h, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer d2.Close()
	want = []string{"VHOST_USER_GET_FEATURES fds=0", "VHOST_USER_GET_PROTOCOL_FEATURES fds=0", "VHOST_USER_SET_PROTOCOL_FEATURES fds=0"}
	if got := b.requests(mark); !slices.Equal(got, want) {
		t.Fatalf("negotiation on the handed-over connection %v\nwant %v", got, want)
	}
	if h.len() != 0 {
		t.Fatalf("%d connections left after the new device took its own", h.len())
	}
	if err := d2.Activate(ram2, virtio.FVersion1, qs, virtiotest.NewInterrupt()); err != nil {
		t.Fatal(err)
	}
	tbl, _ := MemTable{memRegion(ram2.Regions()[0])}.MarshalBinary()
	if got := b.payload(SetMemTable); string(got) != string(tbl) {
		t.Errorf("SET_MEM_TABLE % x\nwant the new machine's RAM % x", got, tbl)
	}
}

// TestHandOverUntaken: a connection no device takes (the device is gone
// from the config) is hung up when the hand-over closes.
func TestHandOverUntaken(t *testing.T) {
	b, sock := newFakeBackend(t, allFeatures, ProtocolReplyAck)
	d, _ := fsDevice(t, sock, sharedRAM(t))
	defer d.Close()
	h := NewHandover()
	if err := d.HandOver(h); err != nil {
		t.Fatal(err)
	}
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-b.done:
	case <-time.After(5 * time.Second):
		t.Fatal("the back end still has a front end after the hand-over closed")
	}
}
