package config

import (
	"fmt"
	"os"
	"strings"
)

// Limits from upstream (config.rs, virtio-devices, arch).
const (
	MaxVcpusX86KVM          = 8192
	MaxNumPciSegments       = 96
	MaxIommuAddressWidth    = 64
	MinimumBlockQueueSize   = 2
	MaxBlockSerialBytes     = 20 // VIRTIO_BLK_ID_BYTES
	MinMTU                  = 1280
	MaxFsTagLen             = 36
	maxPciDeviceID          = 32
	maxExcludedMmapBarIndex = 5
)

func dup(field, format string, args ...any) error {
	return &ValidationError{Field: field, Msg: fmt.Sprintf(format, args...), Duplicate: true}
}

func isPow2(v uint64) bool { return v != 0 && v&(v-1) == 0 }

// BackedBySharedMemory reports whether guest RAM can be shared with
// vhost-user backends (upstream backed_by_shared_memory).
func (c *VmConfig) BackedBySharedMemory() bool {
	if c.Memory.Shared || c.Memory.Hugepages {
		return true
	}
	if c.Memory.Size == 0 {
		for _, z := range c.Memory.Zones {
			if !z.Shared && !z.Hugepages {
				return false
			}
		}
		return true
	}
	return false
}

// TotalRAM is the boot RAM: memory.size plus every zone's size.
func (c *VmConfig) TotalRAM() uint64 {
	total := c.Memory.Size
	for _, z := range c.Memory.Zones {
		total += z.Size
	}
	return total
}

func (c *VmConfig) numPciSegments() uint16 {
	if c.Platform != nil {
		return c.Platform.NumPciSegments
	}
	return 1
}

func (c *VmConfig) iommuSegment(seg uint16) bool {
	if c.Platform == nil {
		return false
	}
	for _, s := range c.Platform.IommuSegments {
		if s == seg {
			return true
		}
	}
	return false
}

// checkPci applies upstream's per-device PCI checks. iommuCapable is false
// for devices that can't sit behind the virtual IOMMU (fs, vfio-user).
func (c *VmConfig) checkPci(field string, p PciCommon, iommuCapable bool) error {
	if p.PciSegment >= c.numPciSegments() {
		return invalidf(field+".pci_segment", "Invalid PCI segment id: %d", p.PciSegment)
	}
	if c.iommuSegment(p.PciSegment) {
		if !iommuCapable {
			return invalidf(field+".pci_segment", "Device is on an IOMMU PCI segment (%d) but does not support being placed behind IOMMU", p.PciSegment)
		}
		if !p.IOMMU {
			return invalidf(field+".pci_segment", "Device is on an IOMMU PCI segment (%d) but not placed behind IOMMU", p.PciSegment)
		}
	}
	if !iommuCapable && p.IOMMU {
		return invalidf(field+".iommu", "Device does not support being placed behind IOMMU")
	}
	if p.PciDeviceID != nil {
		id := *p.PciDeviceID
		if id >= maxPciDeviceID || (id == 0 && p.PciSegment == 0) {
			return invalidf(field+".pci_device_id", "Invalid PCI device id: %d", id)
		}
	}
	return nil
}

type idSet map[string]bool

func (s idSet) add(field, id string) error {
	if id == "" {
		return nil
	}
	if strings.HasPrefix(id, "__") {
		// Upstream's text, typo included.
		return invalidf(field, "Identifier %s is not invalid", id)
	}
	if s[id] {
		return dup(field, "Identifier %s is not unique", id)
	}
	s[id] = true
	return nil
}

// Validate checks c with every rule of upstream's VmConfig::validate, in
// upstream's order, and ORs device iommu flags into c.IOMMU as upstream
// does. A firmware payload drops cmdline and initramfs. Failures are
// *ValidationError (ErrDuplicate for duplicate ids and VFIO paths, else
// ErrInvalid).
func (c *VmConfig) Validate() error {
	_, err := c.ValidateIDs()
	return err
}

