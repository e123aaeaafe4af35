package net_test

import (
	"context"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	chclient "github.com/kata-containers/kata-containers/src/runtime/virtcontainers/pkg/cloud-hypervisor/client"
	"github.com/nimbus-vmm/nimbus/internal/guestimage"
	"github.com/nimbus-vmm/nimbus/internal/guestimage/guesttest"
	"github.com/nimbus-vmm/nimbus/internal/testnet"
)

// kataSequenceScript is the guest's half of TestKataSequence: it onlines
// hot-added vCPUs and reports them, waits for the hot-added disk and its
// removal, then runs the network exchange.
const kataSequenceScript = `nap() { sleep 0.1 2>/dev/null || usleep 100000; }
(last=""; while :; do
  for c in /sys/devices/system/cpu/cpu[0-9]*; do
    [ -e $c/online ] && [ "$(cat $c/online)" = 0 ] && echo 1 > $c/online 2>/dev/null
  done
  now="CPUS $(cat /sys/devices/system/cpu/online) $(nproc)"
  [ "$now" != "$last" ] && echo "$now" && last="$now"
  nap
done) &
while [ ! -e /sys/block/vda ]; do nap; done
echo "DISK-ADDED $(cat /sys/block/vda/serial)"
while [ -e /sys/block/vda ]; do nap; done
echo DISK-REMOVED
`

// TestKataSequence drives a real guest with Kata's generated client in
// Kata's order (clients.md §1): vm.create, vm.add-net with the tap fd,
// vm.boot, vm.resize to 2 vCPUs, vm.add-disk (a volume), then
// vm.remove-device; each call must succeed (Kata used to get a 500 for
// every hot call), the guest sees each change, and the NIC carries
// traffic afterwards.
func TestKataSequence(t *testing.T) {
	a := guesttest.Require(t)
	requireNetAdmin(t)
	ctx, cancel := context.WithTimeout(context.Background(), guestTimeout)
	defer cancel()
	ns := testnet.NewNetns(t)
	const host, guest, mac = "10.99.7.1", "10.99.7.2", "52:54:00:aa:00:07"
	tap := kataTap(t, ns, "tap0_7", host+"/24", 1)
	p := newHostPeer(t, ns, payloadSize)
	initrd := a.ImageFile(t, guestimage.Options{})
	v := newVMM(t)
	v.start(ctx, t, a)

	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", v.sock)
	}}
	defer tr.CloseIdleConnections()
	cc := chclient.NewConfiguration()
	cc.HTTPClient = &http.Client{Transport: tr}
	cl := chclient.NewAPIClient(cc).DefaultApi

	pl := chclient.NewPayloadConfig()
	cmd := guestCmdline(kataSequenceScript + guestNetScript(guest, host, p))
	pl.Kernel, pl.Initramfs, pl.Cmdline = &a.Kernel, &initrd, &cmd
	vc := chclient.NewVmConfig(*pl)
	vc.Cpus = chclient.NewCpusConfig(1, 4)
	vc.Memory = chclient.NewMemoryConfig(256 << 20)
	vc.Serial = chclient.NewConsoleConfig("File")
	vc.Serial.File = &v.serial
	vc.Console = chclient.NewConsoleConfig("Off")
	if _, err := cl.CreateVM(ctx).VmConfig(*vc).Execute(); err != nil {
		t.Fatalf("vm.create: %v", err)
	}
	// Kata sends add-net itself (its client cannot pass fds).
	var fds []int
	for _, f := range tap {
		fds = append(fds, int(f.Fd()))
	}
	if _, err := v.c.AddNet(ctx, kataNetBody(mac), fds...); err != nil {
		t.Fatalf("vm.add-net: %v", err)
	}
	for _, f := range tap {
		f.Close()
	}
	if _, err := cl.BootVM(ctx).Execute(); err != nil {
		t.Fatalf("vm.boot: %v; %s", err, v.console())
	}
	wait := func(what, s string) {
		t.Helper()
		if !waitFor(ctx, func() bool { return strings.Contains(readFile(v.serial), s) }) {
			t.Fatalf("no %s (%q); %s", what, s, v.console())
		}
	}
	wait("first CPU report", "CPUS 0 1")

	two := int32(2)
	start := time.Now()
	if _, err := cl.VmResizePut(ctx).VmResize(chclient.VmResize{DesiredVcpus: &two}).Execute(); err != nil {
		t.Fatalf("vm.resize: %v", err)
	}
	wait("the second vCPU online", "CPUS 0-1 2")
	t.Logf("vm.resize 1->2 to the guest's CPU online: %v", time.Since(start))

	vol := filepath.Join(t.TempDir(), "vol.img")
	if err := os.WriteFile(vol, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	disk := *chclient.NewDiskConfig()
	ro, serial := false, "kata-vol"
	disk.Path, disk.Readonly, disk.Serial = &vol, &ro, &serial
	start = time.Now()
	pci, _, err := cl.VmAddDiskPut(ctx).DiskConfig(disk).Execute()
	if err != nil {
		t.Fatalf("vm.add-disk: %v", err)
	}
	wait("the volume in the guest", "DISK-ADDED kata-vol")
	t.Logf("vm.add-disk to /sys/block/vda: %v (reply %s at %s)", time.Since(start), pci.GetId(), pci.GetBdf())
	rm := *chclient.NewVmRemoveDevice()
	id := pci.GetId()
	rm.Id = &id
	if _, err := cl.VmRemoveDevicePut(ctx).VmRemoveDevice(rm).Execute(); err != nil {
		t.Fatalf("vm.remove-device %s: %v", id, err)
	}
	wait("the volume gone", "DISK-REMOVED")
	checkCounters(t, v.finish(ctx, t, p, mac), payloadSize)
}
