package api

import (
	"sync"
	"testing"

	"github.com/nimbus-vmm/nimbus/internal/vmm"
	"go.uber.org/goleak"
)

// Every test must leave no goroutine behind: server connections, event
// streams and client transports are all stopped by their owners.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestConcurrentClients has 64 clients hammer ping and info at once, then
// checks every reply and that no fds are left open.
func TestConcurrentClients(t *testing.T) {
	h := stateful()
	var mu sync.Mutex // stateful's create flag is not meant for concurrent use
	locked := &fakeHandler{reply: func(c vmm.Command) (any, error) {
		mu.Lock()
		defer mu.Unlock()
		return h.reply(c)
	}}
	before := openFds(t)
	func() {
		ts := startServer(t, locked, Options{})
		const clients, rounds = 64, 40
		var wg sync.WaitGroup
		errs := make(chan string, clients)
		for i := 0; i < clients; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				// One connection per client, kept alive across its requests.
				rc := dialRaw(t, ts.path)
				for j := 0; j < rounds; j++ {
					r := rc.roundTrip(t, []byte("GET /api/v1/vmm.ping HTTP/1.1\r\nHost: localhost\r\n\r\n"))
					if r.StatusCode != 200 {
						errs <- "ping " + r.Status
						return
					}
					r = rc.roundTrip(t, []byte("GET /api/v1/vm.info HTTP/1.1\r\nHost: localhost\r\n\r\n"))
					if r.StatusCode != 404 {
						errs <- "info " + r.Status
						return
					}
				}
				rc.Close()
			}()
		}
		wg.Wait()
		close(errs)
		for e := range errs {
			t.Error(e)
		}
		if n := len(locked.commands()); n != clients*rounds*2 {
			t.Errorf("%d commands, want %d", n, clients*rounds*2)
		}
		ts.Shutdown(t.Context())
	}()
	if n := openFds(t); n > before {
		t.Errorf("%d fds open after the run, %d before", n, before)
	}
}
