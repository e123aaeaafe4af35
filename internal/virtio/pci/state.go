package pci

import (
	"encoding/json"
	"errors"
	"fmt"

	devpci "github.com/nimbus-vmm/nimbus/internal/devices/pci"
	"github.com/nimbus-vmm/nimbus/internal/virtio"
)

// ErrNoSnapshot: the device behind the transport cannot be snapshotted.
var ErrNoSnapshot = errors.New("device does not support snapshots")

// QueueState is one queue as the driver programmed it and as far as the
// device got.
type QueueState struct {
	Size                          uint16
	Ready                         bool
	DescAddr, AvailAddr, UsedAddr uint64
	LastAvail, NextUsed           uint16
	Vector                        uint32
}

// State is a virtio-pci function's state for snapshots: PCI configuration
// space, MSI-X, the common configuration, the queues and the device's own
// state (virtio.Snapshotter).
type State struct {
	Config         []uint32
	MSIX           devpci.MSIXState
	Status         uint32
	ConfigGen      uint32
	ISR            uint32
	MSIXConfig     uint32
	DeviceFeatSel  uint32
	DriverFeatSel  uint32
	DriverFeatures uint64
	QueueSel       uint16
	Activated      bool
	Queues         []QueueState
	Device         json.RawMessage `json:",omitempty"`
}

// SaveState returns the function's state. The device must be paused (its
// goroutines joined) and no vCPU running.
func (d *Device) SaveState() (*State, error) {
	s, ok := d.dev.(virtio.Snapshotter)
	if !ok {
		return nil, fmt.Errorf("virtio %v: %w", d.dev.Type(), ErrNoSnapshot)
	}
	dev, err := s.SaveSnapshot()
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	st := &State{
		Config: d.cs.Regs(), MSIX: d.msix.State(),
		Status: d.status.Load(), ConfigGen: d.configGen.Load(), ISR: d.isr.Load(), MSIXConfig: d.msixConfig.Load(),
		DeviceFeatSel: d.deviceFeatSel, DriverFeatSel: d.driverFeatSel, DriverFeatures: d.driverFeatures,
		QueueSel: d.queueSel, Activated: d.activated, Device: dev,
	}
	for i, q := range d.queues {
		p := q.State()
		st.Queues = append(st.Queues, QueueState{Size: q.Size, Ready: q.Ready, DescAddr: q.DescAddr,
			AvailAddr: q.AvailAddr, UsedAddr: q.UsedAddr, LastAvail: p.LastAvail, NextUsed: p.NextUsed,
			Vector: d.vectors[i].Load()})
	}
	return st, nil
}

// RestoreState puts s on a function built from the same configuration and
// placed at the same BARs, which the guest has not seen yet: MSI-X routes
// are programmed and an activated device is activated again on its
// queues' saved positions (then the caller pauses it with the machine).
func (d *Device) RestoreState(s *State) error {
	sn, ok := d.dev.(virtio.Snapshotter)
	if !ok {
		return fmt.Errorf("virtio %v: %w", d.dev.Type(), ErrNoSnapshot)
	}
	if len(s.Queues) != len(d.queues) {
		return fmt.Errorf("virtio %v: %d queues in the snapshot, %d here: %w", d.dev.Type(), len(s.Queues), len(d.queues), virtio.ErrInvalid)
	}
	if err := d.cs.SetRegs(s.Config); err != nil {
		return fmt.Errorf("virtio %v: %w", d.dev.Type(), err)
	}
	if err := d.msix.SetState(s.MSIX); err != nil {
		return fmt.Errorf("virtio %v: %w", d.dev.Type(), err)
	}
	if err := sn.RestoreSnapshot(s.Device); err != nil {
		return fmt.Errorf("virtio %v: %w", d.dev.Type(), err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.status.Store(s.Status)
	d.configGen.Store(s.ConfigGen)
	d.isr.Store(s.ISR)
	d.msixConfig.Store(s.MSIXConfig)
	d.deviceFeatSel, d.driverFeatSel, d.driverFeatures, d.queueSel = s.DeviceFeatSel, s.DriverFeatSel, s.DriverFeatures, s.QueueSel
	for i, q := range d.queues {
		qs := s.Queues[i]
		if qs.Size > q.MaxSize {
			return fmt.Errorf("virtio %v queue %d: size %d over %d: %w", d.dev.Type(), i, qs.Size, q.MaxSize, virtio.ErrInvalid)
		}
		q.Size, q.Ready, q.DescAddr, q.AvailAddr, q.UsedAddr = qs.Size, qs.Ready, qs.DescAddr, qs.AvailAddr, qs.UsedAddr
		q.SetState(virtio.QueueState{LastAvail: qs.LastAvail, NextUsed: qs.NextUsed})
		d.vectors[i].Store(qs.Vector)
	}
	if s.Activated {
		d.activate()
		if d.activateErr != nil {
			return d.activateErr
		}
	}
	return nil
}
