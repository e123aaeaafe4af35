package vmm

import (
	"fmt"
	"os"
	"slices"

	"github.com/nimbus-vmm/nimbus/internal/config"
)

// handleDevice runs the device and resize commands; ok is false for any
// other command. Hot (booted) changes need machine support that does not
// exist yet and fail with ErrUnsupported after the same validation as
// upstream; cold changes edit the stored config.
func (c *Controller) handleDevice(cmd Command) (value any, err error, ok bool) {
	switch v := cmd.(type) {
	case AddDisk:
		return c.hotAdd("The disk could not be added to the VM", nil, func(cfg *config.VmConfig) error {
			cfg.Disks = append(cfg.Disks, v.Config)
			return nil
		}, func(cfg *config.VmConfig, hp Hotplugger) (*PciDeviceInfo, error) {
			d := &cfg.Disks[len(cfg.Disks)-1]
			c.assignHotID(&d.ID, config.PrefixDisk)
			return hp.AddDisk(d)
		})
	case AddNet:
		return c.hotAdd("The network device could not be added to the VM", v.Fds, func(cfg *config.VmConfig) error {
			n := v.Config
			if len(v.Fds) > 0 {
				// Fd numbers in the body are ignored; the received ones count.
				n.Fds = fdNumbers(v.Fds)
			}
			cfg.Net = append(cfg.Net, n)
			return nil
		}, func(cfg *config.VmConfig, hp Hotplugger) (*PciDeviceInfo, error) {
			n := &cfg.Net[len(cfg.Net)-1]
			c.assignHotID(&n.ID, config.PrefixNet)
			return hp.AddNet(n)
		})
	case AddFs:
		return c.hotAdd("The fs could not be added to the VM", nil, func(cfg *config.VmConfig) error {
			cfg.Fs = append(cfg.Fs, v.Config)
			return nil
		}, func(cfg *config.VmConfig, hp Hotplugger) (*PciDeviceInfo, error) {
			f := &cfg.Fs[len(cfg.Fs)-1]
			c.assignHotID(&f.ID, config.PrefixFs)
			return hp.AddFs(f)
		})
	case AddPmem:
		return c.hotAdd("The pmem device could not be added to the VM", nil, func(cfg *config.VmConfig) error {
			cfg.Pmem = append(cfg.Pmem, v.Config)
			return nil
		}, func(cfg *config.VmConfig, hp Hotplugger) (*PciDeviceInfo, error) {
			p := &cfg.Pmem[len(cfg.Pmem)-1]
			c.assignHotID(&p.ID, config.PrefixPmem)
			return hp.AddPmem(p)
		})
	case AddDevice:
		return nil, c.coldAdd("The device could not be added to the VM", v.Fds, func(cfg *config.VmConfig) error {
			d := v.Config
			if len(v.Fds) > 1 {
				return leaf(ErrBadConfig, "Expected at most one file descriptor for a VFIO device, got %d", len(v.Fds))
			}
			if len(v.Fds) == 1 {
				fd := fdNumbers(v.Fds)[0]
				d.Fd = &fd
			}
			cfg.Devices = append(cfg.Devices, d)
			return nil
		}), true
	case AddUserDevice:
		return nil, c.coldAdd("The user device could not be added to the VM", nil, func(cfg *config.VmConfig) error {
			cfg.UserDevices = append(cfg.UserDevices, v.Config)
			return nil
		}), true
	case AddVdpa:
		return nil, c.coldAdd("The vDPA device could not be added to the VM", nil, func(cfg *config.VmConfig) error {
			cfg.Vdpa = append(cfg.Vdpa, v.Config)
			return nil
		}), true
	case AddVsock:
		return c.hotAdd("The vsock device could not be added to the VM", nil, func(cfg *config.VmConfig) error {
			if cfg.Vsock != nil {
				return ErrTooManyVsock
			}
			vs := v.Config
			cfg.Vsock = &vs
			return nil
		}, func(cfg *config.VmConfig, hp Hotplugger) (*PciDeviceInfo, error) {
			c.assignHotID(&cfg.Vsock.ID, config.PrefixVsock)
			return hp.AddVsock(cfg.Vsock)
		})
	case AddGenericVhostUser:
		return nil, c.coldAdd("The generic vhost-user device could not be added to the VM", nil, func(cfg *config.VmConfig) error {
			cfg.GenericVhostUser = append(cfg.GenericVhostUser, v.Config)
			return nil
		}), true
	case RemoveDevice:
		return nil, wrap("The device could not be removed from the VM", c.removeDevice(v.ID)), true
	case Resize:
		return nil, wrap("The VM could not be resized", c.resize(v)), true
	case ResizeZone:
		return nil, wrap("The memory zone could not be resized", c.resizeZone(v)), true
	case ResizeDisk:
		return nil, wrap("The disk could not be resized", c.resizeDisk(v)), true
	}
	return nil, nil, false
}

func fdNumbers(fs []*os.File) []int32 {
	out := make([]int32, len(fs))
	for i, f := range fs {
		out[i] = int32(f.Fd())
	}
	return out
}

