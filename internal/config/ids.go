package config

import (
	"crypto/rand"
	"fmt"
	"strconv"
)

// RandomMAC returns a random unicast, locally administered MAC address in
// upstream's text form (lowercase hex, colon separated), like
// net_util::MacAddr::local_random.
func RandomMAC() (string, error) {
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("generating MAC address: %w", err)
	}
	b[0] = (b[0] &^ 0x01) | 0x02 // clear multicast, set locally administered
	return fmt.Sprintf("%02x:%02x:%02x:%02x:%02x:%02x", b[0], b[1], b[2], b[3], b[4], b[5]), nil
}

// FillMACs gives every NIC without a MAC a random locally administered one.
func (c *VmConfig) FillMACs() error {
	for i := range c.Net {
		if c.Net[i].MAC == "" {
			mac, err := RandomMAC()
			if err != nil {
				return err
			}
			c.Net[i].MAC = mac
		}
	}
	return nil
}

// Fixed ids of singleton devices (device_manager.rs).
const (
	IDSerial       = "__serial"
	IDConsole      = "__console"
	IDRng          = "__rng"
	IDBalloon      = "__balloon"
	IDWatchdog     = "__watchdog"
	IDIommu        = "__iommu"
	IDPvpanic      = "__pvpanic"
	IDRtc          = "__rtc"
	IDIoapic       = "__ioapic"
	IDDebugConsole = "__debug_console"
)

// AssignDeviceIDs names every multi-instance device that has no id and
// writes the id back into the config, as upstream's device manager does
// when it creates them: one counter shared by all prefixed kinds, in
// creation order, skipping ids already in use (including memory zones and
// rate-limit groups). Singletons (rng, console, balloon, ...) keep no id in
// the config; the VMM names them with the fixed ID* constants.
func (c *VmConfig) AssignDeviceIDs() {
	used := map[string]bool{}
	mark := func(id string) {
		if id != "" {
			used[id] = true
		}
	}
	for _, d := range c.Disks {
		mark(d.ID)
	}
	for _, n := range c.Net {
		mark(n.ID)
	}
	for _, f := range c.Fs {
		mark(f.ID)
	}
	for _, p := range c.Pmem {
		mark(p.ID)
	}
	for _, d := range c.Devices {
		mark(d.ID)
	}
	for _, d := range c.UserDevices {
		mark(d.ID)
	}
	for _, d := range c.Vdpa {
		mark(d.ID)
	}
	for _, d := range c.GenericVhostUser {
		mark(d.ID)
	}
	if c.Vsock != nil {
		mark(c.Vsock.ID)
	}
	for _, z := range c.Memory.Zones {
		mark(z.ID)
	}
	for _, g := range c.RateLimitGroups {
		mark(g.ID)
	}
	counter := 0
	next := func(prefix string) string {
		for {
			id := prefix + strconv.Itoa(counter)
			counter++
			if !used[id] {
				used[id] = true
				return id
			}
		}
	}
	// Upstream's make_virtio_devices order: block, net, rng, fs, pmem,
	// vsock, (mem, balloon, watchdog), vdpa, generic vhost-user; then
	// VFIO and vfio-user devices.
	for i := range c.Disks {
		if c.Disks[i].ID == "" {
			c.Disks[i].ID = next("_disk")
		}
	}
	for i := range c.Net {
		if c.Net[i].ID == "" {
			c.Net[i].ID = next("_net")
		}
	}
	for i := range c.Fs {
		if c.Fs[i].ID == "" {
			c.Fs[i].ID = next("_fs")
		}
	}
	for i := range c.Pmem {
		if c.Pmem[i].ID == "" {
			c.Pmem[i].ID = next("_pmem")
		}
	}
	if c.Vsock != nil && c.Vsock.ID == "" {
		c.Vsock.ID = next("_vsock")
	}
	for i := range c.Vdpa {
		if c.Vdpa[i].ID == "" {
			c.Vdpa[i].ID = next("_vdpa")
		}
	}
	for i := range c.GenericVhostUser {
		if c.GenericVhostUser[i].ID == "" {
			c.GenericVhostUser[i].ID = next("_generic_vhost_user")
		}
	}
	for i := range c.Devices {
		if c.Devices[i].ID == "" {
			c.Devices[i].ID = next("_vfio")
		}
	}
	for i := range c.UserDevices {
		if c.UserDevices[i].ID == "" {
			c.UserDevices[i].ID = next("_vfio_user")
		}
	}
}
