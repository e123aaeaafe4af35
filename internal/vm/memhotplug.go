package vm

import (
	"errors"
	"fmt"

	"github.com/nimbus-vmm/nimbus/internal/arch/x86"
	"github.com/nimbus-vmm/nimbus/internal/config"
	"github.com/nimbus-vmm/nimbus/internal/devices/ged"
	"github.com/nimbus-vmm/nimbus/internal/devices/memhp"
	"github.com/nimbus-vmm/nimbus/internal/devmgr"
	"github.com/nimbus-vmm/nimbus/internal/memory"
	"github.com/nimbus-vmm/nimbus/internal/virtio/balloon"
	virtiomem "github.com/nimbus-vmm/nimbus/internal/virtio/mem"
	"github.com/nimbus-vmm/nimbus/internal/vmm"
)

var _ vmm.MemoryHotplugger = (*VM)(nil)

// dimmAlign is the size and alignment of hot-added RAM: upstream's 128
// MiB "DIMM" granule (and Linux's x86-64 memory block size).
const dimmAlign = 128 << 20

// memHotplug is the machine's half of upstream's ACPI memory hotplug
// (MemoryManager with hotplug_method=acpi): the window after boot RAM
// where vm.resize puts new RAM, and the register block the guest reads it
// from.
type memHotplug struct {
	regs      *memhp.Device     // ACPI: nil without memory.hotplug_size
	vmem      *virtiomem.Device // virtio-mem over [start, end), once built
	virtioMem bool              // hotplug_method=virtio-mem
	// [start, end) is the hotplug window; end is upstream's
	// start_of_device_area: hot-added RAM must end before it, and the
	// 64-bit PCI window starts there. Without hotplug_size it is empty.
	start, end uint64
	opts       memory.Options // the new RAM's backing, as boot RAM's
	zones      bool           // user-defined zones: RAM cannot be resized
	current    uint64         // upstream's current_ram
}

// hotplugStart is upstream's MemoryManager::start_addr with hotplug
// allowed: the 128 MiB boundary after RAM ending at last (inclusive), or
// 4 GiB while RAM ends below the 32-bit hole.
func hotplugStart(last uint64) uint64 {
	if last < x86.Mem32BitReservedStart {
		return x86.RAM64BitStart
	}
	return (last | (dimmAlign - 1)) + 1
}

// ramEnd is the first address after the highest RAM.
func (m *VM) ramEnd() uint64 {
	end := uint64(0)
	for _, r := range m.mem.Regions() {
		end = max(end, r.End())
	}
	return end
}

// setupMemoryHotplug places the hotplug window after boot RAM (upstream's
// MemoryManager::new): with hotplug_size under the ACPI method, the
// register block the DSDT's \_SB_.MHPC reads; under virtio-mem, the
// device's region, mapped now (the device comes with the other virtio
// devices). Without a window a resize can still ask for no more RAM.
func (m *VM) setupMemoryHotplug(mc config.MemoryConfig) error {
	hp := &m.memhp
	hp.current = m.ramSize
	hp.zones = len(mc.Zones) > 0
	hp.virtioMem = mc.HotplugMethod == config.HotplugVirtioMem
	if err := checkHotplugConfig(mc); err != nil {
		return err
	}
	hp.opts = memory.Options{
		Shared: mc.Shared, Hugepages: mc.Hugepages, Prefault: mc.Prefault, Reserve: mc.Reserve, THP: mc.Thp,
	}
	if mc.HugepageSize != nil {
		hp.opts.HugepageSize = *mc.HugepageSize
	}
	last := m.ramEnd() - 1
	hp.start = max(last+1, x86.RAM64BitStart)
	hp.end = hp.start
	if mc.HotplugSize == nil {
		return nil
	}
	size := *mc.HotplugSize
	hp.start = hotplugStart(last)
	if hp.start+size < hp.start {
		return wrap(ErrSetup, fmt.Errorf("Guest address overflow"))
	}
	hp.end = hp.start + size
	if hp.virtioMem {
		if size%virtiomem.Align != 0 {
			return wrap(ErrSetup, fmt.Errorf("Virtio-mem size is not aligned with %d", virtiomem.Align))
		}
		if _, err := m.mem.Plug(m.kvm, config.DefaultMemoryZone, hp.start, size, hp.opts); err != nil {
			return wrap(ErrSetup, fmt.Errorf("virtio-mem region: %w", err))
		}
		return nil
	}
	hp.regs = memhp.New(m.log)
	return m.addDevice(idMemHotplug, devmgr.Platform, hp.regs, false, memhp.Base, memhp.Size)
}

// checkHotplugConfig is the hotplug half of upstream's
// validate_memory_config and MemoryManager::new checks, with its texts.
func checkHotplugConfig(mc config.MemoryConfig) error {
	invalid := fmt.Errorf("Memory configuration is not valid")
	if mc.HotplugSize != nil && *mc.HotplugSize == 0 {
		return wrap(ErrSetup, fmt.Errorf("Invalid size for resizing. Can be anything except 0"))
	}
	if mc.HotpluggedSize != nil {
		switch {
		case mc.HotplugSize == nil, *mc.HotpluggedSize > *mc.HotplugSize, mc.HotplugMethod == config.HotplugACPI:
			return wrap(ErrSetup, invalid)
		}
	}
	return nil
}

