package net_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/nimbus-vmm/nimbus/internal/guestimage"
	"github.com/nimbus-vmm/nimbus/internal/guestimage/guesttest"
	"github.com/nimbus-vmm/nimbus/internal/testnet"
)

// TestRestoreWithNewTapFds follows libvirt's save/restore: a VM whose NIC
// came as tap fds (vm.add-net over SCM_RIGHTS) is paused and snapshotted
// and its VMM exits; a new VMM restores it with vm.restore and new tap
// fds in net_fds. The guest, waiting for the host since before the
// snapshot (the first tap had no address), reaches it through the new
// tap, fetches the payload and sends it back.
func TestRestoreWithNewTapFds(t *testing.T) {
	a := guesttest.Require(t)
	requireNetAdmin(t)
	ctx, cancel := context.WithTimeout(context.Background(), guestTimeout)
	defer cancel()
	ns := testnet.NewNetns(t)
	const host, guest, mac = "10.99.7.1", "10.99.7.2", "52:54:00:aa:00:07"
	oldTap := kataTap(t, ns, "tapold_7", "", 1)
	p := newHostPeer(t, ns, payloadSize)
	script := fmt.Sprintf("ip link set eth0 up\nip addr add %s/24 dev eth0\necho WAITING-FOR-HOST\n"+
		"until ping -c 1 -W 1 %s >/dev/null 2>&1; do :; done\nip addr flush dev eth0\n", guest, host) + guestNetScript(guest, host, p)
	initrd := a.ImageFile(t, guestimage.Options{})

	v := newVMM(t)
	v.start(ctx, t, a)
	v.create(ctx, t, a, initrd, script)
	if _, err := v.c.AddNet(ctx, kataNetBody(mac), int(oldTap[0].Fd())); err != nil {
		t.Fatalf("vm.add-net: %v", err)
	}
	oldTap[0].Close()
	if err := v.c.Boot(ctx); err != nil {
		t.Fatalf("vm.boot: %v; %s", err, v.console())
	}
	if !waitFor(ctx, func() bool { return strings.Contains(readFile(v.serial), "WAITING-FOR-HOST") }) {
		t.Fatalf("the guest never waited for the host; %s", v.console())
	}
	if err := v.c.Pause(ctx); err != nil {
		t.Fatalf("vm.pause: %v", err)
	}
	snap := t.TempDir()
	if err := v.c.Snapshot(ctx, "file://"+snap); err != nil {
		t.Fatalf("vm.snapshot: %v; %s", err, v.console())
	}
	if err := v.c.ShutdownVMM(ctx); err != nil {
		t.Fatalf("vmm.shutdown: %v", err)
	}
	if ok, err := v.Wait(ctx); !ok || err != nil {
		t.Fatalf("the first VMM did not exit: %v", err)
	}

	newTap := kataTap(t, ns, "tapnew_7", host+"/24", 1)
	r := newVMM(t)
	r.serial = v.serial // the snapshot's config names the first VMM's serial file
	r.start(ctx, t, a)
	body := []byte(fmt.Sprintf(`{"source_url":"file://%s","net_fds":[{"id":"_net0","num_fds":1}]}`, snap))
	if err := r.c.Restore(ctx, body, int(newTap[0].Fd())); err != nil {
		t.Fatalf("vm.restore: %v; %s", err, r.console())
	}
	newTap[0].Close()
	if err := r.c.Resume(ctx); err != nil {
		t.Fatalf("vm.resume: %v", err)
	}
	checkCounters(t, r.finish(ctx, t, p, mac), payloadSize)
}
