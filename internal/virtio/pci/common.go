package pci

import (
	"encoding/binary"
	"fmt"

	"github.com/nimbus-vmm/nimbus/internal/virtio"
)

// readCommon reads the common configuration structure (§4.1.4.3) with
// the field widths Linux's virtio_pci_modern uses: 8-bit status and
// generation, 16-bit vectors/queue fields, 32-bit feature words and ring
// address halves, 64-bit ring addresses. Other accesses read zero.
func (d *Device) readCommon(off uint64, data []byte) {
	clear(data)
	d.mu.Lock()
	defer d.mu.Unlock()
	var v uint64
	switch n := len(data); {
	case n == 1 && off == ccDeviceStatus:
		v = uint64(d.status.Load())
	case n == 1 && off == ccConfigGeneration:
		v = uint64(uint8(d.configGen.Load()))
	case n == 2:
		v = uint64(d.readCommon16(off))
	case n == 4:
		v = uint64(d.readCommon32(off))
	case n == 8 && (off == ccQueueDesc || off == ccQueueDriver || off == ccQueueDevice):
		v = uint64(d.readCommon32(off)) | uint64(d.readCommon32(off+4))<<32
	default:
		return
	}
	for i := range data {
		data[i] = byte(v >> (8 * i))
	}
}

func (d *Device) queue() *virtio.Queue {
	if int(d.queueSel) < len(d.queues) {
		return d.queues[d.queueSel]
	}
	return nil
}

func (d *Device) readCommon16(off uint64) uint16 {
	q := d.queue()
	switch off {
	case ccMSIXConfig:
		return uint16(d.msixConfig.Load())
	case ccNumQueues:
		return uint16(len(d.queues))
	case ccQueueSelect:
		return d.queueSel
	}
	if q == nil {
		return 0
	}
	switch off {
	case ccQueueSize:
		return q.Size
	case ccQueueMSIXVector:
		return uint16(d.vectors[d.queueSel].Load())
	case ccQueueEnable:
		if q.Ready {
			return 1
		}
	case ccQueueNotifyOff:
		return d.queueSel // notify address = NotifyOffset + index * multiplier
	}
	return 0
}

func (d *Device) readCommon32(off uint64) uint32 {
	switch off {
	case ccDeviceFeatureSelect:
		return d.deviceFeatSel
	case ccDeviceFeature:
		if d.deviceFeatSel < 2 {
			return uint32(d.dev.Features() >> (32 * d.deviceFeatSel))
		}
		return 0
	case ccDriverFeatureSelect:
		return d.driverFeatSel
	case ccDriverFeature:
		if d.driverFeatSel < 2 {
			return uint32(d.driverFeatures >> (32 * d.driverFeatSel))
		}
		return 0
	}
	q := d.queue()
	if q == nil {
		return 0
	}
	switch off {
	case ccQueueDesc:
		return uint32(q.DescAddr)
	case ccQueueDesc + 4:
		return uint32(q.DescAddr >> 32)
	case ccQueueDriver:
		return uint32(q.AvailAddr)
	case ccQueueDriver + 4:
		return uint32(q.AvailAddr >> 32)
	case ccQueueDevice:
		return uint32(q.UsedAddr)
	case ccQueueDevice + 4:
		return uint32(q.UsedAddr >> 32)
	}
	return 0
}

// writeCommon applies a driver write to the common configuration.
func (d *Device) writeCommon(off uint64, data []byte) {
	d.mu.Lock()
	defer d.mu.Unlock()
	switch n := len(data); {
	case n == 1 && off == ccDeviceStatus:
		d.writeStatus(data[0])
	case n == 2:
		d.writeCommon16(off, binary.LittleEndian.Uint16(data))
	case n == 4:
		d.writeCommon32(off, binary.LittleEndian.Uint32(data))
	case n == 8 && (off == ccQueueDesc || off == ccQueueDriver || off == ccQueueDevice):
		v := binary.LittleEndian.Uint64(data)
		d.writeCommon32(off, uint32(v))
		d.writeCommon32(off+4, uint32(v>>32))
	}
}

// queueWritable is the selected queue if the driver may still program it:
// it exists and the device has not taken the queues over (§4.1.4.3.2:
// the driver must configure a queue before enabling it).
func (d *Device) queueWritable() *virtio.Queue {
	if d.activated {
		return nil
	}
	return d.queue()
}

func (d *Device) vectorOrNone(v uint16) uint32 {
	// §4.1.5.1.2: a vector the device cannot map reads back as NO_VECTOR.
	if int(v) >= d.msix.Vectors() {
		return NoVector
	}
	return uint32(v)
}

func (d *Device) writeCommon16(off uint64, v uint16) {
	switch off {
	case ccMSIXConfig:
		d.msixConfig.Store(d.vectorOrNone(v))
		return
	case ccQueueSelect:
		d.queueSel = v
		return
	}
	q := d.queueWritable()
	if q == nil {
		return
	}
	switch off {
	case ccQueueSize:
		q.Size = v // validated by ActivateQueues on DRIVER_OK
	case ccQueueMSIXVector:
		d.vectors[d.queueSel].Store(d.vectorOrNone(v))
	case ccQueueEnable:
		if v == 1 {
			q.Ready = true
		}
	}
}

