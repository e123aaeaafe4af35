package vmm

import (
	"encoding/json"
	"fmt"

	"github.com/nimbus-vmm/nimbus/internal/config"
)

// cloneConfig deep-copies a config through its JSON form, which is its
// complete serialized state (upstream clones the serde struct).
func cloneConfig(c *config.VmConfig) (*config.VmConfig, error) {
	b, err := json.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("cannot copy the VM config: %w", err)
	}
	var out config.VmConfig
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, fmt.Errorf("cannot copy the VM config: %w", err)
	}
	return &out, nil
}

// The validation and fill-in methods come from internal/config; they are
// looked up through these interfaces so this package builds while that
// work lands.
type validator interface{ Validate() error }
type idAssigner interface{ AssignDeviceIDs() }

// validateConfig runs config validation, wrapped as upstream's
// VmError::ConfigValidation ("Failed to validate config").
func validateConfig(c *config.VmConfig) error {
	v, ok := any(c).(validator)
	if !ok {
		return fmt.Errorf("Failed to validate config: %w",
			fmt.Errorf("config validation is not built yet: %w", ErrUnsupported))
	}
	if err := v.Validate(); err != nil {
		return fmt.Errorf("Failed to validate config: %w", err)
	}
	return nil
}

// fillRuntime assigns device ids and MACs where absent (done at boot).
func fillRuntime(c *config.VmConfig) {
	if a, ok := any(c).(idAssigner); ok {
		a.AssignDeviceIDs()
	}
}

// removeDevice is upstream's VmConfig::remove_device: drop the device
// with this id from every device list; false when none has it.
func removeDevice(c *config.VmConfig, id string) bool {
	if id == "" {
		return false // devices without an id are never matched (upstream compares Some(id))
	}
	removed := false
	c.Disks = removeByID(c.Disks, id, func(d config.DiskConfig) string { return d.ID }, &removed)
	c.Net = removeByID(c.Net, id, func(d config.NetConfig) string { return d.ID }, &removed)
	c.Fs = removeByID(c.Fs, id, func(d config.FsConfig) string { return d.ID }, &removed)
	c.Pmem = removeByID(c.Pmem, id, func(d config.PmemConfig) string { return d.ID }, &removed)
	c.Devices = removeByID(c.Devices, id, func(d config.DeviceConfig) string { return d.ID }, &removed)
	c.UserDevices = removeByID(c.UserDevices, id, func(d config.UserDeviceConfig) string { return d.ID }, &removed)
	c.Vdpa = removeByID(c.Vdpa, id, func(d config.VdpaConfig) string { return d.ID }, &removed)
	c.GenericVhostUser = removeByID(c.GenericVhostUser, id, func(d config.GenericVhostUserConfig) string { return d.ID }, &removed)
	if c.Vsock != nil && c.Vsock.ID == id {
		c.Vsock = nil
		removed = true
	}
	return removed
}

func removeByID[T any](list []T, id string, idOf func(T) string, removed *bool) []T {
	out := list[:0]
	for _, d := range list {
		if idOf(d) == id {
			*removed = true
			continue
		}
		out = append(out, d)
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// memoryActualSize is upstream's total_size - hotplugged_size for a VM
// that is not booted: the boot RAM plus every zone's size.
func memoryActualSize(c *config.VmConfig) uint64 {
	size := c.Memory.Size
	for _, z := range c.Memory.Zones {
		size += z.Size
	}
	return size
}
