package api

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/nimbus-vmm/nimbus/internal/config"
	"github.com/nimbus-vmm/nimbus/internal/vmm"
)

// stateful is a tiny control loop stand-in with upstream's create/info
// semantics, enough for the curl-script cases.
func stateful() *fakeHandler {
	created := false
	return &fakeHandler{reply: func(c vmm.Command) (any, error) {
		switch c := c.(type) {
		case vmm.Ping:
			return &vmm.PingResponse{BuildVersion: "v0.1.0", Version: "0.1.0", Pid: 42, Features: []string{"kvm"}}, nil
		case vmm.CreateVM:
			if created {
				return nil, fmt.Errorf("The VM could not be created: %w", vmm.ErrAlreadyCreated)
			}
			created = true
			return nil, nil
		case vmm.Info:
			if !created {
				return nil, vmm.ErrNotCreated // the server adds the ApiError text
			}
			cfg := config.DefaultVmConfig()
			return &vmm.VmInfo{Config: &cfg, State: vmm.StateCreated, MemoryActualSize: cfg.Memory.Size}, nil
		case vmm.BootVM:
			if !created {
				return nil, fmt.Errorf("The VM could not boot: %w", vmm.ErrMissingConfig)
			}
			return nil, nil
		case vmm.Resize:
			return nil, fmt.Errorf("CPU manager: %w", vmm.ErrBusy)
		default:
			_ = c
			return nil, nil
		}
	}}
}

func wantResp(t *testing.T, r response, status int, body string) {
	t.Helper()
	if r.StatusCode != status || string(r.body) != body {
		t.Errorf("%s %s: got %d %q, want %d %q", r.Request.Method, r.Request.URL.Path, r.StatusCode, r.body, status, body)
	}
	if got := r.Header.Get("Server"); got != ServerHeader {
		t.Errorf("Server header %q", got)
	}
	if r.Header.Get("Date") != "" {
		t.Errorf("unexpected Date header")
	}
	ct, hasCT := r.Header["Content-Type"]
	switch {
	case status == http.StatusNoContent:
		if hasCT || r.Header.Get("Content-Length") != "" {
			t.Errorf("204 with Content-Type %q / Content-Length %q", ct, r.Header.Get("Content-Length"))
		}
	default:
		if !hasCT || ct[0] != "application/json" {
			t.Errorf("status %d: Content-Type %q, want application/json", status, ct)
		}
		if r.ContentLength != int64(len(body)) {
			t.Errorf("Content-Length %d, want %d", r.ContentLength, len(body))
		}
	}
}

func TestCurlScript(t *testing.T) {
	ts := startServer(t, stateful(), Options{})
	c := ts.client(t)

	wantResp(t, do(t, c, "GET", "vmm.ping", nil), 200, `{"build_version":"v0.1.0","version":"0.1.0","pid":42,"features":["kvm"]}`)
	wantResp(t, do(t, c, "GET", "vm.info", nil), 404, `["Error from API","The VM info is not available","VM is not created"]`)
	wantResp(t, do(t, c, "PUT", "vm.boot", nil), 404, `["Error from API","The VM could not boot","VM config is missing"]`)
	create := []byte(`{"cpus":{"boot_vcpus":1,"max_vcpus":1},"payload":{"kernel":"/k"}}`)
	wantResp(t, do(t, c, "PUT", "vm.create", create, "Content-Type", "application/json"), 204, "")
	wantResp(t, do(t, c, "PUT", "vm.create", create), 500, `["Error from API","The VM could not be created","VM is already created"]`)
	r := do(t, c, "GET", "vm.info", nil)
	if r.StatusCode != 200 || !bytes.Contains(r.body, []byte(`"state":"Created"`)) {
		t.Errorf("vm.info after create: %d %s", r.StatusCode, r.body)
	}
	wantResp(t, do(t, c, "PUT", "vm.boot", nil), 204, "")
	wantResp(t, do(t, c, "GET", "vm.nosuch", nil), 404, `["Not Found"]`)
	wantResp(t, do(t, c, "GET", "/../vm.info", nil), 404, `["Not Found"]`)
	wantResp(t, do(t, c, "PUT", "vm.resize", []byte(`{"desired_vcpus":1}`)), 429, `["Error from API","The VM could not be resized","CPU manager","operation pending, retry later"]`)
	wantResp(t, do(t, c, "PUT", "vm.create", []byte(`{"cpus":{"boot_vcpus":"one","max_vcpus":1}}`)), 400,
		`["Failed to deserialize JSON","cannot unmarshal string into field cpus.boot_vcpus of type uint32"]`)
	wantResp(t, do(t, c, "PUT", "vm.resize-disk", []byte(`{"id":"d"}`)), 400, "[\"Failed to deserialize JSON\",\"missing field `desired_size`\"]")
	wantResp(t, do(t, c, "PUT", "vm.snapshot", []byte(`null`)), 400, `["Failed to deserialize JSON","invalid type: null, expected struct Snapshot"]`)
	wantResp(t, do(t, c, "PUT", "vmm.shutdown", nil), 200, "")
}

