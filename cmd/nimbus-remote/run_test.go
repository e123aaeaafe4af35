package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type result struct {
	code           int
	stdout, stderr string
}

func runCLI(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(context.Background(), append([]string{"/usr/bin/nimbus-remote"}, args...), strings.NewReader(stdin), &out, &errb)
	return result{code, out.String(), errb.String()}
}

func wantPut(endpoint, body string) string {
	return fmt.Sprintf("PUT /api/v1/%s HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\nContent-Length: %d\r\n\r\n%s",
		endpoint, len(body), body)
}

// Bodies are ch-remote's: built by the nimbus CLI's option parsers and
// serialized whole, defaults included (reference §5.1).
func TestRequestBodies(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "vm.json")
	const vmJSON = `{"cpus":{"boot_vcpus":1,"max_vcpus":1},"payload":{"kernel":"/k"}}`
	if err := os.WriteFile(cfg, []byte(vmJSON), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		args  []string
		stdin string
		want  string
	}{
		{[]string{"boot"}, "", "PUT /api/v1/vm.boot HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\n\r\n"},
		{[]string{"shutdown-vmm"}, "", "PUT /api/v1/vmm.shutdown HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\n\r\n"},
		{[]string{"info"}, "", "GET /api/v1/vm.info HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\n\r\n"},
		{[]string{"ping"}, "", "GET /api/v1/vmm.ping HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\n\r\n"},
		{[]string{"counters"}, "", "GET /api/v1/vm.counters HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\n\r\n"},
		{[]string{"nmi"}, "", "PUT /api/v1/vm.nmi HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\n\r\n"},
		{[]string{"create"}, `{"from":"stdin"}`, wantPut("vm.create", `{"from":"stdin"}`)},
		{[]string{"create", "-"}, "", wantPut("vm.create", "")},
		{[]string{"create", cfg}, "", wantPut("vm.create", vmJSON)},
		{[]string{"add-disk", "path=/x"}, "", wantPut("vm.add-disk",
			`{"path":"/x","readonly":false,"direct":false,"num_queues":1,"queue_size":128,"vhost_user":false,`+
				`"disable_io_uring":false,"disable_aio":false,"backing_files":false,"sparse":true,"image_type":"Unknown",`+
				`"lock_granularity":"ByteRange","pci_segment":0}`)},
		{[]string{"resize", "--cpus", "2", "--memory", "1G"}, "", wantPut("vm.resize",
			`{"desired_vcpus":2,"desired_ram":1073741824,"desired_balloon":null}`)},
		{[]string{"resize", "--balloon=512M"}, "", wantPut("vm.resize",
			`{"desired_vcpus":null,"desired_ram":null,"desired_balloon":536870912}`)},
		{[]string{"resize-disk", "--disk", "disk0", "--size", "2G"}, "", wantPut("vm.resize-disk",
			`{"id":"disk0","desired_size":2147483648}`)},
		{[]string{"resize-zone", "--id=mem0", "--size=4K"}, "", wantPut("vm.resize-zone",
			`{"id":"mem0","desired_ram":4096}`)},
		{[]string{"remove-device", "_disk0"}, "", wantPut("vm.remove-device", `{"id":"_disk0"}`)},
		{[]string{"snapshot", "file:///tmp/snap"}, "", wantPut("vm.snapshot", `{"destination_url":"file:///tmp/snap"}`)},
		{[]string{"coredump", "file:///tmp/core"}, "", wantPut("vm.coredump", `{"destination_url":"file:///tmp/core"}`)},
	}
	for _, tc := range cases {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			srv := newFakeServer(t, microHTTP(204, ""))
			r := runCLI(t, tc.stdin, append([]string{"--api-socket", srv.path}, tc.args...)...)
			if r.code != 0 || r.stdout != "" || r.stderr != "" {
				t.Fatalf("exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
			}
			if g := srv.only(t); string(g.raw) != tc.want {
				t.Errorf("request\n got %q\nwant %q", g.raw, tc.want)
			}
		})
	}
}

