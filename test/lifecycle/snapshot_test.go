package lifecycle

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nimbus-vmm/nimbus/pkg/client"
)

// diskTicker counts like ticker and, each round, writes the count to the
// first sector of /dev/vda and reads it back with direct I/O, so every
// line says what the disk held: "TICK <n> DISK <read back>".
const diskTicker = `(i=0; while :; do printf '%-511s\n' $i | dd of=/dev/vda bs=512 count=1 oflag=direct conv=sync 2>/dev/null; echo "TICK $i DISK $(dd if=/dev/vda bs=512 count=1 iflag=direct 2>/dev/null | tr -d ' \n')"; i=$((i+1)); sleep 0.2 2>/dev/null || usleep 200000; done) &
`

// startDiskTicker boots a guest running diskTicker on a 1 MiB disk and
// waits for n of its ticks.
func startDiskTicker(t *testing.T, n int) (*guest, *vmmProc) {
	g := newGuest(t)
	disk := filepath.Join(t.TempDir(), "disk.raw")
	if err := os.WriteFile(disk, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	p := g.start(t, cmdline(true, diskTicker), "--disk", "path="+disk)
	p.waitBoots(1)
	p.waitFor("guest ticks", bootTimeout, func() bool { got, _ := ticks(t, p.output()); return len(got) >= n })
	return g, p
}

var tickDisk = regexp.MustCompile(`(?m)^TICK (\d+) DISK (\S*)$`)

// ticks are the complete "TICK n DISK m" lines of out.
func ticks(t *testing.T, out string) (n, disk []int) {
	t.Helper()
	for _, m := range tickDisk.FindAllStringSubmatch(out, -1) {
		a, _ := strconv.Atoi(m[1])
		b, err := strconv.Atoi(m[2])
		if err != nil {
			b = -1
		}
		n, disk = append(n, a), append(disk, b)
	}
	return n, disk
}

// TestSnapshotRestore: a guest counting in a loop and writing each count
// to its disk is paused and snapshotted (upstream's three files), its VMM
// exits, and a new VMM restores it with --restore: the VM comes back
// Paused with upstream's events, and after vm.resume the guest goes on
// counting from where it was (no reboot) and reads back from its disk
// what it writes. Guest RAM comes back copied, and mapped from the
// snapshot's memory file (memory_restore_mode=ondemand).
func TestSnapshotRestore(t *testing.T) {
	for _, mode := range []string{"copy", "ondemand"} {
		t.Run(mode, func(t *testing.T) { snapshotRestore(t, mode) })
	}
}

func snapshotRestore(t *testing.T, mode string) {
	g, p := startDiskTicker(t, 5)
	p.do("pause", p.api.Pause)
	before, beforeDisk := ticks(t, p.output())
	last := before[len(before)-1]
	for i, n := range before {
		if beforeDisk[i] != n {
			t.Fatalf("before the snapshot the guest read %d back after writing %d", beforeDisk[i], n)
		}
	}

	snap := t.TempDir()
	start := time.Now()
	p.do("snapshot", func(ctx context.Context) error { return p.api.Snapshot(ctx, "file://"+snap) })
	t.Logf("snapshot of a 256 MiB guest took %v", time.Since(start))
	for _, f := range []string{"config.json", "state.json", "memory-ranges"} {
		if _, err := os.Stat(filepath.Join(snap, f)); err != nil {
			t.Fatalf("snapshot file: %v", err)
		}
	}
	p.wantFail("second snapshot into the same directory", func(ctx context.Context) error { return p.api.Snapshot(ctx, "file://"+snap) })
	p.do("vmm.shutdown", p.api.ShutdownVMM)
	p.waitExit(exitTimeout)
	out1 := p.output()

	// The same directory: the snapshot's config names its serial file.
	start = time.Now()
	q := startVMM(t, p.dir, filepath.Join(g.assets.BinDir, "nimbus"), "--restore", "source_url=file://"+snap+",memory_restore_mode="+mode)
	q.waitState(client.StatePaused, apiTimeout)
	t.Logf("restore until the API said Paused took %v", time.Since(start))
	q.wantEvents("vmm starting", "vm restoring", "vm restored")
	q.do("resume", q.api.Resume)
	// The harness keeps what the file held before the restore truncated
	// it: the guest's new lines are the ticks past the last one.
	newTicks := func() (n, disk []int) {
		all, allDisk := ticks(t, q.output())
		for i := range all {
			if all[i] > last {
				n, disk = append(n, all[i]), append(disk, allDisk[i])
			}
		}
		return n, disk
	}
	q.waitFor("ticks after restore", bootTimeout, func() bool { n, _ := newTicks(); return len(n) >= 10 })
	out2 := q.output()
	if boots(out2) != 1 {
		t.Fatalf("the restored guest booted again:\n%s", out2)
	}
	after, afterDisk := newTicks()
	if after[0] != last+1 {
		t.Fatalf("first tick after restore is %d, the last before the snapshot was %d\nbefore:\n%s\nafter:\n%s",
			after[0], last, lastLines(out1, 5), out2)
	}
	for i, n := range after {
		if i > 0 && n != after[i-1]+1 {
			t.Fatalf("ticks after restore jump from %d to %d", after[i-1], n)
		}
		if afterDisk[i] != n {
			t.Fatalf("after restore the guest wrote %d to its disk and read %d back", n, afterDisk[i])
		}
	}
	q.wantState(client.StateRunning)
}

func lastLines(s string, n int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(l[max(0, len(l)-n):], "\n")
}

// TestSnapshotRestoreCycles: one VMM restores a guest, lets it count,
// pauses, snapshots it and deletes it, ten times over (each cycle from
// the previous cycle's snapshot): the guest counts on across every cycle
// and the VMM's threads, fds and RSS stay flat.
func TestSnapshotRestoreCycles(t *testing.T) {
	_, p := startDiskTicker(t, 3)
	maxTick := func() int {
		n, _ := ticks(t, p.output())
		return n[len(n)-1]
	}
	var first usage
	for i := range 10 {
		p.do("pause", p.api.Pause)
		last := maxTick()
		snap := t.TempDir()
		p.do("snapshot", func(ctx context.Context) error { return p.api.Snapshot(ctx, "file://"+snap) })
		p.do("delete", p.api.Delete)
		u := p.settledUsage()
		t.Logf("cycle %d: tick %d, threads %d, fds %d, RSS %d kB", i, last, u.threads, u.fds, u.rssKB)
		if i == 1 {
			first = u // after the first restore: the runtime has its threads
		}
		if i > 1 && (u.threads > first.threads+2 || u.fds > first.fds) {
			t.Fatalf("cycle %d: threads %d fds %d, after cycle 1 %d and %d", i, u.threads, u.fds, first.threads, first.fds)
		}
		body, _ := json.Marshal(map[string]any{"source_url": "file://" + snap, "resume": true})
		p.do("restore", func(ctx context.Context) error { return p.api.Restore(ctx, body) })
		p.waitFor(fmt.Sprintf("ticks past %d after restore %d", last, i), bootTimeout, func() bool { return maxTick() >= last+3 })
	}
	if boots(p.output()) != 1 {
		t.Fatalf("the guest booted again during the cycles")
	}
}
