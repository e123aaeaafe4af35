package blk

import "encoding/binary"

// virtio-blk ABI, virtio 1.2 §5.2.

// Feature bits (§5.2.3).
const (
	FSizeMax     uint64 = 1 << 1
	FSegMax      uint64 = 1 << 2
	FGeometry    uint64 = 1 << 4
	FRO          uint64 = 1 << 5
	FBlkSize     uint64 = 1 << 6
	FFlush       uint64 = 1 << 9
	FTopology    uint64 = 1 << 10
	FConfigWCE   uint64 = 1 << 11
	FMQ          uint64 = 1 << 12
	FDiscard     uint64 = 1 << 13
	FWriteZeroes uint64 = 1 << 14
)

// Request types (§5.2.6).
const (
	TIn          uint32 = 0
	TOut         uint32 = 1
	TFlush       uint32 = 4
	TGetID       uint32 = 8
	TDiscard     uint32 = 11
	TWriteZeroes uint32 = 13
)

// Status values (§5.2.6).
const (
	SOK     uint8 = 0
	SIOErr  uint8 = 1
	SUnsupp uint8 = 2
)

// SectorSize is the virtio-blk sector, fixed at 512 bytes whatever blk_size says.
const SectorSize = 512

// IDBytes is the length of the GET_ID reply (VIRTIO_BLK_ID_BYTES).
const IDBytes = 20

// Config is struct virtio_blk_config (§5.2.4), up to write_zeroes_may_unmap.
type Config struct {
	Capacity               uint64 // 512-byte sectors
	SizeMax                uint32
	SegMax                 uint32
	Cylinders              uint16
	Heads                  uint8
	Sectors                uint8
	BlkSize                uint32
	PhysicalBlockExp       uint8
	AlignmentOffset        uint8
	MinIOSize              uint16
	OptIOSize              uint32
	Writeback              uint8
	NumQueues              uint16
	MaxDiscardSectors      uint32
	MaxDiscardSeg          uint32
	DiscardSectorAlignment uint32
	MaxWriteZeroesSectors  uint32
	MaxWriteZeroesSeg      uint32
	WriteZeroesMayUnmap    uint8
}

// ConfigSize is the size of the marshalled Config (60 bytes, with padding).
const ConfigSize = 60

// Offset of the only driver-writable field.
const offWriteback = 32

// MarshalBinary lays Config out as the spec's little-endian struct.
func (c Config) MarshalBinary() ([]byte, error) {
	b := make([]byte, ConfigSize)
	le := binary.LittleEndian
	le.PutUint64(b[0:], c.Capacity)
	le.PutUint32(b[8:], c.SizeMax)
	le.PutUint32(b[12:], c.SegMax)
	le.PutUint16(b[16:], c.Cylinders)
	b[18] = c.Heads
	b[19] = c.Sectors
	le.PutUint32(b[20:], c.BlkSize)
	b[24] = c.PhysicalBlockExp
	b[25] = c.AlignmentOffset
	le.PutUint16(b[26:], c.MinIOSize)
	le.PutUint32(b[28:], c.OptIOSize)
	b[offWriteback] = c.Writeback
	// b[33] unused0
	le.PutUint16(b[34:], c.NumQueues)
	le.PutUint32(b[36:], c.MaxDiscardSectors)
	le.PutUint32(b[40:], c.MaxDiscardSeg)
	le.PutUint32(b[44:], c.DiscardSectorAlignment)
	le.PutUint32(b[48:], c.MaxWriteZeroesSectors)
	le.PutUint32(b[52:], c.MaxWriteZeroesSeg)
	b[56] = c.WriteZeroesMayUnmap
	return b, nil
}

// header is struct virtio_blk_req's leading part: type, reserved, sector.
const headerSize = 16

// segment is struct virtio_blk_discard_write_zeroes (§5.2.6).
const segmentSize = 16

// Write-zeroes flag (§5.2.6): the device may deallocate.
const segFlagUnmap = 1