// ValidateIDs is Validate returning the set of user-provided identifiers.
func (c *VmConfig) ValidateIDs() (map[string]bool, error) {
	ids := idSet{}
	if err := c.validate(ids); err != nil {
		return nil, err
	}
	return ids, nil
}

func (c *VmConfig) validate(ids idSet) error {
	if err := c.validatePayload(); err != nil {
		return err
	}
	if err := c.validateConsoles(); err != nil {
		return err
	}
	if err := c.validateCpus(); err != nil {
		return err
	}
	if err := c.validateMemory(); err != nil {
		return err
	}
	for i, g := range c.RateLimitGroups {
		f := fmt.Sprintf("rate_limit_groups[%d]", i)
		if (g.RateLimiterConfig.Bandwidth == nil && g.RateLimiterConfig.Ops == nil) || g.ID == "" {
			return invalidf(f, "Invalid rate-limiter group")
		}
		if err := ids.add(f+".id", g.ID); err != nil {
			return err
		}
	}
	for i := range c.Disks {
		if err := c.validateDisk(i, ids); err != nil {
			return err
		}
	}
	for i := range c.Net {
		if err := c.validateNet(i, ids); err != nil {
			return err
		}
	}
	if len(c.Fs) > 0 && !c.BackedBySharedMemory() {
		return invalidf("fs", "Using vhost-user requires using shared memory or huge pages")
	}
	for i, fs := range c.Fs {
		f := fmt.Sprintf("fs[%d]", i)
		if len(fs.Tag) > MaxFsTagLen {
			return invalidf(f+".tag", "Tag is longer than %d bytes: %s", MaxFsTagLen, fs.Tag)
		}
		if fs.NumQueues > uint(c.Cpus.BootVcpus) {
			return tooManyQueues(f, fs.NumQueues, c.Cpus.BootVcpus)
		}
		if err := c.checkPci(f, fs.PciCommon, false); err != nil {
			return err
		}
		if err := ids.add(f+".id", fs.ID); err != nil {
			return err
		}
	}
	for i, p := range c.Pmem {
		f := fmt.Sprintf("pmem[%d]", i)
		if err := c.checkPci(f, p.PciCommon, true); err != nil {
			return err
		}
		c.IOMMU = c.IOMMU || p.IOMMU
		if err := ids.add(f+".id", p.ID); err != nil {
			return err
		}
	}
	if len(c.GenericVhostUser) > 0 && !c.BackedBySharedMemory() {
		return invalidf("generic_vhost_user", "Using vhost-user requires using shared memory or huge pages")
	}
	for i, g := range c.GenericVhostUser {
		f := fmt.Sprintf("generic_vhost_user[%d]", i)
		if err := c.checkPci(f, g.PciCommon, false); err != nil {
			return err
		}
		if err := ids.add(f+".id", g.ID); err != nil {
			return err
		}
	}
	c.IOMMU = c.IOMMU || c.Rng.IOMMU || c.Console.IOMMU
	for _, single := range []struct {
		field string
		p     *PciCommon
	}{{"rng", &c.Rng.PciCommon}, {"console", &c.Console.PciCommon}} {
		if err := c.checkPci(single.field, *single.p, true); err != nil {
			return err
		}
		if err := ids.add(single.field+".id", single.p.ID); err != nil {
			return err
		}
	}
	if len(c.UserDevices) > 0 && !c.BackedBySharedMemory() {
		return invalidf("user_devices", "Using user devices requires using shared memory or huge pages")
	}
	for i, u := range c.UserDevices {
		f := fmt.Sprintf("user_devices[%d]", i)
		if err := c.checkPci(f, u.PciCommon, false); err != nil {
			return err
		}
		if err := ids.add(f+".id", u.ID); err != nil {
			return err
		}
	}
	for i, v := range c.Vdpa {
		f := fmt.Sprintf("vdpa[%d]", i)
		if err := c.checkPci(f, v.PciCommon, true); err != nil {
			return err
		}
		c.IOMMU = c.IOMMU || v.IOMMU
		if err := ids.add(f+".id", v.ID); err != nil {
			return err
		}
	}
	if c.Vsock != nil {
		if cid := c.Vsock.Cid; cid <= 2 || cid == ^uint32(0) {
			return invalidf("vsock.cid", "%d is a special VSOCK CID", cid)
		}
	}
	if c.Balloon != nil {
		if ram := c.TotalRAM(); c.Balloon.Size >= ram {
			return invalidf("balloon.size", "Ballon size (%d) greater than RAM (%d)", c.Balloon.Size, ram)
		}
		if err := c.checkPci("balloon", c.Balloon.PciCommon, true); err != nil {
			return err
		}
		c.IOMMU = c.IOMMU || c.Balloon.IOMMU
		if err := ids.add("balloon.id", c.Balloon.ID); err != nil {
			return err
		}
	}
	if err := c.validateDevices(ids); err != nil {
		return err
	}
	if c.Vsock != nil {
		if err := c.checkPci("vsock", c.Vsock.PciCommon, true); err != nil {
			return err
		}
		c.IOMMU = c.IOMMU || c.Vsock.IOMMU
		if err := ids.add("vsock.id", c.Vsock.ID); err != nil {
			return err
		}
	}
	if c.Rtc != nil {
		if err := c.checkPci("rtc", c.Rtc.PciCommon, true); err != nil {
			return err
		}
		c.IOMMU = c.IOMMU || c.Rtc.IOMMU
		if err := ids.add("rtc.id", c.Rtc.ID); err != nil {
			return err
		}
	}
	if err := c.validateNuma(); err != nil {
		return err
	}
	for i, z := range c.Memory.Zones {
		if err := ids.add(fmt.Sprintf("memory.zones[%d].id", i), z.ID); err != nil {
			return err
		}
	}
	for i, s := range c.PciSegments {
		f := fmt.Sprintf("pci_segments[%d]", i)
		if s.PciSegment >= c.numPciSegments() {
			return invalidf(f+".pci_segment", "Invalid PCI segment id: %d", s.PciSegment)
		}
		if s.Mmio32ApertureWeight == 0 {
			return invalidf(f+".mmio32_aperture_weight", "Invalid PCI segment aperture weight: %d", s.Mmio32ApertureWeight)
		}
		if s.Mmio64ApertureWeight == 0 {
			return invalidf(f+".mmio64_aperture_weight", "Invalid PCI segment aperture weight: %d", s.Mmio64ApertureWeight)
		}
	}
	if p := c.Platform; p != nil {
		if p.NumPciSegments == 0 || p.NumPciSegments > MaxNumPciSegments {
			return invalidf("platform.num_pci_segments", "Number of PCI segments (%d) not in range of 1 to %d", p.NumPciSegments, MaxNumPciSegments)
		}
		for _, s := range p.IommuSegments {
			if s >= p.NumPciSegments {
				return invalidf("platform.iommu_segments", "Invalid PCI segment id: %d", s)
			}
		}
		if p.IommuAddressWidthBits > MaxIommuAddressWidth {
			return invalidf("platform.iommu_address_width_bits", "IOMMU address width in bits (%d) should be less than or equal to %d", p.IommuAddressWidthBits, MaxIommuAddressWidth)
		}
		c.IOMMU = c.IOMMU || p.IommuSegments != nil
	}
	for i, r := range c.LandlockRules {
		f := fmt.Sprintf("landlock_rules[%d]", i)
		if _, err := os.Stat(r.Path); err != nil {
			return invalidf(f+".path", "Path %q provided in landlock-rules does not exist", r.Path)
		}
		if !validLandlockAccess(r.Access) {
			return invalidf(f+".access", "access provided in landlock-rules in invalid")
		}
	}
	return nil
}

