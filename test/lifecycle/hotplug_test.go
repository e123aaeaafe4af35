package lifecycle

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nimbus-vmm/nimbus/pkg/client"
)

// hotplugCycles is how many add/remove cycles TestDiskHotplugCycles runs.
const hotplugCycles = 20

// hotplugScript waits for vda (the only disk) to appear, reports its serial and first
// bytes, waits for it to go, n times. "sleep 0.1" needs a busybox with
// fractional sleep; usleep is the fallback.
const hotplugScript = `nap() { sleep 0.1 2>/dev/null || usleep 100000; }
i=0
while [ $i -lt %d ]; do
  echo "HP-WAIT $i"
  n=0
  while [ ! -e /sys/block/vda ]; do
    nap; n=$((n+1))
    # A diagnosis for the log when the disk does not come.
    if [ $n = 100 ]; then echo "HP-DIAG slots: $(ls /sys/bus/pci/slots | tr '\n' ' ')"; grep -i ged /proc/interrupts; dmesg | grep -v 'acpiphp: Slot' | tail -25; ls -l /sys/bus/virtio/devices/; cat /sys/bus/virtio/devices/*/status; fi
  done
  echo "HP-ADDED $i $(cat /sys/block/vda/serial) $(dd if=/dev/vda bs=512 count=1 iflag=direct 2>/dev/null | head -c 24)"
  while [ -e /sys/block/vda ]; do nap; done
  echo "HP-REMOVED $i"
  i=$((i+1))
done
echo "HP-DONE"
`

var gsisInUse = regexp.MustCompile(`guest ejected device.* gsis_in_use=(\d+)`)

