package vm

import (
	"errors"
	"fmt"

	"github.com/nimbus-vmm/nimbus/internal/config"
	"github.com/nimbus-vmm/nimbus/internal/devices/pci"
	"github.com/nimbus-vmm/nimbus/internal/devmgr"
	"github.com/nimbus-vmm/nimbus/internal/kvm"
	"github.com/nimbus-vmm/nimbus/internal/virtio/pmem"
	"github.com/nimbus-vmm/nimbus/internal/vmm"
)

// addPmem makes the virtio-pmem device pc describes (its id assigned), as
// upstream's make_virtio_pmem_device: the file's mapping gets a 2 MiB
// aligned range of its segment's 64-bit window and a KVM slot there, and
// the device tells the guest where.
func (m *VM) addPmem(pc *config.PmemConfig) (pci.BDF, error) {
	d, err := pmem.New(*pc)
	if err != nil {
		return pci.BDF{}, wrap(ErrSetup, fmt.Errorf("pmem %s: %w", pc.ID, err))
	}
	return m.addVirtioWith(pc.ID, d, pc.PciCommon, func(tx *devmgr.Tx, p *pciSegment) ([]devmgr.Range, error) {
		base, err := p.mem64.Allocate(d.Size(), pmem.Align)
		if err != nil {
			return nil, wrap(ErrSetup, fmt.Errorf("pmem %s: Cannot find a memory range for persistent memory: %w", pc.ID, err))
		}
		tx.OnRelease("persistent memory range", func() error { return p.mem64.Free(base) })
		slot, err := m.mem.MapDevice(m.kvm, base, d.Mapping())
		if err != nil {
			return nil, wrap(ErrKVM, fmt.Errorf("pmem %s: %w", pc.ID, err))
		}
		// Before the device closes (and unmaps the file): the guest must
		// not reach the mapping any more.
		tx.OnRelease("persistent memory slot", func() error {
			err := slot.Unmap()
			if errors.Is(err, kvm.ErrClosed) {
				return nil
			}
			if err != nil {
				// The guest may still reach the mapping: leak it rather
				// than unmap memory a KVM slot points at.
				d.KeepMapping()
			}
			return err
		})
		d.SetStart(base)
		return []devmgr.Range{{Base: base, Size: d.Size()}}, nil
	})
}

// AddPmem implements vmm.Hotplugger (upstream DeviceManager::add_pmem).
func (m *VM) AddPmem(pc *config.PmemConfig) (*vmm.PciDeviceInfo, error) {
	if err := m.checkHotID(pc.ID); err != nil {
		return nil, err
	}
	if err := refusePmem("pmem", pc); err != nil {
		return nil, vmm.DeviceManagerError(err)
	}
	return m.plugged(pc.ID)(m.addPmem(pc))
}
