package pmem

import "encoding/binary"

// Layouts of include/uapi/linux/virtio_pmem.h (virtio 1.2 §5.19), all
// little-endian.

// Config is struct virtio_pmem_config: where the device's memory sits in
// guest-physical space.
type Config struct {
	Start uint64
	Size  uint64
}

// ConfigSize is sizeof(struct virtio_pmem_config).
const ConfigSize = 16

// MarshalBinary encodes the config space.
func (c Config) MarshalBinary() ([]byte, error) {
	b := make([]byte, ConfigSize)
	binary.LittleEndian.PutUint64(b[0:], c.Start)
	binary.LittleEndian.PutUint64(b[8:], c.Size)
	return b, nil
}

// Request types and response codes (struct virtio_pmem_req.type,
// struct virtio_pmem_resp.ret).
const (
	ReqFlush = 0 // VIRTIO_PMEM_REQ_TYPE_FLUSH
	RespOK   = 0
	RespEIO  = 1 // upstream's VIRTIO_PMEM_RESP_TYPE_EIO
	reqSize  = 4 // sizeof(struct virtio_pmem_req)
	respSize = 4 // sizeof(struct virtio_pmem_resp)
)