func validLandlockAccess(a string) bool {
	if a == "" || len(a) > 2 {
		return false
	}
	seen := map[rune]bool{}
	for _, r := range a {
		if (r != 'r' && r != 'w') || seen[r] {
			return false
		}
		seen[r] = true
	}
	return true
}

func (c *VmConfig) validatePayload() error {
	p := c.Payload
	if p == nil || (p.Firmware == "" && p.Kernel == "" && p.Igvm == "") {
		return invalidf("payload", "No bootitem provided: neither firmware nor kernel")
	}
	if p.Igvm != "" {
		if p.Firmware != "" {
			return invalidf("payload.igvm", "Specifying a kernel or firmware is not supported when an igvm is provided")
		}
	} else if p.Firmware != "" {
		if p.Kernel != "" {
			return invalidf("payload.kernel", "Specifying a kernel is not supported when a firmware is provided")
		}
		// Upstream warns and drops them.
		p.Cmdline, p.Initramfs = "", ""
	}
	if p.HostData != "" && len(p.HostData) != 64 {
		return invalidf("payload.host_data", "Invalid host data format")
	}
	return nil
}

func (c *VmConfig) validateConsoles() error {
	if c.Console.Mode == ConsoleFile && c.Console.File == "" {
		return invalidf("console.file", "Path missing when using file console mode")
	}
	if c.Console.Mode == ConsoleSocket && c.Console.Socket == "" {
		return invalidf("console.socket", "Path missing when using socket console mode")
	}
	if c.Serial.Mode == ConsoleFile && c.Serial.File == "" {
		return invalidf("serial.file", "Path missing when using file console mode")
	}
	if c.Serial.Mode == ConsoleSocket && c.Serial.Socket == "" {
		return invalidf("serial.socket", "Path missing when using socket console mode")
	}
	if c.DebugConsole.Mode == ConsoleFile && c.DebugConsole.File == "" {
		return invalidf("debug_console.file", "Path missing when using file mode for debug console")
	}
	return nil
}

