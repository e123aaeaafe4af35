package firmware

import (
	"encoding/json"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/nimbus-vmm/nimbus/pkg/client"
)

// pciView is what one side says is on the PCI bus: each function
// ("BB:DD.F") with its BARs' bases by index.
type pciView map[string]map[int]uint64

// hostBridge is the root complex's own function, which vm.info's device
// tree does not list (platform plumbing, as upstream).
const hostBridge = "00:00.0"

var (
	grubFunction = regexp.MustCompile(`^([0-9a-f]{2}:[0-9a-f]{2}\.[0-7]) [0-9a-f]{4}:[0-9a-f]{4} \[[0-9a-f]{4}\]`)
	grubBAR      = regexp.MustCompile(`^\s+(?:IO|32-bit memory|64-bit memory) space (\d+) at 0x([0-9a-f]+)`)
)

// grubPCI reads GRUB's `lspci -i` (sandbox.GrubMenu) from the console
// output: the lines between "GRUB: PCI functions" and "GRUB: booting
// Linux". On the firmware's console each line starts with a carriage
// return and tabs come out as spaces.
func grubPCI(out string) pciView {
	v := pciView{}
	_, rest, _ := strings.Cut(out, "GRUB: PCI functions")
	rest, _, _ = strings.Cut(rest, "GRUB: booting Linux")
	fn := ""
	for _, line := range strings.Split(rest, "\n") {
		line = strings.Trim(line, "\r")
		if m := grubFunction.FindStringSubmatch(line); m != nil {
			fn = m[1]
			v[fn] = map[int]uint64{}
		} else if m := grubBAR.FindStringSubmatch(line); m != nil && fn != "" {
			i, _ := strconv.Atoi(m[1])
			base, _ := strconv.ParseUint(m[2], 16, 64)
			v[fn][i] = base
		}
	}
	return v
}

// infoPCI is vm.info's device tree as a pciView: nodes with a pci_bdf on
// segment 0, with their PciBar resources.
func infoPCI(t *testing.T, info *client.VmInfo) pciView {
	t.Helper()
	v := pciView{}
	for _, n := range info.DeviceTree {
		if n.PciBDF == nil {
			continue
		}
		fn, ok := strings.CutPrefix(*n.PciBDF, "0000:")
		if !ok {
			t.Fatalf("%s: pci_bdf %q is not on segment 0", n.ID, *n.PciBDF)
		}
		v[fn] = map[int]uint64{}
		for _, r := range n.Resources {
			var res struct {
				PciBar *struct {
					Index int    `json:"index"`
					Base  uint64 `json:"base"`
				}
			}
			if err := json.Unmarshal(r, &res); err != nil {
				t.Fatalf("%s: resource %s: %v", n.ID, r, err)
			}
			if res.PciBar != nil {
				v[fn][res.PciBar.Index] = res.PciBar.Base
			}
		}
	}
	return v
}

// samePCI says how GRUB's view (which also has the host bridge) differs
// from vm.info's, or nil; an empty GRUB view is an error.
func samePCI(grub, info pciView) error {
	if _, ok := grub[hostBridge]; !ok {
		return fmt.Errorf("GRUB listed no host bridge at %s (GRUB saw %v)", hostBridge, slices.Sorted(maps.Keys(grub)))
	}
	var diffs []string
	for fn, bars := range info {
		g, ok := grub[fn]
		if !ok {
			diffs = append(diffs, fmt.Sprintf("%s is in vm.info, GRUB did not see it", fn))
			continue
		}
		if !maps.Equal(g, bars) {
			diffs = append(diffs, fmt.Sprintf("%s BARs: GRUB %v, vm.info %v", fn, g, bars))
		}
	}
	for fn := range grub {
		if _, ok := info[fn]; !ok && fn != hostBridge {
			diffs = append(diffs, fmt.Sprintf("GRUB saw %s, vm.info does not list it", fn))
		}
	}
	if len(diffs) > 0 {
		slices.Sort(diffs)
		return fmt.Errorf("%s", strings.Join(diffs, "; "))
	}
	return nil
}

// TestSamePCI: GRUB's lspci -i output read back, and the comparison
// failing on a function or a BAR base that differs.
func TestSamePCI(t *testing.T) {
	// As CLOUDHV.fd's console carried it: "\n\r" between lines, the
	// tabs expanded; a plain tab as GRUB writes it, too.
	out := "noise\n\rGRUB: PCI functions\n" +
		"\r00:00.0 8086:0d57 [0600] Host Bridge\n" +
		"\r00:01.0 1af4:1042 [0180] Mass storage Controller\n" +
		"\r        64-bit memory space 0 at 0x00000000e0000000 [non-prefetchable]\n" +
		"\r00:02.0 1af4:1044 [ffff] \n" +
		"\r        32-bit memory space 2 at 0x00000000c0000000 [prefetchable]\n" +
		"\tIO space 4 at 0x1000\r\n" +
		"\rGRUB: booting Linux\n\r00:09.0 1af4:1041 [0200] after the marker\n"
	grub := grubPCI(out)
	want := pciView{hostBridge: {}, "00:01.0": {0: 0xe0000000}, "00:02.0": {2: 0xc0000000, 4: 0x1000}}
	if fmt.Sprint(grub) != fmt.Sprint(want) {
		t.Fatalf("grubPCI = %v, want %v", grub, want)
	}
	info := pciView{"00:01.0": {0: 0xe0000000}, "00:02.0": {2: 0xc0000000, 4: 0x1000}}
	if err := samePCI(grub, info); err != nil {
		t.Fatalf("same views: %v", err)
	}
	for name, bad := range map[string]pciView{
		"moved BAR":          {"00:01.0": {0: 0xe0100000}, "00:02.0": {2: 0xc0000000, 4: 0x1000}},
		"missing in vm.info": {"00:01.0": {0: 0xe0000000}},
		"unseen by GRUB":     {"00:01.0": {0: 0xe0000000}, "00:02.0": {2: 0xc0000000, 4: 0x1000}, "00:03.0": {}},
	} {
		if samePCI(grub, bad) == nil {
			t.Errorf("%s: no difference found", name)
		}
	}
	if samePCI(pciView{}, pciView{}) == nil {
		t.Error("an empty GRUB listing passed")
	}
}
