package client

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func ok204(*captured) []byte { return reply(204, "") }

func newTestClient(t *testing.T, respond func(*captured) []byte) (*Client, *rawServer) {
	srv := newRawServer(t, respond)
	return New(srv.path), srv
}

func onlyRequest(t *testing.T, srv *rawServer) *captured {
	t.Helper()
	reqs := srv.requests()
	if len(reqs) != 1 {
		t.Fatalf("server got %d requests, want 1", len(reqs))
	}
	return reqs[0]
}

// The bytes on the wire are api_client's exactly: no Content-Type, and a
// Content-Length only when there is a body.
func TestRequestBytes(t *testing.T) {
	u32 := func(v uint32) *uint32 { return &v }
	u64 := func(v uint64) *uint64 { return &v }
	ctx := context.Background()
	cases := []struct {
		name string
		call func(c *Client) error
		want string
	}{
		{"boot", func(c *Client) error { return c.Boot(ctx) },
			"PUT /api/v1/vm.boot HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\n\r\n"},
		{"shutdown-vmm", func(c *Client) error { return c.ShutdownVMM(ctx) },
			"PUT /api/v1/vmm.shutdown HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\n\r\n"},
		{"power-button", func(c *Client) error { return c.PowerButton(ctx) },
			"PUT /api/v1/vm.power-button HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\n\r\n"},
		{"create", func(c *Client) error { return c.Create(ctx, []byte(`{"cpus":{"boot_vcpus":1}}`)) },
			"PUT /api/v1/vm.create HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\nContent-Length: 25\r\n\r\n{\"cpus\":{\"boot_vcpus\":1}}"},
		{"create-empty", func(c *Client) error { return c.Create(ctx, nil) },
			"PUT /api/v1/vm.create HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\nContent-Length: 0\r\n\r\n"},
		{"resize-nulls", func(c *Client) error { return c.Resize(ctx, ResizeRequest{DesiredVcpus: u32(2)}) },
			wantPut("vm.resize", `{"desired_vcpus":2,"desired_ram":null,"desired_balloon":null}`)},
		{"resize-ram", func(c *Client) error {
			return c.Resize(ctx, ResizeRequest{DesiredRAM: u64(1 << 30), DesiredBalloon: u64(0)})
		}, wantPut("vm.resize", `{"desired_vcpus":null,"desired_ram":1073741824,"desired_balloon":0}`)},
		{"resize-disk", func(c *Client) error { return c.ResizeDisk(ctx, ResizeDiskRequest{ID: "disk0", DesiredSize: 4096}) },
			wantPut("vm.resize-disk", `{"id":"disk0","desired_size":4096}`)},
		{"resize-zone", func(c *Client) error { return c.ResizeZone(ctx, ResizeZoneRequest{ID: "mem0", DesiredRAM: 1024}) },
			wantPut("vm.resize-zone", `{"id":"mem0","desired_ram":1024}`)},
		{"remove-device", func(c *Client) error { return c.RemoveDevice(ctx, "_disk0") },
			wantPut("vm.remove-device", `{"id":"_disk0"}`)},
		{"snapshot", func(c *Client) error { return c.Snapshot(ctx, "file:///tmp/snap") },
			wantPut("vm.snapshot", `{"destination_url":"file:///tmp/snap"}`)},
		{"coredump", func(c *Client) error { return c.Coredump(ctx, "file:///tmp/core") },
			wantPut("vm.coredump", `{"destination_url":"file:///tmp/core"}`)},
		{"add-disk", func(c *Client) error { _, err := c.AddDisk(ctx, []byte(`{"path":"/x"}`)); return err },
			wantPut("vm.add-disk", `{"path":"/x"}`)},
		{"send-migration", func(c *Client) error { return c.SendMigration(ctx, []byte(`{"destination_url":"unix:/m"}`)) },
			wantPut("vm.send-migration", `{"destination_url":"unix:/m"}`)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, srv := newTestClient(t, ok204)
			if err := tc.call(c); err != nil {
				t.Fatalf("call: %v", err)
			}
			got := onlyRequest(t, srv)
			if string(got.Raw) != tc.want {
				t.Errorf("request bytes\n got %q\nwant %q", got.Raw, tc.want)
			}
			if len(got.Fds) != 0 {
				t.Errorf("got %d fds, want none", len(got.Fds))
			}
		})
	}
}