// Migration bodies carry every default, as upstream serializes them.
func TestMigrationBodies(t *testing.T) {
	srv := newFakeServer(t, microHTTP(204, ""))
	r := runCLI(t, "", "--api-socket", srv.path, "send-migration", "destination_url=unix:/m,downtime_ms=50")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	g := srv.only(t)
	if g.req.URL.Path != "/api/v1/vm.send-migration" {
		t.Errorf("path %s", g.req.URL.Path)
	}
	var body map[string]any
	if err := json.Unmarshal(g.body, &body); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"destination_url": "unix:/m", "local": false, "preserve_source": false,
		"downtime_ms": 50.0, "timeout_s": 3600.0, "timeout_strategy": "Cancel", "connections": 1.0, "memory_mode": "Precopy"}
	for k, v := range want {
		if body[k] != v {
			t.Errorf("%s = %v, want %v (body %s)", k, body[k], v, g.body)
		}
	}
}

// pipes returns n pipes whose write ends' fds the test passes by number,
// as a caller of ch-remote passes inherited fds.
func pipes(t *testing.T, n int) (reads, writes []*os.File) {
	t.Helper()
	for i := 0; i < n; i++ {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close(); w.Close() })
		reads, writes = append(reads, r), append(writes, w)
	}
	return reads, writes
}

// checkFds asserts the server received, with the request's first bytes,
// fds that are the given pipes' write ends, in order.
func checkFds(t *testing.T, g *got, reads []*os.File) {
	t.Helper()
	if len(g.fds) != len(reads) {
		t.Fatalf("server received %d fds, want %d", len(g.fds), len(reads))
	}
	if g.fdsAt != 0 {
		t.Errorf("fds arrived at byte %d, want 0", g.fdsAt)
	}
	for i, f := range g.fds {
		msg := fmt.Sprintf("through fd %d", i)
		if _, err := f.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, len(msg))
		if _, err := io.ReadFull(reads[i], buf); err != nil || string(buf) != msg {
			t.Errorf("pipe %d: read %q, %v", i, buf, err)
		}
	}
}

func fdNum(f *os.File) string { return fmt.Sprint(f.Fd()) }

