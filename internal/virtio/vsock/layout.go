package vsock

import (
	"encoding/binary"
	"errors"
)

// Wire layout of virtio 1.2 §5.10 (struct virtio_vsock_hdr,
// struct virtio_vsock_config), little-endian; upstream's
// virtio-devices/src/vsock/packet.rs.

// HeaderSize is sizeof(struct virtio_vsock_hdr).
const HeaderSize = 44

// Packet types and operations (VIRTIO_VSOCK_TYPE_*, VIRTIO_VSOCK_OP_*).
const (
	TypeStream = 1

	OpInvalid       = 0
	OpRequest       = 1
	OpResponse      = 2
	OpRst           = 3
	OpShutdown      = 4
	OpRW            = 5
	OpCreditUpdate  = 6
	OpCreditRequest = 7
)

// Shutdown flags (VIRTIO_VSOCK_SHUTDOWN_*): the sender will receive or
// send no more.
const (
	ShutdownRcv  = 1
	ShutdownSend = 2
)

// HostCID is the host's well-known CID (VMADDR_CID_HOST).
const HostCID = 2

// Header is struct virtio_vsock_hdr.
type Header struct {
	SrcCID, DstCID   uint64
	SrcPort, DstPort uint32
	Len              uint32
	Type, Op         uint16
	Flags            uint32
	BufAlloc, FwdCnt uint32
}

var errShort = errors.New("vsock: short header")

// MarshalBinary lays the header out.
func (h Header) MarshalBinary() ([]byte, error) {
	return h.append(make([]byte, 0, HeaderSize)), nil
}

func (h Header) append(b []byte) []byte {
	le := binary.LittleEndian
	b = le.AppendUint64(b, h.SrcCID)
	b = le.AppendUint64(b, h.DstCID)
	b = le.AppendUint32(b, h.SrcPort)
	b = le.AppendUint32(b, h.DstPort)
	b = le.AppendUint32(b, h.Len)
	b = le.AppendUint16(b, h.Type)
	b = le.AppendUint16(b, h.Op)
	b = le.AppendUint32(b, h.Flags)
	b = le.AppendUint32(b, h.BufAlloc)
	return le.AppendUint32(b, h.FwdCnt)
}

// UnmarshalBinary reads a header from the first HeaderSize bytes of b.
func (h *Header) UnmarshalBinary(b []byte) error {
	if len(b) < HeaderSize {
		return errShort
	}
	le := binary.LittleEndian
	*h = Header{
		SrcCID: le.Uint64(b[0:]), DstCID: le.Uint64(b[8:]),
		SrcPort: le.Uint32(b[16:]), DstPort: le.Uint32(b[20:]),
		Len: le.Uint32(b[24:]), Type: le.Uint16(b[28:]), Op: le.Uint16(b[30:]),
		Flags: le.Uint32(b[32:]), BufAlloc: le.Uint32(b[36:]), FwdCnt: le.Uint32(b[40:]),
	}
	return nil
}
