package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nimbus-vmm/nimbus/internal/api"
	"github.com/nimbus-vmm/nimbus/internal/events"
	"github.com/nimbus-vmm/nimbus/internal/syncbuf"
	"github.com/nimbus-vmm/nimbus/internal/vmm"
	"github.com/nimbus-vmm/nimbus/internal/vmm/vmmtest"
	"github.com/nimbus-vmm/nimbus/pkg/client"
)

// vmmUnderTest is the real API server and control loop, in process, with
// the control loop's test-double machine instead of KVM.
type vmmUnderTest struct {
	socket  string
	monitor *events.Monitor
	ctrl    *vmm.Controller
	runDone chan struct{} // closed when the control loop's Run returns
	runErr  error         // Run's result, once runDone is closed
	stop    func()
}

func startVMM(t *testing.T) *vmmUnderTest {
	t.Helper()
	v := &vmmUnderTest{socket: filepath.Join(t.TempDir(), "nimbus.sock"), runDone: make(chan struct{})}
	v.monitor = events.New(nil)
	v.ctrl = vmm.New(vmm.Options{
		Factory:      (&vmmtest.Factory{}).New,
		Events:       v.monitor,
		Version:      "54.0.0",
		BuildVersion: "v-e2e",
		Signals:      make(chan os.Signal), // never: keep the process's signals alone
	})
	ctx, cancel := context.WithCancel(context.Background())
	go func() { v.runErr = v.ctrl.Run(ctx); close(v.runDone) }()

	ln, err := api.Listen(v.socket)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	srv := api.New(v.ctrl, api.Options{Events: api.Events[events.Event](v.monitor)})
	served := make(chan struct{})
	go func() { defer close(served); srv.Serve(ln) }()
	var once sync.Once
	v.stop = func() {
		once.Do(func() {
			srv.Close()
			<-served
			ln.Close()
			cancel()
			<-v.runDone
			v.monitor.Close()
		})
	}
	t.Cleanup(v.stop)
	return v
}

