package firmware

import (
	"bufio"
	"flag"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nimbus-vmm/nimbus/internal/config"
	"github.com/nimbus-vmm/nimbus/internal/guestimage/guesttest"
)

// startRounds is how many times each case starts; the median is reported.
const startRounds = 7

// TestFirmwareStartTimes is the firmware start benchmark (make
// bench-firmware, issue 17 item 7): Nimbus's own time before the first vCPU
// entry with Debian's 4 MiB CLOUDHV.fd as the payload and 1 GiB or 8 GiB of
// RAM, in-process (vm.New + Boot, as TestBootTimes measures a kernel) and
// from the command line (process start to the "first vCPU entry" log
// line). Each VM is stopped at once: the firmware's run itself is what
// the nested sandbox's QEMU cannot carry (see TestDebianUEFI). It asserts
// nothing and runs only when selected by name.
func TestFirmwareStartTimes(t *testing.T) {
	if f := flag.Lookup("test.run"); f == nil || !strings.Contains(f.Value.String(), "TestFirmwareStartTimes") {
		t.Skip("firmware start benchmark: run with -run TestFirmwareStartTimes (make bench-firmware)")
	}
	fw, _ := firmwareAssets(t)
	a := guesttest.Require(t)
	for _, mem := range []struct {
		name string
		size uint64
	}{{"1G", 1 << 30}, {"8G", 8 << 30}} {
		var inProcess, cli []time.Duration
		for range startRounds {
			inProcess = append(inProcess, guesttest.TimeToFirstEntry(t, config.PayloadConfig{Firmware: fw}, mem.size))
			cli = append(cli, firstEntry(t, filepath.Join(a.BinDir, "nimbus"), "--firmware", fw, "--memory", "size="+mem.name,
				"--serial", "null", "--console", "off", "-v"))
		}
		t.Logf("CLOUDHV.fd, %s RAM, median of %d: vm.New+Boot -> first vCPU entry %v; nimbus process start -> first vCPU entry %v",
			mem.name, startRounds, median(inProcess).Round(10*time.Microsecond), median(cli).Round(10*time.Microsecond))
	}
}

// firstEntry runs nimbus until it logs its first vCPU entry and returns
// the time since its process start that the line reports; nimbus is then
// killed.
func firstEntry(t *testing.T, argv0 string, args ...string) time.Duration {
	t.Helper()
	cmd := exec.Command(argv0, args...)
	out, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	defer cmd.Process.Kill()
	var seen []string
	for sc := bufio.NewScanner(out); sc.Scan(); {
		line := sc.Text()
		seen = append(seen, line)
		if !strings.Contains(line, `msg="first vCPU entry"`) {
			continue
		}
		_, v, _ := strings.Cut(line, "since_process_start=")
		d, err := time.ParseDuration(strings.Fields(v + " ")[0])
		if err != nil {
			t.Fatalf("first vCPU entry line %q: %v", line, err)
		}
		return d
	}
	t.Fatalf("%s: no first vCPU entry logged:\n%s", argv0, strings.Join(seen, "\n"))
	return 0
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}