func TestAddNetSendsFds(t *testing.T) {
	reads, writes := pipes(t, 2)
	srv := newFakeServer(t, microHTTP(200, `{"id":"_net1","bdf":"0000:00:05.0"}`))
	arg := fmt.Sprintf("mac=12:34:56:78:90:01,fd=[%s,%s],num_queues=4", fdNum(writes[0]), fdNum(writes[1]))
	r := runCLI(t, "", "--api-socket", srv.path, "add-net", arg)
	if r.code != 0 || r.stdout != `{"id":"_net1","bdf":"0000:00:05.0"}`+"\n" {
		t.Fatalf("exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	g := srv.only(t)
	checkFds(t, g, reads)
	var body map[string]any
	if err := json.Unmarshal(g.body, &body); err != nil {
		t.Fatal(err)
	}
	if _, has := body["fds"]; has {
		t.Errorf("fds left in the JSON body: %s", g.body)
	}
	if body["mac"] != "12:34:56:78:90:01" || body["num_queues"] != 4.0 || body["queue_size"] != 256.0 ||
		body["offload_csum"] != true || body["vhost_mode"] != "Client" {
		t.Errorf("body %s", g.body)
	}
}

func TestAddDeviceSendsFd(t *testing.T) {
	reads, writes := pipes(t, 1)
	srv := newFakeServer(t, microHTTP(204, ""))
	r := runCLI(t, "", "--api-socket", srv.path, "add-device", "fd="+fdNum(writes[0])+",id=vfio0")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	g := srv.only(t)
	checkFds(t, g, reads)
	if bytes.Contains(g.body, []byte(`"fd"`)) || !bytes.Contains(g.body, []byte(`"id":"vfio0"`)) {
		t.Errorf("body %s", g.body)
	}
}

// restore sends its fds in the order the server splits them: net fds,
// then VFIO fds, then the iommufd fd; the JSON keeps only the counts.
func TestRestoreFdOrder(t *testing.T) {
	reads, w := pipes(t, 5)
	srv := newFakeServer(t, microHTTP(204, ""))
	arg := fmt.Sprintf("source_url=file:///snap,net_fds=[net0@[%s,%s],net1@[%s]],vfio_fds=[vfio0@%s],iommufd_fd=%s,resume=true",
		fdNum(w[0]), fdNum(w[1]), fdNum(w[2]), fdNum(w[3]), fdNum(w[4]))
	r := runCLI(t, "", "--api-socket", srv.path, "restore", arg)
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	g := srv.only(t)
	checkFds(t, g, reads)
	var body struct {
		SourceURL string                       `json:"source_url"`
		NetFds    []map[string]json.RawMessage `json:"net_fds"`
		VfioFds   []map[string]json.RawMessage `json:"vfio_fds"`
		Resume    bool                         `json:"resume"`
		Other     map[string]json.RawMessage   `json:"-"`
	}
	if err := json.Unmarshal(g.body, &body); err != nil {
		t.Fatal(err)
	}
	if body.SourceURL != "file:///snap" || !body.Resume || len(body.NetFds) != 2 || len(body.VfioFds) != 1 ||
		string(body.NetFds[0]["num_fds"]) != "2" || string(body.NetFds[1]["num_fds"]) != "1" {
		t.Errorf("body %s", g.body)
	}
	if bytes.Contains(g.body, []byte(`"fds"`)) || bytes.Contains(g.body, []byte(`"fd"`)) ||
		bytes.Contains(g.body, []byte(`iommufd_fd`)) {
		t.Errorf("fd numbers left in the body: %s", g.body)
	}
}

func TestReceiveMigrationFds(t *testing.T) {
	reads, w := pipes(t, 2)
	srv := newFakeServer(t, microHTTP(204, ""))
	r := runCLI(t, "", "--api-socket", srv.path, "receive-migration",
		fmt.Sprintf("receiver_url=unix:/m,vfio_fds=[v0@%s],iommufd_fd=%s", fdNum(w[0]), fdNum(w[1])))
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	g := srv.only(t)
	checkFds(t, g, reads)
	if !bytes.Contains(g.body, []byte(`"receiver_url":"unix:/m"`)) || bytes.Contains(g.body, []byte(`iommufd_fd`)) {
		t.Errorf("body %s", g.body)
	}
}

// Output is the reply body plus a newline, exactly when the reply has a
// Content-Length (api_client's rule).
func TestOutput(t *testing.T) {
	for _, tc := range []struct {
		reply []byte
		args  []string
		want  string
	}{
		{microHTTP(200, `{"config":{},"state":"Created","memory_actual_size":0}`), []string{"info"},
			`{"config":{},"state":"Created","memory_actual_size":0}` + "\n"},
		{microHTTP(200, ""), []string{"shutdown-vmm"}, "\n"},
		{microHTTP(204, ""), []string{"boot"}, ""},
		{microHTTP(204, ""), []string{"add-disk", "path=/x"}, ""},
	} {
		srv := newFakeServer(t, tc.reply)
		r := runCLI(t, "", append([]string{"--api-socket=" + srv.path}, tc.args...)...)
		if r.code != 0 || r.stdout != tc.want || r.stderr != "" {
			t.Errorf("%v: exit %d, stdout %q (want %q), stderr %q", tc.args, r.code, r.stdout, tc.want, r.stderr)
		}
	}
}

// Errors print ch-remote's chain and exit 1.
func TestServerErrorOutput(t *testing.T) {
	for _, tc := range []struct {
		name  string
		argv0 string
		reply []byte
		want  string
	}{
		{"404", "nimbus-remote", microHTTP(404, `["Error from API","The VM info is not available","VM is not created"]`),
			"Error: nimbus-remote exited with the following chain of errors:\n" +
				"  0: http client error\n  1: Server responded with NotFound\n  2: Error from API\n" +
				"  3: The VM info is not available\n  4: VM is not created\n"},
		{"as-ch-remote", "/usr/local/bin/ch-remote", microHTTP(500, `["Error from API","The VM could not be paused","VM is not running"]`),
			"Error: ch-remote exited with the following chain of errors:\n" +
				"  0: http client error\n  1: Server responded with InternalServerError\n  2: Error from API\n" +
				"  3: The VM could not be paused\n  4: VM is not running\n"},
		{"409", "nimbus-remote", microHTTP(409, `["Error from API","The disk could not be added to the VM","Identifier d is not unique"]`),
			"Error: nimbus-remote exited with the following chain of errors:\n" +
				"  0: http client error\n  1: Server responded with Unknown\n  2: Error from API\n" +
				"  3: The disk could not be added to the VM\n  4: Identifier d is not unique\n"},
		{"429", "nimbus-remote", microHTTP(429, `["Error from API","The VM could not be resized"]`),
			"Error: nimbus-remote exited with the following chain of errors:\n" +
				"  0: http client error\n  1: Server responded with TooManyRequests\n  2: Error from API\n" +
				"  3: The VM could not be resized\n"},
		{"bare-400", "nimbus-remote", microHTTP(400, ""),
			"Error: nimbus-remote exited with the following chain of errors:\n" +
				"  0: http client error\n" +
				"  X: Can't get remote's error messages from JSON response: EOF while parsing a value at line 1 column 0: body=''\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := newFakeServer(t, tc.reply)
			var out, errb bytes.Buffer
			code := run(context.Background(), []string{tc.argv0, "--api-socket", srv.path, "pause"}, nil, &out, &errb)
			if code != 1 || out.String() != "" || errb.String() != tc.want {
				t.Errorf("exit %d, stdout %q\nstderr:\n%s\nwant:\n%s", code, out.String(), errb.String(), tc.want)
			}
		})
	}
}

func TestTransportErrorOutput(t *testing.T) {
	// A server that hangs up without answering.
	path := filepath.Join(t.TempDir(), "s.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := ln.Accept()
		if err == nil {
			c.Read(make([]byte, 4096))
			c.Close()
		}
	}()
	r := runCLI(t, "", "--api-socket", path, "boot")
	<-done
	ln.Close()
	if !strings.HasPrefix(r.stderr, "Error: nimbus-remote exited with the following chain of errors:\n"+
		"  0: http client error\n  1: Error writing to or reading from HTTP socket\n  2: ") || r.code != 1 {
		t.Errorf("exit %d, stderr %q", r.code, r.stderr)
	}

	r = runCLI(t, "", "--api-socket", filepath.Join(t.TempDir(), "none.sock"), "ping")
	if r.code != 1 || !strings.HasPrefix(r.stderr, "Error opening HTTP socket: ") ||
		!strings.HasSuffix(r.stderr, "no such file or directory\n") {
		t.Errorf("missing socket: exit %d, stderr %q", r.code, r.stderr)
	}
}

// failReader fails the test if read: a bad socket must be reported
// before stdin is read, as ch-remote connects first.
type failReader struct{ t *testing.T }

func (f failReader) Read([]byte) (int, error) {
	f.t.Error("stdin read before connecting")
	return 0, io.EOF
}

func TestConnectsBeforeReadingStdin(t *testing.T) {
	var out, errb bytes.Buffer
	code := run(context.Background(), []string{"nimbus-remote", "--api-socket", filepath.Join(t.TempDir(), "none"), "create"},
		failReader{t}, &out, &errb)
	if code != 1 || !strings.HasPrefix(errb.String(), "Error opening HTTP socket: ") {
		t.Errorf("exit %d, stderr %q", code, errb.String())
	}
}

// Bad option syntax fails before anything is sent, with ch-remote's
// top-level message and the parser's chain under it.
func TestBodyErrors(t *testing.T) {
	srv := newFakeServer(t, microHTTP(204, ""))
	for _, tc := range []struct {
		args  []string
		lines []string
	}{
		{[]string{"add-disk", "path=/x,bogus=1"}, []string{"  0: Error parsing disk syntax", "  1: error parsing --disk", `  2: unknown option "bogus"`}},
		{[]string{"add-net", "mac=zz"}, []string{"  0: Error parsing network syntax"}},
		{[]string{"add-vsock", "cid=3"}, []string{"  0: Error parsing vsock syntax"}},
		{[]string{"add-fs", "tag=x,num_queues=q"}, []string{"  0: Error parsing filesystem syntax"}},
		{[]string{"add-pmem", "size=1G"}, []string{"  0: Error parsing persistent memory syntax"}},
		{[]string{"add-user-device", "id=x"}, []string{"  0: Error parsing user device syntax"}},
		{[]string{"add-vdpa", "num_queues=2"}, []string{"  0: Error parsing vDPA device syntax"}},
		{[]string{"add-device", "id=x"}, []string{"  0: Error parsing device syntax"}},
		{[]string{"add-generic-vhost-user", "socket=/s,bogus=1"}, []string{"  0: Error parsing generic vhost-user syntax"}},
		{[]string{"restore", "prefault=on"}, []string{"  0: Error parsing restore syntax"}},
		{[]string{"send-migration", "local=on"}, []string{"  0: Error parsing send migration configuration"}},
		{[]string{"receive-migration", "unix:/m"}, []string{"  0: Error parsing receive migration configuration"}},
		{[]string{"resize", "--cpus", "x"}, []string{"  0: Error parsing CPU count", "  1: invalid digit found in string"}},
		{[]string{"resize", "--cpus", ""}, []string{"  0: Error parsing CPU count", "  1: cannot parse integer from empty string"}},
		{[]string{"resize", "--memory", "12Q"}, []string{"  0: Error parsing memory size"}},
		{[]string{"resize", "--balloon", "1g"}, []string{"  0: Error parsing balloon size"}},
		{[]string{"resize-disk", "--disk", "d", "--size", "x"}, []string{"  0: Invalid disk size"}},
		{[]string{"resize-zone", "--id", "z", "--size", "x"}, []string{"  0: Error parsing memory size"}},
		{[]string{"create", "/nonexistent/vm.json"}, []string{"  0: Error reading from file", "  1: open /nonexistent/vm.json"}},
	} {
		r := runCLI(t, "", append([]string{"--api-socket", srv.path}, tc.args...)...)
		lines := strings.Split(strings.TrimSuffix(r.stderr, "\n"), "\n")
		if r.code != 1 || r.stdout != "" || len(lines) < 1+len(tc.lines) ||
			lines[0] != "Error: nimbus-remote exited with the following chain of errors:" ||
			!reflect.DeepEqual(lines[1:1+len(tc.lines)], tc.lines) {
			t.Errorf("%v: exit %d\nstderr:\n%s", tc.args, r.code, r.stderr)
		}
	}
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if len(srv.reqs) != 0 {
		t.Errorf("%d requests sent for bad input", len(srv.reqs))
	}
}

func TestUsage(t *testing.T) {
	for _, tc := range []struct {
		args       []string
		code       int
		stdoutHas  string
		stderrHas  string
		stderrNone bool
	}{
		{nil, 2, "", "Usage: nimbus-remote [OPTIONS] <COMMAND>", false},
		{[]string{"--help"}, 0, "add-generic-vhost-user", "", true},
		{[]string{"-h"}, 0, "shutdown-vmm", "", true},
		{[]string{"--version"}, 0, "nimbus-remote v", "", true},
		{[]string{"help", "resize"}, 0, "--balloon <balloon>", "", true},
		{[]string{"--api-socket", "/s", "add-disk", "--help"}, 0, "Usage: nimbus-remote add-disk <disk_config>", "", true},
		{[]string{"--api-socket", "/s", "create", "-h"}, 0, "[default: -]", "", true},
		{[]string{"--api-socket"}, 2, "", "a value is required for '--api-socket <api-socket>'", false},
		{[]string{"--api-socket", "/s"}, 2, "", "requires a subcommand", false},
		{[]string{"--api-socket", "/s", "frobnicate"}, 2, "", "unrecognized subcommand 'frobnicate'", false},
		{[]string{"--bogus", "ping"}, 2, "", "unexpected argument '--bogus' found", false},
		{[]string{"--api-socket", "/s", "ping", "extra"}, 2, "", "unexpected argument 'extra' found", false},
		{[]string{"--api-socket", "/s", "add-disk", "a", "b"}, 2, "", "unexpected argument 'b' found", false},
		{[]string{"--api-socket", "/s", "resize", "--vcpus", "2"}, 2, "", "unexpected argument '--vcpus' found", false},
		{[]string{"--api-socket", "/s", "resize", "--cpus"}, 2, "", "a value is required for '--cpus <cpus>'", false},
		{[]string{"--api-socket", "/s", "restore"}, 2, "", "required arguments were not provided:\n  <restore_config>", false},
		{[]string{"--api-socket", "/s", "snapshot"}, 2, "", "<snapshot_config>", false},
		{[]string{"--api-socket", "/s", "add-disk"}, 2, "", "<disk_config>", false},
		{[]string{"--api-socket", "/s", "remove-device"}, 2, "", "<id>", false},
		{[]string{"--api-socket", "/s", "resize-disk", "--disk", "d"}, 2, "", "--size <size>", false},
		{[]string{"--api-socket", "/s", "resize-zone", "--size", "1G"}, 2, "", "--id <id>", false},
		{[]string{"--api-socket", "/a", "--api-socket=/b", "ping"}, 2, "", "'--api-socket <api-socket>' cannot be used multiple times", false},
		{[]string{"--api-socket", "/s", "resize", "--cpus", "1", "--cpus=2"}, 2, "", "'--cpus <cpus>' cannot be used multiple times", false},
		{[]string{"ping"}, 1, "", "Please either provide the api-socket option or dbus-service-name and dbus-object-path options\n", false},
	} {
		r := runCLI(t, "", tc.args...)
		if r.code != tc.code || !strings.Contains(r.stdout, tc.stdoutHas) || !strings.Contains(r.stderr, tc.stderrHas) ||
			(tc.stderrNone && r.stderr != "") {
			t.Errorf("%q: exit %d (want %d)\nstdout:\n%s\nstderr:\n%s", tc.args, r.code, tc.code, r.stdout, r.stderr)
		}
	}
}

// The events extension prints one JSON line per event until the stream
// ends.
func TestEvents(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ev.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/v1/vmm.events" {
			http.NotFound(w, r)
			return
		}
		io.WriteString(w, `{"timestamp":{"secs":0,"nanos":5},"source":"vm","event":"booting","properties":null}`+"\n")
		w.(http.Flusher).Flush()
		io.WriteString(w, `{"timestamp":{"secs":1,"nanos":0},"source":"vm","event":"booted","properties":{"id":"x"}}`+"\n")
	})}
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(ln) }()
	defer func() { srv.Close(); <-done }()

	r := runCLI(t, "", "--api-socket", path, "events")
	want := `{"timestamp":{"secs":0,"nanos":5},"source":"vm","event":"booting","properties":null}` + "\n" +
		`{"timestamp":{"secs":1,"nanos":0},"source":"vm","event":"booted","properties":{"id":"x"}}` + "\n"
	if r.code != 0 || r.stdout != want || r.stderr != "" {
		t.Errorf("exit %d\nstdout %q\nwant   %q\nstderr %q", r.code, r.stdout, want, r.stderr)
	}
}
