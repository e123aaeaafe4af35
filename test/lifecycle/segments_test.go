package lifecycle

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// segmentScript reports the PCI devices the guest found and the serial
// and first bytes of every disk as they come and go.
const segmentScript = `nap() { sleep 0.1 2>/dev/null || usleep 100000; }
echo "SEG-PCI $(ls /sys/bus/pci/devices | tr '\n' ' ')"
last=""
while :; do
  now=""
  for b in /sys/block/vd*; do
    [ -e "$b" ] || continue
    d=$(basename $b)
    now="$now $d=$(cat $b/serial)@$(basename $(readlink -f $b/device/..)):$(dd if=/dev/$d bs=512 count=1 iflag=direct 2>/dev/null | head -c 16)"
  done
  [ "$now" != "$last" ] && echo "SEG-DISKS$now" && last="$now"
  nap
done
`

// TestTwoPCISegments: with platform.num_pci_segments=2 (Kata sets it on
// every sandbox) the guest finds a second PCI domain through the MCFG and
// \_SB_.PC01: a disk placed on segment 1 at boot sits at 0001:00:01.0 and
// reads the host's bytes; a disk hot-added to segment 1 gets upstream's
// 0001:00:02.0 reply, appears in the guest, and goes on remove-device.
func TestTwoPCISegments(t *testing.T) {
	g := newGuest(t)
	dir := t.TempDir()
	disk := func(name, pat string) string {
		img := filepath.Join(dir, name)
		data := make([]byte, 1<<20)
		copy(data, pat)
		if err := os.WriteFile(img, data, 0o644); err != nil {
			t.Fatal(err)
		}
		return img
	}
	cold := disk("cold.img", "SEGMENT-ONE-COLD")
	p := g.start(t, cmdline(true, segmentScript), "--platform", "num_pci_segments=2",
		"--disk", "path="+cold+",serial=seg1cold,pci_segment=1,readonly=on")
	p.waitBoots(1)
	// The whole line: the serial file is read while the guest writes it.
	var pciLine string
	p.waitFor("the guest's PCI devices", bootTimeout, func() bool {
		out := p.output()
		i := strings.Index(out, "SEG-PCI ")
		j := strings.Index(out[max(i, 0):], "\n")
		if i < 0 || j < 0 {
			return false
		}
		pciLine = out[i : i+j]
		return true
	})
	for _, want := range []string{"0000:00:00.0", "0001:00:00.0", "0001:00:01.0"} {
		if !strings.Contains(pciLine, want) {
			t.Fatalf("guest PCI devices %q lack %s", pciLine, want)
		}
	}
	p.waitOutput("the cold disk on segment 1", 0, bootTimeout, "vda=seg1cold@0001:00:01.0:SEGMENT-ONE-COLD")

	hot := disk("hot.img", "SEGMENT-ONE-HOT!")
	body, _ := json.Marshal(map[string]any{"path": hot, "serial": "seg1hot", "readonly": true, "pci_segment": 1})
	ctx, cancel := p.ctx()
	info, err := p.api.AddDisk(ctx, body)
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	if info.BDF != "0001:00:02.0" {
		t.Fatalf("add-disk on segment 1: %+v, want bdf 0001:00:02.0", info)
	}
	mark := len(p.output())
	p.waitOutput("the hot-added disk on segment 1", mark, apiTimeout, "=seg1hot@0001:00:02.0:SEGMENT-ONE-HOT!")
	mark = len(p.output())
	p.do("vm.remove-device", func(ctx context.Context) error { return p.api.RemoveDevice(ctx, info.ID) })
	p.waitFor("the guest to lose the hot-added disk", apiTimeout, func() bool {
		tail := p.output()[mark:]
		i := strings.LastIndex(tail, "SEG-DISKS")
		return i >= 0 && strings.Contains(tail[i:], "\n") && !strings.Contains(tail[i:], "seg1hot")
	})
	p.waitFor("device-removed event", apiTimeout, func() bool {
		return strings.Contains(strings.Join(p.events(), "\n"), "vm device-removed")
	})
	t.Log(fmt.Sprintf("guest PCI: %s", pciLine))
}
