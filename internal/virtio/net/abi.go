package net

import "encoding/binary"

// virtio-net ABI, virtio 1.2 §5.1.

// Feature bits (§5.1.3).
const (
	FCsum              uint64 = 1 << 0
	FGuestCsum         uint64 = 1 << 1
	FCtrlGuestOffloads uint64 = 1 << 2
	FMTU               uint64 = 1 << 3
	FMAC               uint64 = 1 << 5
	FGuestTSO4         uint64 = 1 << 7
	FGuestTSO6         uint64 = 1 << 8
	FGuestECN          uint64 = 1 << 9
	FGuestUFO          uint64 = 1 << 10
	FHostTSO4          uint64 = 1 << 11
	FHostTSO6          uint64 = 1 << 12
	FHostECN           uint64 = 1 << 13
	FHostUFO           uint64 = 1 << 14
	FMrgRxbuf          uint64 = 1 << 15
	FStatus            uint64 = 1 << 16
	FCtrlVQ            uint64 = 1 << 17
	FMQ                uint64 = 1 << 22
)

// HeaderSize is struct virtio_net_hdr_v1 (§5.1.6), 12 bytes with
// VIRTIO_F_VERSION_1; the tap is set to the same size (TUNSETVNETHDRSZ).
const HeaderSize = 12

// offNumBuffers is num_buffers' offset in the header.
const offNumBuffers = 10

// Control queue (§5.1.6.5).
const (
	ctrlClassMQ            = 4
	ctrlMQVQPairsSet       = 0
	ctrlClassGuestOffloads = 5
	ctrlGuestOffloadsSet   = 0
	ctrlOK                 = 0
	ctrlErr                = 1
)

// StatusLinkUp is VIRTIO_NET_S_LINK_UP.
const StatusLinkUp = 1

// Config is struct virtio_net_config up to mtu (§5.1.4).
type Config struct {
	MAC               [6]byte
	Status            uint16
	MaxVirtqueuePairs uint16
	MTU               uint16
}

// ConfigSize is the marshalled Config size.
const ConfigSize = 12

// MarshalBinary lays Config out little-endian as the spec's struct.
func (c Config) MarshalBinary() ([]byte, error) {
	b := make([]byte, ConfigSize)
	copy(b, c.MAC[:])
	binary.LittleEndian.PutUint16(b[6:], c.Status)
	binary.LittleEndian.PutUint16(b[8:], c.MaxVirtqueuePairs)
	binary.LittleEndian.PutUint16(b[10:], c.MTU)
	return b, nil
}

// Tap offload flags (linux/if_tun.h TUN_F_*).
const (
	tunFCsum   = 0x01
	tunFTSO4   = 0x02
	tunFTSO6   = 0x04
	tunFTSOECN = 0x08
	tunFUFO    = 0x10
)

// tunOffloads maps negotiated guest receive offloads to TUNSETOFFLOAD
// flags: what the tap may hand us is what the guest accepts.
func tunOffloads(features uint64) int {
	f := 0
	if features&FGuestCsum != 0 {
		f |= tunFCsum
		if features&FGuestTSO4 != 0 {
			f |= tunFTSO4
		}
		if features&FGuestTSO6 != 0 {
			f |= tunFTSO6
		}
		if features&FGuestECN != 0 {
			f |= tunFTSOECN
		}
		if features&FGuestUFO != 0 {
			f |= tunFUFO
		}
	}
	return f
}
