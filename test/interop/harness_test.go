package interop

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	chclient "github.com/kata-containers/kata-containers/src/runtime/virtcontainers/pkg/cloud-hypervisor/client"
	"github.com/nimbus-vmm/nimbus/internal/api"
	"github.com/nimbus-vmm/nimbus/internal/events"
	"github.com/nimbus-vmm/nimbus/internal/vmm"
	"github.com/nimbus-vmm/nimbus/internal/vmm/vmmtest"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// nimbus is an in-process Nimbus: the real API server and control loop,
// with the vmmtest machine in place of KVM, on a fresh Unix socket.
type nimbus struct {
	sock    string
	ctl     *vmm.Controller
	factory *vmmtest.Factory
	runDone chan error
}

// handlerFunc lets a test put a shim between the server and the loop.
type handlerFunc func(ctx context.Context, cmd vmm.Command) (any, error)

func (f handlerFunc) Do(ctx context.Context, cmd vmm.Command) (any, error) { return f(ctx, cmd) }

// startNimbus starts the server and loop; wrap, when set, builds the
// handler the server uses from the controller. Both stop at cleanup (or
// earlier, on vmm.shutdown, for the loop).
func startNimbus(t *testing.T, wrap func(vmm.Handler) vmm.Handler) *nimbus {
	t.Helper()
	dir, err := os.MkdirTemp("", "interop") // sun_path is 108 bytes; t.TempDir can be longer
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	mon := events.New(nil)
	f := &vmmtest.Factory{Hotplug: true}
	c := vmm.New(vmm.Options{
		Factory: f.New, Events: mon, Version: "54.0.0", BuildVersion: "v54.0.0-nimbus",
		Signals: make(chan os.Signal), Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	n := &nimbus{sock: filepath.Join(dir, "clh-api.sock"), ctl: c, factory: f, runDone: make(chan error, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	go func() { n.runDone <- c.Run(ctx) }()

	l, err := api.Listen(n.sock)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	var h vmm.Handler = c
	if wrap != nil {
		h = wrap(c)
	}
	srv := api.New(h, api.Options{Events: api.Events[events.Event](mon)})
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	t.Cleanup(func() {
		if err := srv.Shutdown(context.Background()); err != nil {
			t.Errorf("server Shutdown: %v", err)
		}
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
		cancel()
		<-n.runDone
		mon.Close()
	})
	return n
}

// kataClient builds Kata's API client exactly as clh.go's CreateVM does
// (a fresh net.DialUnix per connection, default Transport settings), with
// every exchange passed through the OpenAPI cross-check of openapi_test.go.
func kataClient(t *testing.T, sock string) *chclient.DefaultApiService {
	cfg := chclient.NewConfiguration()
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, path string) (net.Conn, error) {
			addr, err := net.ResolveUnixAddr("unix", sock)
			if err != nil {
				return nil, err
			}
			return net.DialUnix("unix", nil, addr)
		},
	}
	t.Cleanup(tr.CloseIdleConnections)
	cfg.HTTPClient = &http.Client{Transport: &specCheck{t: t, next: tr}}
	return chclient.NewAPIClient(cfg).DefaultApi
}