func (d *Device) writeCommon32(off uint64, v uint32) {
	switch off {
	case ccDeviceFeatureSelect:
		d.deviceFeatSel = v
		return
	case ccDriverFeatureSelect:
		d.driverFeatSel = v
		return
	case ccDriverFeature:
		// Features are fixed once FEATURES_OK is set (§3.1.1).
		if d.driverFeatSel < 2 && d.status.Load()&uint32(virtio.StatusFeaturesOK) == 0 {
			shift := 32 * d.driverFeatSel
			d.driverFeatures = d.driverFeatures&^(0xffff_ffff<<shift) | uint64(v)<<shift
		}
		return
	}
	q := d.queueWritable()
	if q == nil {
		return
	}
	set := func(p *uint64, hi bool) {
		if hi {
			*p = *p&0xffff_ffff | uint64(v)<<32
		} else {
			*p = *p&^0xffff_ffff | uint64(v)
		}
	}
	switch off {
	case ccQueueDesc, ccQueueDesc + 4:
		set(&q.DescAddr, off != ccQueueDesc)
	case ccQueueDriver, ccQueueDriver + 4:
		set(&q.AvailAddr, off != ccQueueDriver)
	case ccQueueDevice, ccQueueDevice + 4:
		set(&q.UsedAddr, off != ccQueueDevice)
	}
}

// writeStatus implements the device status state machine (§2.1, §3.1).
func (d *Device) writeStatus(v uint8) {
	if v == 0 {
		d.reset()
		return
	}
	old := uint8(d.status.Load())
	// DEVICE_NEEDS_RESET is the device's to set; the driver cannot clear it.
	v = v&^virtio.StatusDeviceNeedsReset | old&virtio.StatusDeviceNeedsReset
	if v&virtio.StatusFeaturesOK != 0 && old&virtio.StatusFeaturesOK == 0 && !d.featuresAcceptable() {
		// Leaving FEATURES_OK clear tells the driver the subset is refused (§3.1.1 step 6).
		v &^= virtio.StatusFeaturesOK
	}
	d.status.Store(uint32(v))
	if v&virtio.StatusDriverOK != 0 && v&virtio.StatusFeaturesOK != 0 && v&virtio.StatusFailed == 0 && !d.activated {
		d.activate()
	}
}

// featuresAcceptable: the driver accepted only offered features and, as
// a modern-only device requires, VIRTIO_F_VERSION_1.
func (d *Device) featuresAcceptable() bool {
	offered := d.dev.Features()
	return d.driverFeatures&^offered == 0 && d.driverFeatures&virtio.FVersion1 != 0
}

// activate hands the queues to the device. mu held.
func (d *Device) activate() {
	if err := d.dev.Activate(d.mem, d.driverFeatures, d.queues, interrupt{d}); err != nil {
		d.activateErr = fmt.Errorf("%w: %w", ErrActivate, err)
		d.log.Warn("virtio device failed to activate; it needs a reset", "type", d.dev.Type(), "err", err)
		d.status.Store(d.status.Load() | uint32(virtio.StatusDeviceNeedsReset))
		_ = d.raiseConfig()
		return
	}
	d.activated = true
}

// reset is the driver's status write of 0: the device stops (its
// goroutines joined), the queues and the common configuration return to
// their reset values. MSI-X state is PCI's and is kept.
func (d *Device) reset() {
	if d.activated {
		if err := d.dev.Reset(); err != nil {
			d.activateErr = fmt.Errorf("reset: %w", err)
		}
		d.activated = false
	}
	for _, q := range d.queues {
		q.Reset()
	}
	d.resetCommon()
}

// interrupt is the virtio.Interrupt handed to the device: queue and config
// notifications go to the MSI-X vectors the driver assigned. It touches
// only atomics and the MSI-X state, never Device.mu.
type interrupt struct{ d *Device }

func (i interrupt) Signal(queue int) error {
	d := i.d
	if queue < 0 || queue >= len(d.vectors) {
		return fmt.Errorf("virtio-pci: interrupt for queue %d of %d: %w", queue, len(d.vectors), virtio.ErrInvalid)
	}
	if !d.msix.Enabled() {
		d.isr.Or(isrQueue) // INTx-style status; there is no INTx line to raise
		return nil
	}
	v := d.vectors[queue].Load()
	if v == NoVector {
		return nil
	}
	return d.msix.Signal(int(v))
}

// Notifier implements virtio.Notifier: the eventfd of the MSI-X vector
// the driver gave queue.
func (i interrupt) Notifier(queue int) (int, bool) {
	d := i.d
	if queue < 0 || queue >= len(d.vectors) || !d.msix.Enabled() {
		return -1, false
	}
	v := d.vectors[queue].Load()
	if v == NoVector {
		return -1, false
	}
	return d.msix.Notifier(int(v))
}

func (i interrupt) ConfigChanged() error {
	i.d.configGen.Add(1)
	return i.d.raiseConfig()
}

func (i interrupt) NeedsReset(reason error) {
	d := i.d
	d.log.Warn("virtio device broken by the guest; it needs a reset", "type", d.dev.Type(), "err", reason)
	d.status.Or(uint32(virtio.StatusDeviceNeedsReset))
	_ = d.raiseConfig()
}

func (d *Device) raiseConfig() error {
	d.isr.Or(isrConfig)
	v := d.msixConfig.Load()
	if v == NoVector || !d.msix.Enabled() {
		return nil
	}
	return d.msix.Signal(int(v))
}
