package client

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
)

// captured is one request as the raw test server received it.
type captured struct {
	Raw []byte     // every byte of the request, as sent
	Fds []*os.File // fds received with SCM_RIGHTS
	// FdsAt is the offset in Raw of the first byte of the read that
	// carried the fds (0 means they came with the request's first bytes).
	FdsAt int
	Req   *http.Request
	Body  []byte
}

// rawServer is an HTTP/1.1 server on a Unix socket that reads with
// ReadMsgUnix, so the tests see the exact bytes and fds the client sends,
// and answers with canned raw bytes.
type rawServer struct {
	t       *testing.T
	path    string
	ln      *net.UnixListener
	respond func(c *captured) []byte
	wg      sync.WaitGroup
	mu      sync.Mutex
	reqs    []*captured
}

func newRawServer(t *testing.T, respond func(c *captured) []byte) *rawServer {
	t.Helper()
	path := filepath.Join(t.TempDir(), "api.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	s := &rawServer{t: t, path: path, ln: ln, respond: respond}
	s.wg.Add(1)
	go s.serve()
	t.Cleanup(s.close)
	return s
}

func (s *rawServer) close() {
	s.ln.Close()
	s.wg.Wait()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.reqs {
		for _, f := range c.Fds {
			f.Close()
		}
	}
}

func (s *rawServer) requests() []*captured {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*captured(nil), s.reqs...)
}

func (s *rawServer) serve() {
	defer s.wg.Done()
	for {
		conn, err := s.ln.AcceptUnix()
		if err != nil {
			return
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer conn.Close()
			s.handle(conn)
		}()
	}
}

// handle reads one request (the client sends one per connection) and
// answers it.
func (s *rawServer) handle(conn *net.UnixConn) {
	c := &captured{FdsAt: -1}
	buf := make([]byte, 64<<10)
	oob := make([]byte, syscall.CmsgSpace(64*4))
	for {
		n, oobn, _, _, err := conn.ReadMsgUnix(buf, oob)
		if oobn > 0 {
			msgs, perr := syscall.ParseSocketControlMessage(oob[:oobn])
			if perr != nil {
				s.t.Errorf("parse control message: %v", perr)
			}
			for _, m := range msgs {
				fds, _ := syscall.ParseUnixRights(&m)
				for _, fd := range fds {
					c.Fds = append(c.Fds, os.NewFile(uintptr(fd), "received"))
				}
			}
			if c.FdsAt < 0 {
				c.FdsAt = len(c.Raw)
			}
		}
		c.Raw = append(c.Raw, buf[:n]...)
		if req, body, ok := completeRequest(c.Raw); ok {
			c.Req, c.Body = req, body
			break
		}
		if err != nil {
			break
		}
	}
	s.mu.Lock()
	s.reqs = append(s.reqs, c)
	s.mu.Unlock()
	if c.Req == nil {
		return
	}
	resp := s.respond(c)
	if resp == nil {
		return // hang up without answering
	}
	conn.Write(resp)
	// Wait for the client to hang up.
	io.Copy(io.Discard, conn)
}

func completeRequest(raw []byte) (*http.Request, []byte, bool) {
	if !bytes.Contains(raw, []byte("\r\n\r\n")) {
		return nil, nil, false
	}
	req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(raw)))
	if err != nil {
		return nil, nil, false
	}
	body, err := io.ReadAll(req.Body)
	if err != nil || int64(len(body)) < req.ContentLength {
		return nil, nil, false
	}
	return req, body, true
}

// reply renders a response the way micro_http (upstream's server) does:
// no reason phrase, keep-alive, Content-Length on everything but 204.
func reply(status int, body string) []byte {
	var b bytes.Buffer
	b.WriteString("HTTP/1.1 ")
	b.WriteString(itoa(status))
	b.WriteString(" \r\nServer: Cloud Hypervisor API\r\nConnection: keep-alive\r\n")
	if status != 204 {
		b.WriteString("Content-Type: application/json\r\nContent-Length: ")
		b.WriteString(itoa(len(body)))
		b.WriteString("\r\n")
	}
	b.WriteString("\r\n")
	b.WriteString(body)
	return b.Bytes()
}

func itoa(n int) string { return strconv.Itoa(n) }
