// Package client talks to a Nimbus (or Cloud Hypervisor) VMM over its REST
// API Unix socket.
//
// Requests are written byte for byte as upstream's api_client writes them
// (api_client/src/lib.rs): a request line, "Host: localhost", "Accept: */*",
// a Content-Length when there is a body, no Content-Type. Each call uses its
// own connection, as ch-remote does, and file descriptors ride as
// SCM_RIGHTS ancillary data on the first write of the request.
package client

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"syscall"
	"time"
)

// APIRoot is the path prefix of every endpoint.
const APIRoot = "/api/v1/"

// DefaultMaxResponseSize bounds the size of a response body the client
// will buffer (vm.info of a large VM is a few tens of KiB).
const DefaultMaxResponseSize = 16 << 20

// Client is a client of one API socket. It holds no connection between
// calls, so it is safe for concurrent use and needs no Close.
type Client struct {
	socketPath string
	maxBody    int64
	dialer     net.Dialer
}

// Option configures a Client.
type Option func(*Client)

// WithMaxResponseSize sets the largest response body the client accepts.
func WithMaxResponseSize(n int64) Option {
	return func(c *Client) { c.maxBody = n }
}

// WithDialTimeout bounds how long connecting to the socket may take, in
// addition to any deadline of the call's context.
func WithDialTimeout(d time.Duration) Option {
	return func(c *Client) { c.dialer.Timeout = d }
}

// New returns a client for the API socket at socketPath. It does not
// connect; every call dials the socket afresh.
func New(socketPath string, opts ...Option) *Client {
	c := &Client{socketPath: socketPath, maxBody: DefaultMaxResponseSize}
	for _, o := range opts {
		o(c)
	}
	return c
}

// SocketPath is the path of the API socket the client talks to.
func (c *Client) SocketPath() string { return c.socketPath }

// Response is a successful reply, as received.
type Response struct {
	// StatusCode is 200, 204 or 100 (the statuses upstream treats as success).
	StatusCode int
	// Header holds the response headers.
	Header http.Header
	// Body is the response body; empty when there is none.
	Body []byte
	// HasBody reports whether the reply carried a Content-Length header
	// (possibly 0). ch-remote prints a body, even an empty one, exactly
	// when it does; a 204 has none.
	HasBody bool
}

// Do sends one request to endpoint (e.g. "vm.boot", "vmm.ping") on a
// connection of its own, as ch-remote does, and returns the reply. A nil
// body sends no Content-Length; a non-nil body, even an empty one, is sent
// with one. fds are sent with SCM_RIGHTS on the request's first write; the
// caller keeps ownership of them (the kernel duplicates them into the
// server). A reply whose status is not 200, 204 or 100 is returned as an
// *APIError; failures to talk to the server are *TransportError.
func (c *Client) Do(ctx context.Context, method, endpoint string, body []byte, fds ...int) (*Response, error) {
	conn, err := c.Dial(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	return conn.Do(ctx, method, endpoint, body, fds...)
}

// ErrConnBroken is the cause of the TransportError a Conn returns once an
// earlier call on it failed or had its context cancelled mid-call.
var ErrConnBroken = errors.New("connection unusable after an earlier failed or cancelled call")

// Conn is one connection to the API socket, carrying any number of
// requests in turn (HTTP/1.1 keep-alive), each with its own fds, as Kata
// and libvirt send several vm.add-net requests on one connection. A Conn
// is not safe for concurrent use; after a TransportError (including a
// cancelled context) it is unusable (later calls fail with ErrConnBroken)
// and should be closed.
type Conn struct {
	c      *Client
	uc     *net.UnixConn
	br     *bufio.Reader
	broken bool
}

// testHookReplyRead, when set, runs after a reply has been read and before
// Do stops watching the context (tests cancel the context there).
var testHookReplyRead func()

// Dial connects to the API socket. The context bounds the connect only.
func (c *Client) Dial(ctx context.Context) (*Conn, error) {
	uc, err := c.dial(ctx)
	if err != nil {
		return nil, err
	}
	uc.SetDeadline(noDeadline)
	return &Conn{c: c, uc: uc, br: bufio.NewReader(uc)}, nil
}

// Close closes the connection.
func (cn *Conn) Close() error { return cn.uc.Close() }

// Do sends one request on the connection and reads its reply; see
// Client.Do for the arguments and errors.
func (cn *Conn) Do(ctx context.Context, method, endpoint string, body []byte, fds ...int) (*Response, error) {
	if cn.broken {
		return nil, &TransportError{Msg: MsgSocket, Err: ErrConnBroken}
	}
	resp, err := cn.exchange(ctx, method, endpoint, body, fds)
	if err != nil {
		cn.broken = true
		return nil, err
	}
	if !successStatus(resp.StatusCode) {
		return nil, newAPIError(resp.StatusCode, resp.Body, resp.HasBody)
	}
	return resp, nil
}

// exchange writes the request and reads the reply, cancelling both when
// ctx ends.
func (cn *Conn) exchange(ctx context.Context, method, endpoint string, body []byte, fds []int) (*Response, error) {
	dl, _ := ctx.Deadline() // zero: none
	cn.uc.SetDeadline(dl)
	// Cancelling ctx unblocks any read or write in progress.
	fired := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(fired)
		cn.uc.SetDeadline(time.Unix(1, 0))
	})
	resp, err := cn.exchangeWatched(ctx, method, endpoint, body, fds)
	if !stop() {
		// The callback has started (the context ended as the call
		// finished): wait for it, or its past deadline could land after
		// the next call reset the deadline. The connection is left with
		// that deadline, so it is broken even if this call succeeded.
		<-fired
		cn.broken = true
	}
	return resp, err
}

