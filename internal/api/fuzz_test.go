package api

import (
	"bufio"
	"bytes"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/nimbus-vmm/nimbus/internal/vmm"
)

// FuzzRequest writes arbitrary bytes as a request on a real connection;
// whatever happens to it, the server must keep serving the next client.
func FuzzRequest(f *testing.F) {
	f.Add([]byte("GET /api/v1/vmm.ping HTTP/1.1\r\nHost: localhost\r\n\r\n"))
	f.Add([]byte("PUT /api/v1/vm.create HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\n{\"a"))
	f.Add([]byte("PUT /api/v1/vm.add-net HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"))
	f.Add([]byte("\x00\xff GET / HTTP/9.9\r\n\r\n"))
	ts := startServer(f, stateful(), Options{})
	f.Fuzz(func(t *testing.T, raw []byte) {
		c := dialRaw(t, ts.path)
		c.SetDeadline(time.Now().Add(2 * time.Second))
		c.Write(raw)
		c.CloseWrite()
		// Drain whatever comes back; the server may answer or hang up.
		var sink bytes.Buffer
		sink.ReadFrom(c)
		c.Close()

		ok := dialRaw(t, ts.path)
		ok.SetDeadline(time.Now().Add(5 * time.Second))
		ok.Write([]byte("GET /api/v1/vmm.ping HTTP/1.1\r\nHost: localhost\r\n\r\n"))
		resp, err := http.ReadResponse(bufio.NewReader(ok), nil)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("server stopped serving after %q: %v", raw, err)
		}
		resp.Body.Close()
	})
}

// FuzzBody sends arbitrary JSON bodies to every body-taking route through
// the handler: any failure must be a 400/4xx/5xx with a JSON array body,
// never a panic, and a decoded command must reach the handler intact.
func FuzzBody(f *testing.F) {
	for _, s := range []string{`{}`, `null`, `[]`, `{"cpus":{"boot_vcpus":1,"max_vcpus":1}}`, `{"id":"x","desired_size":1}`,
		`{"desired_vcpus":null}`, `{"net_fds":[{"id":"n","num_fds":2,"fds":[1,2]}],"source_url":"file:///s"}`, "\"\xff\"", `1e999`} {
		f.Add(s)
	}
	h := &fakeHandler{reply: func(vmm.Command) (any, error) { return nil, nil }}
	s := New(h, Options{})
	var names []string
	for n, rt := range routes {
		if rt.kind == kindPutBody || n == "vm.create" {
			names = append(names, n)
		}
	}
	f.Fuzz(func(t *testing.T, body string) {
		for _, n := range names {
			req := httptest.NewRequest("PUT", Root+n, bytes.NewReader([]byte(body)))
			w := httptest.NewRecorder()
			s.ServeHTTP(w, req)
			switch w.Code {
			case 200, 204:
			case 400:
				if w.Body.Len() > 0 && (w.Body.Bytes()[0] != '[' || w.Header().Get("Content-Type") != "application/json") {
					t.Fatalf("%s: 400 body %q", n, w.Body.Bytes())
				}
			default:
				t.Fatalf("%s %q: status %d", n, body, w.Code)
			}
		}
	})
}
