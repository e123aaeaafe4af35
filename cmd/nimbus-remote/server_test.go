package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
)

// got is one request as the fake server received it.
type got struct {
	raw   []byte
	fds   []*os.File
	fdsAt int // offset in raw of the read that carried the fds; -1: none
	req   *http.Request
	body  []byte
}

// fakeServer answers each request (one per connection, as nimbus-remote
// sends) with canned raw bytes, reading with ReadMsgUnix to see fds.
type fakeServer struct {
	path  string
	ln    *net.UnixListener
	reply []byte
	wg    sync.WaitGroup
	mu    sync.Mutex
	reqs  []*got
}

func newFakeServer(t *testing.T, reply []byte) *fakeServer {
	t.Helper()
	path := filepath.Join(t.TempDir(), "api.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	s := &fakeServer{path: path, ln: ln, reply: reply}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			conn, err := ln.AcceptUnix()
			if err != nil {
				return
			}
			s.handle(conn)
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		s.wg.Wait()
		for _, g := range s.reqs {
			for _, f := range g.fds {
				f.Close()
			}
		}
	})
	return s
}

func (s *fakeServer) handle(conn *net.UnixConn) {
	defer conn.Close()
	g := &got{fdsAt: -1}
	buf := make([]byte, 64<<10)
	oob := make([]byte, syscall.CmsgSpace(16*4))
	for {
		n, oobn, _, _, err := conn.ReadMsgUnix(buf, oob)
		if oobn > 0 {
			msgs, _ := syscall.ParseSocketControlMessage(oob[:oobn])
			for _, m := range msgs {
				fds, _ := syscall.ParseUnixRights(&m)
				for _, fd := range fds {
					g.fds = append(g.fds, os.NewFile(uintptr(fd), "received"))
				}
			}
			if g.fdsAt < 0 {
				g.fdsAt = len(g.raw)
			}
		}
		g.raw = append(g.raw, buf[:n]...)
		if bytes.Contains(g.raw, []byte("\r\n\r\n")) {
			if req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(g.raw))); err == nil {
				if body, err := io.ReadAll(req.Body); err == nil && int64(len(body)) >= req.ContentLength {
					g.req, g.body = req, body
					break
				}
			}
		}
		if err != nil {
			break
		}
	}
	if g.req == nil {
		// A connection closed without a request (nimbus-remote connects
		// before building the body, and bad input ends it there).
		for _, f := range g.fds {
			f.Close()
		}
		return
	}
	// Recorded before replying, so a client that got its reply knows the
	// server has recorded the request.
	s.mu.Lock()
	s.reqs = append(s.reqs, g)
	s.mu.Unlock()
	conn.Write(s.reply)
}

func (s *fakeServer) only(t *testing.T) *got {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.reqs) != 1 {
		t.Fatalf("server got %d requests, want 1", len(s.reqs))
	}
	return s.reqs[0]
}

// microHTTP renders a reply as upstream's micro_http does: no reason
// phrase, Content-Length on everything but 204.
func microHTTP(status int, body string) []byte {
	if status == 204 {
		return []byte("HTTP/1.1 204 \r\nServer: Cloud Hypervisor API\r\nConnection: keep-alive\r\n\r\n")
	}
	return []byte(fmt.Sprintf("HTTP/1.1 %d \r\nServer: Cloud Hypervisor API\r\nConnection: keep-alive\r\n"+
		"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", status, len(body), body))
}
