package api

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/nimbus-vmm/nimbus/internal/vmm"
	"golang.org/x/sys/unix"
)

// fakeHandler is a test double for the control loop: it records every
// command and answers with reply (or nil, nil).
type fakeHandler struct {
	mu    sync.Mutex
	cmds  []vmm.Command
	reply func(vmm.Command) (any, error)
}

func (f *fakeHandler) Do(ctx context.Context, cmd vmm.Command) (any, error) {
	f.mu.Lock()
	f.cmds = append(f.cmds, cmd)
	reply := f.reply
	f.mu.Unlock()
	if reply == nil {
		return nil, nil
	}
	return reply(cmd)
}

func (f *fakeHandler) commands() []vmm.Command {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]vmm.Command(nil), f.cmds...)
}

// testServer runs a Server on a fresh socket until the test ends.
type testServer struct {
	*Server
	path string
}

func shortTempDir(t testing.TB) string {
	// Socket paths must fit in sun_path (108 bytes); t.TempDir can be long.
	d, err := os.MkdirTemp("", "nb")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

func startServer(t testing.TB, h vmm.Handler, opts Options) *testServer {
	t.Helper()
	path := filepath.Join(shortTempDir(t), "api.sock")
	l, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	s := New(h, opts)
	done := make(chan error, 1)
	go func() { done <- s.Serve(l) }()
	t.Cleanup(func() {
		if err := s.Shutdown(context.Background()); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return &testServer{Server: s, path: path}
}

// client returns an HTTP client whose connections go to the socket and
// whose every exchange is checked against the OpenAPI document.
func (ts *testServer) client(t testing.TB) *http.Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", ts.path)
		},
		MaxIdleConnsPerHost: 64,
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: &validatingTransport{t: t, next: tr}}
}

// response is a read response with its body.
type response struct {
	*http.Response
	body []byte
}

func do(t testing.TB, c *http.Client, method, name string, body []byte, hdr ...string) response {
	t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, "http://localhost"+Root+name, rd)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, name, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{resp, b}
}

// rawConn is one client connection for hand-written requests.
type rawConn struct {
	*net.UnixConn
	br *bufio.Reader
}

func dialRaw(t testing.TB, path string) *rawConn {
	t.Helper()
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawConn{UnixConn: c, br: bufio.NewReader(c)}
}

// roundTrip writes raw (with fds, in one sendmsg, as Kata and libvirt do)
// and reads one response.
func (c *rawConn) roundTrip(t testing.TB, raw []byte, fds ...int) response {
	t.Helper()
	var oob []byte
	if len(fds) > 0 {
		oob = unixRights(fds...)
	}
	// The whole request goes in one sendmsg, as Kata and libvirt send it;
	// a stream socket may take only part of a large one, so the rest is
	// written concurrently with reading the reply (the server may answer
	// before reading everything, e.g. for an oversized body).
	n, _, err := c.WriteMsgUnix(raw, oob, nil)
	if err != nil {
		t.Fatal(err)
	}
	wrote := make(chan struct{})
	go func() {
		defer close(wrote)
		if n < len(raw) {
			c.Write(raw[n:])
		}
	}()
	defer func() { <-wrote }()
	req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(raw)))
	if err != nil {
		t.Fatalf("test request does not parse: %v", err)
	}
	resp, err := http.ReadResponse(c.br, req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	checkExchange(t, raw, resp, b)
	return response{resp, b}
}

func unixRights(fds ...int) []byte { return unix.UnixRights(fds...) }
