package vm

import (
	"errors"
	"strings"
	"sync"

	"github.com/nimbus-vmm/nimbus/internal/config"
	"github.com/nimbus-vmm/nimbus/internal/devices/cpuhp"
	"github.com/nimbus-vmm/nimbus/internal/devices/ged"
	"github.com/nimbus-vmm/nimbus/internal/devices/pci"
	"github.com/nimbus-vmm/nimbus/internal/devices/pcihp"
	"github.com/nimbus-vmm/nimbus/internal/devmgr"
	"github.com/nimbus-vmm/nimbus/internal/virtio"
	"github.com/nimbus-vmm/nimbus/internal/vmm"
)

var (
	_ vmm.Hotplugger    = (*VM)(nil)
	_ vmm.CPUHotplugger = (*VM)(nil)
)

// hotplug is the machine's half of upstream's PCI hotplug: the
// PCIU/PCID/B0EJ registers and the slots the guest ejected, which the
// control loop releases (ReleaseEjected).
type hotplug struct {
	regs   *pcihp.Device
	notify chan struct{} // capacity 1, coalesced: the guest ejected a slot

	mu          sync.Mutex
	ejected     []ejectedSlot // in eject order
	ejectedCPUs []int         // vCPU ids, in eject order
}

// ejectedSlot is a PCI slot the guest ejected.
type ejectedSlot struct {
	segment uint16
	slot    int
}

// guestEjected is the B0EJ callback, on a vCPU thread: the function
// leaves config space and its BARs the bus at once, as in upstream's
// eject_device (a rescan the guest runs next must not find it again),
// and the slot is recorded; the control loop takes the device apart.
func (m *VM) guestEjected(segment uint16, slot int) {
	if int(segment) < len(m.pci) {
		if err := m.pci[segment].root.Hide(slot); err != nil {
			m.log.Warn("guest ejected an empty PCI slot", "segment", segment, "slot", slot, "err", err)
			return
		}
	}
	m.hp.mu.Lock()
	m.hp.ejected = append(m.hp.ejected, ejectedSlot{segment, slot})
	m.hp.mu.Unlock()
	select {
	case m.hp.notify <- struct{}{}:
	default:
	}
}

// Ejected implements vmm.Hotplugger.
func (m *VM) Ejected() <-chan struct{} { return m.hp.notify }

// ReleaseEjected implements vmm.Hotplugger: every device the guest
// ejected is unregistered and its resources given back (upstream's
// eject_device).
func (m *VM) ReleaseEjected() []vmm.EjectedDevice {
	m.hp.mu.Lock()
	slots, cpus := m.hp.ejected, m.hp.ejectedCPUs
	m.hp.ejected, m.hp.ejectedCPUs = nil, nil
	m.hp.mu.Unlock()
	for _, id := range cpus {
		m.releaseVcpu(id)
	}
	var out []vmm.EjectedDevice
	for _, e := range slots {
		n, ok := m.dm.BySlot(e.segment, e.slot)
		if !ok {
			m.log.Warn("guest ejected an empty PCI slot", "segment", e.segment, "slot", e.slot)
			continue
		}
		id := n.ID
		if len(n.Children) == 1 {
			id = n.Children[0]
		}
		ev := vmm.EjectedDevice{ID: id, BDF: n.BDF.String()}
		if _, err := m.dm.Remove(n.ID); err != nil {
			ev.Err = wrap(ErrSetup, err)
			m.log.Error("releasing an ejected device failed", "id", id, "err", err)
		}
		// gsis_in_use lets a test see that a removal gives its GSIs back.
		m.log.Info("guest ejected device", "id", id, "bdf", ev.BDF, "gsis_in_use", m.routes.gsis.InUse())
		out = append(out, ev)
	}
	return out
}

// checkHotID is upstream's validate_identifier.
func (m *VM) checkHotID(id string) error {
	if strings.HasPrefix(id, "__") {
		return vmm.DeviceManagerLeaf(vmm.ErrDeviceManager, "Invalid identifier: %s", id)
	}
	if m.dm.Has(id) {
		return vmm.DeviceManagerLeaf(vmm.ErrDeviceManager, "Invalid identifier as it is not unique: %s", id)
	}
	return nil
}