func TestWrongMethod(t *testing.T) {
	ts := startServer(t, &fakeHandler{}, Options{})
	c := ts.client(t)
	for _, tc := range []struct {
		method, name, body string
	}{
		{"PUT", "vmm.ping", `["Bad Request"]`},
		{"POST", "vmm.ping", `["Bad Request"]`},
		{"GET", "vmm.shutdown", `["Bad Request"]`},
		{"PUT", "vm.info", `["Bad Request"]`},
		{"DELETE", "vm.create", `["Bad Request"]`},
		{"GET", "vm.create", `["Bad Request"]`},
		{"GET", "vm.boot", `["Bad Request"]`},
		{"PUT", "vm.counters", `["Bad Request"]`},
		{"GET", "vm.add-net", `["Bad Request"]`},
		// VmActionHandler routes answer other methods with a bare 400.
		{"POST", "vm.boot", ``},
		{"DELETE", "vm.add-disk", ``},
		{"PATCH", "vm.counters", ``},
	} {
		wantResp(t, do(t, c, tc.method, tc.name, nil), 400, tc.body)
	}
	if n := len(ts.h.(*fakeHandler).commands()); n != 0 {
		t.Errorf("%d commands reached the handler", n)
	}
}

func TestBodyRules(t *testing.T) {
	h := &fakeHandler{}
	ts := startServer(t, h, Options{})
	c := ts.client(t)
	for _, name := range []string{"vm.boot", "vm.delete", "vm.shutdown", "vm.reboot", "vm.pause", "vm.resume", "vm.power-button", "vm.nmi"} {
		wantResp(t, do(t, c, "PUT", name, []byte(`{}`)), 400, `["Bad Request"]`)
		wantResp(t, do(t, c, "PUT", name, nil), 204, "")
	}
	for _, name := range []string{"vm.resize", "vm.add-disk", "vm.add-net", "vm.restore", "vm.snapshot", "vm.send-migration"} {
		wantResp(t, do(t, c, "PUT", name, nil), 400, `["Bad Request"]`)
	}
	// vm.create without a body: a bare 400, as upstream.
	wantResp(t, do(t, c, "PUT", "vm.create", nil), 400, ``)
	if n := len(h.commands()); n != 8 {
		t.Errorf("handler saw %d commands, want the 8 bodyless ones", n)
	}
}

