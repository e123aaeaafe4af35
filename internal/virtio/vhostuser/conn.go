package vhostuser

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Sentinel errors.
var (
	// ErrConnect: the back end's socket could not be reached in time.
	ErrConnect = errors.New("vhost-user: cannot connect to the back end")
	// ErrProtocol: the back end answered something Nimbus cannot use (a
	// wrong reply, a refused request, a short message).
	ErrProtocol = errors.New("vhost-user protocol error")
	// ErrDisconnected: the connection failed (the back end exited or hung
	// up); every later request fails with it at once.
	ErrDisconnected = errors.New("vhost-user back end disconnected")
)

// Timeouts. Upstream retries its client-mode connect for 60 s every
// 100 ms; a request gets replyTimeout so that a hung back end fails the
// activation (the guest sees DEVICE_NEEDS_RESET) instead of holding a vCPU
// thread forever.
const (
	ConnectTimeout = 60 * time.Second
	connectRetry   = 100 * time.Millisecond
	replyTimeout   = 30 * time.Second
)

// Conn is the front end's side of one vhost-user connection. Its methods
// are the requests; each runs to its reply (or REPLY_ACK acknowledgement)
// before the next starts.
type Conn struct {
	mu        sync.Mutex
	c         *net.UnixConn
	needReply bool  // REPLY_ACK negotiated: ask for an ack of every request
	broken    error // the transport failure that ended the connection
	buf       []byte
}

// Dial connects to the back end listening on path, retrying until timeout
// as upstream's client mode does (the back end may still be starting).
func Dial(path string, timeout time.Duration) (*Conn, error) {
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
		if err == nil {
			return &Conn{c: c}, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%w: %s: %w", ErrConnect, path, err)
		}
		time.Sleep(connectRetry)
	}
}

// markBroken fails every later request with err (the back end hung up).
func (c *Conn) markBroken(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.broken == nil {
		c.broken = err
	}
}

// failed says whether the back end hung up.
func (c *Conn) failed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.broken != nil
}

// Close closes the connection; the back end sees the hang-up.
func (c *Conn) Close() error { return c.c.Close() }

// request sends req with payload and fds and returns the reply payload:
// the request's own reply, or the REPLY_ACK acknowledgement (checked
// here, nil returned) when negotiated, or nil without either.
func (c *Conn) request(req Request, payload []byte, fds ...int) ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.broken != nil {
		return nil, fmt.Errorf("%v: %w", req, c.broken)
	}
	flags := uint32(flagVersion)
	ack := c.needReply && !req.hasReply()
	if ack {
		flags |= flagNeedReply
	}
	hdr, _ := Header{Request: req, Flags: flags, Size: uint32(len(payload))}.MarshalBinary()
	msg := append(hdr, payload...)
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	c.c.SetDeadline(time.Now().Add(replyTimeout))
	defer c.c.SetDeadline(time.Time{})
	if n, _, err := c.c.WriteMsgUnix(msg, oob, nil); err != nil || n != len(msg) {
		c.broken = fmt.Errorf("%w: send %v: %d of %d bytes: %v", ErrDisconnected, req, n, len(msg), err)
		return nil, c.broken
	}
	if !ack && !req.hasReply() {
		return nil, nil
	}
	r, body, err := c.readReply()
	if err != nil {
		// The stream is out of step after a partial or missing reply.
		c.broken = fmt.Errorf("%w: reply to %v: %w", ErrDisconnected, req, err)
		return nil, c.broken
	}
	if r.Request != req || r.Flags&flagReply == 0 {
		return nil, fmt.Errorf("%w: reply to %v came as %v (flags %#x)", ErrProtocol, req, r.Request, r.Flags)
	}
	if ack {
		if len(body) != 8 {
			return nil, fmt.Errorf("%w: %v: acknowledgement of %d bytes", ErrProtocol, req, len(body))
		}
		if v := binary.LittleEndian.Uint64(body); v != 0 {
			return nil, fmt.Errorf("%w: the back end refused %v (%d)", ErrProtocol, req, v)
		}
		return nil, nil
	}
	return body, nil
}

func (c *Conn) readReply() (Header, []byte, error) {
	var hb [headerSize]byte
	if _, err := io.ReadFull(c.c, hb[:]); err != nil {
		return Header{}, nil, err
	}
	h := parseHeader(hb[:])
	if h.Size > maxPayload {
		return h, nil, fmt.Errorf("payload of %d bytes", h.Size)
	}
	if cap(c.buf) < int(h.Size) {
		c.buf = make([]byte, maxPayload)
	}
	body := c.buf[:h.Size]
	if _, err := io.ReadFull(c.c, body); err != nil {
		return h, nil, err
	}
	return h, body, nil
}

// getU64 sends req with no payload and reads a u64 reply.
func (c *Conn) getU64(req Request) (uint64, error) {
	b, err := c.request(req, nil)
	if err != nil {
		return 0, err
	}
	if len(b) != 8 {
		return 0, fmt.Errorf("%w: %v: reply of %d bytes", ErrProtocol, req, len(b))
	}
	return binary.LittleEndian.Uint64(b), nil
}

// SetOwner is VHOST_USER_SET_OWNER: this front end owns the session.
func (c *Conn) SetOwner() error { _, err := c.request(SetOwner, nil); return err }

// Features is VHOST_USER_GET_FEATURES.
func (c *Conn) Features() (uint64, error) { return c.getU64(GetFeatures) }