// wantPut is api_client's rendering of a PUT with a body.
func wantPut(endpoint, body string) string {
	return fmt.Sprintf("PUT /api/v1/%s HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\nContent-Length: %d\r\n\r\n%s",
		endpoint, len(body), body)
}

func TestGetRequestBytes(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name, endpoint, body string
		call                 func(c *Client) error
	}{
		{"ping", "vmm.ping", `{"build_version":"v1","version":"54.0.0","pid":7,"features":["kvm"]}`,
			func(c *Client) error { _, err := c.Ping(ctx); return err }},
		{"info", "vm.info", `{"config":{},"state":"Created","memory_actual_size":0}`,
			func(c *Client) error { _, err := c.Info(ctx); return err }},
		{"counters", "vm.counters", `{}`,
			func(c *Client) error { _, err := c.Counters(ctx); return err }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, srv := newTestClient(t, func(*captured) []byte { return reply(200, tc.body) })
			if err := tc.call(c); err != nil {
				t.Fatal(err)
			}
			want := "GET /api/v1/" + tc.endpoint + " HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\n\r\n"
			if got := string(onlyRequest(t, srv).Raw); got != want {
				t.Errorf("got %q, want %q", got, want)
			}
		})
	}
}

func TestDecodeReplies(t *testing.T) {
	ctx := context.Background()
	ping := `{"build_version":"v53.0-12-gabc","version":"54.0.0","pid":4242,"features":["io_uring","kvm"]}`
	c, _ := newTestClient(t, func(*captured) []byte { return reply(200, ping) })
	p, err := c.Ping(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := PingResponse{BuildVersion: "v53.0-12-gabc", Version: "54.0.0", Pid: 4242, Features: []string{"io_uring", "kvm"}}
	if fmt.Sprint(*p) != fmt.Sprint(want) {
		t.Errorf("ping = %+v, want %+v", *p, want)
	}

	info := `{"config":{"cpus":{"boot_vcpus":1,"max_vcpus":1}},"state":"Running","memory_actual_size":536870912,` +
		`"device_tree":{"_disk0":{"id":"_disk0","resources":[{"PciBar":{"index":0}}],"parent":"_virtio-pci-_disk0","children":[],"pci_bdf":"0000:00:03.0"}}}`
	c, _ = newTestClient(t, func(*captured) []byte { return reply(200, info) })
	vi, err := c.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if vi.State != StateRunning || vi.MemoryActualSize != 536870912 ||
		string(vi.Config) != `{"cpus":{"boot_vcpus":1,"max_vcpus":1}}` {
		t.Errorf("info = %+v", vi)
	}
	n := vi.DeviceTree["_disk0"]
	if n == nil || n.PciBDF == nil || *n.PciBDF != "0000:00:03.0" || len(n.Resources) != 1 ||
		string(n.Resources[0]) != `{"PciBar":{"index":0}}` {
		t.Errorf("device tree = %+v", vi.DeviceTree)
	}

	c, _ = newTestClient(t, func(*captured) []byte {
		return reply(200, `{"_disk0":{"read_bytes":512,"write_ops":3}}`)
	})
	cs, err := c.Counters(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if cs["_disk0"]["read_bytes"] != 512 || cs["_disk0"]["write_ops"] != 3 {
		t.Errorf("counters = %v", cs)
	}

	c, _ = newTestClient(t, ok204)
	if cs, err := c.Counters(ctx); err != nil || cs == nil || len(cs) != 0 {
		t.Errorf("counters on 204 = %v, %v; want empty", cs, err)
	}

	c, _ = newTestClient(t, func(*captured) []byte { return reply(200, `not json`) })
	if _, err := c.Ping(ctx); !errors.Is(err, ErrBadReply) {
		t.Errorf("garbage ping reply: err = %v, want ErrBadReply", err)
	}
}

// A hot add answers 200 PciDeviceInfo, a cold add 204 and no body.
func TestAddReplies(t *testing.T) {
	ctx := context.Background()
	c, _ := newTestClient(t, func(*captured) []byte { return reply(200, `{"id":"_disk1","bdf":"0000:00:06.0"}`) })
	info, err := c.AddDisk(ctx, []byte(`{"path":"/x"}`))
	if err != nil {
		t.Fatal(err)
	}
	if info == nil || *info != (PciDeviceInfo{ID: "_disk1", BDF: "0000:00:06.0"}) {
		t.Errorf("hot add = %+v", info)
	}
	c, _ = newTestClient(t, ok204)
	info, err = c.AddDisk(ctx, []byte(`{"path":"/x"}`))
	if err != nil || info != nil {
		t.Errorf("cold add = %+v, %v; want nil, nil", info, err)
	}
}

// vmm.shutdown answers 200 with Content-Length 0: a body, empty; a 204
// has none. ch-remote prints the former (an empty line) and not the latter.
func TestDoHasBody(t *testing.T) {
	ctx := context.Background()
	c, _ := newTestClient(t, func(*captured) []byte { return reply(200, "") })
	resp, err := c.Do(ctx, http.MethodPut, "vmm.shutdown", nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || !resp.HasBody || len(resp.Body) != 0 {
		t.Errorf("200/empty: %+v", resp)
	}
	c, _ = newTestClient(t, ok204)
	resp, err = c.Do(ctx, http.MethodPut, "vm.boot", nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 204 || resp.HasBody || len(resp.Body) != 0 {
		t.Errorf("204: %+v", resp)
	}
	if resp.Header.Get("Server") != "Cloud Hypervisor API" {
		t.Errorf("headers not kept: %v", resp.Header)
	}
}

func TestAPIErrors(t *testing.T) {
	ctx := context.Background()
	cases := []struct {
		status   int
		body     string
		name     string
		messages []string
		decodeOK bool
	}{
		{404, `["Error from API","The VM info is not available","VM is not created"]`, "NotFound",
			[]string{"Error from API", "The VM info is not available", "VM is not created"}, true},
		{500, `["Error from API","The VM could not be created","VM is already created"]`, "InternalServerError",
			[]string{"Error from API", "The VM could not be created", "VM is already created"}, true},
		{400, `["Failed to deserialize JSON","missing field` + "`boot_vcpus`" + `"]`, "BadRequest",
			[]string{"Failed to deserialize JSON", "missing field`boot_vcpus`"}, true},
		{409, `["Error from API","The disk could not be added to the VM","Identifier x is not unique"]`, "Unknown",
			[]string{"Error from API", "The disk could not be added to the VM", "Identifier x is not unique"}, true},
		{429, `["Error from API","The VM could not be resized"]`, "TooManyRequests",
			[]string{"Error from API", "The VM could not be resized"}, true},
		{501, `[]`, "NotImplemented", []string{}, true},
		{201, `[]`, "Unknown", []string{}, true}, // upstream: only 200/204/100 succeed
		{400, ``, "BadRequest", nil, false},
		{500, `oops`, "InternalServerError", nil, false},
	}
	for _, tc := range cases {
		t.Run(fmt.Sprintf("%d-%s", tc.status, tc.name), func(t *testing.T) {
			c, _ := newTestClient(t, func(*captured) []byte { return reply(tc.status, tc.body) })
			err := c.Pause(ctx)
			var ae *APIError
			if !errors.As(err, &ae) {
				t.Fatalf("err = %v (%T), want *APIError", err, err)
			}
			if ae.StatusCode != tc.status || ae.Status() != tc.name || string(ae.Body) != tc.body {
				t.Errorf("got %d %s %q", ae.StatusCode, ae.Status(), ae.Body)
			}
			if fmt.Sprintf("%q", ae.Messages) != fmt.Sprintf("%q", tc.messages) {
				t.Errorf("messages = %q, want %q", ae.Messages, tc.messages)
			}
			if (ae.DecodeErr == nil) != tc.decodeOK {
				t.Errorf("DecodeErr = %v", ae.DecodeErr)
			}
		})
	}
	// The empty-body decode error reads like serde_json's, which ch-remote prints.
	c, _ := newTestClient(t, func(*captured) []byte { return reply(400, "") })
	var ae *APIError
	if err := c.Boot(ctx); !errors.As(err, &ae) || ae.DecodeErr.Error() != "EOF while parsing a value at line 1 column 0" {
		t.Errorf("empty 400: %v", err)
	}
	if got, want := (&APIError{StatusCode: 404, Messages: []string{"a", "b"}}).Error(),
		"server responded with NotFound (404): a: b"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}

// fds go with SCM_RIGHTS on the request's first write, and the server's
// copies refer to the same open files.
func TestFdsSentWithSCMRights(t *testing.T) {
	ctx := context.Background()
	var reads, writes []*os.File
	for i := 0; i < 3; i++ {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		defer w.Close()
		reads, writes = append(reads, r), append(writes, w)
	}
	fds := []int{int(writes[0].Fd()), int(writes[1].Fd()), int(writes[2].Fd())}

	for _, tc := range []struct {
		name     string
		endpoint string
		call     func(c *Client) error
	}{
		{"add-net", "vm.add-net", func(c *Client) error {
			_, err := c.AddNet(ctx, []byte(`{"num_queues":6}`), fds...)
			return err
		}},
		{"restore", "vm.restore", func(c *Client) error {
			return c.Restore(ctx, []byte(`{"source_url":"file:///s"}`), fds...)
		}},
		{"receive-migration", "vm.receive-migration", func(c *Client) error {
			return c.ReceiveMigration(ctx, []byte(`{"receiver_url":"unix:/m"}`), fds...)
		}},
		{"do", "vm.add-device", func(c *Client) error {
			_, err := c.Do(ctx, http.MethodPut, "vm.add-device", []byte(`{}`), fds...)
			return err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, srv := newTestClient(t, ok204)
			if err := tc.call(c); err != nil {
				t.Fatal(err)
			}
			got := onlyRequest(t, srv)
			if got.Req.URL.Path != "/api/v1/"+tc.endpoint {
				t.Errorf("path %q", got.Req.URL.Path)
			}
			if len(got.Fds) != 3 {
				t.Fatalf("server received %d fds, want 3", len(got.Fds))
			}
			if got.FdsAt != 0 {
				t.Errorf("fds arrived at byte %d, want with the first write", got.FdsAt)
			}
			// Write through each received fd; it must come out of the
			// matching pipe, in order.
			for i, f := range got.Fds {
				msg := fmt.Sprintf("fd%d-%s", i, tc.name)
				if _, err := f.Write([]byte(msg)); err != nil {
					t.Fatal(err)
				}
				buf := make([]byte, len(msg))
				if _, err := io.ReadFull(reads[i], buf); err != nil || string(buf) != msg {
					t.Errorf("pipe %d read %q, %v; want %q", i, buf, err, msg)
				}
			}
		})
	}
}

// A body larger than the socket buffer still arrives whole, after the fds.
func TestLargeBody(t *testing.T) {
	body := bytes.Repeat([]byte("x"), 4<<20)
	c, srv := newTestClient(t, ok204)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	if _, err := c.AddNet(context.Background(), body, int(w.Fd())); err != nil {
		t.Fatal(err)
	}
	got := onlyRequest(t, srv)
	if !bytes.Equal(got.Body, body) || len(got.Fds) != 1 || got.FdsAt != 0 {
		t.Errorf("body %d bytes (want %d), %d fds at %d", len(got.Body), len(body), len(got.Fds), got.FdsAt)
	}
}

func TestConnectError(t *testing.T) {
	c := New(filepath.Join(t.TempDir(), "missing.sock"))
	err := c.Boot(context.Background())
	var te *TransportError
	if !errors.As(err, &te) || te.Msg != MsgConnect || !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("err = %v, want a connect TransportError wrapping ENOENT", err)
	}
}

// A server that closes without answering is a transport error, not a hang.
func TestServerHangsUp(t *testing.T) {
	c, _ := newTestClient(t, func(*captured) []byte { return nil })
	err := c.Boot(context.Background())
	var te *TransportError
	if !errors.As(err, &te) || te.Msg != MsgSocket {
		t.Fatalf("err = %v, want a socket TransportError", err)
	}
}

// Cancelling the context unblocks a call whose reply never comes.
func TestContextCancel(t *testing.T) {
	block := make(chan struct{})
	c, _ := newTestClient(t, func(*captured) []byte { <-block; return nil })
	defer close(block)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- c.Boot(ctx) }()
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
}

// Events against a net/http server streaming chunked JSON lines, as
// internal/api serves GET /api/v1/vmm.events.
func TestEvents(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ev.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	gotReq := make(chan *http.Request, 1)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotReq <- r
		if r.URL.Path != "/api/v1/vmm.events" {
			w.WriteHeader(404)
			io.WriteString(w, `["Not Found"]`)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		f := w.(http.Flusher)
		io.WriteString(w, `{"timestamp":{"secs":0,"nanos":4664404},"source":"vmm","event":"starting","properties":null}`+"\n")
		f.Flush()
		io.WriteString(w, `{"timestamp":{"secs":1,"nanos":5},"source":"virtio-device","event":"activated","properties":{"id":"__rng"}}`+"\n")
		f.Flush()
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})}
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(ln) }()
	defer func() { srv.Close(); <-done }()
	defer close(release)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, err := New(path).Events(ctx)
	if err != nil {
		t.Fatal(err)
	}
	req := <-gotReq
	if req.Method != "GET" || req.Header.Get("Accept") != "*/*" {
		t.Errorf("request %s %v", req.Method, req.Header)
	}
	ev1, ev2 := <-ch, <-ch
	if ev1.Source != "vmm" || ev1.Event != "starting" || ev1.Properties != nil || ev1.Timestamp.Duration() != 4664404 {
		t.Errorf("event 1 = %+v", ev1)
	}
	if ev2.Source != "virtio-device" || ev2.Event != "activated" || ev2.Properties["id"] != "__rng" ||
		ev2.Timestamp.Duration() != 1_000_000_005 {
		t.Errorf("event 2 = %+v", ev2)
	}
	cancel()
	for range ch { // closed once the reader goroutine has stopped
	}

}

