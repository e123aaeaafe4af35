package migration

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"

	"golang.org/x/sys/unix"
)

// RAM is the destination's guest memory, written by Memory requests.
type RAM interface {
	Slice(gpa, n uint64) ([]byte, error)
}

// Target is the VM a migration builds on the destination.
type Target interface {
	// MemoryFd takes guest RAM slot's memfd (a local migration), before
	// Configure.
	MemoryFd(slot uint32, f *os.File) error
	// Configure takes the sender's VmMigrationConfig (JSON) and makes the
	// guest RAM the memory rounds fill.
	Configure(config []byte) (RAM, error)
	// Restore builds the VM from the sender's state, paused.
	Restore(state []byte) error
	// Complete ends the migration; resume says the VM runs again
	// (Complete) or stays paused (CompletePaused).
	Complete(resume bool) error
}

// ErrAbandoned: the sender gave the migration up (Abandon, or it hung up).
var ErrAbandoned = errors.New("Migration was aborted")

// maxPayload bounds a Config or State payload (a bad peer must not make
// the destination allocate without limit).
const maxPayload = 256 << 20

// Receive serves one incoming migration on conn (upstream's
// vm_receive_migration state machine): every request gets an OK or, when
// it fails, an Error, after which the migration is over. It returns nil
// once Complete (or CompletePaused) succeeded.
func Receive(conn io.ReadWriter, t Target) error {
	const (
		established = iota
		started
		configured
		stateReceived
	)
	state := established
	var ram RAM
	for {
		req, err := readRequest(conn)
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return fmt.Errorf("Failed to read migration request: sender likely failed: %w", ErrAbandoned)
			}
			return err
		}
		if req.Command == CmdAbandon {
			return ErrAbandoned
		}
		step := func() (next int, done bool, err error) {
			switch {
			case state == established && req.Command == CmdStart:
				if v := uint16(req.Headers[0]) | uint16(req.Headers[1])<<8; v != ProtocolVersion {
					return 0, false, fmt.Errorf("Migration protocol version %d doesn't match supported versions: %d: %w", v, ProtocolVersion, ErrProtocol)
				}
				return started, false, nil
			case state == started && req.Command == CmdMemoryFd:
				return started, false, receiveMemoryFd(conn, req, t)
			case state == started && req.Command == CmdConfig:
				b, err := readPayload(conn, req)
				if err != nil {
					return 0, false, err
				}
				ram, err = t.Configure(b)
				return configured, false, err
			case state == configured && req.Command == CmdMemory:
				return configured, false, receiveMemory(conn, req, ram)
			case state == configured && req.Command == CmdState:
				b, err := readPayload(conn, req)
				if err != nil {
					return 0, false, err
				}
				return stateReceived, false, t.Restore(b)
			case state == stateReceived && (req.Command == CmdComplete || req.Command == CmdCompletePaused):
				return stateReceived, true, t.Complete(req.Command == CmdComplete)
			}
			return 0, false, fmt.Errorf("Can't handle command %v in current receive state %d: %w", req.Command, state, ErrProtocol)
		}
		next, done, err := step()
		if err != nil {
			_ = writeResponse(conn, StatusError)
			return fmt.Errorf("Migration aborted as migration command %v failed: %w", req.Command, err)
		}
		if err := writeResponse(conn, StatusOK); err != nil {
			return err
		}
		if done {
			return nil
		}
		state = next
	}
}

// receiveMemoryFd reads a MemoryFd request's slot and the fd sent with it.
func receiveMemoryFd(conn io.Reader, req Request, t Target) error {
	uc, ok := conn.(*net.UnixConn)
	if !ok || req.Length != 4 {
		return fmt.Errorf("memory fd over %T with a %d-byte payload: %w", conn, req.Length, ErrProtocol)
	}
	var p [4]byte
	oob := make([]byte, unix.CmsgSpace(4*4))
	n, oobn, _, _, err := uc.ReadMsgUnix(p[:], oob)
	if err != nil {
		return fmt.Errorf("Error receiving slot from socket: %w", err)
	}
	var fds []int
	if msgs, perr := unix.ParseSocketControlMessage(oob[:oobn]); perr == nil {
		for _, m := range msgs {
			if got, err := unix.ParseUnixRights(&m); err == nil {
				fds = append(fds, got...)
			}
		}
	}
	if n != 4 || len(fds) != 1 {
		for _, fd := range fds {
			unix.Close(fd)
		}
		return fmt.Errorf("memory fd message of %d bytes with %d fds: %w", n, len(fds), ErrProtocol)
	}
	f := os.NewFile(uintptr(fds[0]), "guest-ram")
	defer f.Close() // the target keeps its own duplicate
	return t.MemoryFd(binary.LittleEndian.Uint32(p[:]), f)
}

func readPayload(r io.Reader, req Request) ([]byte, error) {
	if req.Length > maxPayload {
		return nil, fmt.Errorf("%v payload of %d bytes: %w", req.Command, req.Length, ErrProtocol)
	}
	// Grown as the bytes arrive: a peer that announces 256 MiB and sends
	// nothing does not make the receiver allocate them (found by fuzzing).
	var b bytes.Buffer
	_, err := io.CopyN(&b, r, int64(req.Length))
	if errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return b.Bytes(), err
}

// receiveMemory reads a Memory request's table and then its ranges'
// bytes straight into guest RAM.
func receiveMemory(r io.Reader, req Request, ram RAM) error {
	if req.Length > maxPayload {
		return fmt.Errorf("memory range table of %d bytes: %w", req.Length, ErrProtocol)
	}
	table, err := readPayload(r, req)
	if err != nil {
		return err
	}
	ranges, err := DecodeRanges(table)
	if err != nil {
		return err
	}
	for _, rg := range ranges {
		b, err := ram.Slice(rg.GPA, rg.Length)
		if err != nil {
			return fmt.Errorf("Error receiving memory from socket: %w", err)
		}
		if _, err := io.ReadFull(r, b); err != nil {
			return fmt.Errorf("Error receiving memory from socket: %w", err)
		}
	}
	return nil
}