// SetFeatures is VHOST_USER_SET_FEATURES.
func (c *Conn) SetFeatures(f uint64) error { _, err := c.request(SetFeatures, u64(f)); return err }

// ProtocolFeatures is VHOST_USER_GET_PROTOCOL_FEATURES.
func (c *Conn) ProtocolFeatures() (uint64, error) { return c.getU64(GetProtocolFeatures) }

// SetProtocolFeatures is VHOST_USER_SET_PROTOCOL_FEATURES; with REPLY_ACK
// among f, every later request asks for an acknowledgement.
func (c *Conn) SetProtocolFeatures(f uint64) error {
	if _, err := c.request(SetProtocolFeatures, u64(f)); err != nil {
		return err
	}
	c.mu.Lock()
	c.needReply = f&ProtocolReplyAck != 0
	c.mu.Unlock()
	return nil
}

// QueueNum is VHOST_USER_GET_QUEUE_NUM (with the MQ protocol feature).
func (c *Conn) QueueNum() (uint64, error) { return c.getU64(GetQueueNum) }

// MaxMemSlots is VHOST_USER_GET_MAX_MEM_SLOTS (CONFIGURE_MEM_SLOTS).
func (c *Conn) MaxMemSlots() (uint64, error) { return c.getU64(GetMaxMemSlots) }

// SetMemTable is VHOST_USER_SET_MEM_TABLE: the regions and one descriptor
// per region, in order.
func (c *Conn) SetMemTable(t MemTable, fds []int) error {
	if len(t) != len(fds) || len(t) > MaxMemTableRegions {
		return fmt.Errorf("%w: memory table of %d regions with %d descriptors", ErrProtocol, len(t), len(fds))
	}
	b, _ := t.MarshalBinary()
	_, err := c.request(SetMemTable, b, fds...)
	return err
}

// AddMemReg is VHOST_USER_ADD_MEM_REG (CONFIGURE_MEM_SLOTS).
func (c *Conn) AddMemReg(r MemoryRegion, fd int) error {
	b, _ := SingleMemRegion(r).MarshalBinary()
	_, err := c.request(AddMemReg, b, fd)
	return err
}

// RemMemReg is VHOST_USER_REM_MEM_REG (CONFIGURE_MEM_SLOTS): the back end
// unmaps the region ADD_MEM_REG gave it.
func (c *Conn) RemMemReg(r MemoryRegion) error {
	b, _ := SingleMemRegion(r).MarshalBinary()
	_, err := c.request(RemMemReg, b)
	return err
}

func (c *Conn) vringState(req Request, index, num uint32) error {
	b, _ := VringState{Index: index, Num: num}.MarshalBinary()
	_, err := c.request(req, b)
	return err
}

// SetVringNum is VHOST_USER_SET_VRING_NUM: the ring's size.
func (c *Conn) SetVringNum(index uint32, size uint16) error {
	return c.vringState(SetVringNum, index, uint32(size))
}

// SetVringBase is VHOST_USER_SET_VRING_BASE: the next available index
// the back end consumes.
func (c *Conn) SetVringBase(index uint32, base uint16) error {
	return c.vringState(SetVringBase, index, uint32(base))
}

// SetVringEnable is VHOST_USER_SET_VRING_ENABLE.
func (c *Conn) SetVringEnable(index uint32, on bool) error {
	v := uint32(0)
	if on {
		v = 1
	}
	return c.vringState(SetVringEnable, index, v)
}

// VringBase is VHOST_USER_GET_VRING_BASE: it stops the ring and returns
// the back end's next available index.
func (c *Conn) VringBase(index uint32) (uint32, error) {
	b, _ := VringState{Index: index}.MarshalBinary()
	r, err := c.request(GetVringBase, b)
	if err != nil {
		return 0, err
	}
	if len(r) != 8 {
		return 0, fmt.Errorf("%w: %v: reply of %d bytes", ErrProtocol, GetVringBase, len(r))
	}
	return binary.LittleEndian.Uint32(r[4:]), nil
}

// SetVringAddr is VHOST_USER_SET_VRING_ADDR.
func (c *Conn) SetVringAddr(a VringAddr) error {
	b, _ := a.MarshalBinary()
	_, err := c.request(SetVringAddr, b)
	return err
}

// SetVringKick is VHOST_USER_SET_VRING_KICK: the eventfd the guest's
// notifications arrive on (the queue's KVM ioeventfd).
func (c *Conn) SetVringKick(index uint32, fd int) error {
	_, err := c.request(SetVringKick, u64(uint64(index)), fd)
	return err
}

// SetVringCall is VHOST_USER_SET_VRING_CALL: the eventfd the back end
// signals used buffers on.
func (c *Conn) SetVringCall(index uint32, fd int) error {
	_, err := c.request(SetVringCall, u64(uint64(index)), fd)
	return err
}

// Config is VHOST_USER_GET_CONFIG: size bytes of the device's config
// space from offset (CONFIG protocol feature).
func (c *Conn) Config(offset, size uint32) ([]byte, error) {
	b, _ := ConfigHeader{Offset: offset, Size: size}.MarshalBinary()
	r, err := c.request(GetConfig, b)
	if err != nil {
		return nil, err
	}
	if len(r) != 12+int(size) {
		return nil, fmt.Errorf("%w: %v: reply of %d bytes, want %d", ErrProtocol, GetConfig, len(r), 12+size)
	}
	return append([]byte(nil), r[12:]...), nil
}