// A server without the event stream answers with an error, which Events
// returns as an APIError, leaving no goroutine behind.
func TestEventsErrorReply(t *testing.T) {
	c, srv := newTestClient(t, func(*captured) []byte { return reply(404, `["Not Found"]`) })
	ch, err := c.Events(context.Background())
	var ae *APIError
	if ch != nil || !errors.As(err, &ae) || ae.StatusCode != 404 || strings.Join(ae.Messages, ",") != "Not Found" {
		t.Errorf("Events = %v, %v; want a 404 APIError", ch, err)
	}
	if want := "GET /api/v1/vmm.events HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\n\r\n"; string(onlyRequest(t, srv).Raw) != want {
		t.Errorf("request %q", onlyRequest(t, srv).Raw)
	}
}

func TestStatusName(t *testing.T) {
	want := map[int]string{100: "Continue", 200: "Ok", 204: "NoContent", 400: "BadRequest", 404: "NotFound",
		409: "Unknown", 429: "TooManyRequests", 500: "InternalServerError", 501: "NotImplemented", 503: "Unknown"}
	for code, name := range want {
		if got := StatusName(code); got != name {
			t.Errorf("StatusName(%d) = %q, want %q", code, got, name)
		}
	}
}

// A context cancelled just as the reply arrives fires the cancel callback
// after the call succeeded. Do must wait for it (or its past deadline
// could hit the next call) and the Conn must then refuse further calls
// instead of failing them at random.
func TestCancelAsReplyArrivesBreaksConn(t *testing.T) {
	c, _ := newTestClient(t, ok204)
	conn, err := c.Dial(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	testHookReplyRead = cancel
	resp, err := conn.Do(ctx, http.MethodPut, "vm.boot", nil)
	testHookReplyRead = nil
	if err != nil || resp.StatusCode != 204 {
		t.Fatalf("first call: %+v, %v", resp, err)
	}
	_, err = conn.Do(context.Background(), http.MethodGet, "vmm.ping", nil)
	var te *TransportError
	if !errors.As(err, &te) || te.Msg != MsgSocket || !errors.Is(err, ErrConnBroken) {
		t.Fatalf("second call: err = %v, want ErrConnBroken", err)
	}
}

// After a transport error the Conn is unusable, as documented.
func TestConnBrokenAfterTransportError(t *testing.T) {
	c, _ := newTestClient(t, func(*captured) []byte { return nil })
	conn, err := c.Dial(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Do(context.Background(), http.MethodPut, "vm.boot", nil); errors.Is(err, ErrConnBroken) || err == nil {
		t.Fatalf("first call: err = %v, want the hang-up", err)
	}
	if _, err := conn.Do(context.Background(), http.MethodPut, "vm.boot", nil); !errors.Is(err, ErrConnBroken) {
		t.Fatalf("second call: err = %v, want ErrConnBroken", err)
	}
}