func (c *VmConfig) validateCpus() error {
	cp := &c.Cpus
	if cp.MaxVcpus < cp.BootVcpus {
		return invalidf("cpus.max_vcpus", "Max CPUs lower than boot CPUs")
	}
	if cp.BootVcpus == 0 {
		return invalidf("cpus.boot_vcpus", "Boot CPUs must be at least 1")
	}
	if cp.MaxVcpus > MaxVcpusX86KVM {
		return invalidf("cpus.max_vcpus", "Max CPUs (%d) greater than the supported maximum (%d)", cp.MaxVcpus, MaxVcpusX86KVM)
	}
	if t := cp.Topology; t != nil {
		if t.ThreadsPerCore == 0 || t.CoresPerDie == 0 || t.DiesPerPackage == 0 || t.Packages == 0 {
			return invalidf("cpus.topology", "No part of the CPU topology can be zero")
		}
		if t.ThreadsPerCore > 2 {
			return invalidf("cpus.topology.threads_per_core", "Threads per core (%d) greater than 2", t.ThreadsPerCore)
		}
		total := uint64(t.ThreadsPerCore) * uint64(t.CoresPerDie) * uint64(t.DiesPerPackage) * uint64(t.Packages)
		if total != uint64(cp.MaxVcpus) {
			return invalidf("cpus.topology", "Product of CPU topology parts does not match maximum vCPU")
		}
	}
	for i, a := range cp.Affinity {
		if a.Vcpu >= cp.MaxVcpus {
			return invalidf(fmt.Sprintf("cpus.affinity[%d].vcpu", i), "vCPU %d in affinity is not lower than max vCPUs (%d)", a.Vcpu, cp.MaxVcpus)
		}
	}
	return nil
}

func (c *VmConfig) validateMemory() error {
	m := &c.Memory
	if m.Shared && m.Mergeable {
		return invalidf("memory.mergeable", "Memory cannot be both shared and mergeable")
	}
	if m.HugepageSize != nil {
		if !m.Hugepages {
			return invalidf("memory.hugepage_size", "Huge page size specified but huge pages not enabled")
		}
		if !isPow2(*m.HugepageSize) {
			return invalidf("memory.hugepage_size", "Huge page size is not power of 2: %d", *m.HugepageSize)
		}
	}
	for i, z := range m.Zones {
		if z.HugepageSize != nil {
			f := fmt.Sprintf("memory.zones[%d].hugepage_size", i)
			if !z.Hugepages {
				return invalidf(f, "Huge page size specified but huge pages not enabled")
			}
			if !isPow2(*z.HugepageSize) {
				return invalidf(f, "Huge page size is not power of 2: %d", *z.HugepageSize)
			}
		}
	}
	return nil
}