// hotAdd is coldAdd for devices a running machine can hotplug: on a
// booted VM, plug builds the device on the validated clone (whose last
// entry is the new device) and the clone becomes the config, with the id
// and runtime values the device got; the reply is its PciDeviceInfo.
func (c *Controller) hotAdd(apiText string, files []*os.File, add func(*config.VmConfig) error,
	plug func(*config.VmConfig, Hotplugger) (*PciDeviceInfo, error)) (any, error, bool) {
	var info *PciDeviceInfo
	err := c.addDevice(apiText, files, add, func(cfg *config.VmConfig) error {
		hp, ok := c.machine.(Hotplugger)
		if !ok {
			return fmt.Errorf("hotplug: %w", ErrUnsupported)
		}
		var err error
		info, err = plug(cfg, hp)
		return err
	})
	if err != nil {
		return nil, err, true
	}
	if info == nil {
		return nil, nil, true
	}
	return info, nil, true
}

// assignHotID names a hot-added device that has no id as upstream's
// next_device_name does: the shared counter, skipping ids in use.
func (c *Controller) assignHotID(id *string, prefix string) {
	if *id != "" {
		return
	}
	tree := c.machine.DeviceTree()
	*id = config.NextDeviceID(prefix, &c.idCounter, func(s string) bool {
		_, ok := tree[s]
		return ok
	})
}

// coldAdd is upstream's vm_add_*: the change is validated on a clone of
// the config (400/409 on failure); a booted VM would hotplug it (not
// supported yet); otherwise the validated clone becomes the config, with
// no id assigned to the new device. files (received fds) are closed on
// every failure and otherwise kept open, with the config, until delete.
func (c *Controller) coldAdd(apiText string, files []*os.File, add func(*config.VmConfig) error) error {
	return c.addDevice(apiText, files, add, nil)
}

// addDevice is coldAdd with hot, when not nil, run on the validated clone
// when a machine exists (hotplug); without hot a machine means
// ErrUnsupported.
func (c *Controller) addDevice(apiText string, files []*os.File, add func(*config.VmConfig) error, hot func(*config.VmConfig) error) (err error) {
	defer func() {
		if err != nil {
			CloseFiles(files)
			err = wrap(apiText, err)
		}
	}()
	if c.cfg == nil {
		return ErrNotCreated
	}
	cfg, err := cloneConfig(c.cfg)
	if err != nil {
		return err
	}
	if err := add(cfg); err != nil {
		return err
	}
	// Validate a copy: Validate may normalise what it checks, and the
	// stored config keeps exactly what was sent.
	check, err := cloneConfig(cfg)
	if err != nil {
		return err
	}
	if err := validateConfig(check); err != nil {
		return err
	}
	if c.machine != nil {
		if hot == nil {
			return fmt.Errorf("hotplug: %w", ErrUnsupported)
		}
		if err := hot(cfg); err != nil {
			return err
		}
	}
	c.cfg = cfg
	c.files = append(c.files, files...)
	return nil
}

// removeDevice is upstream's vm_remove_device.
func (c *Controller) removeDevice(id string) error {
	if c.machine != nil {
		hp, ok := c.machine.(Hotplugger)
		if !ok {
			return fmt.Errorf("hot removal: %w", ErrUnsupported)
		}
		if err := hp.RemoveDevice(id); err != nil {
			return err
		}
		// As upstream: the config forgets the device (and closes a NIC's
		// received tap fds) now; the guest's eject releases the device.
		c.forgetDevice(id)
		return nil
	}
	if c.cfg == nil {
		return ErrNotCreated
	}
	if !removeDevice(c.cfg, id) {
		return leaf(ErrNotFound, "No device with id %q to remove", id)
	}
	return nil
}

// resize is upstream's vm_resize; a cold resize edits the config without
// validating it (validation runs at boot).
func (c *Controller) resize(r Resize) error {
	if c.cfg == nil {
		return ErrNotCreated
	}
	if c.machine != nil {
		return c.hotResize(r)
	}
	if r.DesiredVcpus != nil {
		c.cfg.Cpus.BootVcpus = *r.DesiredVcpus
	}
	if r.DesiredRAM != nil {
		c.cfg.Memory.Size = *r.DesiredRAM
	}
	if r.DesiredBalloon != nil && c.cfg.Balloon != nil {
		c.cfg.Balloon.Size = *r.DesiredBalloon
	}
	return nil
}

