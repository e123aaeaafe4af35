package pci

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	devpci "github.com/nimbus-vmm/nimbus/internal/devices/pci"
	"github.com/nimbus-vmm/nimbus/internal/virtio"
)

// ErrActivate wraps a device's failure to start on DRIVER_OK.
var ErrActivate = errors.New("virtio device activation failed")

// ConfigSizer is implemented by devices that know their device-specific
// configuration size; a zero size omits the device capability, as
// upstream does for devices without config space (rng). Devices that do
// not implement it get a DeviceSize-byte window.
type ConfigSizer interface {
	ConfigSize() uint64
}

// Config describes a transport to build.
type Config struct {
	Device virtio.Device
	Memory virtio.GuestMemory
	// Router routes the MSI-X vectors (len(QueueSizes())+1 of them).
	Router devpci.MSIRouter
	// BAR32 places the BAR below 4 GiB instead of in the 64-bit window.
	BAR32 bool
	// Log receives device failures the guest caused (a failed activation,
	// a broken queue), which otherwise only show as DEVICE_NEEDS_RESET in
	// the guest. nil discards them.
	Log *slog.Logger
}

// Device is one virtio device on PCI.
type Device struct {
	cs      *devpci.ConfigSpace
	msix    *devpci.MSIX
	dev     virtio.Device
	mem     virtio.GuestMemory
	queues  []*virtio.Queue
	msixCap int // config offset of the MSI-X capability
	pciCap  int // config offset of the VIRTIO_PCI_CAP_PCI_CFG capability
	cfgSize uint64
	log     *slog.Logger

	// Read by device goroutines through Interrupt: atomics, never mu,
	// because the vCPU holding mu may be joining those goroutines.
	status     atomic.Uint32
	configGen  atomic.Uint32
	isr        atomic.Uint32
	msixConfig atomic.Uint32
	vectors    []atomic.Uint32

	mu             sync.Mutex // common configuration state below
	deviceFeatSel  uint32
	driverFeatSel  uint32
	driverFeatures uint64
	queueSel       uint16
	activated      bool
	activateErr    error
}

// New builds the transport's config space, capabilities, queues and MSI-X
// state for cfg.Device. The BAR is unplaced until the root adds it.
func New(cfg Config) (*Device, error) {
	if cfg.Device == nil || cfg.Memory == nil || cfg.Router == nil {
		return nil, fmt.Errorf("virtio-pci: device, memory and router are required: %w", virtio.ErrInvalid)
	}
	sizes := cfg.Device.QueueSizes()
	if len(sizes) == 0 || len(sizes) > MaxQueues {
		return nil, fmt.Errorf("virtio-pci: %d queues: %w", len(sizes), virtio.ErrInvalid)
	}
	typ := cfg.Device.Type()
	class, sub := uint8(devpci.ClassOther), uint8(0xff) // PciVirtioSubclass::NonTransitionalBase
	switch typ {
	case virtio.TypeNet:
		class, sub = devpci.ClassNetwork, devpci.SubclassEthernet
	case virtio.TypeBlock:
		class, sub = devpci.ClassMassStorage, devpci.SubclassMassStorage
	}
	id := uint16(DeviceIDBase + typ)
	d := &Device{
		cs: devpci.NewConfigSpace(devpci.Header{
			VendorID: VendorID, DeviceID: id, Revision: Revision, Class: class, Subclass: sub,
			SubsystemVendorID: VendorID, SubsystemID: id,
		}),
		dev: cfg.Device, mem: cfg.Memory,
		vectors: make([]atomic.Uint32, len(sizes)),
		cfgSize: DeviceSize,
		log:     cfg.Log,
	}
	if d.log == nil {
		d.log = slog.New(slog.DiscardHandler)
	}
	if s, ok := cfg.Device.(ConfigSizer); ok {
		d.cfgSize = min(s.ConfigSize(), DeviceSize)
	}
	var err error
	if d.msix, err = devpci.NewMSIX(len(sizes)+1, cfg.Router); err != nil {
		return nil, fmt.Errorf("virtio-pci: %w", err)
	}
	bar := devpci.BAR{Index: BARIndex, Size: BARSize, Type: devpci.BARMem64, Align: BARAlign}
	if cfg.BAR32 {
		bar.Type = devpci.BARMem32
	}
	if err := d.cs.AddBAR(bar); err != nil {
		return nil, fmt.Errorf("virtio-pci: %w", err)
	}
	if err := d.addCapabilities(); err != nil {
		return nil, fmt.Errorf("virtio-pci: %w", err)
	}
	for _, s := range sizes {
		q, err := virtio.NewQueue(s)
		if err != nil {
			d.closeQueues()
			return nil, fmt.Errorf("virtio-pci: %w", err)
		}
		d.queues = append(d.queues, q)
	}
	d.resetCommon()
	return d, nil
}