// AddDisk implements vmm.Hotplugger (upstream DeviceManager::add_disk).
func (m *VM) AddDisk(dc *config.DiskConfig) (*vmm.PciDeviceInfo, error) {
	if err := m.checkHotID(dc.ID); err != nil {
		return nil, err
	}
	if err := refuseDisk("disk", dc); err != nil {
		return nil, vmm.DeviceManagerError(err)
	}
	return m.plugged(dc.ID)(m.addDisk(dc))
}

// AddNet implements vmm.Hotplugger (upstream DeviceManager::add_net);
// it fills in nc's tap name and MAC.
func (m *VM) AddNet(nc *config.NetConfig) (*vmm.PciDeviceInfo, error) {
	if err := m.checkHotID(nc.ID); err != nil {
		return nil, err
	}
	if err := refuseNet("net", nc); err != nil {
		return nil, vmm.DeviceManagerError(err)
	}
	return m.plugged(nc.ID)(m.addNet(nc))
}

// AddVsock implements vmm.Hotplugger (upstream DeviceManager::add_vsock).
func (m *VM) AddVsock(vc *config.VsockConfig) (*vmm.PciDeviceInfo, error) {
	if err := m.checkHotID(vc.ID); err != nil {
		return nil, err
	}
	if err := refuseVsock(vc); err != nil {
		return nil, vmm.DeviceManagerError(err)
	}
	return m.plugged(vc.ID)(m.addVsock(vc))
}

// plugged finishes a hot add: the slot's PCIU bit, then the GED's PCI
// notification, which makes the guest rescan the bus.
func (m *VM) plugged(id string) func(pci.BDF, error) (*vmm.PciDeviceInfo, error) {
	return func(bdf pci.BDF, err error) (*vmm.PciDeviceInfo, error) {
		if err != nil {
			return nil, vmm.DeviceManagerError(err)
		}
		// The device is built; if the guest cannot be told, take it apart
		// again, so that the machine and the config (which the loop leaves
		// as it was) agree that it does not exist.
		err = m.hp.regs.Plug(bdf.Segment, int(bdf.Device))
		if err == nil {
			err = m.ged.Notify(ged.PCIDevicesChanged)
		}
		if err != nil {
			if _, rerr := m.dm.Remove(id); rerr != nil {
				err = errors.Join(err, rerr)
			}
			return nil, vmm.DeviceManagerError(err)
		}
		m.hotAdded[id] = true
		return &vmm.PciDeviceInfo{ID: id, BDF: bdf.String()}, nil
	}
}

// removable is upstream remove_device's list of virtio types a guest may
// lose; the others answer RemovalNotAllowed.
func removable(t virtio.DeviceType) bool {
	switch t {
	case virtio.TypeBlock, virtio.TypeNet, virtio.TypePmem, virtio.TypeFs, virtio.TypeVsock:
		return true
	}
	return false
}

// RemoveDevice implements vmm.Hotplugger (upstream remove_device and
// notify_hotplug): it sets the slot's PCID bit and notifies the guest;
// the device goes when the guest ejects it (ReleaseEjected).
func (m *VM) RemoveDevice(id string) error {
	n, err := m.dm.Owner(id)
	if err != nil {
		return vmm.DeviceManagerLeaf(vmm.ErrNotFound, "Failed to find device corresponding to the given identifier: %s", id)
	}
	if n.BDF == nil {
		return vmm.DeviceManagerLeaf(vmm.ErrNotFound, "Failed to find device corresponding to the given identifier: %s", id)
	}
	if d, ok := n.Device.(virtio.Device); ok && !removable(d.Type()) {
		return vmm.DeviceManagerLeaf(vmm.ErrDeviceManager, "Not allowed to remove this type of device from the VM: %s", d.Type())
	}
	if err := m.hp.regs.Unplug(n.BDF.Segment, int(n.BDF.Device)); err != nil {
		return vmm.DeviceManagerError(err)
	}
	if err := m.ged.Notify(ged.PCIDevicesChanged); err != nil {
		return vmm.DeviceManagerError(err)
	}
	return nil
}

// setupCPUHotplug puts upstream's CPU hotplug registers on the bus with
// the boot vCPUs present.
func (m *VM) setupCPUHotplug(boot, maxCPUs int) error {
	d, err := cpuhp.New(maxCPUs, m.guestEjectedCPU)
	if err != nil {
		return wrap(ErrSetup, err)
	}
	d.SetLogger(m.log)
	for i := 0; i < boot; i++ {
		if err := d.SetPresent(i, true); err != nil {
			return wrap(ErrSetup, err)
		}
	}
	m.cpuhp = d
	return m.addDevice(idCPUHotplug, devmgr.Platform, d, false, cpuhp.Base, cpuhp.Size)
}