// TestDiskHotplugCycles: vm.add-disk on a running guest makes a disk the
// guest's acpiphp finds (GED → PSCN → Notify) and reads the host's
// pattern from; vm.remove-device makes the guest eject it (_EJ0 → B0EJ)
// and it leaves /sys/block; upstream's reply, event and vm.info follow.
// 20 cycles: the same slot every time, and no growth in the VMM's GSIs,
// fds, threads (but for the Go runtime's own) or RSS after the first.
func TestDiskHotplugCycles(t *testing.T) {
	g := newGuest(t)
	p := g.start(t, cmdline(true, fmt.Sprintf(hotplugScript, hotplugCycles)))
	p.waitBoots(1)
	dir := t.TempDir()
	var first usage
	var firstGSIs string
	for i := range hotplugCycles {
		p.waitOutput(fmt.Sprintf("guest waiting for disk #%d", i), 0, bootTimeout, fmt.Sprintf("HP-WAIT %d\n", i))
		img := filepath.Join(dir, fmt.Sprintf("hp%d.img", i))
		pat := fmt.Sprintf("HOTPLUG-PATTERN-%08d", i)
		data := make([]byte, 1<<20)
		copy(data, pat)
		if err := os.WriteFile(img, data, 0o644); err != nil {
			t.Fatal(err)
		}
		body, _ := json.Marshal(map[string]any{"path": img, "serial": fmt.Sprintf("hp-%d", i), "readonly": true})
		ctx, cancel := p.ctx()
		info, err := p.api.AddDisk(ctx, body)
		cancel()
		if err != nil {
			t.Fatalf("cycle %d: vm.add-disk: %v", i, err)
		}
		// Upstream's shared id counter gives _disk0, _disk1, ...; with the
		// console off the rng is 00:01.0 and the freed 00:02.0 is reused.
		if want := fmt.Sprintf("_disk%d", i); info.ID != want || info.BDF != "0000:00:02.0" {
			t.Fatalf("cycle %d: reply %+v, want id %s at 0000:00:02.0", i, info, want)
		}
		added := fmt.Sprintf("HP-ADDED %d hp-%d %s", i, i, pat[:24])
		p.waitOutput(fmt.Sprintf("guest reading disk #%d", i), 0, apiTimeout, added)
		ctx, cancel = p.ctx()
		vi, err := p.api.Info(ctx)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		if d := infoDisks(t, vi); len(d) != 1 || d[0].ID != info.ID {
			t.Fatalf("cycle %d: vm.info disks %+v", i, d)
		}
		if _, ok := vi.DeviceTree[info.ID]; !ok {
			t.Fatalf("cycle %d: device_tree lacks %s", i, info.ID)
		}
		p.do(fmt.Sprintf("cycle %d: vm.remove-device", i), func(ctx2 context.Context) error { return p.api.RemoveDevice(ctx2, info.ID) })
		p.waitOutput(fmt.Sprintf("guest losing disk #%d", i), 0, apiTimeout, fmt.Sprintf("HP-REMOVED %d\n", i))
		p.waitFor(fmt.Sprintf("device-removed event #%d", i), apiTimeout, func() bool {
			return strings.Count(strings.Join(p.events(), "\n"), "vm device-removed") == i+1
		})
		ctx, cancel = p.ctx()
		vi, err = p.api.Info(ctx)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		if d := infoDisks(t, vi); len(d) != 0 {
			t.Fatalf("cycle %d: disks after removal %+v", i, d)
		}
		if _, ok := vi.DeviceTree[info.ID]; ok {
			t.Fatalf("cycle %d: device_tree still has %s", i, info.ID)
		}
		ms := gsisInUse.FindAllStringSubmatch(p.processLog(), -1)
		if len(ms) != i+1 {
			t.Fatalf("cycle %d: %d eject log lines", i, len(ms))
		}
		u := p.settledUsage()
		if i == 0 {
			first, firstGSIs = u, ms[0][1]
			t.Logf("after cycle 1: %+v, %s GSIs in use", u, firstGSIs)
			continue
		}
		if got := ms[i][1]; got != firstGSIs {
			t.Errorf("cycle %d: %s GSIs in use, %s after the first", i, got, firstGSIs)
		}
		// Go starts an OS thread now and then when goroutines block in
		// syscalls and never ends it, so one or two more threads than after
		// the first cycle are the runtime's; a device leaking its threads
		// would add some every cycle.
		if u.fds > first.fds || u.threads > first.threads+2 {
			t.Errorf("cycle %d: %+v, after the first %+v", i, u, first)
		}
	}
	p.waitOutput("the guest's end of the cycles", 0, apiTimeout, "HP-DONE")
	last := p.settledUsage()
	t.Logf("after %d cycles: %+v (RSS %+d KiB since the first)", hotplugCycles, last, last.rssKB-first.rssKB)
	// Generous: the Go heap may grow a little; a leaked device's buffers
	// (1 MiB of queues and BARs per cycle) would not fit.
	if last.rssKB-first.rssKB > 8<<10 {
		t.Errorf("RSS grew by %d KiB over %d cycles", last.rssKB-first.rssKB, hotplugCycles)
	}
	// Removing the rng is refused as upstream does.
	ctx, cancel := p.ctx()
	err := p.api.RemoveDevice(ctx, "__rng")
	cancel()
	var ae *client.APIError
	if !errors.As(err, &ae) || ae.StatusCode != 500 || !bytes.Contains([]byte(ae.Error()), []byte("Not allowed to remove this type of device from the VM: rng")) {
		t.Errorf("removing __rng: %v", err)
	}
}

// settledUsage is usage once the API server has closed the connection of
// the call just made (it does so after replying): the fewest fds over
// half a second.
func (p *vmmProc) settledUsage() usage {
	p.t.Helper()
	u := p.usage()
	for range 10 {
		time.Sleep(50 * time.Millisecond)
		if v := p.usage(); v.fds < u.fds {
			u.fds = v.fds
		}
	}
	return u
}

// infoDisks is vm.info's config.disks.
func infoDisks(t *testing.T, vi *client.VmInfo) []struct {
	ID string `json:"id"`
} {
	t.Helper()
	var cfg struct {
		Disks []struct {
			ID string `json:"id"`
		} `json:"disks"`
	}
	if err := json.Unmarshal(vi.Config, &cfg); err != nil {
		t.Fatalf("vm.info config: %v", err)
	}
	return cfg.Disks
}
