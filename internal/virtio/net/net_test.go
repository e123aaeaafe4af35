package net_test

import (
	"bytes"
	"encoding/binary"
	"net"
	"os"
	"regexp"
	"runtime"
	"testing"

	"github.com/vishvananda/netlink"
	"go.uber.org/goleak"
	"golang.org/x/sys/unix"

	"github.com/nimbus-vmm/nimbus/internal/config"
	"github.com/nimbus-vmm/nimbus/internal/virtio"
	vnet "github.com/nimbus-vmm/nimbus/internal/virtio/net"
	"github.com/nimbus-vmm/nimbus/internal/virtio/virtiotest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type rig struct {
	dev    *vnet.Device
	rx, tx *virtiotest.Driver
	irq    *virtiotest.Interrupt
	queues []*virtio.Queue
}

func activate(t *testing.T, dev *vnet.Device) *rig {
	t.Helper()
	m := virtiotest.NewMem(4 << 20)
	var qs []*virtio.Queue
	for _, n := range dev.QueueSizes() {
		q, err := virtio.NewQueue(n)
		if err != nil {
			t.Fatal(err)
		}
		qs = append(qs, q)
	}
	r := &rig{dev: dev, irq: virtiotest.NewInterrupt(), queues: qs}
	r.rx = virtiotest.NewDriver(m, qs[0], 64, 0x1000, 0x100000, 0x200000)
	r.tx = virtiotest.NewDriver(m, qs[1], 64, 0x4000, 0x200000, 0x300000)
	if err := dev.Activate(m, dev.Features(), qs, r.irq); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := dev.Close(); err != nil {
			t.Error(err)
		}
		for _, q := range qs {
			q.Close()
		}
	})
	return r
}

func frame(n int) []byte {
	f := make([]byte, n)
	copy(f, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x52, 0x54, 0, 0, 0, 1, 0x88, 0xb5})
	for i := 14; i < n; i++ {
		f[i] = byte(i)
	}
	return f
}

// waitSignal waits for an interrupt of queue q.
func (r *rig) waitSignal(q int) {
	for got := range r.irq.Signals {
		if got == q {
			return
		}
	}
}

func TestFramesOverSocket(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	peer := os.NewFile(uintptr(fds[1]), "peer")
	defer peer.Close()
	dev, err := vnet.NewOnSockets(config.NetConfig{MAC: "12:34:56:78:90:ab"}, fds[:1])
	if err != nil {
		t.Fatal(err)
	}
	r := activate(t, dev)
	cfg := make([]byte, 12)
	dev.ReadConfig(0, cfg)
	if !bytes.Equal(cfg[:6], []byte{0x12, 0x34, 0x56, 0x78, 0x90, 0xab}) || binary.LittleEndian.Uint16(cfg[6:]) != vnet.StatusLinkUp || binary.LittleEndian.Uint16(cfg[8:]) != 1 {
		t.Fatalf("config % x", cfg)
	}

	// Guest to host: header and frame leave as one datagram, unchanged.
	hdr := make([]byte, vnet.HeaderSize)
	hdr[0] = 1 // NEEDS_CSUM, passed through to the tap
	f := frame(100)
	r.tx.Submit([][]byte{hdr, f}, nil)
	r.tx.Kick()
	got := make([]byte, 2000)
	n, err := peer.Read(got)
	if err != nil || !bytes.Equal(got[:n], append(append([]byte(nil), hdr...), f...)) {
		t.Fatalf("tap got %d bytes % x, %v", n, got[:min(n, 32)], err)
	}
	for len(r.tx.Poll()) == 0 { // counters move before the chain returns
		r.waitSignal(1)
	}

	// Host to guest, with the frame arriving before any buffer is posted.
	in := append(make([]byte, vnet.HeaderSize), frame(60)...)
	if _, err := peer.Write(in); err != nil {
		t.Fatal(err)
	}
	_, bufs := r.rx.Submit(nil, []uint32{1600})
	r.rx.Kick()
	r.waitSignal(0)
	u := r.rx.Poll()
	if len(u) != 1 || u[0].Len != uint32(len(in)) {
		t.Fatalf("rx used %v", u)
	}
	want := append([]byte(nil), in...)
	binary.LittleEndian.PutUint16(want[10:], 1) // num_buffers
	if g := r.rx.Bytes(bufs[0], u[0].Len); !bytes.Equal(g, want) {
		t.Fatalf("guest got % x", g[:16])
	}
	c := dev.Counters()
	if c["tx_frames"] != 1 || c["tx_bytes"] != 100 || c["rx_frames"] != 1 || c["rx_bytes"] != 60 {
		t.Fatalf("counters %v", c)
	}
	if err := dev.Pause(); err != nil {
		t.Fatal(err)
	}
	if err := dev.Resume(); err != nil {
		t.Fatal(err)
	}
}

// TestRealTap creates a tap in a private network namespace and checks the
// host-side configuration and a frame each way through it.
func TestRealTap(t *testing.T) {
	if _, err := os.Stat("/dev/net/tun"); err != nil || os.Geteuid() != 0 {
		t.Skip("needs root and /dev/net/tun")
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		// This thread enters a new netns and is never unlocked, so it
		// exits with the goroutine instead of returning to the pool.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			t.Errorf("unshare: %v", err)
			return
		}
		// Without IPv6 the host stack sends nothing of its own (router
		// solicitations, MLD reports) on the new tap, which would reach
		// the guest's queue before the test's frame.
		for _, c := range []string{"all", "default"} {
			if err := os.WriteFile("/proc/sys/net/ipv6/conf/"+c+"/disable_ipv6", []byte("1"), 0); err != nil {
				t.Logf("disable_ipv6 (%s): %v", c, err)
			}
		}
		realTap(t)
	}()
	<-done
}