func TestBodyLimit(t *testing.T) {
	h := &fakeHandler{}
	ts := startServer(t, h, Options{})
	c := ts.client(t)
	big := bytes.Repeat([]byte(" "), 5<<20)
	r := do(t, c, "PUT", "vm.create", big)
	if r.StatusCode != 400 || !strings.HasPrefix(string(r.body), `["Bad Request","Request payload with size 5242880 is larger`) {
		t.Errorf("5 MiB body: %d %s", r.StatusCode, r.body)
	}
	// Exactly 4 MiB is accepted (it is JSON whitespace around {}).
	ok := append(bytes.Repeat([]byte(" "), MaxBodySize-2), '{', '}')
	wantResp(t, do(t, c, "PUT", "vm.create", ok), 204, "")
	// A chunked body without Content-Length is cut off at the limit too.
	rc := dialRaw(t, ts.path)
	raw := "PUT /api/v1/vm.create HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n" +
		fmt.Sprintf("%x\r\n%s\r\n0\r\n\r\n", 5<<20, big)
	r = rc.roundTrip(t, []byte(raw))
	if r.StatusCode != 400 || !strings.HasPrefix(string(r.body), `["Bad Request","Request payload is larger`) {
		t.Errorf("chunked 5 MiB: %d %s", r.StatusCode, r.body)
	}
	if n := len(h.commands()); n != 1 {
		t.Errorf("handler saw %d commands, want 1", n)
	}
}

func TestReplies(t *testing.T) {
	// The handler runs on server goroutines; the race detector does not
	// see the socket round trip as synchronisation, so guard the values.
	var mu sync.Mutex
	var reply0 any
	var rerr0 error
	set := func(v any, err error) { mu.Lock(); reply0, rerr0 = v, err; mu.Unlock() }
	h := &fakeHandler{reply: func(vmm.Command) (any, error) { mu.Lock(); defer mu.Unlock(); return reply0, rerr0 }}
	ts := startServer(t, h, Options{})
	c := ts.client(t)

	set(&vmm.PciDeviceInfo{ID: "_disk1", BDF: "0000:00:06.0"}, nil)
	wantResp(t, do(t, c, "PUT", "vm.add-disk", []byte(`{"path":"/d"}`)), 200, `{"id":"_disk1","bdf":"0000:00:06.0"}`)
	set((*vmm.PciDeviceInfo)(nil), nil)
	wantResp(t, do(t, c, "PUT", "vm.add-disk", []byte(`{"path":"/d"}`)), 204, "")
	set(nil, nil)
	wantResp(t, do(t, c, "PUT", "vm.add-disk", []byte(`{"path":"/d"}`)), 204, "")
	set(vmm.Counters{"_disk0": {"read_bytes": 512}}, nil)
	wantResp(t, do(t, c, "GET", "vm.counters", nil), 200, `{"_disk0":{"read_bytes":512}}`)

	for _, tc := range []struct {
		err    error
		status int
		body   string
	}{
		{&config.ValidationError{Msg: "Identifier d0 is not unique", Duplicate: true}, 409, `["Error from API","The disk could not be added to the VM","Identifier d0 is not unique"]`},
		{fmt.Errorf("Failed to validate config: %w", &config.ValidationError{Msg: "bad queue size"}), 400, `["Error from API","The disk could not be added to the VM","Failed to validate config","bad queue size"]`},
		{fmt.Errorf("The disk could not be added to the VM: %w", vmm.ErrNotCreated), 404, `["Error from API","The disk could not be added to the VM","VM is not created"]`},
		{errors.New("boom"), 500, `["Error from API","The disk could not be added to the VM","boom"]`},
	} {
		set(nil, tc.err)
		wantResp(t, do(t, c, "PUT", "vm.add-disk", []byte(`{"path":"/d"}`)), tc.status, tc.body)
	}
	// The body reached the handler decoded, with upstream's defaults.
	cmds := h.commands()
	ad, ok := cmds[0].(vmm.AddDisk)
	if !ok || ad.Config.Path != "/d" || ad.Config.QueueSize != 128 || ad.Config.ImageType != config.ImageUnknown {
		t.Errorf("first command %#v", cmds[0])
	}
}

