package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nimbus-vmm/nimbus/pkg/client"
)

// memWatch onlines every memory block that arrives offline (the kernel
// leaves hot-added memory offline unless memhp_default_state says
// otherwise; a distribution's udev rule onlines it) and reports MemTotal
// in MiB whenever it changes.
const memWatch = `(last=""; while :; do
  for b in /sys/devices/system/memory/memory*; do
    [ "$(cat $b/state 2>/dev/null)" = offline ] && echo online > $b/state 2>/dev/null
  done
  now="MEM $(awk '/^MemTotal:/{print int($2/1024)}' /proc/meminfo)"
  [ "$now" != "$last" ] && echo "$now" && last="$now"
  sleep 0.2 2>/dev/null || usleep 200000
done) &
`

// firstMemTotal waits for the guest's first whole "MEM <MiB>" line.
func (p *vmmProc) firstMemTotal() int {
	p.t.Helper()
	p.waitFor("the guest's first memory report", bootTimeout, func() bool { return memTotal(p.output()) >= 0 })
	return memTotal(p.output())
}

// memoryConfig is the part of vm.info's config the memory tests check.
type memoryConfig struct {
	Memory struct {
		Size           uint64  `json:"size"`
		HotpluggedSize *uint64 `json:"hotplugged_size"`
	} `json:"memory"`
}

// memTotal is the guest's latest "MEM <MiB>" report, or -1. Only whole
// lines count: the serial file is read while the guest writes it.
func memTotal(out string) int {
	n := -1
	lines := strings.Split(out, "\n")
	for _, line := range lines[:len(lines)-1] {
		if v, ok := strings.CutPrefix(line, "MEM "); ok {
			if i, err := strconv.Atoi(v); err == nil {
				n = i
			}
		}
	}
	return n
}

// TestMemoryHotplug: vm.resize with desired_ram on a running guest booted
// with hotplug_size grows its RAM through upstream's ACPI memory hotplug
// (GED bit 1, \_SB_.MHPC.MSCN, a PNP0C80 DIMM whose _CRS the guest reads
// from the register block), twice, and the guest's MemTotal follows by
// each step; vm.info's memory.size and memory_actual_size follow too. A
// size that is not a 128 MiB step, and growth past the window, are
// refused with upstream's texts; asking for less changes nothing.
func TestMemoryHotplug(t *testing.T) {
	g := newGuest(t)
	p := g.start(t, cmdline(true, memWatch), "--memory", "size=512M,hotplug_size=1G")
	p.waitBoots(1)
	base := p.firstMemTotal()
	grow := func(to uint64, step int) {
		t.Helper()
		mark := len(p.output())
		began := time.Now()
		p.do(fmt.Sprintf("vm.resize to %d MiB", to>>20), func(ctx context.Context) error {
			return p.api.Resize(ctx, client.ResizeRequest{DesiredRAM: &to})
		})
		want := base + step
		p.waitFor(fmt.Sprintf("the guest's MemTotal to reach %d MiB", want), bootTimeout, func() bool {
			return memTotal(p.output()[mark:]) >= want
		})
		// A figure for the benchmark, not an assertion.
		t.Logf("vm.resize to %d MiB: guest MemTotal %d -> %d MiB in %v (the guest polls every 0.2 s)",
			to>>20, base, memTotal(p.output()), time.Since(began).Round(time.Millisecond))
		var cfg memoryConfig
		if vi := p.infoConfig(&cfg); cfg.Memory.Size != to || vi.MemoryActualSize != to {
			t.Fatalf("vm.info after resizing to %d: memory %+v, memory_actual_size %d", to, cfg.Memory, vi.MemoryActualSize)
		}
	}
	grow(768<<20, 256)
	grow(1024<<20, 512)
	if !strings.Contains(p.processLog(), "Hotplugging new RAM") {
		t.Error("the VMM did not log the hot-added RAM")
	}
	refused := func(to uint64, text string) {
		t.Helper()
		ctx, cancel := p.ctx()
		defer cancel()
		err := p.api.Resize(ctx, client.ResizeRequest{DesiredRAM: &to})
		var ae *client.APIError
		if !errors.As(err, &ae) || ae.StatusCode != 500 || !strings.Contains(strings.Join(ae.Messages, "|"), "Memory manager error|"+text) {
			t.Errorf("resize to %d: %v, want 500 with %q", to, err, text)
		}
	}
	refused(1024<<20+64<<20, "The requested hotplug memory addition is not a valid size")
	refused(2048<<20, "Not enough space in the hotplug RAM region")
	// Less than the guest has: nothing changes, as upstream (the config
	// keeps the size for the next boot).
	less := uint64(512 << 20)
	p.do("vm.resize to 512 MiB", func(ctx context.Context) error {
		return p.api.Resize(ctx, client.ResizeRequest{DesiredRAM: &less})
	})
	p.wantState(client.StateRunning)
	if got := memTotal(p.output()); got < base+512 {
		t.Fatalf("MemTotal %d MiB after asking for less, want it kept at %d", got, base+512)
	}
}