// addVirtioMem makes the virtio-mem device over the window Build mapped
// (upstream's make_virtio_mem_devices, id mem0), with hotplugged_size
// requested at once.
func (m *VM) addVirtioMem(mc config.MemoryConfig) error {
	hp := &m.memhp
	if !hp.virtioMem || hp.end == hp.start {
		return nil
	}
	var initial uint64
	if mc.HotpluggedSize != nil {
		initial = *mc.HotpluggedSize
	}
	d, err := virtiomem.New(hp.start, hp.end-hp.start, initial, m.mem, m.log)
	if err != nil {
		return wrap(ErrSetup, fmt.Errorf("virtio-mem: %w", err))
	}
	if _, err := m.addVirtio(config.DefaultMemoryZone, d, config.PciCommon{ID: config.DefaultMemoryZone}); err != nil {
		return err
	}
	hp.vmem = d
	return nil
}

// ResizeMemory implements vmm.MemoryHotplugger: upstream's
// MemoryManager::resize for the ACPI method. Growth maps desired minus
// the current RAM right after the highest RAM, registers it with KVM,
// puts it in the next DIMM slot and notifies the guest through the GED;
// a size not above the current RAM changes nothing. Checks and texts are
// upstream's, in its order.
func (m *VM) ResizeMemory(desired uint64) (bool, error) {
	hp := &m.memhp
	if hp.zones {
		return false, vmm.MemoryManagerLeaf("Impossible to resize guest memory if it is backed by user defined memory regions")
	}
	if hp.virtioMem {
		return m.resizeVirtioMem(desired)
	}
	if desired <= hp.current {
		return false, nil
	}
	size := desired - hp.current
	if hp.regs != nil && hp.regs.Free() == 0 {
		return false, vmm.MemoryManagerLeaf("%s", memhp.ErrNoSlot)
	}
	if size%dimmAlign != 0 {
		return false, vmm.MemoryManagerLeaf("The requested hotplug memory addition is not a valid size")
	}
	start := hotplugStart(m.ramEnd() - 1)
	if hp.regs == nil || start+size < start || start+size > hp.end {
		return false, vmm.MemoryManagerLeaf("Not enough space in the hotplug RAM region")
	}
	m.log.Info("Hotplugging new RAM", "size", size, "gpa", fmt.Sprintf("%#x", start))
	slot := memhp.Slots - hp.regs.Free()
	info, err := m.mem.Plug(m.kvm, fmt.Sprintf("hotplug%d", slot), start, size, hp.opts)
	if err != nil {
		return false, vmm.MemoryManagerError(fmt.Errorf("Failed to create the user memory region: %w", err))
	}
	if err := m.announceRAM(info); err != nil {
		// The guest is not told of RAM a back end cannot reach; it stays
		// mapped and unused, as RAM upstream fails to announce.
		return true, vmm.MemoryManagerError(fmt.Errorf("Failed to update vhost-user memory: %w", err))
	}
	if _, err := hp.regs.Plug(start, size); err != nil {
		// Unreachable (a free slot was checked): the RAM stays mapped
		// and unused until shutdown, as upstream cannot unplug it either.
		return true, vmm.MemoryManagerError(err)
	}
	hp.current = desired
	if err := m.ged.Notify(ged.MemoryDevicesChanged); err != nil {
		return true, vmm.DeviceManagerError(err)
	}
	return true, nil
}

// errVirtioMemResize is upstream's Error::VirtioMemResizeFail level.
var errVirtioMemResize = errors.New("Failed to virtio-mem resize")

// resizeVirtioMem is upstream's MemoryManager::resize for virtio-mem:
// the device is asked for desired minus the boot RAM, and the guest's
// driver plugs it; asking for what is already requested is an error, as
// upstream.
func (m *VM) resizeVirtioMem(desired uint64) (bool, error) {
	hp := &m.memhp
	if desired < m.ramSize {
		return false, vmm.MemoryManagerLeaf("Invalid resize request: desired_size = %d below boot size = %d", desired, m.ramSize)
	}
	vmem := m.virtioMemDevice()
	if vmem == nil {
		m.log.Error("Failed resizing virtio-mem region: No virtio-mem handler")
		return false, vmm.MemoryManagerLeaf("No virtio-mem resizing handler found")
	}
	if err := vmem.Resize(desired - m.ramSize); err != nil {
		return false, vmm.MemoryManagerError(wrap(errVirtioMemResize, err))
	}
	hp.current = desired
	return true, nil
}

// VirtioMemPlugged implements vmm.MemoryHotplugger: what the guest's
// virtio-mem driver has plugged.
func (m *VM) VirtioMemPlugged() uint64 {
	if d := m.virtioMemDevice(); d != nil {
		return d.PluggedSize()
	}
	return 0
}

// virtioMemDevice and balloonDevice are the devices while the device
// manager holds them: nil before they are built and after the guest
// ejected them.
func (m *VM) virtioMemDevice() *virtiomem.Device {
	if m.memhp.vmem == nil || !m.dm.Has(config.DefaultMemoryZone) {
		return nil
	}
	return m.memhp.vmem
}

func (m *VM) balloonDevice() *balloon.Device {
	if m.balloon == nil || !m.dm.Has(config.IDBalloon) {
		return nil
	}
	return m.balloon
}

var _ vmm.BalloonResizer = (*VM)(nil)

// ResizeBalloon implements vmm.BalloonResizer (upstream's
// DeviceManager::resize_balloon).
func (m *VM) ResizeBalloon(size uint64) error {
	b := m.balloonDevice()
	if b == nil {
		m.log.Warn("No balloon setup: Can't resize the balloon")
		return vmm.DeviceManagerLeaf(vmm.ErrDeviceManager, "Missing virtio-balloon, can't proceed as expected")
	}
	if err := b.Resize(size); err != nil {
		return vmm.DeviceManagerError(fmt.Errorf("Failed to resize virtio-balloon: %w", err))
	}
	return nil
}

// BalloonActual implements vmm.BalloonResizer: what the guest holds in
// the balloon.
func (m *VM) BalloonActual() uint64 {
	if b := m.balloonDevice(); b != nil {
		return b.Actual()
	}
	return 0
}