func TestStatusLineReasonPhrase(t *testing.T) {
	ts := startServer(t, stateful(), Options{})
	rc := dialRaw(t, ts.path)
	body := `{"desired_vcpus":2}`
	raw := "PUT /api/v1/vm.resize HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\nContent-Length: " +
		fmt.Sprint(len(body)) + "\r\n\r\n" + body
	r := rc.roundTrip(t, []byte(raw))
	// Kata retries only when the status text says "Too Many Requests".
	if r.Status != "429 Too Many Requests" {
		t.Errorf("status %q", r.Status)
	}
}

// TestAPIClientStyle replays ch-remote's api_client framing: no
// Content-Type, many requests on one connection.
func TestAPIClientStyleKeepAlive(t *testing.T) {
	h := stateful()
	ts := startServer(t, h, Options{})
	rc := dialRaw(t, ts.path)
	cfg := `{"cpus":{"boot_vcpus":1,"max_vcpus":1},"payload":{"kernel":"/k"}}`
	r := rc.roundTrip(t, []byte("PUT /api/v1/vm.create HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\nContent-Length: "+fmt.Sprint(len(cfg))+"\r\n\r\n"+cfg))
	if r.StatusCode != 204 {
		t.Fatalf("create: %d %s", r.StatusCode, r.body)
	}
	for i := 0; i < 200; i++ {
		r := rc.roundTrip(t, []byte("GET /api/v1/vm.info HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\n\r\n"))
		if r.StatusCode != 200 || r.Close {
			t.Fatalf("request %d: %d close=%v", i, r.StatusCode, r.Close)
		}
	}
	if n := len(h.commands()); n != 201 {
		t.Errorf("%d commands", n)
	}
}

func TestStatusFor(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want int
	}{
		{nil, 200},
		{vmm.ErrNotCreated, 404},
		{fmt.Errorf("x: %w", vmm.ErrMissingConfig), 404},
		{fmt.Errorf("No device with id \"x\" to remove: %w", vmm.ErrNotFound), 404},
		{&config.ValidationError{Duplicate: true}, 409},
		{vmm.ErrConflict, 409},
		{&config.ValidationError{}, 400},
		{fmt.Errorf("y: %w", vmm.ErrBusy), 429},
		{vmm.ErrAlreadyCreated, 500},
		{vmm.ErrNotRunning, 500},
		{vmm.ErrInvalidState, 500},
		{vmm.ErrUnsupported, 500},
		{errors.New("other"), 500},
	} {
		if got := StatusFor(tc.err); got != tc.want {
			t.Errorf("StatusFor(%v) = %d, want %d", tc.err, got, tc.want)
		}
	}
}

func TestErrorChain(t *testing.T) {
	base := errors.New("Trying to snapshot while VM is running")
	err := fmt.Errorf("Cannot snapshot VM: %w", fmt.Errorf("Failed to snapshot migratable component: %w", base))
	got := apiErrorBody("The VM could not be snapshotted", err)
	want := []string{"Error from API", "The VM could not be snapshotted", "Cannot snapshot VM", "Failed to snapshot migratable component", "Trying to snapshot while VM is running"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("got %q\nwant %q", got, want)
	}
	// A wrapper whose text does not end with its cause keeps its full text.
	odd := fmt.Errorf("[%w] failed", base)
	if got := errorChain(odd); len(got) != 2 || got[0] != "["+base.Error()+"] failed" {
		t.Errorf("odd wrapper: %q", got)
	}
	// A handler that already prefixes the ApiError text is not doubled.
	if got := apiErrorBody("The VM could not be snapshotted", fmt.Errorf("The VM could not be snapshotted: %w", base)); len(got) != 3 {
		t.Errorf("doubled ApiError text: %q", got)
	}
}

