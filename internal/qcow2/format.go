package qcow2

// The on-disk layout, as QEMU's docs/interop/qcow2.txt describes it
// (versions 2 and 3). Every field is big-endian.

import (
	"encoding/binary"
	"fmt"
)

// Magic opens every qcow2 image: "QFI\xfb".
const Magic = 0x514649fb

// Header extension types (qcow2.txt, "Header extensions").
const (
	extEnd           = 0x00000000
	extBackingFormat = 0xe2792aca
)

// Incompatible feature bits (header bytes 72-79, version 3).
const (
	incompatDirty       = 1 << 0
	incompatCorrupt     = 1 << 1
	incompatDataFile    = 1 << 2
	incompatCompression = 1 << 3
	incompatExtendedL2  = 1 << 4
)

// L1 and L2 entry bits.
const (
	entryCopied     = 1 << 63 // refcount is exactly one: written in place
	entryCompressed = 1 << 62 // L2 only
	entryZero       = 1 << 0  // L2 only, version 3: the cluster reads as zeroes
	offsetMask      = 0x00fffffffffffe00
)

// v2HeaderLen is the fixed part of a version 2 header; version 3 adds
// up to 104 bytes (plus the compression type byte and padding).
const (
	v2HeaderLen = 72
	v3HeaderLen = 104
)

// header is the image header's fields.
type header struct {
	Version               uint32
	BackingFileOffset     uint64
	BackingFileSize       uint32
	ClusterBits           uint32
	Size                  uint64
	CryptMethod           uint32
	L1Size                uint32
	L1TableOffset         uint64
	RefcountTableOffset   uint64
	RefcountTableClusters uint32
	NbSnapshots           uint32
	SnapshotsOffset       uint64
	// Version 3 only (version 2 images read as 0, 0, 0, 4, 72).
	IncompatibleFeatures uint64
	CompatibleFeatures   uint64
	AutoclearFeatures    uint64
	RefcountOrder        uint32
	HeaderLength         uint32
	CompressionType      uint8
}

// parseHeader decodes the header at the start of b (at least v2HeaderLen
// bytes; v3HeaderLen+1 read when there are).
func parseHeader(b []byte) (header, error) {
	var h header
	if len(b) < v2HeaderLen {
		return h, fmt.Errorf("%w: header of %d bytes", ErrFormat, len(b))
	}
	be := binary.BigEndian
	if be.Uint32(b[0:]) != Magic {
		return h, fmt.Errorf("%w: no qcow2 magic", ErrFormat)
	}
	h.Version = be.Uint32(b[4:])
	h.BackingFileOffset = be.Uint64(b[8:])
	h.BackingFileSize = be.Uint32(b[16:])
	h.ClusterBits = be.Uint32(b[20:])
	h.Size = be.Uint64(b[24:])
	h.CryptMethod = be.Uint32(b[32:])
	h.L1Size = be.Uint32(b[36:])
	h.L1TableOffset = be.Uint64(b[40:])
	h.RefcountTableOffset = be.Uint64(b[48:])
	h.RefcountTableClusters = be.Uint32(b[56:])
	h.NbSnapshots = be.Uint32(b[60:])
	h.SnapshotsOffset = be.Uint64(b[64:])
	h.RefcountOrder, h.HeaderLength = 4, v2HeaderLen
	switch h.Version {
	case 2:
	case 3:
		if len(b) < v3HeaderLen {
			return h, fmt.Errorf("%w: version 3 header of %d bytes", ErrFormat, len(b))
		}
		h.IncompatibleFeatures = be.Uint64(b[72:])
		h.CompatibleFeatures = be.Uint64(b[80:])
		h.AutoclearFeatures = be.Uint64(b[88:])
		h.RefcountOrder = be.Uint32(b[96:])
		h.HeaderLength = be.Uint32(b[100:])
		if h.HeaderLength < v3HeaderLen {
			return h, fmt.Errorf("%w: header_length %d", ErrFormat, h.HeaderLength)
		}
		if h.HeaderLength > v3HeaderLen && len(b) > v3HeaderLen {
			h.CompressionType = b[v3HeaderLen]
		}
	default:
		return h, fmt.Errorf("%w: version %d", ErrUnsupported, h.Version)
	}
	return h, nil
}

// MarshalBinary encodes the header's fixed part: 72 bytes for version 2,
// HeaderLength bytes for version 3.
func (h header) MarshalBinary() ([]byte, error) {
	n := v2HeaderLen
	if h.Version == 3 {
		n = int(h.HeaderLength)
		if n < v3HeaderLen {
			return nil, fmt.Errorf("%w: header_length %d", ErrFormat, n)
		}
	}
	b := make([]byte, n)
	be := binary.BigEndian
	be.PutUint32(b[0:], Magic)
	be.PutUint32(b[4:], h.Version)
	be.PutUint64(b[8:], h.BackingFileOffset)
	be.PutUint32(b[16:], h.BackingFileSize)
	be.PutUint32(b[20:], h.ClusterBits)
	be.PutUint64(b[24:], h.Size)
	be.PutUint32(b[32:], h.CryptMethod)
	be.PutUint32(b[36:], h.L1Size)
	be.PutUint64(b[40:], h.L1TableOffset)
	be.PutUint64(b[48:], h.RefcountTableOffset)
	be.PutUint32(b[56:], h.RefcountTableClusters)
	be.PutUint32(b[60:], h.NbSnapshots)
	be.PutUint64(b[64:], h.SnapshotsOffset)
	if h.Version == 3 {
		be.PutUint64(b[72:], h.IncompatibleFeatures)
		be.PutUint64(b[80:], h.CompatibleFeatures)
		be.PutUint64(b[88:], h.AutoclearFeatures)
		be.PutUint32(b[96:], h.RefcountOrder)
		be.PutUint32(b[100:], h.HeaderLength)
		if n > v3HeaderLen {
			b[v3HeaderLen] = h.CompressionType
		}
	}
	return b, nil
}
