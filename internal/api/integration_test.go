package api

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"testing"

	"github.com/nimbus-vmm/nimbus/internal/events"
	"github.com/nimbus-vmm/nimbus/internal/vmm"
	"github.com/nimbus-vmm/nimbus/internal/vmm/vmmtest"
)

// TestWithController drives the real control loop (with its Machine test
// double) through the API the way Kata does: ping, create, info=Created,
// add-net with tap fds on one connection, boot, info=Running, pause twice,
// resume, vmm.shutdown.
func TestWithController(t *testing.T) {
	mon := events.New(nil)
	defer mon.Close()
	c := vmm.New(vmm.Options{
		Factory: (&vmmtest.Factory{}).New, Events: mon, Version: "54.0.0", BuildVersion: "v54.0.0-nimbus",
		Signals: make(chan os.Signal), Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	runDone := make(chan error, 1)
	go func() { runDone <- c.Run(context.Background()) }()
	ts := startServer(t, c, Options{Events: Events[events.Event](mon)})
	cl := ts.client(t)

	r := do(t, cl, "GET", "vmm.ping", nil)
	if r.StatusCode != 200 || !bytes.Contains(r.body, []byte(`"version":"54.0.0"`)) {
		t.Fatalf("ping: %d %s", r.StatusCode, r.body)
	}
	wantResp(t, do(t, cl, "GET", "vm.info", nil), 404, `["Error from API","The VM info is not available","VM is not created"]`)
	cfg := []byte(`{"cpus":{"boot_vcpus":2,"max_vcpus":2},"memory":{"size":268435456},"payload":{"kernel":"/k","cmdline":"console=ttyS0"},"platform":{"num_pci_segments":2}}`)
	wantResp(t, do(t, cl, "PUT", "vm.create", cfg, "Content-Type", "application/json"), 204, "")
	wantResp(t, do(t, cl, "PUT", "vm.create", cfg), 500, `["Error from API","The VM could not be created","VM is already created"]`)
	if r := do(t, cl, "GET", "vm.info", nil); !bytes.Contains(r.body, []byte(`"state":"Created"`)) {
		t.Errorf("info after create: %d %s", r.StatusCode, r.body)
	}

	rc := dialRaw(t, ts.path)
	for i := 0; i < 2; i++ {
		fds, _ := pipeFds(t, 1)
		body := fmt.Sprintf(`{"mac":"12:34:56:78:90:0%d","ip":"192.168.249.1","mask":"255.255.255.0","num_queues":2,"queue_size":256}`, i)
		if r := rc.roundTrip(t, addNetRequest(body), fds...); r.StatusCode != 204 {
			t.Errorf("cold add-net %d: %d %s", i, r.StatusCode, r.body)
		}
	}

	wantResp(t, do(t, cl, "PUT", "vm.boot", nil), 204, "")
	if r := do(t, cl, "GET", "vm.info", nil); !bytes.Contains(r.body, []byte(`"state":"Running"`)) {
		t.Errorf("info after boot: %d %s", r.StatusCode, r.body)
	}
	// The test machine keeps no counters: still 200 with an object.
	wantResp(t, do(t, cl, "GET", "vm.counters", nil), 200, `{}`)
	wantResp(t, do(t, cl, "PUT", "vm.pause", nil), 204, "")
	if r := do(t, cl, "PUT", "vm.pause", nil); r.StatusCode != 500 || !bytes.HasPrefix(r.body, []byte(`["Error from API","The VM could not be paused"`)) {
		t.Errorf("second pause: %d %s", r.StatusCode, r.body)
	}
	wantResp(t, do(t, cl, "PUT", "vm.resume", nil), 204, "")
	// A restore whose fd count does not match net_fds is a bad request,
	// checked before the VM state.
	fds, _ := pipeFds(t, 1)
	restore := `{"source_url":"file:///snap","net_fds":[{"id":"net0","num_fds":2}]}`
	r = rc.roundTrip(t, []byte(fmt.Sprintf("PUT /api/v1/vm.restore HTTP/1.1\r\nHost: localhost\r\nContent-Length: %d\r\n\r\n%s", len(restore), restore)), fds...)
	wantResp(t, r, 400, `["Error from API","The VM could not be restored","Number of FDs expected: 2, but received: 1"]`)
	wantResp(t, do(t, cl, "PUT", "vmm.shutdown", nil), 200, "")
	if err := <-runDone; err != nil {
		t.Errorf("Run: %v", err)
	}
}
