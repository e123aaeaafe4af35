package virtio

// Device types, feature bits and status bits of the virtio 1.2 spec
// ("Virtual I/O Device (VIRTIO) Version 1.2"). Device-specific feature bits
// and config layouts live in the device packages (blk, net, rng, console).

// DeviceType is a virtio device ID (spec §5 "Device Types", table in §5).
type DeviceType uint32

// Device IDs (§5). The PCI device ID is 0x1040 + DeviceType (§4.1.2.1).
const (
	TypeNet      DeviceType = 1
	TypeBlock    DeviceType = 2
	TypeConsole  DeviceType = 3
	TypeRng      DeviceType = 4
	TypeBalloon  DeviceType = 5
	TypeVsock    DeviceType = 19
	TypeIOMMU    DeviceType = 23
	TypeMem      DeviceType = 24
	TypeFs       DeviceType = 26
	TypePmem     DeviceType = 27
	TypeWatchdog DeviceType = 35 // Cloud Hypervisor's virtio-watchdog
)

// String names the device type as Linux does in dmesg.
func (t DeviceType) String() string {
	switch t {
	case TypeNet:
		return "net"
	case TypeBlock:
		return "block"
	case TypeConsole:
		return "console"
	case TypeRng:
		return "rng"
	case TypeBalloon:
		return "balloon"
	case TypeVsock:
		return "vsock"
	case TypeIOMMU:
		return "iommu"
	case TypeMem:
		return "mem"
	case TypeFs:
		return "fs"
	case TypePmem:
		return "pmem"
	case TypeWatchdog:
		return "watchdog"
	}
	return "unknown"
}

// Reserved (device-independent) feature bits, §6 "Reserved Feature Bits".
// They are bit masks for the 64-bit feature word.
const (
	FIndirectDesc     uint64 = 1 << 28 // VIRTIO_F_INDIRECT_DESC (§2.7.5.3)
	FEventIdx         uint64 = 1 << 29 // VIRTIO_F_EVENT_IDX (§2.7.7, §2.7.10)
	FVersion1         uint64 = 1 << 32 // VIRTIO_F_VERSION_1
	FAccessPlatform   uint64 = 1 << 33 // VIRTIO_F_ACCESS_PLATFORM (IOMMU)
	FRingPacked       uint64 = 1 << 34 // VIRTIO_F_RING_PACKED (not offered)
	FInOrder          uint64 = 1 << 35 // VIRTIO_F_IN_ORDER
	FOrderPlatform    uint64 = 1 << 36 // VIRTIO_F_ORDER_PLATFORM
	FSRIOV            uint64 = 1 << 37 // VIRTIO_F_SR_IOV
	FNotificationData uint64 = 1 << 38 // VIRTIO_F_NOTIFICATION_DATA
	FRingReset        uint64 = 1 << 40 // VIRTIO_F_RING_RESET
)

// CommonFeatures are the device-independent features every Nimbus device
// offers: modern-only (VERSION_1), indirect descriptors and event idx.
const CommonFeatures = FVersion1 | FIndirectDesc | FEventIdx

// Device status bits, §2.1 "Device Status Field". The transport owns the
// status register; the core names the bits so both sides agree.
const (
	StatusAcknowledge      uint8 = 1
	StatusDriver           uint8 = 2
	StatusDriverOK         uint8 = 4
	StatusFeaturesOK       uint8 = 8
	StatusDeviceNeedsReset uint8 = 64
	StatusFailed           uint8 = 128
)

// Split virtqueue flags, §2.7.5 (descriptor), §2.7.6 (available ring) and
// §2.7.8 (used ring).
const (
	DescFNext     uint16 = 1 // VIRTQ_DESC_F_NEXT
	DescFWrite    uint16 = 2 // VIRTQ_DESC_F_WRITE
	DescFIndirect uint16 = 4 // VIRTQ_DESC_F_INDIRECT

	AvailFNoInterrupt uint16 = 1 // VIRTQ_AVAIL_F_NO_INTERRUPT
	UsedFNoNotify     uint16 = 1 // VIRTQ_USED_F_NO_NOTIFY
)

// MaxQueueSize is the largest split queue size (§2.7: "Queue Size ... maximum 32768").
const MaxQueueSize = 32768
