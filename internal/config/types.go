package config

// The VM configuration model, mirroring Cloud Hypervisor's
// vmm/src/vm_config.rs (and the api_types crate it re-exports) field for
// field, with upstream's JSON names.
//
// Encoding conventions, following upstream's serde attributes:
//   - Option<T> fields are pointers, slices or strings tagged omitempty:
//     upstream uses skip_serializing_none, so None is never written.
//   - Plain bool and integer fields are always written (no omitempty),
//     except PciCommon.IOMMU which upstream skips when false.
//   - Enums are string types whose values are upstream's variant names.
//
// Defaults for absent fields are applied by UnmarshalJSON methods (json.go),
// so every decoding entry point (a whole VmConfig or one bare sub-config
// such as a vm.add-disk body) sees upstream's serde defaults.

// PciCommon holds the fields upstream flattens into every PCI device config
// (PciDeviceCommonConfig). It is embedded, so its fields appear inline.
type PciCommon struct {
	// ID is the device identifier; assigned by AssignDeviceIDs when empty.
	ID string `json:"id,omitempty"`
	// IOMMU places the device behind the virtual IOMMU (omitted when false).
	IOMMU bool `json:"iommu,omitempty"`
	// PciSegment is the PCI segment the device lives on (always written).
	PciSegment uint16 `json:"pci_segment"`
	// PciDeviceID pins the device slot (< 32; 0 is reserved on segment 0).
	PciDeviceID *uint8 `json:"pci_device_id,omitempty"`
}

// ---------------------------------------------------------------------------
// CPUs

// CpuTopology is the guest CPU topology (CLI topology=T:C:D:P).
type CpuTopology struct {
	ThreadsPerCore uint16 `json:"threads_per_core"`
	CoresPerDie    uint16 `json:"cores_per_die"`
	DiesPerPackage uint16 `json:"dies_per_package"`
	Packages       uint16 `json:"packages"`
}

// CpuAffinity pins one vCPU to a set of host CPUs.
type CpuAffinity struct {
	Vcpu     uint32   `json:"vcpu"`
	HostCpus []uint64 `json:"host_cpus"`
}

// CpuFeatures are optional guest CPU features.
type CpuFeatures struct {
	AMX bool `json:"amx"`
}

// CoreScheduling is upstream's CoreScheduling enum.
type CoreScheduling string

// CoreScheduling values.
const (
	CoreSchedulingVM   CoreScheduling = "Vm"
	CoreSchedulingVcpu CoreScheduling = "Vcpu"
	CoreSchedulingOff  CoreScheduling = "Off"
)

// CpuProfile is upstream's CpuProfile enum.
type CpuProfile string

// CpuProfileHost is the default (and only portable) CPU profile.
const CpuProfileHost CpuProfile = "Host"

// CpusConfig is the vCPU configuration.
type CpusConfig struct {
	BootVcpus      uint32         `json:"boot_vcpus"`
	MaxVcpus       uint32         `json:"max_vcpus"`
	Topology       *CpuTopology   `json:"topology,omitempty"`
	KvmHyperv      bool           `json:"kvm_hyperv"`
	MaxPhysBits    uint8          `json:"max_phys_bits"`
	Affinity       []CpuAffinity  `json:"affinity,omitempty"`
	Features       CpuFeatures    `json:"features"`
	Nested         bool           `json:"nested"`
	CoreScheduling CoreScheduling `json:"core_scheduling"`
	Profile        CpuProfile     `json:"profile"`
}

// ---------------------------------------------------------------------------
// Memory

// HotplugMethod is upstream's HotplugMethod enum.
type HotplugMethod string

// HotplugMethod values.
const (
	HotplugACPI      HotplugMethod = "Acpi"
	HotplugVirtioMem HotplugMethod = "VirtioMem"
)