func (c *VmConfig) validateDisk(i int, ids idSet) error {
	d := &c.Disks[i]
	f := fmt.Sprintf("disks[%d]", i)
	if d.VhostSocket != "" && d.Path != "" {
		return invalidf(f, "Disk path and vhost socket both provided")
	}
	if d.VhostUser && !c.BackedBySharedMemory() {
		return invalidf(f+".vhost_user", "Using vhost-user requires using shared memory or huge pages")
	}
	if d.VhostUser && d.VhostSocket == "" {
		return invalidf(f+".vhost_socket", "No socket provided when using vhost-user")
	}
	if d.RateLimitGroup != "" {
		found := false
		for _, g := range c.RateLimitGroups {
			found = found || g.ID == d.RateLimitGroup
		}
		if !found {
			return invalidf(f+".rate_limit_group", "Invalid rate-limiter group")
		}
	}
	if d.NumQueues > uint(c.Cpus.BootVcpus) {
		return tooManyQueues(f, d.NumQueues, c.Cpus.BootVcpus)
	}
	if d.QueueSize <= MinimumBlockQueueSize {
		return invalidf(f+".queue_size", "Queue size is smaller than %d: %d", MinimumBlockQueueSize, d.QueueSize)
	}
	if !isPow2(uint64(d.QueueSize)) {
		return invalidf(f+".queue_size", "Queue size is not a power of 2: %d", d.QueueSize)
	}
	if d.VhostUser && d.IOMMU {
		return invalidf(f+".iommu", "Device does not support being placed behind IOMMU")
	}
	if d.VhostUser && (d.RateLimiterConfig != nil || d.RateLimitGroup != "") {
		return invalidf(f+".rate_limiter_config", "Rate limiting is not supported for vhost-user disks")
	}
	if err := c.checkPci(f, d.PciCommon, true); err != nil {
		return err
	}
	if d.RateLimiterConfig != nil && d.RateLimitGroup != "" {
		return invalidf(f+".rate_limit_group", "Invalid rate-limiter group")
	}
	if len(d.Serial) > MaxBlockSerialBytes {
		return invalidf(f+".serial", "Block device serial length (%d) exceeds maximum allowed length (%d)", len(d.Serial), MaxBlockSerialBytes)
	}
	c.IOMMU = c.IOMMU || d.IOMMU
	return ids.add(f+".id", d.ID)
}

func (c *VmConfig) validateNet(i int, ids idSet) error {
	n := &c.Net[i]
	f := fmt.Sprintf("net[%d]", i)
	if n.VhostUser && !c.BackedBySharedMemory() {
		return invalidf(f+".vhost_user", "Using vhost-user requires using shared memory or huge pages")
	}
	if n.VhostUser && n.VhostSocket == "" {
		return invalidf(f+".vhost_socket", "No socket provided when using vhost-user")
	}
	if n.NumQueues < 2 {
		return invalidf(f+".num_queues", "Number of queues (%d) to virtio_net should be higher than 2", n.NumQueues)
	}
	if n.Fds != nil && uint(len(n.Fds))*2 != n.NumQueues {
		// Upstream prints the queues the fds make (two each) as "FDs".
		return invalidf(f+".fds", "Number of queues (%d) to virtio_net does not match the number of FDs (%d)", n.NumQueues, len(n.Fds)*2)
	}
	for _, fd := range n.Fds {
		// -1 marks a JSON placeholder replaced by SCM_RIGHTS fds later.
		if fd >= 0 && fd <= 2 {
			return invalidf(f+".fds", "Reserved fd number (<= 2): %d", fd)
		}
	}
	if n.NumQueues/2 > uint(c.Cpus.BootVcpus) {
		return tooManyQueues(f, n.NumQueues, c.Cpus.BootVcpus)
	}
	if !isPow2(uint64(n.QueueSize)) {
		return invalidf(f+".queue_size", "Queue size is not a power of 2: %d", n.QueueSize)
	}
	if n.VhostUser && n.IOMMU {
		return invalidf(f+".iommu", "Device does not support being placed behind IOMMU")
	}
	if err := c.checkPci(f, n.PciCommon, true); err != nil {
		return err
	}
	if n.MTU != nil && *n.MTU < MinMTU {
		return invalidf(f+".mtu", "Provided MTU %d is lower than 1280 (expected by VIRTIO specification)", *n.MTU)
	}
	if !n.OffloadCsum && (n.OffloadTSO || n.OffloadUFO) {
		return invalidf(f+".offload_csum", "\"offload_tso\" and \"offload_ufo\" depend on \"offload_csum\"")
	}
	if (n.IP == "") != (n.Mask == "") {
		return invalidf(f+".mask", "IP address and netmask must be given together")
	}
	c.IOMMU = c.IOMMU || n.IOMMU
	return ids.add(f+".id", n.ID)
}