// TestEndToEnd drives the real server and control loop with nimbus-remote's
// run function, as a user drives Cloud Hypervisor with ch-remote.
func TestEndToEnd(t *testing.T) {
	v := startVMM(t)
	cli := func(args ...string) result {
		t.Helper()
		return runCLI(t, "", append([]string{"--api-socket", v.socket}, args...)...)
	}
	mustOK := func(r result, what string) {
		t.Helper()
		if r.code != 0 || r.stderr != "" {
			t.Fatalf("%s: exit %d, stdout %q, stderr:\n%s", what, r.code, r.stdout, r.stderr)
		}
	}
	info := func() (state string, cfg map[string]json.RawMessage) {
		t.Helper()
		r := cli("info")
		mustOK(r, "info")
		var vi client.VmInfo
		if err := json.Unmarshal([]byte(r.stdout), &vi); err != nil {
			t.Fatalf("info output %q: %v", r.stdout, err)
		}
		if err := json.Unmarshal(vi.Config, &cfg); err != nil {
			t.Fatalf("info config %s: %v", vi.Config, err)
		}
		return vi.State, cfg
	}
	diskIDs := func(cfg map[string]json.RawMessage) []string {
		var disks []struct {
			ID   string `json:"id"`
			Path string `json:"path"`
		}
		if raw, ok := cfg["disks"]; ok {
			json.Unmarshal(raw, &disks)
		}
		var ids []string
		for _, d := range disks {
			ids = append(ids, d.ID+"="+d.Path)
		}
		return ids
	}

	// ping
	r := cli("ping")
	mustOK(r, "ping")
	var ping client.PingResponse
	if err := json.Unmarshal([]byte(r.stdout), &ping); err != nil || ping.Version != "54.0.0" ||
		ping.BuildVersion != "v-e2e" || ping.Pid != int64(os.Getpid()) || !strings.HasSuffix(r.stdout, "}\n") {
		t.Fatalf("ping output %q (%v)", r.stdout, err)
	}

	// info before create: upstream's 404 chain.
	r = cli("info")
	if want := "Error: nimbus-remote exited with the following chain of errors:\n" +
		"  0: http client error\n  1: Server responded with NotFound\n  2: Error from API\n"; r.code != 1 ||
		!strings.HasPrefix(r.stderr, want) || !strings.Contains(r.stderr, "VM is not created") {
		t.Fatalf("info before create: exit %d, stderr:\n%s", r.code, r.stderr)
	}

	// create from stdin (the default "-")
	vmJSON := `{"cpus":{"boot_vcpus":1,"max_vcpus":1},"memory":{"size":536870912},"payload":{"kernel":"/nonexistent/vmlinux"}}`
	r = runCLI(t, vmJSON, "--api-socket", v.socket, "create")
	mustOK(r, "create")
	if r.stdout != "" {
		t.Errorf("create printed %q", r.stdout)
	}
	if state, _ := info(); state != client.StateCreated {
		t.Fatalf("state after create = %s", state)
	}

	// create twice: 500, "VM is already created".
	r = runCLI(t, vmJSON, "--api-socket", v.socket, "create")
	if r.code != 1 || !strings.Contains(r.stderr, "  1: Server responded with InternalServerError\n") ||
		!strings.Contains(r.stderr, "VM is already created") {
		t.Errorf("create twice: exit %d, stderr:\n%s", r.code, r.stderr)
	}

	// Cold add-disk: 204, no output, and info shows the disk as sent.
	r = cli("add-disk", "path=/tmp/e2e-disk.img,id=mydisk,readonly=on")
	mustOK(r, "add-disk")
	if r.stdout != "" {
		t.Errorf("cold add-disk printed %q", r.stdout)
	}
	_, cfg := info()
	if got := diskIDs(cfg); len(got) != 1 || got[0] != "mydisk=/tmp/e2e-disk.img" {
		t.Fatalf("disks after add-disk = %v (config %s)", got, cfg["disks"])
	}

	// remove-device by id, then it is gone; a second removal is a 404.
	mustOK(cli("remove-device", "mydisk"), "remove-device")
	if _, cfg = info(); len(diskIDs(cfg)) != 0 {
		t.Fatalf("disks after remove-device = %v", diskIDs(cfg))
	}
	r = cli("remove-device", "mydisk")
	if r.code != 1 || !strings.Contains(r.stderr, "  1: Server responded with NotFound\n") {
		t.Errorf("second remove-device: exit %d, stderr:\n%s", r.code, r.stderr)
	}

	// Follow the event stream while booting.
	evOut := &syncbuf.Buffer{}
	evCtx, evCancel := context.WithCancel(context.Background())
	defer evCancel()
	evDone := make(chan int, 1)
	go func() {
		var errb bytes.Buffer
		evDone <- run(evCtx, []string{"nimbus-remote", "--api-socket", v.socket, "events"}, nil, evOut, &errb)
	}()
	// The subscription starts asynchronously: emit a marker until the
	// stream shows it, so the boot events below cannot be missed.
	waitFor(t, "the event stream to show the sync marker", func() bool {
		v.monitor.Emit("test", "sync", nil)
		return strings.Contains(evOut.String(), `"event":"sync"`)
	})

	mustOK(cli("boot"), "boot")
	if state, _ := info(); state != client.StateRunning {
		t.Fatalf("state after boot = %s", state)
	}
	waitFor(t, "the booted event", func() bool {
		return strings.Contains(evOut.String(), `"source":"vm","event":"booted"`)
	})
	evCancel()
	if code := <-evDone; code != 0 {
		t.Errorf("events exited %d", code)
	}
	t.Logf("events:\n%s", evOut.String())
	lines := strings.Split(strings.TrimSuffix(evOut.String(), "\n"), "\n")
	var sawBooting bool
	for _, l := range lines {
		var ev client.Event
		if err := json.Unmarshal([]byte(l), &ev); err != nil {
			t.Fatalf("events line %q: %v", l, err)
		}
		if ev.Source == "vm" && ev.Event == "booting" {
			sawBooting = true
		}
		if ev.Source == "vm" && ev.Event == "booted" && !sawBooting {
			t.Errorf("booted before booting: %q", evOut.String())
		}
	}

	// delete is idempotent; then info is a 404 again.
	mustOK(cli("delete"), "delete")
	mustOK(cli("delete"), "delete twice")
	if r = cli("info"); r.code != 1 || !strings.Contains(r.stderr, "Server responded with NotFound") {
		t.Errorf("info after delete: exit %d, stderr:\n%s", r.code, r.stderr)
	}

	// shutdown-vmm: 200 with an empty body (ch-remote prints an empty
	// line), and the control loop stops.
	r = cli("shutdown-vmm")
	mustOK(r, "shutdown-vmm")
	if r.stdout != "\n" {
		t.Errorf("shutdown-vmm printed %q, want an empty line", r.stdout)
	}
	<-v.runDone
	if v.runErr != nil || v.ctrl.Reason() != vmm.StopVMMShutdown {
		t.Errorf("Run returned %v, reason %v", v.runErr, v.ctrl.Reason())
	}
}

// waitFor polls cond until it holds, failing the test (instead of hanging
// it) if it still does not after a limit far beyond what a healthy run
// needs.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	const limit = 30 * time.Second
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s after %v", what, limit)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
