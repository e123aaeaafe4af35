package vmm

import (
	"fmt"
	"reflect"

	"github.com/nimbus-vmm/nimbus/internal/config"
)

// cloneConfig deep-copies a config (upstream clones the serde struct).
// It copies values field by field, so it works for any value, even one
// that would not survive a JSON round trip.
func cloneConfig(c *config.VmConfig) (*config.VmConfig, error) {
	out := deepCopy(reflect.ValueOf(c)).Interface().(*config.VmConfig)
	return out, nil
}

func deepCopy(v reflect.Value) reflect.Value {
	switch v.Kind() {
	case reflect.Pointer:
		if v.IsNil() {
			return reflect.Zero(v.Type())
		}
		p := reflect.New(v.Type().Elem())
		p.Elem().Set(deepCopy(v.Elem()))
		return p
	case reflect.Slice:
		if v.IsNil() {
			return reflect.Zero(v.Type())
		}
		s := reflect.MakeSlice(v.Type(), v.Len(), v.Len())
		for i := range v.Len() {
			s.Index(i).Set(deepCopy(v.Index(i)))
		}
		return s
	case reflect.Map:
		if v.IsNil() {
			return reflect.Zero(v.Type())
		}
		m := reflect.MakeMapWithSize(v.Type(), v.Len())
		for it := v.MapRange(); it.Next(); {
			m.SetMapIndex(it.Key(), deepCopy(it.Value()))
		}
		return m
	case reflect.Struct:
		s := reflect.New(v.Type()).Elem()
		s.Set(v) // copies unexported fields too; exported ones are deepened below
		for i := range v.NumField() {
			if s.Field(i).CanSet() {
				s.Field(i).Set(deepCopy(v.Field(i)))
			}
		}
		return s
	case reflect.Array:
		a := reflect.New(v.Type()).Elem()
		for i := range v.Len() {
			a.Index(i).Set(deepCopy(v.Index(i)))
		}
		return a
	default:
		return v
	}
}

// validateConfig runs config validation, wrapped as upstream's
// VmError::ConfigValidation ("Failed to validate config").
func validateConfig(c *config.VmConfig) error {
	if err := c.Validate(); err != nil {
		return fmt.Errorf("Failed to validate config: %w", err)
	}
	return nil
}

// fillRuntime assigns device ids and MACs where absent (done at boot, as
// upstream's device manager does) and returns the id counter, which
// hot-added devices go on from.
func fillRuntime(c *config.VmConfig) (int, error) {
	n := c.AssignDeviceIDs()
	return n, c.FillMACs()
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
