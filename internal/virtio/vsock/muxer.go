package vsock

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Upstream's limits and timings (virtio-devices/src/vsock/unix/mod.rs and
// csm/mod.rs).
const (
	// BufAlloc is the credit each connection offers the guest
	// (CONN_TX_BUF_SIZE): what may wait to be written to the host socket.
	BufAlloc = 64 << 10
	// creditUpdateThreshold: a CREDIT_UPDATE goes to the guest once it
	// could believe less than this is free (CONN_CREDIT_UPDATE_THRESHOLD).
	creditUpdateThreshold = BufAlloc - 4<<10
	// MaxPayload is the largest packet payload (MAX_PKT_BUF_SIZE).
	MaxPayload = 64 << 10
	// MaxConnections is MAX_CONNECTIONS.
	MaxConnections = 1023
	// connectTimeout bounds a host-initiated connection waiting for the
	// guest's answer (CONN_REQUEST_TIMEOUT_MS); upstream checks it only
	// when another connection arrives, Nimbus with a timer.
	connectTimeout = 2 * time.Second
	// connectLineMax is the longest "CONNECT <port>\n" line accepted.
	connectLineMax = 32
	// lineTimeout bounds how long a host client may take to send it
	// (upstream waits forever).
	lineTimeout = 30 * time.Second
	// firstLocalPort is where host-side ports for host-initiated
	// connections start; they wrap back to it after 2^31-1.
	firstLocalPort = 1 << 30
)

type key struct{ local, peer uint32 }

type connState int

const (
	localInit   connState = iota // host-initiated, REQUEST sent, waiting for RESPONSE
	established                  // data flows
	dead                         // closed, being torn down
)

// conn is one stream between a host Unix socket and a guest port.
type conn struct {
	key
	uc    *net.UnixConn
	state connState
	timer *time.Timer
	sayOK bool // host-initiated: "OK <port>\n" still to be written

	// guest to host: payload waiting for the writer goroutine
	txbuf         []byte
	fwdCnt        uint32 // bytes written to the host socket
	lastFwdToPeer uint32
	peerNoSend    bool // the guest sent SHUTDOWN(SEND)
	peerNoRecv    bool // the guest sent SHUTDOWN(RCV)
	hostWriteOff  bool // CloseWrite done

	// host to guest: data the reader goroutine got, not yet in the guest
	rxbuf            []byte
	rbuf             []byte // the reader's scratch
	hostEOF, eofSent bool
	rxCnt            uint32 // bytes sent to the guest
	peerBufAlloc     uint32
	peerFwdCnt       uint32
	creditAsked      bool
	queued           bool // in muxer.ready
}

func (c *conn) credit() uint32 { return c.peerBufAlloc - (c.rxCnt - c.peerFwdCnt) }

// ctrl is a control packet for the guest.
type ctrl struct{ h Header }

// muxer is upstream's VsockMuxer for the hybrid Unix-socket backend: host
// programs connect to the listener at path and write "CONNECT <port>\n";
// guest connections to host port P dial path_P. All state is under mu;
// each connection has a reader and a writer goroutine on its socket.
type muxer struct {
	cid  uint64
	path string
	ln   *net.UnixListener
	log  *slog.Logger

	mu       sync.Mutex
	cond     *sync.Cond // readers and writers wait here
	conns    map[key]*conn
	pending  map[*net.UnixConn]bool // accepted, CONNECT line not read yet
	ctrl     []ctrl
	ready    []*conn // connections with data, EOF or a credit request for the guest
	nextPort uint32
	wake     func() // tells the device's RX goroutine; nil while inactive
	closed   bool
	wg       sync.WaitGroup
}

// ErrBind is upstream's "Error binding to the host-side Unix socket".
var ErrBind = errors.New("Error binding to the host-side Unix socket")

func newMuxer(path string, cid uint64, log *slog.Logger) (*muxer, error) {
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBind, err)
	}
	ln.SetUnlinkOnClose(true) // upstream removes the socket file at shutdown
	m := &muxer{cid: cid, path: path, ln: ln, log: log, conns: map[key]*conn{},
		pending: map[*net.UnixConn]bool{}, nextPort: firstLocalPort - 1}
	m.cond = sync.NewCond(&m.mu)
	m.wg.Add(1)
	go m.accept()
	return m, nil
}

// setWake sets (or, with nil, clears) the device's RX notifier.
func (m *muxer) setWake(f func()) {
	m.mu.Lock()
	m.wake = f
	m.mu.Unlock()
	if f != nil {
		f() // anything queued while inactive
	}
}

