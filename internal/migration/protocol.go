// Package migration is upstream's live-migration protocol
// (vm-migration/src/protocol.rs, vmm/src/migration): the wire format, the
// sender's precopy rounds and the receiver's state machine, over a
// unix: or tcp: connection. What is migrated (RAM, the VM's state) comes
// from interfaces the machine implements.
package migration

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Errors; match with errors.Is.
var (
	// ErrProtocol: the peer sent something the protocol does not allow.
	ErrProtocol = errors.New("migration protocol error")
	// ErrRefused: the peer answered a request with an error status.
	ErrRefused = errors.New("migration refused by the peer")
	// ErrURL: the migration URL is not unix:<path> or tcp:<host>:<port>.
	ErrURL = errors.New("bad migration URL")
)

// Command is a request's command (upstream's vm_migration::protocol::Command).
type Command uint16

// Commands, upstream's numbering.
const (
	CmdInvalid Command = iota
	CmdStart
	CmdConfig
	CmdState
	CmdMemory
	CmdComplete
	CmdAbandon
	CmdMemoryFd
	CmdCompletePaused
	CmdPageFault
)

var commandNames = [...]string{"Invalid", "Start", "Config", "State", "Memory", "Complete", "Abandon", "MemoryFd", "CompletePaused", "PageFault"}

func (c Command) String() string {
	if int(c) < len(commandNames) {
		return commandNames[c]
	}
	return fmt.Sprintf("Command(%d)", uint16(c))
}

// ProtocolVersion is the version Start carries (upstream's
// CURRENT_PROTOCOL_VERSION).
const ProtocolVersion = 0

// HeaderSize is the size of a Request and of a Response on the wire.
const HeaderSize = 16

// Request mirrors upstream's #[repr(C)] Request: command u16, six header
// bytes (Start: the sender's protocol version, little endian), payload
// length u64.
type Request struct {
	Command Command
	Headers [6]byte
	Length  uint64
}

// MarshalBinary encodes the 16-byte request.
func (r Request) MarshalBinary() ([]byte, error) {
	b := make([]byte, HeaderSize)
	binary.LittleEndian.PutUint16(b, uint16(r.Command))
	copy(b[2:8], r.Headers[:])
	binary.LittleEndian.PutUint64(b[8:], r.Length)
	return b, nil
}

// UnmarshalBinary decodes a request; an unknown command is an error.
func (r *Request) UnmarshalBinary(b []byte) error {
	if len(b) != HeaderSize {
		return fmt.Errorf("request of %d bytes: %w", len(b), ErrProtocol)
	}
	c := Command(binary.LittleEndian.Uint16(b))
	if c == CmdInvalid || int(c) >= len(commandNames) {
		return fmt.Errorf("received request with unknown command %d: %w", uint16(c), ErrProtocol)
	}
	r.Command = c
	copy(r.Headers[:], b[2:8])
	r.Length = binary.LittleEndian.Uint64(b[8:])
	return nil
}

// Status is a response's status.
type Status uint16

// Statuses.
const (
	StatusInvalid Status = iota
	StatusOK
	StatusError
)

// Response mirrors upstream's Response: status u16, six bytes of padding,
// payload length u64.
type Response struct {
	Status Status
	Length uint64
}

// MarshalBinary encodes the 16-byte response.
func (r Response) MarshalBinary() ([]byte, error) {
	b := make([]byte, HeaderSize)
	binary.LittleEndian.PutUint16(b, uint16(r.Status))
	binary.LittleEndian.PutUint64(b[8:], r.Length)
	return b, nil
}

// UnmarshalBinary decodes a response.
func (r *Response) UnmarshalBinary(b []byte) error {
	if len(b) != HeaderSize {
		return fmt.Errorf("response of %d bytes: %w", len(b), ErrProtocol)
	}
	s := Status(binary.LittleEndian.Uint16(b))
	if s != StatusOK && s != StatusError {
		return fmt.Errorf("received response with unknown status %d: %w", uint16(s), ErrProtocol)
	}
	r.Status, r.Length = s, binary.LittleEndian.Uint64(b[8:])
	return nil
}

// Range is one guest-physical range (upstream's MemoryRange).
type Range struct {
	GPA, Length uint64
}

// rangeSize is a Range on the wire: gpa u64, length u64.
const rangeSize = 16

// EncodeRanges is a MemoryRangeTable on the wire.
func EncodeRanges(rs []Range) []byte {
	b := make([]byte, len(rs)*rangeSize)
	for i, r := range rs {
		binary.LittleEndian.PutUint64(b[i*rangeSize:], r.GPA)
		binary.LittleEndian.PutUint64(b[i*rangeSize+8:], r.Length)
	}
	return b
}

// DecodeRanges reads a MemoryRangeTable of n bytes.
func DecodeRanges(b []byte) ([]Range, error) {
	if len(b)%rangeSize != 0 {
		return nil, fmt.Errorf("memory range table of %d bytes: %w", len(b), ErrProtocol)
	}
	out := make([]Range, len(b)/rangeSize)
	for i := range out {
		out[i] = Range{GPA: binary.LittleEndian.Uint64(b[i*rangeSize:]), Length: binary.LittleEndian.Uint64(b[i*rangeSize+8:])}
	}
	return out, nil
}

func writeRequest(w io.Writer, cmd Command, payload []byte) error {
	r := Request{Command: cmd, Length: uint64(len(payload))}
	if cmd == CmdStart {
		binary.LittleEndian.PutUint16(r.Headers[:], ProtocolVersion)
	}
	b, _ := r.MarshalBinary()
	if _, err := w.Write(append(b, payload...)); err != nil {
		return fmt.Errorf("sending %v: %w", cmd, err)
	}
	return nil
}

func readRequest(r io.Reader) (Request, error) {
	var req Request
	b := make([]byte, HeaderSize)
	if _, err := io.ReadFull(r, b); err != nil {
		return req, err
	}
	return req, req.UnmarshalBinary(b)
}

func writeResponse(w io.Writer, s Status) error {
	b, _ := Response{Status: s}.MarshalBinary()
	_, err := w.Write(b)
	return err
}

// expectOK reads the response to cmd.
func expectOK(r io.Reader, cmd Command) error {
	b := make([]byte, HeaderSize)
	if _, err := io.ReadFull(r, b); err != nil {
		return fmt.Errorf("response to %v: %w", cmd, err)
	}
	var resp Response
	if err := resp.UnmarshalBinary(b); err != nil {
		return err
	}
	if resp.Status != StatusOK {
		return fmt.Errorf("%v: %w", cmd, ErrRefused)
	}
	return nil
}
