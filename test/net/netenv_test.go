package net_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/nimbus-vmm/nimbus/internal/guestimage/guesttest"
	"github.com/nimbus-vmm/nimbus/internal/testnet"
)

// requireNetAdmin skips unless the test may create taps and namespaces
// (root with /dev/net/tun), or fails when it must (inside the sandbox).
func requireNetAdmin(t *testing.T) {
	t.Helper()
	err := func() error {
		if os.Geteuid() != 0 {
			return fmt.Errorf("not root")
		}
		f, err := os.OpenFile("/dev/net/tun", os.O_RDWR, 0)
		if err != nil {
			return err
		}
		return f.Close()
	}()
	if err == nil {
		return
	}
	guesttest.Missing(t, "network devices need root and /dev/net/tun (make test-kvm runs this in the sandbox): %v", err)
}

// kataTap creates a tap as Kata's runtime does (netlink Tuntap, multi-queue
// defaults with IFF_VNET_HDR, persistent) inside ns with queues queue fds,
// gives it addr (CIDR, may be empty) and brings it up. The returned files are
// the queue fds to hand to the VMM; the tap is deleted at the end of the test.
func kataTap(t *testing.T, ns netns.NsHandle, name, addr string, queues int) []*os.File {
	t.Helper()
	tap := &netlink.Tuntap{
		LinkAttrs: netlink.LinkAttrs{Name: name},
		Mode:      netlink.TUNTAP_MODE_TAP,
		Queues:    queues,
		Flags:     netlink.TUNTAP_MULTI_QUEUE_DEFAULTS | netlink.TUNTAP_VNET_HDR,
	}
	if err := testnet.InNetns(ns, func() error { return netlink.LinkAdd(tap) }); err != nil {
		t.Fatalf("creating tap %s: %v", name, err)
	}
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if l, err := h.LinkByName(name); err == nil {
			h.LinkDel(l)
		}
		h.Close()
	})
	l, err := h.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	if addr != "" {
		a, err := netlink.ParseAddr(addr)
		if err != nil {
			t.Fatal(err)
		}
		if err := h.AddrAdd(l, a); err != nil {
			t.Fatalf("address %s on %s: %v", addr, name, err)
		}
	}
	if err := h.LinkSetUp(l); err != nil {
		t.Fatal(err)
	}
	return tap.Fds
}

// hostPeer is the host end of the guest's traffic: it serves a payload
// to the guest's first connection on Down and reads everything the guest
// sends on Up.
type hostPeer struct {
	Payload  []byte
	Down, Up int // TCP ports

	down, up net.Listener
	wg       sync.WaitGroup
	downErr  chan error
	upData   chan []byte
	upErr    chan error
}

// newHostPeer listens on all addresses of ns (the current namespace when
// ns is netns.None()) with a random payload of size bytes. The listeners
// close and their goroutines are waited for at the end of the test.
func newHostPeer(t *testing.T, ns netns.NsHandle, size int) *hostPeer {
	t.Helper()
	p := &hostPeer{Payload: make([]byte, size), downErr: make(chan error, 1), upData: make(chan []byte, 1), upErr: make(chan error, 1)}
	rand.Read(p.Payload)
	listen := func() error {
		var err error
		if p.down, err = net.Listen("tcp4", ":0"); err != nil {
			return err
		}
		if p.up, err = net.Listen("tcp4", ":0"); err != nil {
			p.down.Close()
		}
		return err
	}
	var err error
	if ns.IsOpen() {
		err = testnet.InNetns(ns, listen)
	} else {
		err = listen()
	}
	if err != nil {
		t.Fatal(err)
	}
	p.Down, p.Up = p.down.Addr().(*net.TCPAddr).Port, p.up.Addr().(*net.TCPAddr).Port
	p.wg.Add(2)
	go func() {
		defer p.wg.Done()
		c, err := p.down.Accept()
		if err != nil {
			p.downErr <- err
			return
		}
		defer c.Close()
		// Bounded: a guest that vanished mid-transfer sends no RST.
		c.SetDeadline(time.Now().Add(guestTimeout))
		_, err = c.Write(p.Payload)
		p.downErr <- err
	}()
	go func() {
		defer p.wg.Done()
		c, err := p.up.Accept()
		if err != nil {
			p.upErr <- err
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(guestTimeout))
		b, err := io.ReadAll(io.LimitReader(c, int64(4*size+1<<20)))
		p.upData <- b
		p.upErr <- err
	}()
	t.Cleanup(func() {
		p.down.Close()
		p.up.Close()
		p.wg.Wait()
	})
	return p
}

