package lifecycle

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// hostileScript finds every virtio function but vda's, hands them to
// test/guestbin/hostile, then reads vda back.
const hostileScript = `vda=$(basename $(dirname $(readlink -f /sys/block/vda/device)))
t=""
for d in /sys/bus/pci/devices/*; do
  [ "$(cat $d/vendor)" = 0x1af4 ] && [ "$(basename $d)" != "$vda" ] && t="$t $(basename $d)"
done
echo "HOSTILE-TARGETS$t"
/bin/hostile queues 1 $t
/bin/hostile config 2 $t
/bin/hostile ports 3
echo "HOSTILE-VDA $(dd if=/dev/vda bs=512 count=1 iflag=direct 2>/dev/null | head -c 24)"
`

// hostileTargets is every virtio device but the guest's own disk: the
// second disk, rng, balloon and vsock.
const hostileTargets = 4

var hostileQueues = regexp.MustCompile(`HOSTILE-QUEUES (\S+) rounds=(\d+) needs_reset=(\d+)`)

// TestHostileGuest: a guest that takes a virtio-blk disk, the rng, the
// balloon and the vsock device from their drivers and feeds their queues
// garbage (descriptor loops, addresses and lengths past RAM, indirect
// tables and rings in MMIO space, avail indexes far ahead, bad queue
// sizes, random bytes, resets racing requests), then writes random values
// to their config space and BARs and to the legacy ports the VMM emulates.
// The VMM survives with seccomp on, marks the devices broken
// (DEVICE_NEEDS_RESET), and keeps serving the API and the guest's other
// disk.
func TestHostileGuest(t *testing.T) {
	g := newGuestWith(t, "hostile")
	dir := t.TempDir()
	pattern := "HOSTILE-OTHER-DISK-00000"
	good, target := filepath.Join(dir, "good.img"), filepath.Join(dir, "target.img")
	data := make([]byte, 1<<20)
	copy(data, pattern)
	for _, f := range []string{good, target} {
		if err := os.WriteFile(f, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	vsock, err := os.MkdirTemp("", "nimbus-hs")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(vsock)
	p := g.start(t, cmdline(true, hostileScript),
		"--disk", "path="+good+",readonly=on", "path="+target,
		"--rng", "src=/dev/urandom", "--balloon", "size=0",
		"--vsock", "cid=3,socket="+filepath.Join(vsock, "v.sock"))
	p.waitBoots(1)
	p.waitOutput("the guest done with its attacks", 0, 3*bootTimeout, "HOSTILE-VDA ")
	out := p.output()
	if strings.Contains(out, "HOSTILE-FAIL") {
		t.Fatalf("the guest program failed:\n%s", out)
	}
	if !strings.Contains(out, "HOSTILE-VDA "+pattern) {
		t.Errorf("the other disk no longer reads back %q", pattern)
	}
	for _, phase := range []string{"queues", "config", "ports"} {
		if !strings.Contains(out, "HOSTILE-DONE "+phase) {
			t.Errorf("phase %s did not finish", phase)
		}
	}
	targets := regexp.MustCompile(`HOSTILE-TARGETS(.*)`).FindStringSubmatch(out)
	if targets == nil || len(strings.Fields(targets[1])) != hostileTargets {
		t.Fatalf("targets %q, want %d: the second disk, rng, balloon and vsock", targets, hostileTargets)
	}
	for _, m := range hostileQueues.FindAllStringSubmatch(out, -1) {
		t.Logf("%s: %s rounds, DEVICE_NEEDS_RESET seen after %s", m[1], m[2], m[3])
		if m[3] == "0" {
			t.Errorf("%s never reported DEVICE_NEEDS_RESET", m[1])
		}
	}
	if n := len(hostileQueues.FindAllString(out, -1)); n != hostileTargets {
		t.Errorf("%d devices attacked, want %d", n, hostileTargets)
	}

	// The VMM runs on and answers.
	if p.exited() {
		t.Fatalf("the VMM exited")
	}
	p.wantState("Running")
	p.do("vm.counters", func(ctx context.Context) error { _, err := p.api.Counters(ctx); return err })
	p.do("vmm.ping", func(ctx context.Context) error { _, err := p.api.Ping(ctx); return err })
	if log := p.processLog(); strings.Contains(log, "panic") || strings.Contains(log, "SIGSYS") {
		t.Fatalf("the VMM log:\n%s", log)
	}
	t.Logf("devices reported broken in the VMM log: %d", strings.Count(p.processLog(), "broken by the guest"))
}