func (m *muxer) notify() {
	if m.wake != nil {
		m.wake()
	}
}

// close stops every goroutine and closes every socket.
func (m *muxer) close() error {
	m.mu.Lock()
	m.closed = true
	err := m.ln.Close()
	for uc := range m.pending {
		uc.Close()
	}
	for _, c := range m.conns {
		m.drop(c)
	}
	m.cond.Broadcast()
	m.mu.Unlock()
	m.wg.Wait()
	return err
}

// accept serves the listener: each client gets a goroutine that reads its
// CONNECT line.
func (m *muxer) accept() {
	defer m.wg.Done()
	for {
		uc, err := m.ln.AcceptUnix()
		if err != nil {
			return // closed
		}
		m.mu.Lock()
		if m.closed {
			m.mu.Unlock()
			uc.Close()
			return
		}
		m.pending[uc] = true
		m.wg.Add(1)
		m.mu.Unlock()
		go m.handshake(uc)
	}
}

// handshake reads "CONNECT <port>\n" one byte at a time (nothing after
// the newline is consumed; it is the stream's first data) and asks the
// guest for the connection. A bad line closes the client, as upstream.
func (m *muxer) handshake(uc *net.UnixConn) {
	defer m.wg.Done()
	port, err := readConnect(uc)
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.pending, uc)
	if err != nil || m.closed {
		uc.Close()
		return
	}
	if len(m.conns) >= MaxConnections {
		m.log.Warn("vsock: connection limit reached; refusing new host connection")
		uc.Close()
		return
	}
	local := m.allocPort()
	c := m.newConn(key{local, port}, uc, localInit)
	c.sayOK = true
	c.timer = time.AfterFunc(connectTimeout, func() {
		m.mu.Lock()
		defer m.mu.Unlock()
		if c.state == localInit {
			m.log.Warn("vsock: the guest did not answer a connection request", "port", port)
			m.kill(c)
		}
	})
	m.sendCtrl(c, OpRequest, 0)
}

func readConnect(uc *net.UnixConn) (uint32, error) {
	_ = uc.SetReadDeadline(time.Now().Add(lineTimeout))
	defer uc.SetReadDeadline(time.Time{})
	var line []byte
	b := make([]byte, 1)
	for len(line) < connectLineMax {
		if _, err := uc.Read(b); err != nil {
			return 0, err
		}
		if b[0] == '\n' {
			f := strings.Fields(string(line))
			if len(f) != 2 || !strings.EqualFold(f[0], "CONNECT") {
				return 0, fmt.Errorf("bad command %q", line)
			}
			p, err := strconv.ParseUint(f[1], 10, 32)
			return uint32(p), err
		}
		line = append(line, b[0])
	}
	return 0, fmt.Errorf("command too long")
}

// allocPort is the next free host-side port from 2^30, wrapping before 2^31.
func (m *muxer) allocPort() uint32 {
	for {
		m.nextPort++
		if m.nextPort >= 1<<31 {
			m.nextPort = firstLocalPort
		}
		used := false
		for k := range m.conns {
			if k.local == m.nextPort {
				used = true
				break
			}
		}
		if !used {
			return m.nextPort
		}
	}
}

func (m *muxer) newConn(k key, uc *net.UnixConn, st connState) *conn {
	c := &conn{key: k, uc: uc, state: st, rbuf: make([]byte, BufAlloc)}
	m.conns[k] = c
	return c
}

// start runs an established connection's reader and writer.
func (m *muxer) start(c *conn) {
	m.wg.Add(2)
	go m.reader(c)
	go m.writer(c)
}

// header is a packet of c's with upstream's credit fields.
func (m *muxer) header(c *conn, op uint16, flags uint32) Header {
	return Header{SrcCID: HostCID, DstCID: m.cid, SrcPort: c.local, DstPort: c.peer, Type: TypeStream,
		Op: op, Flags: flags, BufAlloc: BufAlloc, FwdCnt: c.fwdCnt}
}

func (m *muxer) sendCtrl(c *conn, op uint16, flags uint32) {
	if op != OpRequest && op != OpResponse {
		c.lastFwdToPeer = c.fwdCnt
	}
	m.ctrl = append(m.ctrl, ctrl{m.header(c, op, flags)})
	m.notify()
}

// rst queues an RST for (local, peer) with no credit, as upstream's muxer.
func (m *muxer) rst(local, peer uint32) {
	m.ctrl = append(m.ctrl, ctrl{Header{SrcCID: HostCID, DstCID: m.cid, SrcPort: local, DstPort: peer, Type: TypeStream, Op: OpRst}})
	m.notify()
}

