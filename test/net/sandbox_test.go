package net_test

import (
	"encoding/binary"
	"io"
	"net"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/nimbus-vmm/nimbus/internal/testnet"
)

// TestSandboxNetworking proves what the end-to-end tests build on: the
// test can create network namespaces, a veth pair across two of them
// carrying TCP, a bridge, and a Kata-style tap inside a namespace whose
// queue fd receives the kernel's frames (an ARP request, with its vnet
// header) when the namespace sends to the tap's subnet. Every link lives
// in a namespace the test made: none in the machine's own.
func TestSandboxNetworking(t *testing.T) {
	requireNetAdmin(t)
	near, ns := testnet.NewNetns(t), testnet.NewNetns(t)
	hNear, err := netlink.NewHandleAt(near, unix.NETLINK_ROUTE)
	if err != nil {
		t.Fatal(err)
	}
	defer hNear.Close()
	inNS, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		t.Fatal(err)
	}
	defer inNS.Close()

	// veth pair: nbveth0 in near, nbveth1 in ns, TCP across.
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "nbveth0"}, PeerName: "nbveth1"}
	if err := hNear.LinkAdd(veth); err != nil {
		t.Fatalf("veth: %v", err)
	}
	peer, err := hNear.LinkByName("nbveth1")
	if err != nil {
		t.Fatal(err)
	}
	if err := hNear.LinkSetNsFd(peer, int(ns)); err != nil {
		t.Fatalf("moving nbveth1 into the namespace: %v", err)
	}
	if linkIn(t, near, "nbveth1") || !linkIn(t, ns, "nbveth1") {
		t.Fatal("nbveth1 not moved into its namespace")
	}
	if linkHere("nbveth0") || linkHere("nbveth1") {
		t.Fatal("a veth end is in the test's own namespace")
	}
	mustAddr := func(h *netlink.Handle, name, cidr string) {
		t.Helper()
		l, err := h.LinkByName(name)
		if err != nil {
			t.Fatal(err)
		}
		a, _ := netlink.ParseAddr(cidr)
		if err := h.AddrAdd(l, a); err != nil {
			t.Fatalf("%s on %s: %v", cidr, name, err)
		}
		if err := h.LinkSetUp(l); err != nil {
			t.Fatal(err)
		}
	}
	mustAddr(hNear, "nbveth0", "10.98.0.1/24")
	mustAddr(inNS, "nbveth1", "10.98.0.2/24")

	var ln net.Listener
	if err := testnet.InNetns(ns, func() (err error) { ln, err = net.Listen("tcp4", "10.98.0.2:0"); return }); err != nil {
		t.Fatalf("listening in the namespace: %v", err)
	}
	defer ln.Close()
	got := make(chan string, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- err.Error()
			return
		}
		defer c.Close()
		b, _ := io.ReadAll(c)
		got <- string(b)
	}()
	var c net.Conn
	if err := testnet.InNetns(near, func() (err error) { c, err = net.DialTimeout("tcp4", ln.Addr().String(), 10*time.Second); return }); err != nil {
		t.Fatalf("dialing into the namespace over veth: %v", err)
	}
	c.Write([]byte("across the veth"))
	c.Close()
	if s := <-got; s != "across the veth" {
		t.Fatalf("the namespace received %q", s)
	}

	// A bridge with the near end of the veth as a port.
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "nbbr0"}}
	if err := hNear.LinkAdd(br); err != nil {
		t.Fatalf("bridge: %v", err)
	}
	if err := hNear.LinkSetMaster(veth, br); err != nil {
		t.Fatalf("enslaving nbveth0 to nbbr0: %v", err)
	}
	if l, err := hNear.LinkByName("nbveth0"); err != nil || l.Attrs().MasterIndex != br.Attrs().Index {
		t.Fatalf("nbveth0 master %v, err %v; want nbbr0 (%d)", l, err, br.Attrs().Index)
	}
	if linkHere("nbbr0") {
		t.Fatal("the bridge is in the test's own namespace")
	}

	// A Kata-style tap in the namespace: sending to its subnet makes the
	// kernel ARP on it, and the queue fd reads the frame after a 10-byte
	// virtio_net_hdr (IFF_VNET_HDR's default size).
	fds := kataTap(t, ns, "nbtap0", "10.98.1.1/24", 1)
	defer fds[0].Close()
	if err := testnet.InNetns(ns, func() error {
		u, err := net.Dial("udp4", "10.98.1.2:9")
		if err != nil {
			return err
		}
		defer u.Close()
		_, err = u.Write([]byte("x"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	fds[0].SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 2048)
	for {
		n, err := fds[0].Read(buf)
		if err != nil {
			t.Fatalf("reading the tap: %v", err)
		}
		const hdr = 10
		if n >= hdr+42 && binary.BigEndian.Uint16(buf[hdr+12:]) == 0x0806 {
			if target := net.IP(buf[hdr+38 : hdr+42]); !target.Equal(net.IPv4(10, 98, 1, 2)) {
				t.Fatalf("ARP for %v, want 10.98.1.2", target)
			}
			break
		}
		t.Logf("skipping a %d-byte frame (ethertype %#04x)", n, binary.BigEndian.Uint16(buf[hdr+12:]))
	}
}
