package lifecycle

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nimbus-vmm/nimbus/pkg/client"
)

// memoryChurn fills a 32 MiB buffer in the guest's RAM (tmpfs) once and
// prints its checksum every second ("SUM <sha256>"), while a second loop
// keeps rewriting another 16 MiB so that every precopy round has dirty
// memory to send, and the ticker counts.
const memoryChurn = `dd if=/dev/urandom of=/tmp/buf bs=1M count=32 2>/dev/null
(while :; do dd if=/dev/urandom of=/tmp/churn bs=1M count=16 2>/dev/null; done) &
(while :; do echo "SUM $(sha256sum /tmp/buf | cut -d' ' -f1)"; sleep 1; done) &
` + ticker

// sums are the guest's "SUM <hash>" lines.
func sums(out string) []string {
	var s []string
	for _, l := range strings.Split(out, "\n") {
		if h, ok := strings.CutPrefix(l, "SUM "); ok && len(h) == 64 {
			s = append(s, h)
		}
	}
	return s
}

// TestLiveMigration migrates a running guest that keeps writing memory
// from one Nimbus process to another, over a Unix socket and over TCP on
// loopback (precopy rounds), and locally (shared RAM handed over as
// memfds): vm.receive-migration blocks until the end, vm.send-migration
// returns at once, the source VMM exits, and on the destination the guest
// runs on (its tick count goes on, it does not boot again) with the
// checksum of its memory buffer unchanged. Before that, over unix, a
// migration to a socket nobody listens on fails and the guest runs on.
func TestLiveMigration(t *testing.T) {
	for _, transport := range []string{"unix", "tcp", "local"} {
		t.Run(transport, func(t *testing.T) { liveMigration(t, transport) })
	}
}

func liveMigration(t *testing.T, transport string) {
	g := newGuest(t)
	mem := "size=512M"
	if transport == "local" {
		mem += ",shared=on"
	}
	p := g.start(t, cmdline(true, memoryChurn), "--memory", mem)
	p.waitBoots(1)
	p.waitFor("the guest's checksum", bootTimeout, func() bool { return len(sums(p.output())) >= 2 && lastTick(p.output()) >= 5 })
	want := sums(p.output())[0]
	if transport == "unix" {
		// A migration to nowhere fails in its worker; the guest runs on.
		body, _ := json.Marshal(map[string]any{"destination_url": "unix:" + filepath.Join(p.dir, "nobody.sock")})
		p.do("send-migration to nowhere", func(ctx context.Context) error { return p.api.SendMigration(ctx, body) })
		p.waitFor("migration-failed", apiTimeout, func() bool { return strings.Contains(strings.Join(p.events(), ","), "vm migration-failed") })
		p.wantState(client.StateRunning)
		n := lastTick(p.output())
		p.waitFor("ticks after the failed migration", apiTimeout, func() bool { return lastTick(p.output()) > n+2 })
	}

	dir, err := os.MkdirTemp("", "nimbus-mig")
	if err != nil {
		t.Fatal(err)
	}
	q := startVMMSerial(t, dir, p.serial, filepath.Join(g.assets.BinDir, "nimbus"))
	url := "unix:" + filepath.Join(dir, "mig.sock")
	if transport == "tcp" {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		url = "tcp:" + l.Addr().String()
		l.Close()
	}
	recv := q.receiveMigration(url)
	before := lastTick(p.output())
	start := time.Now()
	body, _ := json.Marshal(map[string]any{"destination_url": url, "local": transport == "local"})
	p.do("send-migration", func(ctx context.Context) error { return p.api.SendMigration(ctx, body) })
	select {
	case err := <-recv:
		if err != nil {
			t.Fatalf("vm.receive-migration: %v", err)
		}
	case <-time.After(5 * time.Minute):
		t.Fatal("the migration did not finish")
	}
	t.Logf("migration over %s took %v (send-migration to receive-migration's reply)", transport, time.Since(start))
	if code := p.waitExit(exitTimeout); code != 0 {
		t.Fatalf("the source VMM exited %d after the migration", code)
	}
	wantSrc := "vmm starting,vm booting,vm booted,vm migration-started,vm migration-finished,vm shutdown,vm deleted,vmm shutdown"
	if transport == "unix" {
		wantSrc = strings.Replace(wantSrc, "booted,", "booted,vm migration-started,vm migration-failed,", 1)
	}
	srcEvents := func() string {
		var evs []string
		for _, e := range vmEvents(p.events()) {
			if e != "vm migration-memory-iteration" {
				evs = append(evs, e)
			}
		}
		return strings.Join(evs, ",")
	}
	p.waitFor("the source's events", apiTimeout, func() bool { return srcEvents() == wantSrc })
	q.wantState(client.StateRunning)
	for _, e := range []string{"vm migration-receive-ready", "vm migration-receive-started", "vm migration-receive-finished"} {
		if !strings.Contains(strings.Join(q.events(), ","), e) {
			t.Errorf("destination events %q lack %q", q.events(), e)
		}
	}
	// The destination truncated the serial file: what follows is its own.
	q.waitFor("ticks on the destination", bootTimeout, func() bool { return lastTick(q.output()) > before+5 && len(sums(q.output())) >= 2 })
	out := q.output()
	if boots(out) > 1 {
		t.Fatalf("the guest booted again on the destination:\n%s", out)
	}
	for _, s := range sums(out) {
		if s != want {
			t.Fatalf("the guest's buffer checksum changed: %s, was %s\n%s", s, want, out)
		}
	}
	iters := 0
	for _, e := range p.events() {
		if e == "vm migration-memory-iteration" {
			iters++
		}
	}
	t.Logf("precopy rounds: %d; source log:\n%s", iters, grepLines(p.processLog(), "Migration"))
}

// receiveMigration starts vm.receive-migration on url, which returns only
// when the migration is over (its result comes on the channel), and waits
// until the VMM listens.
func (p *vmmProc) receiveMigration(url string) <-chan error {
	recv := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		body, _ := json.Marshal(map[string]string{"receiver_url": url})
		recv <- p.api.ReceiveMigration(ctx, body)
	}()
	p.waitFor("the destination to listen", apiTimeout, func() bool {
		return strings.Contains(strings.Join(p.events(), ","), "vm migration-receive-ready")
	})
	return recv
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
