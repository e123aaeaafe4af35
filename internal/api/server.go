// Package api is Nimbus's REST front end: Cloud Hypervisor's HTTP/1.1 API
// on a Unix socket (routes /api/v1/<name>, status codes, error bodies and
// SCM_RIGHTS fd passing as upstream's vmm/src/api/http). It only
// translates: each request becomes one vmm.Command submitted through
// vmm.Handler.Do, and the reply becomes the HTTP response.
package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"sync"

	"github.com/nimbus-vmm/nimbus/api/openapi"
	"github.com/nimbus-vmm/nimbus/internal/vmm"
)

// MaxBodySize is upstream's HTTP_PAYLOAD_MAX_SIZE: larger requests get 400.
const MaxBodySize = 4 << 20

// ServerHeader is the Server header on every response. Nimbus keeps
// upstream's exact value: it is a drop-in replacement, and a client or
// script that does look at it should see Cloud Hypervisor's API.
const ServerHeader = "Cloud Hypervisor API"

// Options configures a Server. The zero value is usable.
type Options struct {
	// Events, when set, serves GET /api/v1/vmm.events.
	Events EventSource
	// Logf receives one line per failed request; nil discards.
	Logf func(format string, args ...any)
}

// Server serves the API. Create it with New, run it with Serve, stop it
// with Shutdown or Close.
type Server struct {
	h    vmm.Handler
	opts Options
	srv  *http.Server

	// stop ends event streams when the server closes; net/http does not
	// cancel running handlers by itself.
	stop     context.Context
	stopNow  context.CancelFunc
	stopOnce sync.Once
}

// New returns a server that submits every request to h.
func New(h vmm.Handler, opts Options) *Server {
	s := &Server{h: h, opts: opts}
	s.stop, s.stopNow = context.WithCancel(context.Background())
	s.srv = &http.Server{
		Handler:     s,
		ConnContext: connContext,
	}
	// net/http's own complaints (bad request lines, TLS probes, panics)
	// go to Logf, not to the process's stderr.
	s.srv.ErrorLog = log.New(logWriter{s}, "", 0)
	return s
}

