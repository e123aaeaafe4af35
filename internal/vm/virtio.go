package vm

import (
	"fmt"

	"github.com/nimbus-vmm/nimbus/internal/config"
	hostconsole "github.com/nimbus-vmm/nimbus/internal/devices/console"
	"github.com/nimbus-vmm/nimbus/internal/devices/pci"
	"github.com/nimbus-vmm/nimbus/internal/virtio/balloon"
	"github.com/nimbus-vmm/nimbus/internal/virtio/blk"
	"github.com/nimbus-vmm/nimbus/internal/virtio/console"
	"github.com/nimbus-vmm/nimbus/internal/virtio/rng"
	"github.com/nimbus-vmm/nimbus/internal/virtio/vhostuser"
	"github.com/nimbus-vmm/nimbus/internal/virtio/vsock"
	"github.com/nimbus-vmm/nimbus/internal/vmm"
)

// addVirtioDevices creates the virtio devices (the console on cons) in upstream's order, which
// fixes their slots: the virtio console (add_console_devices), then
// make_virtio_devices' block, net, rng, fs, pmem, vsock, virtio-mem and
// balloon. With default slots that gives 00:01.0 console, then the disks,
// the nets, the rng, the fs and pmem devices, the vsock device, mem0 and
// the balloon.
func (m *VM) addVirtioDevices(cfg *config.VmConfig, cons hostconsole.Backend) error {
	if cfg.Console.Mode != config.ConsoleOff && cons != nil {
		if _, err := m.addVirtio(config.IDConsole, console.New(cons), cfg.Console.PciCommon); err != nil {
			return err
		}
	}
	for i := range cfg.Disks {
		if _, err := m.addDisk(&cfg.Disks[i]); err != nil {
			return err
		}
	}
	for i := range cfg.Net {
		if _, err := m.addNet(&cfg.Net[i]); err != nil {
			return err
		}
	}
	// The entropy device always exists, as upstream.
	d, err := rng.New(cfg.Rng)
	if err != nil {
		return wrap(ErrSetup, fmt.Errorf("rng: %w", err))
	}
	if _, err = m.addVirtio(config.IDRng, d, cfg.Rng.PciCommon); err != nil {
		return err
	}
	for i := range cfg.Fs {
		if _, err := m.addFs(&cfg.Fs[i]); err != nil {
			return err
		}
	}
	for i := range cfg.Pmem {
		if _, err := m.addPmem(&cfg.Pmem[i]); err != nil {
			return err
		}
	}
	if cfg.Vsock != nil {
		if _, err := m.addVsock(cfg.Vsock); err != nil {
			return err
		}
	}
	if err := m.addVirtioMem(cfg.Memory); err != nil {
		return err
	}
	if bc := cfg.Balloon; bc != nil {
		b := balloon.New(*bc, m.mem, m.log)
		if _, err := m.addVirtio(config.IDBalloon, b, bc.PciCommon); err != nil {
			return err
		}
		m.balloon = b
	}
	return nil
}

// addVsock makes the virtio-vsock device vc describes (its id assigned)
// with its Unix-socket backend.
func (m *VM) addVsock(vc *config.VsockConfig) (pci.BDF, error) {
	d, err := vsock.New(*vc, m.log)
	if err != nil {
		return pci.BDF{}, wrap(ErrSetup, fmt.Errorf("vsock %s: %w", vc.ID, err))
	}
	return m.addVirtio(vc.ID, d, vc.PciCommon)
}

// addDisk makes the block device dc describes (its id already assigned).
func (m *VM) addDisk(dc *config.DiskConfig) (pci.BDF, error) {
	if dc.VhostUser {
		d, err := vhostuser.NewBlk(*dc, m.mem, m.prev, m.log)
		if err != nil {
			return pci.BDF{}, wrap(ErrSetup, fmt.Errorf("disk %s: %w", dc.ID, err))
		}
		return m.addVirtio(dc.ID, d, dc.PciCommon)
	}
	d, err := blk.New(*dc)
	if err != nil {
		return pci.BDF{}, wrap(ErrSetup, fmt.Errorf("disk %s: %w", dc.ID, err))
	}
	d.SetLimiter(m.diskLimiter(dc))
	return m.addVirtio(dc.ID, d, dc.PciCommon)
}

// addNet makes the NIC nc describes (its id already assigned) and fills
// in the tap name and MAC it got, as upstream writes them back into the
// config.
func (m *VM) addNet(nc *config.NetConfig) (pci.BDF, error) {
	if nc.VhostUser {
		d, mac, err := vhostuser.NewNet(*nc, m.mem, m.prev, m.log)
		if err != nil {
			return pci.BDF{}, wrap(ErrSetup, fmt.Errorf("net %s: %w", nc.ID, err))
		}
		bdf, err := m.addVirtio(nc.ID, d, nc.PciCommon)
		if err == nil && nc.MAC == "" {
			nc.MAC = mac
		}
		return bdf, err
	}
	d, err := newNet(*nc)
	if err != nil {
		return pci.BDF{}, wrap(ErrSetup, fmt.Errorf("net %s: %w", nc.ID, err))
	}
	tap, mac := d.TapName(), d.MAC()
	bdf, err := m.addVirtio(nc.ID, d, nc.PciCommon)
	if err != nil {
		return bdf, err
	}
	if nc.Tap == "" && len(nc.Fds) == 0 {
		nc.Tap = tap
	}
	if nc.MAC == "" {
		nc.MAC = mac
	}
	return bdf, nil
}

var _ vmm.DiskResizer = (*VM)(nil)

// ResizeDisk implements vmm.DiskResizer (upstream's
// DeviceManager::resize_disk): the virtio-blk disk id takes size bytes.
func (m *VM) ResizeDisk(id string, size uint64) error {
	// The device sits on its PCI transport's node (the virtio node is
	// the id's child).
	n, err := m.dm.Owner(id)
	d, isBlk := n.Device.(*blk.Device)
	if err != nil || !isBlk {
		return vmm.DeviceManagerLeaf(vmm.ErrDeviceManager, "Failed to find device corresponding to the given identifier: %s", id)
	}
	if err := d.Resize(size); err != nil {
		return vmm.DeviceManagerError(fmt.Errorf("Disk resize error: %w", err))
	}
	m.log.Info("disk resized", "id", id, "size", size)
	return nil
}
