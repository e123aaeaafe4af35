package cli

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/nimbus-vmm/nimbus/internal/config"
)

// FuzzParse runs the command line parser over fuzzer-chosen arguments
// (the input split at NUL bytes): clap-style flag scanning, every
// option's value parser and the VmConfig validation, then Main's dry run,
// which prints the config. Parse must accept or fail with a usage, parse
// or validation error; Main must not panic, and a config it prints must
// decode back.
func FuzzParse(f *testing.F) {
	for _, args := range [][]string{
		{"--dry-run", "--kernel", "K", "--cpus", "boot=2,max=4", "--memory", "size=1G", "--disk", "path=/a", "path=/b,readonly=on", "--net", "tap=t0,mac=12:34:56:78:90:01"},
		{"--api-socket", "fd=3", "--event-monitor", "path=/tmp/e", "-vv", "--seccomp", "log"},
		{"--kernel=K", "--cmdline", "console=ttyS0 root=/dev/vda", "--serial", "tty", "--console", "off", "--rng", "src=/dev/urandom", "--dry-run"},
		{"--firmware", "F", "--memory", "size=512M,hotplug_method=virtio-mem,hotplug_size=1G", "--balloon", "size=0,free_page_reporting=on", "--vsock", "cid=3,socket=/tmp/v", "--dry-run"},
		{"--kernel", "K", "--pmem", "file=/p,size=2M", "--fs", "tag=t,socket=/s", "--numa", "guest_numa_id=0,cpus=[0-1]", "--platform", "num_pci_segments=2", "--dry-run"},
		{"--restore", "source_url=file:///s,prefault=on"},
		{"--rtc", "--kernel", "K", "-V"},
		{"--disk"},
		{"--gdb", "path=/g"},
	} {
		f.Add(strings.Join(args, "\x00"))
	}
	f.Fuzz(func(t *testing.T, line string) {
		args := strings.Split(line, "\x00")
		o, err := Parse(args)
		if err != nil {
			for _, e := range []error{ErrUsage, config.ErrParse, config.ErrInvalid, config.ErrDuplicate} {
				if errors.Is(err, e) {
					return
				}
			}
			t.Fatalf("Parse(%q): error of no category: %v", args, err)
		}
		var out, errb bytes.Buffer
		code := Main(args, &out, &errb, nil)
		if o.VM != nil && o.DryRun && !o.Help && !o.Version && code == 0 {
			if _, err := config.Decode(out.Bytes()); err != nil {
				t.Fatalf("Parse(%q) printed a config that does not decode: %v\n%s", args, err, out.Bytes())
			}
		}
	})
}
