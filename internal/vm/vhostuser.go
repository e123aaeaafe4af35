package vm

import (
	"errors"
	"fmt"

	"github.com/nimbus-vmm/nimbus/internal/config"
	"github.com/nimbus-vmm/nimbus/internal/devices/pci"
	"github.com/nimbus-vmm/nimbus/internal/memory"
	"github.com/nimbus-vmm/nimbus/internal/virtio/vhostuser"
	"github.com/nimbus-vmm/nimbus/internal/vmm"
)

// addFs makes the vhost-user-fs device fc describes (its id assigned),
// connected to the virtiofsd at fc.Socket.
func (m *VM) addFs(fc *config.FsConfig) (pci.BDF, error) {
	d, err := vhostuser.NewFs(*fc, m.mem, m.prev, m.log)
	if err != nil {
		return pci.BDF{}, wrap(ErrSetup, fmt.Errorf("fs %s: %w", fc.ID, err))
	}
	return m.addVirtio(fc.ID, d, fc.PciCommon)
}

// AddFs implements vmm.Hotplugger (upstream DeviceManager::add_fs).
func (m *VM) AddFs(fc *config.FsConfig) (*vmm.PciDeviceInfo, error) {
	if err := m.checkHotID(fc.ID); err != nil {
		return nil, err
	}
	if err := refuseFs("fs", fc); err != nil {
		return nil, vmm.DeviceManagerError(err)
	}
	return m.plugged(fc.ID)(m.addFs(fc))
}

// ramAdder is a device that must learn of hot-added RAM: a vhost-user
// back end maps guest memory itself.
type ramAdder interface {
	AddRegion(memory.RegionInfo) error
}

// announceRAM tells every vhost-user back end about hot-added RAM, as
// upstream's MemoryManager hands new regions to the devices that map
// guest memory.
func (m *VM) announceRAM(r memory.RegionInfo) error {
	var errs []error
	for _, n := range m.dm.Nodes() {
		if a, ok := n.Device.(ramAdder); ok {
			if err := a.AddRegion(r); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", n.ID, err))
			}
		}
	}
	return errors.Join(errs...)
}