func TestRouteTable(t *testing.T) {
	names := []string{"vmm.ping", "vmm.shutdown", "vm.info", "vm.counters", "vm.create", "vm.delete", "vm.boot", "vm.pause",
		"vm.resume", "vm.shutdown", "vm.reboot", "vm.power-button", "vm.resize", "vm.resize-disk", "vm.resize-zone",
		"vm.add-device", "vm.remove-device", "vm.add-disk", "vm.add-fs", "vm.add-generic-vhost-user", "vm.add-pmem",
		"vm.add-net", "vm.add-vsock", "vm.add-vdpa", "vm.add-user-device", "vm.snapshot", "vm.nmi",
		"vm.restore", "vm.receive-migration", "vm.send-migration"}
	if len(names) != 30 {
		t.Fatal("upstream's default build has 30 routes (31 with guest_debug's vm.coredump)")
	}
	for _, n := range names {
		if routes[n] == nil {
			t.Errorf("missing route %s", n)
		}
	}
	if len(routes) != 31 || routes["vmm.nmi"] == nil || routes["vm.coredump"] != nil {
		t.Errorf("%d routes; want the 30 plus vmm.nmi, without vm.coredump", len(routes))
	}
}

// Upstream's default build has no guest_debug, so vm.coredump is an
// unknown path there: 404 ["Not Found"], whatever the body.
func TestCoredumpNotFoundAsUpstreamDefaultBuild(t *testing.T) {
	h := &fakeHandler{}
	ts := startServer(t, h, Options{})
	r := do(t, ts.client(t), "PUT", "vm.coredump", []byte(`{"destination_url":"file:///tmp/c"}`), "Content-Type", "application/json")
	if r.StatusCode != 404 || string(r.body) != `["Not Found"]` {
		t.Fatalf("vm.coredump: %d %q, want 404 [\"Not Found\"]", r.StatusCode, r.body)
	}
}

// TestEveryRouteReachesHandler sends a minimal valid request to every route
// and checks the command the handler receives.
func TestEveryRouteReachesHandler(t *testing.T) {
	h := &fakeHandler{}
	ts := startServer(t, h, Options{})
	c := ts.client(t)
	bodies := map[string]string{
		"vm.create": `{"payload":{"kernel":"/k"}}`, "vm.resize": `{"desired_vcpus":2,"desired_ram":null}`,
		"vm.resize-disk": `{"id":"d","desired_size":1048576}`, "vm.resize-zone": `{"id":"z","desired_ram":1048576}`,
		"vm.add-device": `{"path":"/sys/bus/pci/devices/0000:01:00.0"}`, "vm.remove-device": `{"id":"d"}`,
		"vm.add-disk": `{"path":"/d"}`, "vm.add-fs": `{"tag":"t","socket":"/s"}`,
		"vm.add-generic-vhost-user": `{"socket":"/s","queue_sizes":[256],"device_type":2}`,
		"vm.add-pmem":               `{"file":"/p"}`, "vm.add-net": `{"mac":"12:34:56:78:90:01"}`, "vm.add-vsock": `{"cid":3,"socket":"/v"}`,
		"vm.add-vdpa": `{"path":"/dev/vhost-vdpa-0"}`, "vm.add-user-device": `{"socket":"/u"}`,
		"vm.snapshot": `{"destination_url":"file:///tmp/s"}`,
		"vm.restore":  `{"source_url":"file:///tmp/s"}`, "vm.receive-migration": `{"receiver_url":"unix:/tmp/m"}`,
		"vm.send-migration": `{"destination_url":"unix:/tmp/m"}`,
	}
	n := 0
	for name, rt := range routes {
		var body []byte
		if b, ok := bodies[name]; ok {
			body = []byte(b)
		}
		r := do(t, c, rt.method, name, body, "Content-Type", "application/json")
		want := 204
		if name == "vmm.shutdown" {
			want = 200
		}
		if r.StatusCode != want {
			t.Errorf("%s: %d %s", name, r.StatusCode, r.body)
			continue
		}
		cmds := h.commands()
		n++
		if len(cmds) != n {
			t.Fatalf("%s: handler saw %d commands, want %d", name, len(cmds), n)
		}
		wantName := name
		if name == "vmm.nmi" {
			wantName = "vm.nmi"
		}
		if got := cmds[n-1].Name(); got != wantName {
			t.Errorf("route %s submitted %s", name, got)
		}
	}
}