// Sum is the payload's SHA-256 in hex, as busybox sha256sum prints it.
func (p *hostPeer) Sum() string {
	s := sha256.Sum256(p.Payload)
	return hex.EncodeToString(s[:])
}

// Wait waits (bounded by ctx) for both transfers and checks that the guest
// sent back exactly the payload it was served.
func (p *hostPeer) Wait(ctx context.Context, t *testing.T, console func() string) {
	t.Helper()
	select {
	case err := <-p.downErr:
		if err != nil {
			t.Fatalf("serving the guest: %v", err)
		}
	case <-ctx.Done():
		t.Fatalf("the guest never fetched the payload; console:\n%s", console())
	}
	select {
	case b := <-p.upData:
		if err := <-p.upErr; err != nil {
			t.Fatalf("reading from the guest: %v", err)
		}
		if !bytes.Equal(b, p.Payload) {
			t.Fatalf("the guest sent back %d bytes that differ from the %d-byte payload; console:\n%s", len(b), len(p.Payload), console())
		}
	case <-ctx.Done():
		t.Fatalf("the guest never sent the payload back; console:\n%s", console())
	}
}

// guestNetScript configures eth0 with guestIP/24, pings hostIP, fetches
// the payload from the peer's Down port, prints its sha256, sends it back
// to the Up port and prints the marker doneMark.
func guestNetScript(guestIP, hostIP string, p *hostPeer) string {
	return fmt.Sprintf(`set -e
ip link set eth0 up
ip addr add %[1]s/24 dev eth0
ls /sys/class/net
cat /sys/class/net/eth0/address
ping -c 2 -w 30 %[2]s
nc %[2]s %[3]d </dev/null >/tmp/down
sha256sum /tmp/down
nc %[2]s %[4]d </tmp/down >/dev/null
echo %[5]s
`, guestIP, hostIP, p.Down, p.Up, doneMark)
}

// doneMark is printed by guestNetScript after its last transfer.
const doneMark = "NIMBUS-NET-DONE"

// checkCounters checks one net device's counters against the traffic:
// each direction carries at least the payload and at most the payload
// plus headers, ACKs, ARP and pings.
func checkCounters(t *testing.T, c map[string]uint64, payload int) {
	t.Helper()
	slack := uint64(payload/8 + 256<<10)
	for _, dir := range []string{"rx", "tx"} {
		b, f := c[dir+"_bytes"], c[dir+"_frames"]
		if b < uint64(payload) || b > uint64(payload)+slack || f == 0 {
			t.Errorf("%s_bytes %d %s_frames %d for a %d-byte payload each way (allowed up to %d bytes)", dir, b, dir, f, payload, uint64(payload)+slack)
		}
	}
}

// waitFor polls cond every 50 ms until it holds or ctx ends.
func waitFor(ctx context.Context, cond func() bool) bool {
	for !cond() {
		select {
		case <-ctx.Done():
			return false
		case <-time.After(50 * time.Millisecond):
		}
	}
	return true
}

// readFile returns a file's contents, or the error text.
func readFile(p string) string {
	b, err := os.ReadFile(p)
	if err != nil {
		return err.Error()
	}
	return string(b)
}

// linkIn reports whether an interface name exists in ns.
func linkIn(t *testing.T, ns netns.NsHandle, name string) bool {
	t.Helper()
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	_, err = h.LinkByName(name)
	return err == nil
}

// linkHere reports whether an interface name exists in the test's own
// namespace (where no test may create one).
func linkHere(name string) bool {
	_, err := net.InterfaceByName(name)
	return err == nil
}