// hotResize is upstream's Vm::resize on a booted VM. Asking for what the
// VM already has succeeds and changes nothing, as upstream's
// CpuManager::resize returns early on an unchanged count (Kata resizes to
// the current count on every container start); any real change needs
// vCPU (CPUHotplugger) or memory (MemoryHotplugger) hotplug, or the
// balloon (BalloonResizer).
func (c *Controller) hotResize(r Resize) error {
	c.emit("vm", "resizing")
	if r.DesiredVcpus != nil {
		// The machine compares with the vCPUs it runs, as upstream's
		// CpuManager::resize: the config may say otherwise after a guest
		// ejected a vCPU on its own.
		hp, ok := c.machine.(CPUHotplugger)
		switch {
		case ok:
			if _, err := hp.ResizeVcpus(int(*r.DesiredVcpus)); err != nil {
				return err
			}
		case *r.DesiredVcpus != c.cfg.Cpus.BootVcpus:
			return fmt.Errorf("vCPU hotplug (%d to %d): %w", c.cfg.Cpus.BootVcpus, *r.DesiredVcpus, ErrUnsupported)
		}
		c.cfg.Cpus.BootVcpus = *r.DesiredVcpus
	}
	if r.DesiredRAM != nil {
		hp, ok := c.machine.(MemoryHotplugger)
		switch {
		case ok:
			if _, err := hp.ResizeMemory(*r.DesiredRAM); err != nil {
				return err
			}
		case len(c.cfg.Memory.Zones) > 0 || *r.DesiredRAM != c.cfg.Memory.Size:
			return fmt.Errorf("memory hotplug: %w", ErrUnsupported)
		}
		// As upstream, also when nothing changed (a smaller size): a
		// reboot builds the VM with the last size asked for.
		mc := &c.cfg.Memory
		switch {
		case mc.HotplugMethod != config.HotplugVirtioMem:
			mc.Size = *r.DesiredRAM
		case *r.DesiredRAM > mc.Size:
			more := *r.DesiredRAM - mc.Size
			mc.HotpluggedSize = &more
		default:
			mc.HotpluggedSize = nil
		}
	}
	if r.DesiredBalloon != nil {
		br, ok := c.machine.(BalloonResizer)
		if !ok {
			return fmt.Errorf("balloon resize: %w", ErrUnsupported)
		}
		if err := br.ResizeBalloon(*r.DesiredBalloon); err != nil {
			return err
		}
		// As upstream: a reboot makes the balloon this size.
		if c.cfg.Balloon != nil {
			c.cfg.Balloon.Size = *r.DesiredBalloon
		}
	}
	c.emit("vm", "resized")
	return nil
}

// resizeZone is upstream's vm_resize_zone.
func (c *Controller) resizeZone(r ResizeZone) error {
	if c.cfg == nil {
		return ErrNotCreated
	}
	if c.machine != nil {
		return c.hotResizeZone(r)
	}
	for i := range c.cfg.Memory.Zones {
		if c.cfg.Memory.Zones[i].ID == r.ID {
			c.cfg.Memory.Zones[i].Size = r.DesiredRAM
			return nil
		}
	}
	c.log.Error("Could not find the memory zone for the resize", "id", r.ID)
	return ErrResizeZone
}

// hotResizeZone is upstream's Vm::resize_zone on a booted VM: only a
// zone with a virtio-mem device can change, and the machine refuses
// zone hotplug at boot, so a known zone gets upstream's answers for a
// zone without one.
func (c *Controller) hotResizeZone(r ResizeZone) error {
	for _, z := range c.cfg.Memory.Zones {
		if z.ID != r.ID {
			continue
		}
		if r.DesiredRAM < z.Size {
			return MemoryManagerLeaf("Invalid resize request: desired_size = %d below boot size = %d", r.DesiredRAM, z.Size)
		}
		c.log.Error("Failed resizing virtio-mem region: No virtio-mem handler")
		return MemoryManagerLeaf("No virtio-mem resizing handler found")
	}
	c.log.Error("Could not find the memory zone for the resize", "id", r.ID)
	return ErrResizeZone
}

// resizeDisk is upstream's vm_resize_disk: only a booted VM can.
func (c *Controller) resizeDisk(r ResizeDisk) error {
	if c.cfg == nil {
		return ErrNotCreated
	}
	if c.machine == nil {
		return ErrResizeDisk
	}
	dr, ok := c.machine.(DiskResizer)
	if !ok {
		return fmt.Errorf("disk resize: %w", ErrUnsupported)
	}
	return dr.ResizeDisk(r.ID, r.DesiredSize)
}

// forgetDevice drops id from the config and closes the received fds only
// it used (upstream closes a removed NIC's preserved fds).
func (c *Controller) forgetDevice(id string) {
	var fds []int32
	for _, n := range c.cfg.Net {
		if n.ID == id {
			fds = append(fds, n.Fds...)
		}
	}
	removeDevice(c.cfg, id)
	if len(fds) == 0 {
		return
	}
	kept := c.files[:0]
	for _, f := range c.files {
		if slices.Contains(fds, int32(f.Fd())) {
			f.Close()
			continue
		}
		kept = append(kept, f)
	}
	c.files = kept
}

// releaseEjected takes apart what the guest ejected and reports each
// device as upstream's eject_device does (event vm device-removed with
// id and bdf).
func (c *Controller) releaseEjected() {
	hp, ok := c.machine.(Hotplugger)
	if !ok {
		return
	}
	// The config is not touched, as upstream: vm.remove-device already
	// dropped what the API removed, and a device the guest ejected on its
	// own comes back at the next boot.
	for _, d := range hp.ReleaseEjected() {
		c.opts.Events.Emit("vm", "device-removed", map[string]string{"id": d.ID, "bdf": d.BDF})
	}
}
