package net_test

import (
	"testing"
	"time"

	"github.com/nimbus-vmm/nimbus/internal/guestimage"
	"github.com/nimbus-vmm/nimbus/internal/guestimage/guesttest"
	"github.com/nimbus-vmm/nimbus/internal/testnet"
)

// TestNetRateLimit: a NIC's rate_limiter_config paces each direction on
// its own, as upstream's rx and tx limiters. The guest sends 1 MiB to the
// host over TCP, then receives 1 MiB, through a 256 KiB/s bucket that
// starts full: neither flow can take less than 3 s (only that lower
// bound is asserted: a slow machine is slower, never faster).
func TestNetRateLimit(t *testing.T) {
	a := guesttest.Require(t)
	requireNetAdmin(t)
	initrd := a.ImageFile(t, guestimage.Options{})
	ns := testnet.NewNetns(t)
	f := newFlowTimer(t, ns, 1<<20)
	up, down := runBench(t, ns, f, nimbusPath(t, a), "--kernel", a.Kernel, "--initramfs", initrd,
		"--cmdline", "console=ttyS0 rdinit=/init panic=-1 reboot=t quiet "+guestimage.RunParam(benchScript("10.99.7.2", "10.99.7.1", f)),
		"--serial", "tty", "--console", "off", "--memory", "size=512M", "--cpus", "boot=1",
		"--net", "tap=rtap0,ip=10.99.7.1,mask=255.255.255.0,bw_size=262144,bw_refill_time=1000")
	t.Logf("1 MiB at 256 KiB/s: guest->host %.2fs, host->guest %.2fs", up.took.Seconds(), down.took.Seconds())
	for name, r := range map[string]flowResult{"guest->host": up, "host->guest": down} {
		if r.took < 2900*time.Millisecond {
			t.Errorf("%s took %v: the limit allows no less than 3s", name, r.took)
		}
	}
}