// MemoryZoneConfig is one guest memory zone (--memory-zone).
type MemoryZoneConfig struct {
	ID             string  `json:"id"`
	Size           uint64  `json:"size"`
	File           string  `json:"file,omitempty"`
	Shared         bool    `json:"shared"`
	Hugepages      bool    `json:"hugepages"`
	HugepageSize   *uint64 `json:"hugepage_size,omitempty"`
	HostNumaNode   *uint32 `json:"host_numa_node,omitempty"`
	HotplugSize    *uint64 `json:"hotplug_size,omitempty"`
	HotpluggedSize *uint64 `json:"hotplugged_size,omitempty"`
	Prefault       bool    `json:"prefault"`
	Reserve        bool    `json:"reserve"`
	Mergeable      bool    `json:"mergeable"`
}

// MemoryConfig is the guest RAM configuration.
type MemoryConfig struct {
	Size           uint64             `json:"size"`
	Mergeable      bool               `json:"mergeable"`
	HotplugMethod  HotplugMethod      `json:"hotplug_method"`
	HotplugSize    *uint64            `json:"hotplug_size,omitempty"`
	HotpluggedSize *uint64            `json:"hotplugged_size,omitempty"`
	Shared         bool               `json:"shared"`
	Hugepages      bool               `json:"hugepages"`
	HugepageSize   *uint64            `json:"hugepage_size,omitempty"`
	Prefault       bool               `json:"prefault"`
	Reserve        bool               `json:"reserve"`
	Zones          []MemoryZoneConfig `json:"zones,omitempty"`
	Thp            bool               `json:"thp"`
}

// ---------------------------------------------------------------------------
// Payload

// FwCfgItem is one fw_cfg file item.
type FwCfgItem struct {
	Name string `json:"name"`
	File string `json:"file"`
}

// FwCfgItemList is the fw_cfg item list.
type FwCfgItemList struct {
	ItemList []FwCfgItem `json:"item_list"`
}

// FwCfgConfig is the fw_cfg device configuration (feature fw_cfg).
type FwCfgConfig struct {
	E820       bool           `json:"e820"`
	Kernel     bool           `json:"kernel"`
	Cmdline    bool           `json:"cmdline"`
	Initramfs  bool           `json:"initramfs"`
	ACPITables bool           `json:"acpi_tables"`
	Items      *FwCfgItemList `json:"items,omitempty"`
}

// PayloadConfig says what to boot.
type PayloadConfig struct {
	Firmware    string       `json:"firmware,omitempty"`
	Kernel      string       `json:"kernel,omitempty"`
	Cmdline     string       `json:"cmdline,omitempty"`
	Initramfs   string       `json:"initramfs,omitempty"`
	Igvm        string       `json:"igvm,omitempty"`
	HostData    string       `json:"host_data,omitempty"`
	FwCfgConfig *FwCfgConfig `json:"fw_cfg_config,omitempty"`
}

// ---------------------------------------------------------------------------
// Rate limiting

// TokenBucketConfig is one token bucket (virtio_devices::TokenBucketConfig).
// RefillTime is in milliseconds.
type TokenBucketConfig struct {
	Size         uint64  `json:"size"`
	OneTimeBurst *uint64 `json:"one_time_burst,omitempty"`
	RefillTime   uint64  `json:"refill_time"`
}

// RateLimiterConfig limits bandwidth and/or operations. Upstream denies
// unknown fields in it.
type RateLimiterConfig struct {
	Bandwidth *TokenBucketConfig `json:"bandwidth,omitempty"`
	Ops       *TokenBucketConfig `json:"ops,omitempty"`
}

// RateLimiterGroupConfig is a named rate limiter shared by several disks.
type RateLimiterGroupConfig struct {
	ID                string            `json:"id"`
	RateLimiterConfig RateLimiterConfig `json:"rate_limiter_config"`
}

// ---------------------------------------------------------------------------
// Block