// Serve accepts connections on l until the server is closed; it returns
// nil after Shutdown or Close. A *net.UnixListener (or one from Listen)
// is wrapped so that fds sent over SCM_RIGHTS reach the handlers.
func (s *Server) Serve(l net.Listener) error {
	switch ul := l.(type) {
	case *net.UnixListener:
		l = fdListener{ul}
	case *Listener:
		l = &wrappedListener{Listener: ul, acc: fdListener{ul.UnixListener}}
	}
	err := s.srv.Serve(l)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// wrappedListener accepts through the fd-collecting listener while
// keeping Listen's cleanup on Close.
type wrappedListener struct {
	*Listener
	acc fdListener
}

func (w *wrappedListener) Accept() (net.Conn, error) { return w.acc.Accept() }

// Shutdown stops accepting, ends event streams, and waits (until ctx ends)
// for in-flight requests to finish.
func (s *Server) Shutdown(ctx context.Context) error {
	s.stopOnce.Do(s.stopNow)
	return s.srv.Shutdown(ctx)
}

// Close stops the server at once, closing listeners and connections.
func (s *Server) Close() error {
	s.stopOnce.Do(s.stopNow)
	return s.srv.Close()
}

func (s *Server) logf(format string, args ...any) {
	if s.opts.Logf != nil {
		s.opts.Logf(format, args...)
	}
}

// ServeHTTP handles one request. Exported so tests and embedders can use
// the handler without a socket.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	fds, truncated := takeFds(r.Context())
	// Whatever fds the command does not take are closed here.
	defer func() { vmm.CloseFiles(fds) }()

	hdr := w.Header()
	hdr["Server"] = []string{ServerHeader}
	hdr["Date"] = nil // upstream sends none

	name, ok := strings.CutPrefix(r.URL.Path, Root)
	var rt *route
	if ok {
		rt = routes[name]
	}
	if rt == nil {
		switch {
		case ok && name == "vmm.events" && s.opts.Events != nil:
			s.serveEvents(w, r)
		case ok && name == "openapi.yaml":
			s.serveSpec(w, r)
		default:
			writeJSON(w, http.StatusNotFound, []string{"Not Found"})
		}
		return
	}

	if r.Method != rt.method {
		if rt.kind != kindSpecial && r.Method != http.MethodGet && r.Method != http.MethodPut {
			writeEmpty(w, http.StatusBadRequest)
		} else {
			writeJSON(w, http.StatusBadRequest, []string{"Bad Request"})
		}
		return
	}

	body, err := readBody(w, r)
	if err != nil {
		w.Header().Set("Connection", "close")
		writeJSON(w, http.StatusBadRequest, []string{"Bad Request", err.Error()})
		return
	}
	if truncated {
		writeJSON(w, http.StatusBadRequest, []string{"Bad Request", "file descriptors were truncated (MSG_CTRUNC)"})
		return
	}

	switch rt.kind {
	case kindGet, kindPut:
		if len(body) > 0 && rt.kind == kindPut {
			writeJSON(w, http.StatusBadRequest, []string{"Bad Request"})
			return
		}
	case kindPutBody:
		if len(body) == 0 {
			writeJSON(w, http.StatusBadRequest, []string{"Bad Request"})
			return
		}
	case kindSpecial:
		if name == "vm.create" && len(body) == 0 {
			writeEmpty(w, http.StatusBadRequest)
			return
		}
	}

	cmd, taken, err := rt.build(body, fds)
	if err != nil {
		var de *errDecode
		if errors.As(err, &de) {
			writeJSON(w, http.StatusBadRequest, []string{"Failed to deserialize JSON", de.Error()})
		} else {
			writeJSON(w, http.StatusBadRequest, []string{"Bad Request", err.Error()})
		}
		return
	}
	if len(taken) > 0 {
		// The command owns these now; the deferred close skips them
		// unless the command fails (below).
		fds = nil
	}

	v, err := s.h.Do(r.Context(), cmd)
	if err != nil {
		if !isContextErr(err) {
			// A failed command did not keep its fds; closing an
			// *os.File twice is harmless if the handler closed them too.
			vmm.CloseFiles(taken)
		}
		s.logf("api: %s: %v", name, err)
		writeJSON(w, StatusFor(err), apiErrorBody(rt.apiText, err))
		return
	}
	if name == "vmm.shutdown" {
		// Upstream answers 200 with an empty body, not the spec's 204.
		writeEmpty(w, http.StatusOK)
		return
	}
	if isNil(v) {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	writeJSON(w, http.StatusOK, v)
}

// readBody reads at most MaxBodySize bytes of the body.
func readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	if r.ContentLength > MaxBodySize {
		return nil, fmt.Errorf("Request payload with size %d is larger than the limit of %d allowed by server", r.ContentLength, MaxBodySize)
	}
	if r.ContentLength == 0 {
		return nil, nil
	}
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodySize))
	if err != nil {
		var me *http.MaxBytesError
		if errors.As(err, &me) {
			return nil, fmt.Errorf("Request payload is larger than the limit of %d allowed by server", MaxBodySize)
		}
		return nil, fmt.Errorf("reading request body: %w", err)
	}
	return b, nil
}

// isNil reports a nil reply value, including a typed nil pointer such as
// a (*vmm.PciDeviceInfo)(nil) from a cold add.
func isNil(v any) bool {
	if v == nil {
		return true
	}
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Pointer, reflect.Map, reflect.Slice, reflect.Interface:
		return rv.IsNil()
	}
	return false
}

// writeJSON writes status with v as its JSON body.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		b, _ = json.Marshal([]string{"Internal Server Error", err.Error()})
	}
	h := w.Header()
	h["Content-Type"] = []string{"application/json"}
	h["Content-Length"] = []string{strconv.Itoa(len(b))}
	w.WriteHeader(status)
	w.Write(b)
}

// writeEmpty writes status with an empty body; like micro_http it still
// sends Content-Type and Content-Length: 0 (only 204 omits them).
func writeEmpty(w http.ResponseWriter, status int) {
	h := w.Header()
	h["Content-Type"] = []string{"application/json"}
	h["Content-Length"] = []string{"0"}
	w.WriteHeader(status)
}

// serveSpec serves Nimbus's OpenAPI document.
func (s *Server) serveSpec(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		writeJSON(w, http.StatusBadRequest, []string{"Bad Request"})
		return
	}
	h := w.Header()
	h["Content-Type"] = []string{"application/yaml"}
	h["Content-Length"] = []string{strconv.Itoa(len(openapi.Spec))}
	w.WriteHeader(http.StatusOK)
	w.Write(openapi.Spec)
}

// logWriter forwards net/http's error log lines to Options.Logf.
type logWriter struct{ s *Server }

func (w logWriter) Write(p []byte) (int, error) {
	w.s.logf("api: %s", bytes.TrimRight(p, "\n"))
	return len(p), nil
}
