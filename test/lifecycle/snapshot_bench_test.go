package lifecycle

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestSnapshotRestoreFigures reports (it asserts no times) how long a
// snapshot and a restore take for guests of 512 MiB and 2 GiB with three
// quarters of their RAM in use, and how long live migrations of them take
// (total and downtime). It runs only with NIMBUS_SNAPSHOT_FIGURES=1
// (make bench-snapshot): each size boots three nested guests.
func TestSnapshotRestoreFigures(t *testing.T) {
	if os.Getenv("NIMBUS_SNAPSHOT_FIGURES") == "" {
		t.Skip("set NIMBUS_SNAPSHOT_FIGURES=1 for the snapshot, restore and migration figures")
	}
	for _, mib := range []int{512, 2048} {
		t.Run(fmt.Sprintf("%dMiB", mib), func(t *testing.T) { snapshotFigures(t, mib) })
	}
}

// fill writes a non-zero pattern over n MiB of a tmpfs of its own (guest
// RAM; the root file system stops at half of RAM), so that neither
// sparse snapshots nor zero-page tricks skip it, and reports the size.
func fill(mib int) string {
	return fmt.Sprintf(`mkdir -p /fill && mount -t tmpfs -o size=%[1]dM tmpfs /fill
yes nimbus-snapshot-figures | dd of=/fill/f bs=1M count=%[1]d iflag=fullblock 2>/dev/null
echo "FILLED $(wc -c < /fill/f)"
`, mib) + ticker
}

func snapshotFigures(t *testing.T, mib int) {
	g := newGuest(t)
	used := mib * 3 / 4
	p := g.start(t, cmdline(true, fill(used)), "--memory", fmt.Sprintf("size=%dM", mib))
	p.waitBoots(1)
	p.waitFor("the guest's RAM filled", 5*time.Minute, func() bool { return strings.Contains(p.output(), "FILLED") })
	if want := fmt.Sprintf("FILLED %d", used<<20); !strings.Contains(p.output(), want) {
		t.Fatalf("the guest did not fill %d MiB:\n%s", used, p.output())
	}
	p.waitFor("ticks", bootTimeout, func() bool { return lastTick(p.output()) >= 2 })
	p.do("pause", p.api.Pause)
	snap := t.TempDir()
	t0 := time.Now()
	p.do("snapshot", func(ctx context.Context) error { return p.api.Snapshot(ctx, "file://"+snap) })
	snapTook := time.Since(t0)
	fi, _ := os.Stat(filepath.Join(snap, "memory-ranges"))
	p.do("vmm.shutdown", p.api.ShutdownVMM)
	p.waitExit(exitTimeout)

	q := startVMMSerial(t, mustTemp(t), p.serial, filepath.Join(g.assets.BinDir, "nimbus"))
	body, _ := json.Marshal(map[string]any{"source_url": "file://" + snap})
	t0 = time.Now()
	q.do("restore", func(ctx context.Context) error { return q.api.Restore(ctx, body) })
	restoreTook := time.Since(t0)
	last := lastTick(q.output())
	q.do("resume", q.api.Resume)
	q.waitFor("ticks after restore", bootTimeout, func() bool { return lastTick(q.output()) > last+2 })
	t.Logf("%d MiB guest, %d MiB in use: snapshot %v (memory-ranges %d MiB apparent), restore %v",
		mib, used, snapTook.Round(time.Millisecond), fi.Size()>>20, restoreTook.Round(time.Millisecond))

	// The snapshot's files live in the sandbox's RAM: make room for two
	// guests at once. Then migrate it on over a Unix socket.
	os.RemoveAll(snap)
	r := startVMMSerial(t, mustTemp(t), p.serial, filepath.Join(g.assets.BinDir, "nimbus"))
	url := "unix:" + filepath.Join(r.dir, "mig.sock")
	recv := r.receiveMigration(url)
	b, _ := json.Marshal(map[string]any{"destination_url": url})
	t0 = time.Now()
	q.do("send-migration", func(ctx context.Context) error { return q.api.SendMigration(ctx, b) })
	if err := <-recv; err != nil {
		t.Fatalf("receive-migration: %v", err)
	}
	t.Logf("%d MiB guest: migration %v until receive-migration returned; source: %s", mib,
		time.Since(t0).Round(time.Millisecond), grepLines(q.processLog(), "Migration complete"))
	q.waitExit(exitTimeout)
}

func mustTemp(t *testing.T) string {
	d, err := os.MkdirTemp("", "nimbus-fig")
	if err != nil {
		t.Fatal(err)
	}
	return d
}