// VirtQueueAffinity pins one virtqueue's interrupts to host CPUs.
type VirtQueueAffinity struct {
	QueueIndex uint16   `json:"queue_index"`
	HostCpus   []uint64 `json:"host_cpus"`
}

// ImageType is upstream's block::ImageType.
type ImageType string

// ImageType values.
const (
	ImageFixedVhd ImageType = "FixedVhd"
	ImageQcow2    ImageType = "Qcow2"
	ImageRaw      ImageType = "Raw"
	ImageVhdx     ImageType = "Vhdx"
	ImageFlatVmdk ImageType = "FlatVmdk"
	ImageUnknown  ImageType = "Unknown"
)

// LockGranularity is upstream's LockGranularityChoice.
type LockGranularity string

// LockGranularity values.
const (
	LockByteRange LockGranularity = "ByteRange"
	LockFull      LockGranularity = "Full"
)

// DiskConfig is one virtio-blk disk.
type DiskConfig struct {
	Path              string              `json:"path,omitempty"`
	Readonly          bool                `json:"readonly"`
	Direct            bool                `json:"direct"`
	NumQueues         uint                `json:"num_queues"`
	QueueSize         uint16              `json:"queue_size"`
	VhostUser         bool                `json:"vhost_user"`
	VhostSocket       string              `json:"vhost_socket,omitempty"`
	RateLimitGroup    string              `json:"rate_limit_group,omitempty"`
	RateLimiterConfig *RateLimiterConfig  `json:"rate_limiter_config,omitempty"`
	DisableIOUring    bool                `json:"disable_io_uring"`
	DisableAIO        bool                `json:"disable_aio"`
	Serial            string              `json:"serial,omitempty"`
	QueueAffinity     []VirtQueueAffinity `json:"queue_affinity,omitempty"`
	BackingFiles      bool                `json:"backing_files"`
	Sparse            bool                `json:"sparse"`
	ImageType         ImageType           `json:"image_type"`
	LockGranularity   LockGranularity     `json:"lock_granularity"`
	PciCommon
}

// ---------------------------------------------------------------------------
// Net

// VhostMode is upstream's VhostMode enum.
type VhostMode string

// VhostMode values.
const (
	VhostClient VhostMode = "Client"
	VhostServer VhostMode = "Server"
)

// NetConfig is one virtio-net device. IP, Mask, MAC and HostMAC hold the
// textual forms upstream serializes ("192.168.1.1", "12:34:56:78:90:01").
type NetConfig struct {
	Tap               string             `json:"tap,omitempty"`
	IP                string             `json:"ip,omitempty"`
	Mask              string             `json:"mask,omitempty"`
	MAC               string             `json:"mac,omitempty"`
	HostMAC           string             `json:"host_mac,omitempty"`
	MTU               *uint16            `json:"mtu,omitempty"`
	NumQueues         uint               `json:"num_queues"`
	QueueSize         uint16             `json:"queue_size"`
	VhostUser         bool               `json:"vhost_user"`
	VhostSocket       string             `json:"vhost_socket,omitempty"`
	VhostMode         VhostMode          `json:"vhost_mode"`
	Fds               []int32            `json:"fds,omitempty"`
	RateLimiterConfig *RateLimiterConfig `json:"rate_limiter_config,omitempty"`
	OffloadTSO        bool               `json:"offload_tso"`
	OffloadUFO        bool               `json:"offload_ufo"`
	OffloadCsum       bool               `json:"offload_csum"`
	PciCommon
}

// ---------------------------------------------------------------------------
// Other virtio devices

// RngConfig is the virtio-rng device (always present).
type RngConfig struct {
	Src string `json:"src"`
	PciCommon
}

// BalloonConfig is the virtio-balloon device.
type BalloonConfig struct {
	Size              uint64 `json:"size"`
	DeflateOnOOM      bool   `json:"deflate_on_oom"`
	FreePageReporting bool   `json:"free_page_reporting"`
	PciCommon
}