// drop forgets c and closes its socket (its goroutines end).
func (m *muxer) drop(c *conn) {
	if c.state == dead {
		return
	}
	c.state = dead
	if c.timer != nil {
		c.timer.Stop()
	}
	c.uc.Close()
	delete(m.conns, c.key)
	m.cond.Broadcast()
}

// kill drops c and tells the guest with an RST, unless the guest never
// heard of it (a host connection whose REQUEST is still queued: a host
// client retrying while the guest boots must not queue work for later).
func (m *muxer) kill(c *conn) {
	if c.state == dead {
		return
	}
	wasInit := c.state == localInit
	m.drop(c)
	if wasInit {
		n := len(m.ctrl)
		m.ctrl = slices.DeleteFunc(m.ctrl, func(p ctrl) bool {
			return p.h.Op == OpRequest && p.h.SrcPort == c.local && p.h.DstPort == c.peer
		})
		if len(m.ctrl) < n {
			return
		}
	}
	m.rst(c.local, c.peer)
}

func (m *muxer) markReady(c *conn) {
	if !c.queued && c.state == established {
		c.queued = true
		m.ready = append(m.ready, c)
		m.notify()
	}
}

// reader copies the host socket into c.rxbuf, at most BufAlloc waiting.
func (m *muxer) reader(c *conn) {
	defer m.wg.Done()
	for {
		m.mu.Lock()
		for c.state != dead && len(c.rxbuf) >= BufAlloc {
			m.cond.Wait()
		}
		if c.state == dead {
			m.mu.Unlock()
			return
		}
		room := BufAlloc - len(c.rxbuf)
		m.mu.Unlock()
		n, err := c.uc.Read(c.rbuf[:room])
		m.mu.Lock()
		if c.state == dead {
			m.mu.Unlock()
			return
		}
		c.rxbuf = append(c.rxbuf, c.rbuf[:n]...)
		if err != nil {
			// EOF: the host shut its write side (or closed): the guest
			// gets SHUTDOWN(SEND) once it has the data, as upstream for a
			// half-close.
			c.hostEOF = true
		}
		m.markReady(c)
		m.mu.Unlock()
		if err != nil {
			return
		}
	}
}

// writer copies c.txbuf to the host socket, counts it in fwd_cnt and
// returns credit to the guest; after the guest's SHUTDOWN(SEND) it shuts
// the host socket's write side once the data is out.
func (m *muxer) writer(c *conn) {
	defer m.wg.Done()
	m.mu.Lock()
	defer m.mu.Unlock()
	for {
		for c.state != dead && len(c.txbuf) == 0 && !c.sayOK && !(c.peerNoSend && !c.hostWriteOff) {
			m.cond.Wait()
		}
		if c.state == dead {
			return
		}
		if c.sayOK {
			c.sayOK = false
			line := []byte(fmt.Sprintf("OK %d\n", c.local))
			m.mu.Unlock()
			_, err := c.uc.Write(line)
			m.mu.Lock()
			if err != nil {
				m.kill(c)
				return
			}
			continue
		}
		if len(c.txbuf) == 0 {
			c.hostWriteOff = true
			_ = c.uc.CloseWrite()
			if c.peerNoRecv {
				m.kill(c) // both directions done: upstream's RST
				return
			}
			continue
		}
		data := c.txbuf
		c.txbuf = nil
		m.mu.Unlock()
		n, err := c.uc.Write(data)
		m.mu.Lock()
		c.fwdCnt += uint32(n)
		if err != nil {
			if c.state != dead {
				m.log.Warn("vsock: error writing to local stream", "port", c.local, "err", err)
			}
			m.kill(c)
			return
		}
		if c.state == established && c.fwdCnt-c.lastFwdToPeer > creditUpdateThreshold {
			m.sendCtrl(c, OpCreditUpdate, 0)
		}
	}
}

