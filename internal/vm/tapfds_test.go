package vm

import (
	"os"
	"runtime"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/nimbus-vmm/nimbus/internal/config"
)

// TestNewNetKeepsConfigFds: a device built from tap fds (as received by
// vm.add-net) works on duplicates, so closing it leaves the config's fds
// open and still attached to the tap for the next machine (reboot), and
// the config keeps the original numbers.
func TestNewNetKeepsConfigFds(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to create a tap")
	}
	tap := &netlink.Tuntap{LinkAttrs: netlink.LinkAttrs{Name: "nbvmtap0"}, Mode: netlink.TUNTAP_MODE_TAP,
		Queues: 1, NonPersist: true, Flags: netlink.TUNTAP_MULTI_QUEUE_DEFAULTS | netlink.TUNTAP_VNET_HDR}
	ns := tapInNewNetns(t, tap)
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	f := tap.Fds[0] // the API's os.File for a received fd
	defer f.Close()
	fd := int32(f.Fd())
	nc := config.NetConfig{NumQueues: 2, QueueSize: 256, Fds: []int32{fd}, MAC: "52:54:00:00:00:01"}
	for round := range 2 { // a machine, then the rebooted one
		d, err := newNet(nc)
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		if nc.Fds[0] != fd {
			t.Fatalf("config fd changed to %d", nc.Fds[0])
		}
		if err := d.Close(); err != nil {
			t.Fatal(err)
		}
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != nil {
			t.Fatalf("round %d: the config's fd %d was closed with the device: %v", round, fd, err)
		}
	}
	if _, err := h.LinkByName("nbvmtap0"); err != nil {
		t.Fatalf("the tap went away while the config still holds its fd: %v", err)
	}
	if _, err := newNet(config.NetConfig{NumQueues: 2, Fds: []int32{1 << 20}}); err == nil {
		t.Fatal("a closed fd number was accepted")
	}
}

// tapInNewNetns creates tap in a network namespace of its own (never the
// machine's), closed at the end of the test; the tap's fds work from any
// namespace. It skips when taps or namespaces cannot be made.
func tapInNewNetns(t *testing.T, tap *netlink.Tuntap) netns.NsHandle {
	t.Helper()
	var ns netns.NsHandle
	errc := make(chan error, 1)
	go func() {
		// Never unlocked: the runtime discards the thread, and with it
		// the namespace switch, when the goroutine ends.
		runtime.LockOSThread()
		var err error
		if ns, err = netns.New(); err == nil {
			err = netlink.LinkAdd(tap)
		}
		errc <- err
	}()
	if err := <-errc; err != nil {
		if ns.IsOpen() {
			ns.Close()
		}
		t.Skipf("cannot create a tap in a new network namespace: %v", err)
	}
	t.Cleanup(func() { ns.Close() })
	return ns
}