// FsConfig is one virtio-fs device (vhost-user).
type FsConfig struct {
	Tag       string `json:"tag"`
	Socket    string `json:"socket"`
	NumQueues uint   `json:"num_queues"`
	QueueSize uint16 `json:"queue_size"`
	PciCommon
}

// GenericVhostUserConfig is one generic vhost-user device.
type GenericVhostUserConfig struct {
	Socket     string   `json:"socket"`
	QueueSizes []uint16 `json:"queue_sizes"`
	DeviceType uint32   `json:"device_type"`
	PciCommon
}

// PmemConfig is one virtio-pmem device.
type PmemConfig struct {
	File          string  `json:"file"`
	Size          *uint64 `json:"size,omitempty"`
	DiscardWrites bool    `json:"discard_writes"`
	PciCommon
}

// ConsoleOutputMode is upstream's ConsoleOutputMode enum.
type ConsoleOutputMode string

// ConsoleOutputMode values.
const (
	ConsoleOff    ConsoleOutputMode = "Off"
	ConsolePty    ConsoleOutputMode = "Pty"
	ConsoleTty    ConsoleOutputMode = "Tty"
	ConsoleFile   ConsoleOutputMode = "File"
	ConsoleSocket ConsoleOutputMode = "Socket"
	ConsoleNull   ConsoleOutputMode = "Null"
)

// SerialConfig is the legacy UART (default mode Null).
type SerialConfig struct {
	File   string            `json:"file,omitempty"`
	Mode   ConsoleOutputMode `json:"mode"`
	Socket string            `json:"socket,omitempty"`
}

// ConsoleConfig is the virtio-console (default mode Tty).
type ConsoleConfig struct {
	File   string            `json:"file,omitempty"`
	Mode   ConsoleOutputMode `json:"mode"`
	Socket string            `json:"socket,omitempty"`
	PciCommon
}

// DefaultDebugConsoleIOBase is the debug console's default I/O port (0xe9).
const DefaultDebugConsoleIOBase = 0xe9

// DebugConsoleConfig is the x86 debug port console (default Off at 0xe9).
type DebugConsoleConfig struct {
	File   string            `json:"file,omitempty"`
	Mode   ConsoleOutputMode `json:"mode"`
	IOBase *uint16           `json:"iobase,omitempty"`
}

// DeviceConfig is one VFIO device, given by sysfs path or (CLI/SCM) fd.
type DeviceConfig struct {
	Path               string   `json:"path,omitempty"`
	Fd                 *int32   `json:"fd,omitempty"`
	XNvGpudirectClique *uint8   `json:"x_nv_gpudirect_clique,omitempty"`
	XExcludeMmapBars   []uint64 `json:"x_exclude_mmap_bars"`
	PciCommon
}

// UserDeviceConfig is one vfio-user device.
type UserDeviceConfig struct {
	Socket string `json:"socket"`
	PciCommon
}

// VdpaConfig is one vDPA device.
type VdpaConfig struct {
	Path      string `json:"path"`
	NumQueues uint   `json:"num_queues"`
	PciCommon
}

// VsockConfig is the virtio-vsock device.
type VsockConfig struct {
	Cid    uint32 `json:"cid"`
	Socket string `json:"socket"`
	PciCommon
}

// RtcConfig is the virtio-rtc device.
type RtcConfig struct {
	PciCommon
}

// ---------------------------------------------------------------------------
// NUMA, platform, misc

// NumaDistance is the distance from a NUMA node to another.
type NumaDistance struct {
	Destination uint32 `json:"destination"`
	Distance    uint8  `json:"distance"`
}

// NumaConfig is one guest NUMA node.
type NumaConfig struct {
	GuestNumaID uint32         `json:"guest_numa_id"`
	Cpus        []uint32       `json:"cpus,omitempty"`
	Distances   []NumaDistance `json:"distances,omitempty"`
	MemoryZones []string       `json:"memory_zones,omitempty"`
	PciSegments []uint16       `json:"pci_segments,omitempty"`
	DeviceID    string         `json:"device_id,omitempty"`
}