// fromGuest routes one packet the guest sent (upstream's send_pkt). It
// does not keep payload, which the caller reuses.
func (m *muxer) fromGuest(h Header, payload []byte) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if h.Type != TypeStream {
		m.rst(h.DstPort, h.SrcPort)
		return
	}
	if h.DstCID != HostCID {
		m.log.Info("vsock: dropping guest packet for unknown CID", "cid", h.DstCID)
		return
	}
	k := key{h.DstPort, h.SrcPort}
	c := m.conns[k]
	if c == nil {
		switch h.Op {
		case OpRequest:
			m.guestConnect(k, h)
		case OpRst: // the spec: never answer an RST (upstream does)
		default:
			m.rst(h.DstPort, h.SrcPort)
		}
		return
	}
	if h.Op == OpRst {
		m.drop(c)
		return
	}
	c.peerBufAlloc, c.peerFwdCnt = h.BufAlloc, h.FwdCnt
	if c.creditAsked && c.credit() > 0 {
		c.creditAsked = false
	}
	if len(c.rxbuf) > 0 || (c.hostEOF && !c.eofSent) {
		m.markReady(c)
	}
	switch h.Op {
	case OpResponse:
		if c.state != localInit {
			m.kill(c)
			return
		}
		c.state = established
		c.timer.Stop()
		m.start(c)
		m.cond.Broadcast()
	case OpRW:
		if c.state != established || c.peerNoSend || len(payload) == 0 {
			return
		}
		if len(c.txbuf)+len(payload) > BufAlloc {
			// More than the credit offered: upstream resets the stream.
			m.log.Warn("vsock: guest overran its credit", "port", c.local)
			m.kill(c)
			return
		}
		c.txbuf = append(c.txbuf, payload...)
		m.cond.Broadcast()
	case OpCreditRequest:
		if c.state == established {
			m.sendCtrl(c, OpCreditUpdate, 0)
		}
	case OpShutdown:
		if c.state != established {
			return
		}
		c.peerNoRecv = c.peerNoRecv || h.Flags&ShutdownRcv != 0
		c.peerNoSend = c.peerNoSend || h.Flags&ShutdownSend != 0
		if c.peerNoRecv && c.peerNoSend && len(c.txbuf) == 0 {
			m.kill(c)
			return
		}
		m.cond.Broadcast() // the writer shuts the host side once drained
	}
}

// guestConnect is a guest connection to host port k.local: dial
// <path>_<port>; RESPONSE on success, RST otherwise.
func (m *muxer) guestConnect(k key, h Header) {
	if len(m.conns) >= MaxConnections {
		m.rst(k.local, k.peer)
		return
	}
	p := m.path + "_" + strconv.FormatUint(uint64(k.local), 10)
	uc, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: p, Net: "unix"})
	if err != nil {
		m.log.Info("vsock: guest connection refused", "path", p, "err", err)
		m.rst(k.local, k.peer)
		return
	}
	c := m.newConn(k, uc, established)
	c.peerBufAlloc, c.peerFwdCnt = h.BufAlloc, h.FwdCnt
	m.sendCtrl(c, OpResponse, 0)
	m.start(c)
}

// hasWork reports whether a packet may be waiting for the guest.
func (m *muxer) hasWork() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.ctrl) > 0 || len(m.ready) > 0
}

// next is the next packet for a guest RX buffer with room payload bytes
// (upstream's recv_pkt): control packets first, then the connections in
// turn. ok is false when nothing is sendable.
func (m *muxer) next(room int) (h Header, data []byte, ok bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.ctrl) > 0 {
		h = m.ctrl[0].h
		m.ctrl = m.ctrl[1:]
		return h, nil, true
	}
	for len(m.ready) > 0 {
		c := m.ready[0]
		m.ready = m.ready[1:]
		c.queued = false
		if c.state != established {
			continue
		}
		if len(c.rxbuf) > 0 && !c.peerNoRecv {
			cr := int(c.credit())
			if cr == 0 {
				if c.creditAsked {
					continue // the guest's CREDIT_UPDATE puts it back
				}
				c.creditAsked = true
				return m.header(c, OpCreditRequest, 0), nil, true
			}
			n := min(len(c.rxbuf), cr, room, MaxPayload)
			if n == 0 {
				m.ready = append([]*conn{c}, m.ready...)
				c.queued = true
				return h, nil, false
			}
			data = c.rxbuf[:n:n]
			c.rxbuf = c.rxbuf[n:]
			c.rxCnt += uint32(n)
			h = m.header(c, OpRW, 0)
			h.Len = uint32(n)
			c.lastFwdToPeer = c.fwdCnt
			m.cond.Broadcast() // the reader may have room again
			if len(c.rxbuf) > 0 || (c.hostEOF && !c.eofSent) {
				m.ready = append(m.ready, c) // round robin
				c.queued = true
			}
			return h, data, true
		}
		if c.hostEOF && !c.eofSent {
			c.eofSent = true
			if c.peerNoSend && len(c.txbuf) == 0 {
				m.kill(c) // both sides done
				continue
			}
			return m.header(c, OpShutdown, ShutdownSend), nil, true
		}
	}
	return h, nil, false
}
