package devices_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/nimbus-vmm/nimbus/internal/guestimage"
	"github.com/nimbus-vmm/nimbus/internal/guestimage/guesttest"
)

// rateLimitScript times reads from each disk by serial: 4 MiB from
// "plain" and "bw", 256 reads of 4 KiB from "ops", and 2 MiB from each of
// "g1" and "g2" at the same time (one group), all O_DIRECT.
const rateLimitScript = `
dev() { for b in /sys/block/vd*; do [ "$(cat $b/serial)" = "$1" ] && echo /dev/$(basename $b); done; }
now() { cut -d' ' -f1 /proc/uptime; }
timed() { name=$1; shift; t0=$(now); "$@"; echo "RL $name $t0 $(now)"; }
timed plain dd if=$(dev plain) of=/dev/null bs=65536 count=64 iflag=direct 2>/dev/null
timed bw dd if=$(dev bw) of=/dev/null bs=65536 count=64 iflag=direct 2>/dev/null
timed ops dd if=$(dev ops) of=/dev/null bs=4096 count=256 iflag=direct 2>/dev/null
group() {
  dd if=$(dev g1) of=/dev/null bs=65536 count=32 iflag=direct 2>/dev/null &
  dd if=$(dev g2) of=/dev/null bs=65536 count=32 iflag=direct 2>/dev/null
  wait
}
timed group group
`

// TestDiskRateLimit: upstream's token buckets on disks, from the command
// line. At 1 MiB/s with a full 1 MiB bucket, 4 MiB cannot take less than
// 3 s; at 64 operations/s with a full bucket of 64, 256 reads cannot
// either; two disks in one 1 MiB/s rate_limit_group reading 2 MiB each at
// once share it, 3 s again. The unlimited disk's time is logged beside
// them. Only the lower bounds are asserted: a slow machine is slower, never
// faster.
func TestDiskRateLimit(t *testing.T) {
	a := guesttest.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), guestTimeout)
	defer cancel()
	initrd := a.ImageFile(t, guestimage.Options{Script: rateLimitScript})
	disk := func(name string) string { return writeDisk(t, name+".img", 0, pattern(name, 4096)) }
	serial := filepath.Join(t.TempDir(), "serial.log")
	p := startNimbus(t, a, "--kernel", a.Kernel, "--initramfs", initrd,
		"--cmdline", "console=ttyS0 panic=-1 quiet", "--cpus", "boot=2", "--memory", "size=512M",
		"--disk", "path="+disk("plain")+",serial=plain",
		"path="+disk("bw")+",serial=bw,bw_size=1048576,bw_refill_time=1000",
		"path="+disk("ops")+",serial=ops,ops_size=64,ops_refill_time=1000",
		"path="+disk("g1")+",serial=g1,rate_limit_group=grp",
		"path="+disk("g2")+",serial=g2,rate_limit_group=grp",
		"--rate-limit-group", "id=grp,bw_size=1048576,bw_refill_time=1000",
		"--serial", "file="+serial, "--console", "off")
	exited, err := p.Wait(ctx)
	if !exited || err != nil {
		t.Fatalf("nimbus: exited %v, err %v; output:\n%s\nserial:\n%s", exited, err, p.Output(), readFile(serial))
	}
	c := guestimage.ParseConsole(readFile(serial))
	if !c.Up || len(c.Results) == 0 || c.Results[0].Status != 0 {
		t.Fatalf("guest %+v; serial:\n%s", c, readFile(serial))
	}
	took := map[string]float64{}
	for _, l := range strings.Split(c.Results[0].Output, "\n") {
		f := strings.Fields(l)
		if len(f) == 4 && f[0] == "RL" {
			t0, err1 := strconv.ParseFloat(f[2], 64)
			t1, err2 := strconv.ParseFloat(f[3], 64)
			if err1 == nil && err2 == nil {
				took[f[1]] = t1 - t0
			}
		}
	}
	t.Logf("guest read times: %s", fmt.Sprint(took))
	for _, name := range []string{"plain", "bw", "ops", "group"} {
		if _, ok := took[name]; !ok {
			t.Fatalf("no time for %s; guest output:\n%s", name, c.Results[0].Output)
		}
	}
	for _, name := range []string{"bw", "ops", "group"} {
		if took[name] < 2.9 {
			t.Errorf("%s took %.2fs: the limit allows no less than 3s", name, took[name])
		}
	}
}