func (cn *Conn) exchangeWatched(ctx context.Context, method, endpoint string, body []byte, fds []int) (*Response, error) {
	if err := writeRequest(cn.uc, method, endpoint, body, fds); err != nil {
		return nil, cn.c.ctxErr(ctx, err)
	}
	resp, err := cn.c.readResponse(cn.br)
	if err != nil {
		return nil, cn.c.ctxErr(ctx, err)
	}
	if testHookReplyRead != nil {
		testHookReplyRead()
	}
	return resp, nil
}

func (c *Client) dial(ctx context.Context) (*net.UnixConn, error) {
	conn, err := c.dialer.DialContext(ctx, "unix", c.socketPath)
	if err != nil {
		return nil, &TransportError{Msg: MsgConnect, Err: err}
	}
	uc, ok := conn.(*net.UnixConn)
	if !ok {
		conn.Close()
		return nil, &TransportError{Msg: MsgConnect, Err: fmt.Errorf("%T is not a Unix connection", conn)}
	}
	if dl, ok := ctx.Deadline(); ok {
		uc.SetDeadline(dl)
	}
	return uc, nil
}

// ctxErr prefers the context's error when the context ended the call, so
// callers can test errors.Is(err, context.DeadlineExceeded).
func (c *Client) ctxErr(ctx context.Context, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		return &TransportError{Msg: MsgSocket, Err: cerr}
	}
	return err
}

// requestBytes renders a request exactly as upstream's api_client does.
func requestBytes(method, endpoint string, body []byte) []byte {
	var b bytes.Buffer
	b.Grow(96 + len(body))
	b.WriteString(method)
	b.WriteString(" " + APIRoot)
	b.WriteString(endpoint)
	b.WriteString(" HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\n")
	if body != nil {
		b.WriteString("Content-Length: ")
		b.WriteString(strconv.Itoa(len(body)))
		b.WriteString("\r\n")
	}
	b.WriteString("\r\n")
	b.Write(body)
	return b.Bytes()
}

// writeRequest writes the whole request, the fds riding on the first
// sendmsg. A stream socket may take fewer bytes than offered; the rest
// follows with plain writes (the fds are attached to the first byte).
func writeRequest(conn *net.UnixConn, method, endpoint string, body []byte, fds []int) error {
	buf := requestBytes(method, endpoint, body)
	var oob []byte
	if len(fds) > 0 {
		oob = syscall.UnixRights(fds...)
	}
	n, _, err := conn.WriteMsgUnix(buf, oob, nil)
	if err != nil {
		msg := MsgSocket
		if len(fds) > 0 {
			msg = MsgSendFds
		}
		return &TransportError{Msg: msg, Err: err}
	}
	if n < len(buf) {
		if _, err := conn.Write(buf[n:]); err != nil {
			return &TransportError{Msg: MsgSocket, Err: err}
		}
	}
	return nil
}

// readResponse reads one reply and its whole body.
func (c *Client) readResponse(br *bufio.Reader) (*Response, error) {
	hr, err := http.ReadResponse(br, nil)
	if err != nil {
		return nil, &TransportError{Msg: MsgSocket, Err: err}
	}
	defer hr.Body.Close()
	body, err := io.ReadAll(io.LimitReader(hr.Body, c.maxBody+1))
	if err != nil {
		return nil, &TransportError{Msg: MsgSocket, Err: err}
	}
	if int64(len(body)) > c.maxBody {
		return nil, &TransportError{Msg: MsgSocket, Err: fmt.Errorf("response body larger than %d bytes", c.maxBody)}
	}
	_, hasLen := hr.Header["Content-Length"]
	return &Response{
		StatusCode: hr.StatusCode,
		Header:     hr.Header,
		Body:       body,
		HasBody:    hasLen || len(body) > 0,
	}, nil
}

// successStatus mirrors api_client's StatusCode::is_server_error: only
// 200, 204 and 100 are success.
func successStatus(code int) bool {
	return code == http.StatusOK || code == http.StatusNoContent || code == http.StatusContinue
}

// noDeadline clears a connection deadline.
var noDeadline time.Time
