package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/nimbus-vmm/nimbus/pkg/client"
)

// cpuWatch onlines every vCPU that arrives offline (the kernel leaves a
// hot-added CPU offline; a distribution's udev rule onlines it) and
// reports the online set and nproc whenever they change.
const cpuWatch = `(last=""; while :; do
  for c in /sys/devices/system/cpu/cpu[0-9]*; do
    [ -e $c/online ] && [ "$(cat $c/online)" = 0 ] && echo 1 > $c/online 2>/dev/null
  done
  now="CPUS $(cat /sys/devices/system/cpu/online) $(nproc)"
  [ "$now" != "$last" ] && echo "$now" && last="$now"
  sleep 0.2 2>/dev/null || usleep 200000
done) &
`

// TestVcpuHotplug: vm.resize on a running guest with boot=1,max=4 adds
// vCPUs through upstream's ACPI CPU hotplug (CPUS device, CSCN, _STA and
// _MAT) and removes them through its eject path (_EJ0 → CEJ0), and the
// guest's online set and nproc follow: 1 → 4 → 2 → 3, the last reusing a
// vCPU the guest ejected. vm.info's boot_vcpus follows each resize.
func TestVcpuHotplug(t *testing.T) {
	g := newGuest(t)
	p := g.start(t, cmdline(true, cpuWatch), "--cpus", "boot=1,max=4")
	p.waitBoots(1)
	p.waitOutput("the guest's first CPU report", 0, bootTimeout, "CPUS 0 1\n")
	resize := func(n uint32, online string) {
		t.Helper()
		mark := len(p.output())
		p.do(fmt.Sprintf("vm.resize to %d vCPUs", n), func(ctx context.Context) error {
			return p.api.Resize(ctx, client.ResizeRequest{DesiredVcpus: &n})
		})
		p.waitOutput(fmt.Sprintf("the guest with %d vCPUs", n), mark, bootTimeout, fmt.Sprintf("CPUS %s %d\n", online, n))
		var cfg struct {
			Cpus struct {
				BootVcpus uint32 `json:"boot_vcpus"`
			} `json:"cpus"`
		}
		if p.infoConfig(&cfg); cfg.Cpus.BootVcpus != n {
			t.Fatalf("vm.info boot_vcpus %d, want %d", cfg.Cpus.BootVcpus, n)
		}
	}
	resize(4, "0-3")
	resize(2, "0-1")
	p.waitFor("both ejects in the VMM log", apiTimeout, func() bool {
		return strings.Count(p.processLog(), "guest ejected vCPU") == 2
	})
	resize(3, "0-2")
	// Past max_vcpus is refused as upstream.
	ctx, cancel := p.ctx()
	defer cancel()
	five := uint32(5)
	err := p.api.Resize(ctx, client.ResizeRequest{DesiredVcpus: &five})
	var ae *client.APIError
	if !errors.As(err, &ae) || !strings.Contains(strings.Join(ae.Messages, "|"), "Requested vCPUs exceed maximum") {
		t.Errorf("resize past max_vcpus: %v", err)
	}
	p.wantState(client.StateRunning)
}