// PciSegmentConfig weights one PCI segment's MMIO apertures.
type PciSegmentConfig struct {
	PciSegment           uint16 `json:"pci_segment"`
	Mmio32ApertureWeight uint32 `json:"mmio32_aperture_weight"`
	Mmio64ApertureWeight uint32 `json:"mmio64_aperture_weight"`
}

// PlatformConfig holds platform-wide settings (PCI segments, IOMMU, SMBIOS).
type PlatformConfig struct {
	NumPciSegments        uint16   `json:"num_pci_segments"`
	IommuSegments         []uint16 `json:"iommu_segments,omitempty"`
	IommuAddressWidthBits uint8    `json:"iommu_address_width_bits"`
	SystemSerialNumber    string   `json:"system_serial_number,omitempty"`
	SystemUUID            string   `json:"system_uuid,omitempty"`
	OemStrings            []string `json:"oem_strings,omitempty"`
	SystemManufacturer    string   `json:"system_manufacturer,omitempty"`
	SystemProductName     string   `json:"system_product_name,omitempty"`
	SystemVersion         string   `json:"system_version,omitempty"`
	SystemFamily          string   `json:"system_family,omitempty"`
	SystemSkuNumber       string   `json:"system_sku_number,omitempty"`
	ChassisAssetTag       string   `json:"chassis_asset_tag,omitempty"`
	Tdx                   bool     `json:"tdx,omitempty"`
	SevSnp                bool     `json:"sev_snp,omitempty"`
	Iommufd               bool     `json:"iommufd"`
	IommufdFd             *int32   `json:"iommufd_fd,omitempty"`
	VfioP2PDma            bool     `json:"vfio_p2p_dma"`
}

// TpmConfig is the TPM (swtpm socket).
type TpmConfig struct {
	Socket string `json:"socket"`
}

// LandlockConfig is one extra Landlock rule; Access is a subset of "rw".
type LandlockConfig struct {
	Path   string `json:"path"`
	Access string `json:"access"`
}

// VmConfig is the whole VM configuration (upstream vm_config.rs VmConfig).
type VmConfig struct {
	Cpus             CpusConfig               `json:"cpus"`
	Memory           MemoryConfig             `json:"memory"`
	Payload          *PayloadConfig           `json:"payload,omitempty"`
	RateLimitGroups  []RateLimiterGroupConfig `json:"rate_limit_groups,omitempty"`
	Disks            []DiskConfig             `json:"disks,omitempty"`
	Net              []NetConfig              `json:"net,omitempty"`
	Rng              RngConfig                `json:"rng"`
	Balloon          *BalloonConfig           `json:"balloon,omitempty"`
	GenericVhostUser []GenericVhostUserConfig `json:"generic_vhost_user,omitempty"`
	Fs               []FsConfig               `json:"fs,omitempty"`
	Pmem             []PmemConfig             `json:"pmem,omitempty"`
	Serial           SerialConfig             `json:"serial"`
	Console          ConsoleConfig            `json:"console"`
	DebugConsole     DebugConsoleConfig       `json:"debug_console"`
	Devices          []DeviceConfig           `json:"devices,omitempty"`
	UserDevices      []UserDeviceConfig       `json:"user_devices,omitempty"`
	Vdpa             []VdpaConfig             `json:"vdpa,omitempty"`
	Vsock            *VsockConfig             `json:"vsock,omitempty"`
	Pvpanic          bool                     `json:"pvpanic"`
	IOMMU            bool                     `json:"iommu"`
	Numa             []NumaConfig             `json:"numa,omitempty"`
	Watchdog         bool                     `json:"watchdog"`
	Rtc              *RtcConfig               `json:"rtc,omitempty"`
	PciSegments      []PciSegmentConfig       `json:"pci_segments,omitempty"`
	Platform         *PlatformConfig          `json:"platform,omitempty"`
	Tpm              *TpmConfig               `json:"tpm,omitempty"`
	LandlockEnable   bool                     `json:"landlock_enable"`
	LandlockRules    []LandlockConfig         `json:"landlock_rules,omitempty"`
}

