package pci

// Virtio over PCI layout: virtio 1.2 §4.1.4 (capabilities, common
// configuration structure §4.1.4.3) and upstream's single-BAR placement
// (virtio-devices/src/transport/pci_device.rs): every structure 8 KiB
// aligned inside one BAR, as the PCI spec recommends when MSI-X shares it.
const (
	VendorID     = 0x1af4 // VIRTIO_PCI_VENDOR_ID
	DeviceIDBase = 0x1040 // modern device id = 0x1040 + virtio device type
	Revision     = 1      // modern (non-transitional) devices

	BARIndex = 0

	CommonOffset = 0x0000
	CommonSize   = 56
	ISROffset    = 0x2000
	ISRSize      = 1
	DeviceOffset = 0x4000
	DeviceSize   = 0x1000
	NotifyOffset = 0x6000
	// MaxQueues is what the notification area holds (upstream MAX_QUEUES).
	MaxQueues           = 0x400
	NotifyOffMultiplier = 4 // a dword per queue
	NotifySize          = MaxQueues * NotifyOffMultiplier
	MSIXTableOffset     = 0x8000
	MSIXTableSize       = 0x40000 // 2048 entries
	MSIXPBAOffset       = 0x48000
	MSIXPBASize         = 0x800
	// BARSize is the power of two covering everything (0x80000).
	BARSize = 0x80000
	// BARAlign is upstream's VIRTIO_PCI_BAR_ALIGN (8 MiB, for Windows drivers).
	BARAlign = 0x80_0000

	// NoVector is VIRTIO_MSI_NO_VECTOR.
	NoVector = 0xffff
)

// virtio_pci_cap cfg_type values (§4.1.4).
const (
	capCommon = 1
	capNotify = 2
	capISR    = 3
	capDevice = 4
	capPCI    = 5
)

// Common configuration register offsets (§4.1.4.3, struct virtio_pci_common_cfg).
const (
	ccDeviceFeatureSelect = 0x00
	ccDeviceFeature       = 0x04
	ccDriverFeatureSelect = 0x08
	ccDriverFeature       = 0x0c
	ccMSIXConfig          = 0x10
	ccNumQueues           = 0x12
	ccDeviceStatus        = 0x14
	ccConfigGeneration    = 0x15
	ccQueueSelect         = 0x16
	ccQueueSize           = 0x18
	ccQueueMSIXVector     = 0x1a
	ccQueueEnable         = 0x1c
	ccQueueNotifyOff      = 0x1e
	ccQueueDesc           = 0x20
	ccQueueDriver         = 0x28
	ccQueueDevice         = 0x30
)

// ISR status bits (§4.1.4.5).
const (
	isrQueue  = 1
	isrConfig = 2
)

// capBody is struct virtio_pci_cap without cap_vndr/cap_next (which
// ConfigSpace.AddCapability writes): cap_len, cfg_type, bar, id,
// padding[2], offset, length; extra follows (notify multiplier, pci_cfg_data).
func capBody(cfgType uint8, bar uint8, offset, length uint32, extra int) []byte {
	b := make([]byte, 14+extra)
	b[0] = byte(16 + extra)
	b[1] = cfgType
	b[2] = bar
	putLE32(b[6:], offset)
	putLE32(b[10:], length)
	return b
}

func putLE32(b []byte, v uint32) {
	b[0], b[1], b[2], b[3] = byte(v), byte(v>>8), byte(v>>16), byte(v>>24)
}