// addCapabilities chains the capabilities in upstream's order: common,
// ISR, device (if any), notify, pci_cfg, MSI-X.
func (d *Device) addCapabilities() error {
	add := func(body []byte) (int, error) { return d.cs.AddCapability(devpci.CapVendorSpecific, body) }
	if _, err := add(capBody(capCommon, BARIndex, CommonOffset, CommonSize, 0)); err != nil {
		return err
	}
	if _, err := add(capBody(capISR, BARIndex, ISROffset, ISRSize, 0)); err != nil {
		return err
	}
	if d.cfgSize > 0 {
		if _, err := add(capBody(capDevice, BARIndex, DeviceOffset, uint32(d.cfgSize), 0)); err != nil {
			return err
		}
	}
	notify := capBody(capNotify, BARIndex, NotifyOffset, NotifySize, 4)
	putLE32(notify[14:], NotifyOffMultiplier)
	if _, err := add(notify); err != nil {
		return err
	}
	off, err := add(capBody(capPCI, 0, 0, 0, 4))
	if err != nil {
		return err
	}
	d.pciCap = off
	// The driver sets bar, offset, length and data of the pci_cfg window.
	d.cs.SetWritable(off+4, 0x0000_00ff)
	d.cs.SetWritable(off+8, 0xffff_ffff)
	d.cs.SetWritable(off+12, 0xffff_ffff)
	d.cs.SetWritable(off+16, 0xffff_ffff)
	if d.msixCap, err = d.cs.AddCapability(devpci.CapMSIX,
		d.msix.Capability(BARIndex, MSIXTableOffset, BARIndex, MSIXPBAOffset)); err != nil {
		return err
	}
	d.cs.SetWritable(d.msixCap, devpci.ControlWritable)
	return nil
}

// resetCommon returns the common configuration to its reset values. mu held or unshared.
func (d *Device) resetCommon() {
	d.deviceFeatSel, d.driverFeatSel, d.driverFeatures, d.queueSel = 0, 0, 0, 0
	d.msixConfig.Store(NoVector)
	for i := range d.vectors {
		d.vectors[i].Store(NoVector)
	}
	d.isr.Store(0)
	d.status.Store(0)
}

// Queues returns the transport's queues (owned by the device while active).
func (d *Device) Queues() []*virtio.Queue { return d.queues }

// MSIX returns the MSI-X state, e.g. for the VM's route bookkeeping.
func (d *Device) MSIX() *devpci.MSIX { return d.msix }

// VirtioDevice returns the wrapped device.
func (d *Device) VirtioDevice() virtio.Device { return d.dev }

// Status returns the device status register.
func (d *Device) Status() uint8 { return uint8(d.status.Load()) }

// ActivateError returns the error of the last failed activation.
func (d *Device) ActivateError() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.activateErr
}

// NotifyAddress is where the driver notifies a queue.
type NotifyAddress struct {
	Queue int
	Addr  uint64 // guest-physical; a 16-bit write of the queue index (or anything) notifies
	FD    int    // the queue's eventfd, to register with KVM_IOEVENTFD
}

// NotifyAddresses lists each queue's notification address under the
// BAR's current placement (call again after the guest moves the BAR).
func (d *Device) NotifyAddresses() []NotifyAddress {
	base := d.barBase()
	out := make([]NotifyAddress, len(d.queues))
	for i, q := range d.queues {
		out[i] = NotifyAddress{Queue: i, Addr: base + NotifyOffset + uint64(i)*NotifyOffMultiplier, FD: q.Notify.FD()}
	}
	return out
}