// ---------------------------------------------------------------------------
// Restore and migration bodies (vmm/src/config.rs, vmm/src/api/mod.rs)

// MemoryRestoreMode is upstream's MemoryRestoreMode enum.
type MemoryRestoreMode string

// MemoryRestoreMode values.
const (
	MemoryRestoreCopy     MemoryRestoreMode = "Copy"
	MemoryRestoreOnDemand MemoryRestoreMode = "OnDemand"
)

// RestoredNetConfig says how many tap fds a restored net device receives.
// Fds in JSON are ignored: real fds arrive over SCM_RIGHTS.
type RestoredNetConfig struct {
	ID     string  `json:"id"`
	NumFds uint    `json:"num_fds"`
	Fds    []int32 `json:"fds,omitempty"`
}

// RestoredVfioConfig names a VFIO device that receives an fd on restore.
type RestoredVfioConfig struct {
	ID string `json:"id"`
	Fd *int32 `json:"fd,omitempty"`
}

// ZoneUpdate moves a memory zone to another host NUMA node on restore or
// migration.
type ZoneUpdate struct {
	ID           string `json:"id"`
	HostNumaNode uint32 `json:"host_numa_node"`
}

// RestoreConfig is the body of vm.restore and the value of --restore.
type RestoreConfig struct {
	SourceURL         string               `json:"source_url"`
	Prefault          bool                 `json:"prefault"`
	MemoryRestoreMode MemoryRestoreMode    `json:"memory_restore_mode"`
	NetFds            []RestoredNetConfig  `json:"net_fds,omitempty"`
	VfioFds           []RestoredVfioConfig `json:"vfio_fds,omitempty"`
	IommufdFd         *int32               `json:"iommufd_fd,omitempty"`
	Resume            bool                 `json:"resume"`
	ZoneUpdates       []ZoneUpdate         `json:"zone_updates"`
}

// MemoryMigrationMode is upstream's migration memory mode.
type MemoryMigrationMode string

// MemoryMigrationMode values.
const (
	MigrationPrecopy  MemoryMigrationMode = "Precopy"
	MigrationPostcopy MemoryMigrationMode = "Postcopy"
)

// TimeoutStrategy says what send-migration does when downtime can't be met.
type TimeoutStrategy string

// TimeoutStrategy values.
const (
	TimeoutCancel TimeoutStrategy = "Cancel"
	TimeoutIgnore TimeoutStrategy = "Ignore"
)

// ReceiveMigrationData is the body of vm.receive-migration.
type ReceiveMigrationData struct {
	ReceiverURL string               `json:"receiver_url"`
	TLSDir      string               `json:"tls_dir,omitempty"`
	MemoryMode  MemoryMigrationMode  `json:"memory_mode"`
	VfioFds     []RestoredVfioConfig `json:"vfio_fds,omitempty"`
	IommufdFd   *int32               `json:"iommufd_fd,omitempty"`
	ZoneUpdates []ZoneUpdate         `json:"zone_updates"`
}

// SendMigrationData is the body of vm.send-migration.
type SendMigrationData struct {
	DestinationURL  string              `json:"destination_url"`
	Local           bool                `json:"local"`
	PreserveSource  bool                `json:"preserve_source"`
	DowntimeMs      uint64              `json:"downtime_ms"`
	TimeoutS        uint64              `json:"timeout_s"`
	TimeoutStrategy TimeoutStrategy     `json:"timeout_strategy"`
	Connections     uint32              `json:"connections"`
	TLSDir          string              `json:"tls_dir,omitempty"`
	MemoryMode      MemoryMigrationMode `json:"memory_mode"`
}
