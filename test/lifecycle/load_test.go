package lifecycle

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nimbus-vmm/nimbus/pkg/client"
)

// loadClients is how many API clients TestAPILoad runs at once.
const loadClients = 64

// loadDuration is how long TestAPILoad runs: 20 s in `make test`,
// NIMBUS_LOAD_SECONDS (60 for the figure) otherwise.
func loadDuration(t *testing.T) time.Duration {
	if s := os.Getenv("NIMBUS_LOAD_SECONDS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 {
			t.Fatalf("NIMBUS_LOAD_SECONDS=%q", s)
		}
		return time.Duration(n) * time.Second
	}
	return 20 * time.Second
}

var goroutineHeader = regexp.MustCompile(`(?m)^goroutine \d+ `)

// TestAPILoad: 64 API clients, each on its own connections, hammer a
// running guest's VMM with vm.info, vm.counters and vmm.ping while one of
// them pauses and resumes the VM in a loop. Every request succeeds, the
// guest keeps ticking, and the VMM ends with the fds and threads it had
// before the load (settled) and about its threads; its goroutines, counted from the runtime's
// SIGQUIT dump at the end, are as few as an idle VMM's.
func TestAPILoad(t *testing.T) {
	dur := loadDuration(t)
	g := newGuest(t)
	p := g.start(t, cmdline(true, ticker))
	p.waitBoots(1)
	p.waitOutput("guest ticking", 0, bootTimeout, "TICK 1 ")
	before := p.usage()

	ctx, cancel := context.WithTimeout(context.Background(), dur)
	defer cancel()
	var requests, pauses atomic.Int64
	errs := make(chan error, loadClients)
	var wg sync.WaitGroup
	for i := range loadClients {
		c := client.New(p.sock)
		wg.Go(func() {
			for n := 0; ctx.Err() == nil; n++ {
				rctx, rcancel := context.WithTimeout(context.Background(), apiTimeout)
				var err error
				switch {
				case i == 0 && n%2 == 0:
					err = c.Pause(rctx)
					pauses.Add(1)
				case i == 0:
					err = c.Resume(rctx)
				case n%3 == 0:
					_, err = c.Info(rctx)
				case n%3 == 1:
					_, err = c.Counters(rctx)
				default:
					_, err = c.Ping(rctx)
				}
				rcancel()
				if err != nil {
					errs <- fmt.Errorf("client %d request %d: %w", i, n, err)
					return
				}
				requests.Add(1)
			}
			if i == 0 { // leave it running
				if info, err := c.Info(context.Background()); err == nil && info.State == "Paused" {
					if err := c.Resume(context.Background()); err != nil {
						errs <- err
					}
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	t.Logf("%d clients for %v: %d requests (%.0f/s), %d pause/resume cycles",
		loadClients, dur, requests.Load(), float64(requests.Load())/dur.Seconds(), pauses.Load())
	p.wantState("Running")
	mark := lastTick(p.output())
	p.waitFor("the guest to tick after the load", apiTimeout, func() bool { return lastTick(p.output()) > mark })

	// Connections close asynchronously; let the counts settle.
	var after usage
	p.waitFor("fds to settle", 10*time.Second, func() bool {
		after = p.usage()
		return after.fds <= before.fds
	})
	t.Logf("before: %d fds, %d threads, RSS %d kB; after: %d fds, %d threads, RSS %d kB",
		before.fds, before.threads, before.rssKB, after.fds, after.threads, after.rssKB)
	// The runtime keeps threads it made for blocking calls, parked; a
	// few more under load are expected, one per client would not be.
	if after.threads > before.threads+8 {
		t.Errorf("threads: %d before, %d after the load", before.threads, after.threads)
	}

	// The runtime dumps every goroutine on SIGQUIT and exits.
	if err := p.cmd.Process.Signal(syscall.SIGQUIT); err != nil {
		t.Fatal(err)
	}
	p.waitExit(apiTimeout)
	n := len(goroutineHeader.FindAllString(p.processLog(), -1))
	t.Logf("goroutines at the end: %d", n)
	// An idle VMM with one vCPU and a serial file has about 15; a leak of
	// one per request or connection would be thousands.
	if n == 0 || n > 40 {
		t.Errorf("%d goroutines after the load", n)
	}
}
