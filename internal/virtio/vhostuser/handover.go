package vhostuser

import (
	"errors"
	"sync"
)

// Handover keeps back-end connections from one machine to the next at a
// reboot. Nimbus rebuilds the machine when the guest reboots (as upstream
// does); upstream dials every back end again, but a virtiofsd serves one
// front end and exits when it hangs up, so upstream's reboot fails unless
// something restarts it. Like QEMU at a system reset, Nimbus instead
// stops the rings and keeps the connection: the device the next machine
// builds on the same socket takes it over and negotiates again. Safe for
// use by several goroutines; a nil Handover holds nothing.
type Handover struct {
	mu    sync.Mutex
	conns map[string]*handedConn
}

// handedConn is one connection waiting for the next machine's device.
type handedConn struct {
	name string // the Spec.Name of the device that handed it over
	conn *Conn
}

// NewHandover returns an empty Handover.
func NewHandover() *Handover { return &Handover{conns: map[string]*handedConn{}} }

func (h *Handover) put(socket string, c *handedConn) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if old := h.conns[socket]; old != nil {
		old.conn.Close()
	}
	h.conns[socket] = c
}

// take returns the connection handed over for socket by a device of the
// same kind, or nil. Another kind's connection stays for Close.
func (h *Handover) take(socket, name string) *Conn {
	if h == nil {
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	c := h.conns[socket]
	if c == nil || c.name != name {
		return nil
	}
	delete(h.conns, socket)
	return c.conn
}

// len is how many connections wait to be taken.
func (h *Handover) len() int {
	if h == nil {
		return 0
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.conns)
}

// Close hangs up on every back end that no device took (the new config
// no longer has it). Idempotent.
func (h *Handover) Close() error {
	if h == nil {
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	var errs []error
	for s, c := range h.conns {
		errs = append(errs, c.conn.Close())
		delete(h.conns, s)
	}
	return errors.Join(errs...)
}