// guestEjectedCPU is the CPU eject callback, on a vCPU thread (another
// vCPU's): it records the vCPU for ReleaseEjected.
func (m *VM) guestEjectedCPU(cpu int) {
	m.hp.mu.Lock()
	m.hp.ejectedCPUs = append(m.hp.ejectedCPUs, cpu)
	m.hp.mu.Unlock()
	select {
	case m.hp.notify <- struct{}{}:
	default:
	}
}

// presentVcpus counts the vCPUs whose goroutine runs (a vCPU pending
// removal still counts, as upstream's present_vcpus).
func (m *VM) presentVcpus() int {
	n := 0
	for _, c := range m.vcpuList() {
		if c.running.Load() {
			n++
		}
	}
	return n
}

// ResizeVcpus implements vmm.CPUHotplugger (upstream CpuManager::resize
// and the GED notification): more vCPUs are created (or inactive ones
// reused), started and announced; fewer are marked for the guest to
// eject, and stop when it does. changed is false when desired is the
// present count.
func (m *VM) ResizeVcpus(desired int) (changed bool, err error) {
	present := m.presentVcpus()
	if desired == present {
		return false, nil
	}
	if desired < 1 {
		return false, vmm.CPUManagerLeaf(vmm.ErrBadConfig, "Requested zero vCPUs")
	}
	vcpus := m.vcpuList()
	for _, c := range vcpus {
		if c.removing && c.running.Load() {
			return false, vmm.CPUManagerLeaf(vmm.ErrBusy, "Still pending removed vCPU")
		}
	}
	if desired > m.cpuhp.Max() {
		return false, vmm.CPUManagerLeaf(vmm.ErrBadConfig, "Requested vCPUs exceed maximum")
	}
	// The guest may have ejected any vCPU on its own, so the running ones
	// need not be 0..present-1: add the lowest ids not running, remove
	// the highest running ones (upstream's are contiguous because its
	// ejects are synchronous).
	if desired > present {
		for id, need := 0, desired-present; need > 0 && err == nil; id++ {
			if id < len(vcpus) && vcpus[id].running.Load() {
				continue
			}
			if id >= len(m.vcpuList()) {
				if err = m.createVcpu(id); err != nil {
					err = vmm.CPUManagerError(err)
					break
				}
			}
			c := m.vcpuList()[id]
			c.removing = false
			m.startVcpu(c)
			changed, need = true, need-1
			if err = m.cpuhp.Insert(id); err != nil {
				err = vmm.CPUManagerError(err)
			}
		}
	} else {
		for id, extra := len(vcpus)-1, present-desired; extra > 0 && id >= 0 && err == nil; id-- {
			if !vcpus[id].running.Load() {
				continue
			}
			vcpus[id].removing = true
			changed, extra = true, extra-1
			if err = m.cpuhp.Remove(id); err != nil {
				err = vmm.CPUManagerError(err)
			}
		}
	}
	if !changed {
		return false, err
	}
	// Tell the guest about whatever changed, even after a partial failure.
	if nerr := m.ged.Notify(ged.CPUDevicesChanged); nerr != nil && err == nil {
		err = vmm.DeviceManagerError(nerr)
	}
	return true, err
}

// releaseVcpu stops an ejected vCPU's goroutine and waits for it; the KVM
// vCPU stays (KVM cannot destroy one) for a later hot add to reuse.
func (m *VM) releaseVcpu(id int) {
	vcpus := m.vcpuList()
	if id < 0 || id >= len(vcpus) || !vcpus[id].running.Load() {
		m.log.Warn("guest ejected a vCPU that is not running", "vcpu", id)
		return
	}
	c := vcpus[id]
	// Under m.mu with a broadcast: a vCPU parked by a pause or a guest
	// reset/poweroff waits on m.cond, where a kick does not reach it.
	m.mu.Lock()
	c.stop.Store(true)
	m.cond.Broadcast()
	m.mu.Unlock()
	if err := c.v.Kick(); err != nil {
		m.log.Warn("kicking an ejected vCPU failed", "vcpu", id, "err", err)
	}
	<-c.done
	c.removing = false
	m.log.Info("guest ejected vCPU", "vcpu", id)
}