func (c *VmConfig) validateDevices(ids idSet) error {
	paths := map[string]bool{}
	for i, d := range c.Devices {
		f := fmt.Sprintf("devices[%d]", i)
		if (d.Path == "") == (d.Fd == nil) {
			return invalidf(f, "Exactly one of path or fd must be provided for a VFIO device")
		}
		if d.Path != "" {
			if paths[d.Path] {
				return dup(f+".path", "Duplicated device path: %s", d.Path)
			}
			paths[d.Path] = true
		}
		for _, bar := range d.XExcludeMmapBars {
			if bar > maxExcludedMmapBarIndex {
				return invalidf(f+".x_exclude_mmap_bars", "Invalid BAR index %d (must be at most %d)", bar, maxExcludedMmapBarIndex)
			}
		}
		if err := c.checkPci(f, d.PciCommon, true); err != nil {
			return err
		}
		c.IOMMU = c.IOMMU || d.IOMMU
		if err := ids.add(f+".id", d.ID); err != nil {
			return err
		}
	}
	return nil
}

func (c *VmConfig) validateNuma() error {
	zoneNode := map[string]uint32{}
	segNode := map[uint16]uint32{}
	for i, n := range c.Numa {
		f := fmt.Sprintf("numa[%d]", i)
		for _, z := range n.MemoryZones {
			if prev, ok := zoneNode[z]; ok {
				return invalidf(f+".memory_zones", "Memory zone: %s belongs to multiple NUMA nodes: %d and %d", z, prev, n.GuestNumaID)
			}
			zoneNode[z] = n.GuestNumaID
		}
		for _, s := range n.PciSegments {
			if s >= c.numPciSegments() {
				return invalidf(f+".pci_segments", "Invalid PCI segment id: %d", s)
			}
			if s == 0 && n.GuestNumaID != 0 {
				return invalidf(f+".pci_segments", "Default PCI segment assigned to non-zero NUMA node %d", n.GuestNumaID)
			}
			if prev, ok := segNode[s]; ok {
				return invalidf(f+".pci_segments", "PCI segment: %d belongs to multiple NUMA nodes %d and %d", s, prev, n.GuestNumaID)
			}
			segNode[s] = n.GuestNumaID
		}
		if n.DeviceID != "" && (len(n.Cpus) > 0 || len(n.MemoryZones) > 0) {
			return invalidf(f+".device_id", "A generic initiator NUMA node cannot have cpus or memory zones")
		}
	}
	return nil
}

// tooManyQueues is upstream's ValidationError::TooManyQueues for device f.
func tooManyQueues[N ~uint | ~uint32 | ~uint8](f string, queues uint, vcpus N) error {
	return invalidf(f+".num_queues", "Queue count (%d) must not exceed boot vCPUs (%d)", queues, vcpus)
}