func (d *Device) barBase() uint64 { return d.cs.BARs()[0].Base }

// BARs, PlaceBAR: devpci.Function.
func (d *Device) BARs() []devpci.BAR { return d.cs.BARs() }

// PlaceBAR sets the BAR's address (devpci.Function).
func (d *Device) PlaceBAR(index int, base uint64) error { return d.cs.PlaceBAR(index, base) }

// ReadConfig reads a configuration register; the pci_cfg capability's
// data dword reads through to the BAR window it selects.
func (d *Device) ReadConfig(reg int) uint32 {
	if reg == (d.pciCap+16)/4 {
		var b [4]byte
		d.pciCfgAccess(b[:], false)
		return binary.LittleEndian.Uint32(b[:])
	}
	return d.cs.ReadConfig(reg)
}

// WriteConfig writes a configuration register, applying MSI-X message
// control changes and pci_cfg window writes.
func (d *Device) WriteConfig(reg, offset int, data []byte) []devpci.BARMove {
	moves := d.cs.WriteConfig(reg, offset, data)
	switch reg {
	case d.msixCap / 4:
		d.msix.SetControl(uint16(d.cs.ReadConfig(reg) >> 16))
	case (d.pciCap + 16) / 4:
		if offset == 0 && len(data) == 4 {
			b := append([]byte(nil), data...)
			d.pciCfgAccess(b, true)
		}
	}
	return moves
}

// pciCfgAccess performs a VIRTIO_PCI_CAP_PCI_CFG access (§4.1.4.9): length
// bytes at offset within the BAR named by the capability.
func (d *Device) pciCfgAccess(b []byte, write bool) {
	c := d.cs.Bytes()[d.pciCap:]
	bar, off, n := c[4], binary.LittleEndian.Uint32(c[8:]), binary.LittleEndian.Uint32(c[12:])
	if bar != BARIndex || (n != 1 && n != 2 && n != 4) || uint64(off)+uint64(n) > BARSize {
		return
	}
	if write {
		d.Write(d.barBase(), uint64(off), b[:n])
	} else {
		d.Read(d.barBase(), uint64(off), b[:n])
	}
}

// Read serves a guest read of the BAR (bus.Device).
func (d *Device) Read(_, off uint64, data []byte) {
	switch {
	case off < CommonOffset+CommonSize:
		d.readCommon(off, data)
	case off == ISROffset && len(data) >= 1:
		// Reading ISR acknowledges it (§4.1.4.5).
		clear(data)
		data[0] = byte(d.isr.Swap(0))
	case off >= DeviceOffset && off < DeviceOffset+d.cfgSize:
		clear(data)
		d.dev.ReadConfig(off-DeviceOffset, data)
	case off >= MSIXTableOffset && off < MSIXTableOffset+MSIXTableSize:
		d.msix.ReadTable(off-MSIXTableOffset, data)
	case off >= MSIXPBAOffset && off < MSIXPBAOffset+MSIXPBASize:
		d.msix.ReadPBA(off-MSIXPBAOffset, data)
	default:
		clear(data)
	}
}

// Write serves a guest write to the BAR (bus.Device).
func (d *Device) Write(_, off uint64, data []byte) {
	switch {
	case off < CommonOffset+CommonSize:
		d.writeCommon(off, data)
	case off >= DeviceOffset && off < DeviceOffset+d.cfgSize:
		d.dev.WriteConfig(off-DeviceOffset, data)
	case off >= NotifyOffset && off < NotifyOffset+NotifySize:
		// Without an ioeventfd the write lands here; signal the same eventfd.
		if i := int(off-NotifyOffset) / NotifyOffMultiplier; i < len(d.queues) {
			_ = d.queues[i].Notify.Signal()
		}
	case off >= MSIXTableOffset && off < MSIXTableOffset+MSIXTableSize:
		d.msix.WriteTable(off-MSIXTableOffset, data)
	}
}

// Close releases the device and the queues' eventfds.
func (d *Device) Close() error {
	err := d.dev.Close()
	d.closeQueues()
	return err
}

func (d *Device) closeQueues() {
	for _, q := range d.queues {
		_ = q.Close()
	}
}
