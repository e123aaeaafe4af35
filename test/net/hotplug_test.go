package net_test

import (
	"context"
	"testing"

	"github.com/nimbus-vmm/nimbus/internal/guestimage"
	"github.com/nimbus-vmm/nimbus/internal/guestimage/guesttest"
	"github.com/nimbus-vmm/nimbus/internal/testnet"
)

// TestHotAddNetFd: a NIC hot-added to a running guest with Kata's body
// and its tap fd over SCM_RIGHTS (Kata's and libvirt's hotplug of a
// container's or domain's interface) appears in the guest as eth0 with
// its MAC; the guest pings across the test's namespace and moves 2 MiB
// each way, and vm.counters matches. The reply is upstream's
// PciDeviceInfo.
func TestHotAddNetFd(t *testing.T) {
	a := guesttest.Require(t)
	requireNetAdmin(t)
	ctx, cancel := context.WithTimeout(context.Background(), guestTimeout)
	defer cancel()
	ns := testnet.NewNetns(t)
	const host, guest, mac = "10.99.6.1", "10.99.6.2", "52:54:00:aa:00:06"
	tap := kataTap(t, ns, "tap0_6", host+"/24", 1)
	p := newHostPeer(t, ns, payloadSize)
	script := "while [ ! -e /sys/class/net/eth0 ]; do sleep 0.1 2>/dev/null || usleep 100000; done\necho NIC-ARRIVED\n" +
		guestNetScript(guest, host, p)
	initrd := a.ImageFile(t, guestimage.Options{})

	v := newVMM(t)
	v.start(ctx, t, a)
	v.create(ctx, t, a, initrd, script)
	if err := v.c.Boot(ctx); err != nil {
		t.Fatalf("vm.boot: %v; %s", err, v.console())
	}
	var fds []int
	for _, f := range tap {
		fds = append(fds, int(f.Fd()))
	}
	info, err := v.c.AddNet(ctx, kataNetBody(mac), fds...)
	if err != nil {
		t.Fatalf("vm.add-net on the running VM: %v; %s", err, v.console())
	}
	// Kata's body has no id: upstream's counter names it; with the
	// console off the rng is 00:01.0, so the NIC takes 00:02.0.
	if info == nil || info.ID != "_net0" || info.BDF != "0000:00:02.0" {
		t.Errorf("vm.add-net reply %+v, want _net0 at 0000:00:02.0", info)
	}
	for _, f := range tap {
		f.Close() // the VMM has its own copies now
	}
	checkCounters(t, v.finish(ctx, t, p, mac), payloadSize)
}