// TestVirtioMem: with hotplug_method=virtio-mem the guest's virtio_mem
// driver plugs what vm.resize asks for and unplugs it again: MemTotal
// follows up and down, and vm.info's memory_actual_size follows what the
// driver plugged; memory.hotplugged_size records the request as upstream.
func TestVirtioMem(t *testing.T) {
	if !haveModules(t, "virtio_mem") {
		t.Skip("the guest kernel has no virtio_mem module")
	}
	g := newGuest(t)
	p := g.start(t, cmdline(true, memWatch), "--memory", "size=512M,hotplug_method=virtio-mem,hotplug_size=1G")
	p.waitBoots(1)
	base := p.firstMemTotal()
	resize := func(to uint64, wantMiB int, cmp func(got, want int) bool) {
		t.Helper()
		mark := len(p.output())
		began := time.Now()
		p.do(fmt.Sprintf("vm.resize to %d MiB", to>>20), func(ctx context.Context) error {
			return p.api.Resize(ctx, client.ResizeRequest{DesiredRAM: &to})
		})
		p.waitFor(fmt.Sprintf("the guest's MemTotal to reach %d MiB", wantMiB), bootTimeout, func() bool {
			got := memTotal(p.output()[mark:])
			return got >= 0 && cmp(got, wantMiB)
		})
		t.Logf("vm.resize to %d MiB: guest MemTotal %d MiB after %v", to>>20, memTotal(p.output()), time.Since(began).Round(time.Millisecond))
		p.waitFor(fmt.Sprintf("memory_actual_size %d MiB", to>>20), apiTimeout, func() bool {
			ctx, cancel := p.ctx()
			defer cancel()
			vi, err := p.api.Info(ctx)
			return err == nil && vi.MemoryActualSize == to
		})
		var cfg memoryConfig
		if vi := p.infoConfig(&cfg); cfg.Memory.Size != 512<<20 || cfg.Memory.HotpluggedSize == nil || *cfg.Memory.HotpluggedSize != to-512<<20 {
			t.Fatalf("vm.info memory after resizing to %d: %s", to, vi.Config)
		}
	}
	resize(1024<<20, base+512, func(got, want int) bool { return got >= want })
	resize(768<<20, base+256, func(got, want int) bool { return got <= want })
	// Below the boot RAM is refused as upstream.
	ctx, cancel := p.ctx()
	defer cancel()
	small := uint64(256 << 20)
	err := p.api.Resize(ctx, client.ResizeRequest{DesiredRAM: &small})
	var ae *client.APIError
	if !errors.As(err, &ae) || !strings.Contains(strings.Join(ae.Messages, "|"), "Memory manager error|Invalid resize request: desired_size = 268435456 below boot size = 536870912") {
		t.Errorf("resize below the boot RAM: %v", err)
	}
	p.wantState(client.StateRunning)
}

// TestBalloon: vm.resize with desired_balloon inflates the guest's
// virtio-balloon (its MemTotal drops by the size, as Linux takes
// ballooned pages off the managed count without deflate_on_oom) and
// memory_actual_size follows what the driver reports; a size of 0
// deflates it again. balloon.size records the request, as upstream.
func TestBalloon(t *testing.T) {
	g := newGuest(t)
	p := g.start(t, cmdline(true, memWatch), "--memory", "size=512M", "--balloon", "size=0")
	p.waitBoots(1)
	base := p.firstMemTotal()
	resize := func(size uint64, wantMiB int, cmp func(got, want int) bool) {
		t.Helper()
		mark := len(p.output())
		began := time.Now()
		p.do(fmt.Sprintf("vm.resize desired_balloon %d MiB", size>>20), func(ctx context.Context) error {
			return p.api.Resize(ctx, client.ResizeRequest{DesiredBalloon: &size})
		})
		p.waitFor(fmt.Sprintf("the guest's MemTotal to reach %d MiB", wantMiB), bootTimeout, func() bool {
			got := memTotal(p.output()[mark:])
			return got >= 0 && cmp(got, wantMiB)
		})
		t.Logf("balloon %d MiB: guest MemTotal %d MiB after %v", size>>20, memTotal(p.output()), time.Since(began).Round(time.Millisecond))
		p.waitFor(fmt.Sprintf("memory_actual_size %d MiB", (512<<20-size)>>20), apiTimeout, func() bool {
			var cfg struct {
				Balloon struct {
					Size uint64 `json:"size"`
				} `json:"balloon"`
			}
			vi := p.infoConfig(&cfg)
			return vi.MemoryActualSize == 512<<20-size && cfg.Balloon.Size == size
		})
	}
	resize(128<<20, base-128, func(got, want int) bool { return got <= want })
	resize(0, base, func(got, want int) bool { return got >= want })
}