func realTap(t *testing.T) {
	mtu := uint16(1400)
	dev, err := vnet.New(config.NetConfig{
		MAC: "52:54:00:12:34:56", HostMAC: "52:54:00:ab:cd:ef",
		IP: "192.168.249.1", Mask: "255.255.255.0", MTU: &mtu,
		NumQueues: 2, OffloadCsum: true, OffloadTSO: true, OffloadUFO: true,
	})
	if err != nil {
		t.Errorf("New: %v", err)
		return
	}
	if !regexp.MustCompile(`^vmtap\d+$`).MatchString(dev.TapName()) {
		t.Errorf("tap name %q", dev.TapName())
	}
	link, err := netlink.LinkByName(dev.TapName())
	if err != nil {
		t.Errorf("%v", err)
		dev.Close()
		return
	}
	a := link.Attrs()
	if a.MTU != 1400 || a.HardwareAddr.String() != "52:54:00:ab:cd:ef" || a.Flags&net.FlagUp == 0 {
		t.Errorf("link attrs mtu %d mac %s flags %v", a.MTU, a.HardwareAddr, a.Flags)
	}
	addrs, _ := netlink.AddrList(link, netlink.FAMILY_V4)
	if len(addrs) != 1 || addrs[0].IPNet.String() != "192.168.249.1/24" {
		t.Errorf("addresses %v", addrs)
	}

	// A packet socket on the tap stands for the host network stack.
	ps, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
	if err != nil {
		t.Errorf("packet socket: %v", err)
		dev.Close()
		return
	}
	defer unix.Close(ps)
	sll := &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: a.Index}
	if err := unix.Bind(ps, sll); err != nil {
		t.Errorf("bind: %v", err)
	}
	r := activateNoCleanup(t, dev)
	defer func() {
		dev.Close()
		for _, q := range r.queues {
			q.Close()
		}
	}()

	// Host to guest.
	f := frame(80)
	if err := unix.Sendto(ps, f, 0, sll); err != nil {
		t.Errorf("sendto: %v", err)
		return
	}
	_, bufs := r.rx.Submit(nil, []uint32{65562})
	r.rx.Kick()
	r.waitSignal(0)
	u := r.rx.Poll()
	if len(u) != 1 || u[0].Len != uint32(vnet.HeaderSize+len(f)) || !bytes.Equal(r.rx.Bytes(bufs[0], u[0].Len)[vnet.HeaderSize:], f) {
		t.Errorf("guest rx %v", u)
	}

	// Guest to host.
	g := frame(90)
	g[6] = 0x52 // source is the guest
	r.tx.Submit([][]byte{make([]byte, vnet.HeaderSize), g}, nil)
	r.tx.Kick()
	buf := make([]byte, 2048)
	for {
		n, _, err := unix.Recvfrom(ps, buf, 0)
		if err != nil {
			t.Errorf("recv: %v", err)
			return
		}
		if bytes.Equal(buf[:n], g) {
			break
		}
	}
	// The counters move before the chain is returned: wait for that.
	for len(r.tx.Poll()) == 0 {
		r.waitSignal(1)
	}
	if c := dev.Counters(); c["tx_frames"] != 1 || c["rx_frames"] != 1 {
		t.Errorf("counters %v", c)
	}
}

func activateNoCleanup(t *testing.T, dev *vnet.Device) *rig {
	m := virtiotest.NewMem(4 << 20)
	var qs []*virtio.Queue
	for _, n := range dev.QueueSizes() {
		q, _ := virtio.NewQueue(n)
		qs = append(qs, q)
	}
	r := &rig{dev: dev, irq: virtiotest.NewInterrupt(), queues: qs}
	r.rx = virtiotest.NewDriver(m, qs[0], 64, 0x1000, 0x100000, 0x200000)
	r.tx = virtiotest.NewDriver(m, qs[1], 64, 0x4000, 0x200000, 0x300000)
	if err := dev.Activate(m, dev.Features(), qs, r.irq); err != nil {
		t.Errorf("activate: %v", err)
	}
	return r
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// TestNewClosesFdsOnFailure: New owns the fds it is given, so a failure
// on one of them closes the others too (a failed vm.add-net with several
// fds leaked the later ones).
func TestNewClosesFdsOnFailure(t *testing.T) {
	var fds []int32
	for range 2 {
		p := make([]int, 2)
		if err := unix.Pipe2(p, unix.O_CLOEXEC); err != nil {
			t.Fatal(err)
		}
		unix.Close(p[1])
		fds = append(fds, int32(p[0]))
	}
	if _, err := vnet.New(config.NetConfig{NumQueues: 4, Fds: fds}); err == nil {
		t.Fatal("New took pipes for taps")
	}
	for _, fd := range fds {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != unix.EBADF {
			t.Errorf("fd %d still open after the failure (%v)", fd, err)
		}
	}
}
