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

// DefaultMemoryZone is upstream's DEFAULT_MEMORY_ZONE: the zone the global
// memory config makes, and the id of its virtio-mem device.
const DefaultMemoryZone = "mem0"

// AssignDeviceIDs names every multi-instance device that has no id and
// writes the id back into the config, as upstream's device manager does
// when it creates them: one counter shared by all prefixed kinds, in
// creation order, skipping ids already in use (including memory zones and
// rate-limit groups). Singletons (rng, console, balloon, ...) keep no id in
// the config; the VMM names them with the fixed ID* constants.
//
// It returns the counter's final value, where upstream's device manager
// goes on counting for hot-added devices (NextDeviceID).
func (c *VmConfig) AssignDeviceIDs() int {
	kinds := c.deviceIDs()
	used := map[string]bool{}
	for _, k := range kinds {
		for _, id := range k.ids {
			if *id != "" {
				used[*id] = true
			}
		}
	}
	counter := 0
	for _, k := range kinds {
		if k.prefix == "" {
			continue
		}
		for _, id := range k.ids {
			for *id == "" {
				name := k.prefix + strconv.Itoa(counter)
				counter++
				if !used[name] {
					used[name] = true
					*id = name
				}
			}
		}
	}
	return counter
}

// Id prefixes of generated device ids (device_manager.rs *_DEVICE_NAME_PREFIX).
const (
	PrefixDisk  = "_disk"
	PrefixNet   = "_net"
	PrefixVsock = "_vsock"
	PrefixPmem  = "_pmem"
	PrefixFs    = "_fs"
)

// NextDeviceID is upstream's next_device_name: prefix plus the shared
// counter, advanced past every name for which taken reports true.
func NextDeviceID(prefix string, counter *int, taken func(string) bool) string {
	for {
		name := prefix + strconv.Itoa(*counter)
		*counter++
		if !taken(name) {
			return name
		}
	}
}

// idKind is one kind of named config entry: the ID fields of its entries
// and the prefix of generated ids ("" for kinds that only reserve theirs).
type idKind struct {
	prefix string
	ids    []*string
}

// deviceIDs lists the ID fields in upstream's make_virtio_devices order:
// block, net, (rng), fs, pmem, vsock, (mem, balloon, watchdog), vdpa,
// generic vhost-user (the singletons in brackets keep no id in the config); then VFIO and
// vfio-user devices; then memory zones and rate-limit groups, whose ids are
// in use but never generated here.
func (c *VmConfig) deviceIDs() []idKind {
	var vsock []*string
	if c.Vsock != nil {
		vsock = []*string{&c.Vsock.ID}
	}
	return []idKind{
		{PrefixDisk, idsOf(c.Disks, func(d *DiskConfig) *string { return &d.ID })},
		{PrefixNet, idsOf(c.Net, func(n *NetConfig) *string { return &n.ID })},
		{PrefixFs, idsOf(c.Fs, func(f *FsConfig) *string { return &f.ID })},
		{PrefixPmem, idsOf(c.Pmem, func(p *PmemConfig) *string { return &p.ID })},
		{PrefixVsock, vsock},
		{"_vdpa", idsOf(c.Vdpa, func(d *VdpaConfig) *string { return &d.ID })},
		{"_generic_vhost_user", idsOf(c.GenericVhostUser, func(d *GenericVhostUserConfig) *string { return &d.ID })},
		{"_vfio", idsOf(c.Devices, func(d *DeviceConfig) *string { return &d.ID })},
		{"_vfio_user", idsOf(c.UserDevices, func(d *UserDeviceConfig) *string { return &d.ID })},
		{"", idsOf(c.Memory.Zones, func(z *MemoryZoneConfig) *string { return &z.ID })},
		{"", idsOf(c.RateLimitGroups, func(g *RateLimiterGroupConfig) *string { return &g.ID })},
	}
}

// idsOf returns the ID field of each element of s, in order.
func idsOf[T any](s []T, id func(*T) *string) []*string {
	out := make([]*string, len(s))
	for i := range s {
		out[i] = id(&s[i])
	}
	return out
}
