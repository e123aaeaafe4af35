package mem

import "encoding/binary"

// Wire layouts of virtio 1.2 §5.15 (struct virtio_mem_config,
// virtio_mem_req, virtio_mem_resp), all little-endian; upstream's
// VirtioMemConfig, VirtioMemReq and VirtioMemResp (virtio-devices/src/mem.rs).

// Request types (VIRTIO_MEM_REQ_*).
const (
	ReqPlug      = 0
	ReqUnplug    = 1
	ReqUnplugAll = 2
	ReqState     = 3
)

// Response types (VIRTIO_MEM_RESP_*).
const (
	RespAck   = 0
	RespNack  = 1
	RespBusy  = 2
	RespError = 3
)

// Block states a STATE request answers (VIRTIO_MEM_STATE_*).
const (
	StatePlugged   = 0
	StateUnplugged = 1
	StateMixed     = 2
)

// ConfigSize, RequestSize and ResponseSize are the structs' sizes.
const (
	ConfigSize   = 56
	RequestSize  = 24
	ResponseSize = 10
)

// Config is struct virtio_mem_config.
type Config struct {
	BlockSize        uint64
	NodeID           uint16
	Addr             uint64 // after 6 bytes of padding
	RegionSize       uint64
	UsableRegionSize uint64
	PluggedSize      uint64
	RequestedSize    uint64
}

// MarshalBinary lays out the config space.
func (c Config) MarshalBinary() ([]byte, error) {
	b := make([]byte, ConfigSize)
	le := binary.LittleEndian
	le.PutUint64(b[0:], c.BlockSize)
	le.PutUint16(b[8:], c.NodeID)
	le.PutUint64(b[16:], c.Addr)
	le.PutUint64(b[24:], c.RegionSize)
	le.PutUint64(b[32:], c.UsableRegionSize)
	le.PutUint64(b[40:], c.PluggedSize)
	le.PutUint64(b[48:], c.RequestedSize)
	return b, nil
}

// Request is struct virtio_mem_req (the fields every type uses).
type Request struct {
	Type     uint16
	Addr     uint64
	NbBlocks uint16
}

// UnmarshalBinary reads a request; b must hold RequestSize bytes.
func (r *Request) UnmarshalBinary(b []byte) error {
	if len(b) < RequestSize {
		return errShort
	}
	le := binary.LittleEndian
	*r = Request{Type: le.Uint16(b[0:]), Addr: le.Uint64(b[8:]), NbBlocks: le.Uint16(b[16:])}
	return nil
}

// MarshalBinary lays a request out, as a driver would.
func (r Request) MarshalBinary() ([]byte, error) {
	b := make([]byte, RequestSize)
	le := binary.LittleEndian
	le.PutUint16(b[0:], r.Type)
	le.PutUint64(b[8:], r.Addr)
	le.PutUint16(b[16:], r.NbBlocks)
	return b, nil
}

// Response is struct virtio_mem_resp.
type Response struct {
	Type  uint16
	State uint16 // STATE requests only
}

// MarshalBinary lays the response out.
func (r Response) MarshalBinary() ([]byte, error) {
	b := make([]byte, ResponseSize)
	binary.LittleEndian.PutUint16(b[0:], r.Type)
	binary.LittleEndian.PutUint16(b[8:], r.State)
	return b, nil
}
