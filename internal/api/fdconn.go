package api

import (
	"context"
	"fmt"
	"net"
	"os"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/nimbus-vmm/nimbus/internal/vmm"
)

// Fds received over SCM_RIGHTS. Go's net/http never sees ancillary data,
// so the listener hands out connections that read with recvmsg, keep the
// fds that arrive on a connection in a queue, and let the handler of the
// request being served take them (see takeFds). Clients send fds with the
// first bytes of a request and wait for its reply before the next one
// (api_client, Kata, libvirt), so the fds queued when a handler starts are
// the ones sent with its request.

// maxFdsPerMsg sizes the control buffer: Linux's SCM_MAX_FD is 253 fds per
// message, so a buffer for 253 fds is never truncated by the kernel.
const maxFdsPerMsg = 253

// fdListener wraps a Unix listener so that accepted connections collect fds.
type fdListener struct {
	*net.UnixListener
}

// Accept waits for the next connection and wraps it as an *fdConn.
func (l fdListener) Accept() (net.Conn, error) {
	c, err := l.AcceptUnix()
	if err != nil {
		return nil, err
	}
	return newFdConn(c), nil
}

// fdConn is a Unix connection whose reads collect SCM_RIGHTS fds.
type fdConn struct {
	*net.UnixConn
	oob []byte // owned by the single reader (net/http reads serially)

	mu        sync.Mutex
	fds       []*os.File // received, not yet taken by a request
	truncated bool       // MSG_CTRUNC seen: some fds were lost
	closed    bool
}

func newFdConn(c *net.UnixConn) *fdConn {
	return &fdConn{UnixConn: c, oob: make([]byte, unix.CmsgSpace(maxFdsPerMsg*4))}
}

// Read reads with recvmsg. Go's net package passes MSG_CMSG_CLOEXEC on
// Linux, so received fds are close-on-exec from the start.
func (c *fdConn) Read(b []byte) (int, error) {
	n, oobn, flags, _, err := c.ReadMsgUnix(b, c.oob)
	if oobn > 0 || flags&unix.MSG_CTRUNC != 0 {
		c.collect(c.oob[:oobn], flags&unix.MSG_CTRUNC != 0)
	}
	if n < 0 {
		// recvmsg's -1 on error; io.Reader must not return a negative count.
		n = 0
	}
	return n, err
}

// collect parses the control messages and queues every fd they carry.
func (c *fdConn) collect(oob []byte, truncated bool) {
	var files []*os.File
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		truncated = true
	}
	for i := range msgs {
		fds, err := unix.ParseUnixRights(&msgs[i])
		if err != nil {
			continue // not SCM_RIGHTS (e.g. credentials)
		}
		for _, fd := range fds {
			files = append(files, os.NewFile(uintptr(fd), fmt.Sprintf("scm-rights-fd-%d", fd)))
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		vmm.CloseFiles(files)
		return
	}
	c.fds = append(c.fds, files...)
	c.truncated = c.truncated || truncated
}

// take returns and forgets the queued fds, and whether any fds were lost
// to truncation since the last take.
func (c *fdConn) take() ([]*os.File, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	fds, tr := c.fds, c.truncated
	c.fds, c.truncated = nil, false
	return fds, tr
}

// Close closes the connection and any fds no request took.
func (c *fdConn) Close() error {
	c.mu.Lock()
	fds := c.fds
	c.fds, c.closed = nil, true
	c.mu.Unlock()
	vmm.CloseFiles(fds)
	return c.UnixConn.Close()
}

type connKey struct{}

// connContext is http.Server.ConnContext: it makes the fdConn reachable
// from the requests read from it.
func connContext(ctx context.Context, c net.Conn) context.Context {
	if fc, ok := c.(*fdConn); ok {
		return context.WithValue(ctx, connKey{}, fc)
	}
	return ctx
}

// takeFds returns the fds received on the request's connection so far.
func takeFds(ctx context.Context) ([]*os.File, bool) {
	if fc, ok := ctx.Value(connKey{}).(*fdConn); ok {
		return fc.take()
	}
	return nil, false
}
