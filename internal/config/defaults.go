package config

// Upstream's defaults (vm_config.rs, api_types): the values serde fills in
// when a field is absent, which the CLI parsers share.
const (
	DefaultVcpus               = 1
	DefaultMaxPhysBits         = 46
	DefaultMemorySize          = 512 << 20
	DefaultRngSource           = "/dev/urandom"
	DefaultDiskNumQueues       = 1
	DefaultDiskQueueSize       = 128
	DefaultNetNumQueues        = 2
	DefaultNetQueueSize        = 256
	DefaultFsNumQueues         = 1
	DefaultFsQueueSize         = 1024
	DefaultVdpaNumQueues       = 1
	DefaultNumPciSegments      = 1
	DefaultIommuAddressWidth   = 64
	DefaultApertureWeight      = 1
	DefaultDowntimeMs          = 300
	DefaultMigrationTimeoutS   = 3600
	DefaultMigrationConnection = 1
)

// DefaultCpusConfig is the vCPU configuration used when "cpus" is absent.
func DefaultCpusConfig() CpusConfig {
	return CpusConfig{
		BootVcpus:      DefaultVcpus,
		MaxVcpus:       DefaultVcpus,
		MaxPhysBits:    DefaultMaxPhysBits,
		Nested:         true,
		CoreScheduling: CoreSchedulingVM,
		Profile:        CpuProfileHost,
	}
}

// DefaultMemoryConfig is 512 MiB of private RAM with ACPI hotplug and THP.
func DefaultMemoryConfig() MemoryConfig {
	return MemoryConfig{Size: DefaultMemorySize, HotplugMethod: HotplugACPI, Thp: true}
}

// DefaultRngConfig reads entropy from /dev/urandom.
func DefaultRngConfig() RngConfig { return RngConfig{Src: DefaultRngSource} }

// DefaultSerialConfig is the legacy UART default (mode Null).
func DefaultSerialConfig() SerialConfig { return SerialConfig{Mode: ConsoleNull} }

// DefaultConsoleConfig is the virtio-console default (mode Tty).
func DefaultConsoleConfig() ConsoleConfig { return ConsoleConfig{Mode: ConsoleTty} }

// DefaultDebugConsoleConfig is the debug port default: Off at 0xe9.
func DefaultDebugConsoleConfig() DebugConsoleConfig {
	port := uint16(DefaultDebugConsoleIOBase)
	return DebugConsoleConfig{Mode: ConsoleOff, IOBase: &port}
}

// DefaultDiskConfig is a disk with every field at its default.
func DefaultDiskConfig() DiskConfig {
	return DiskConfig{
		NumQueues:       DefaultDiskNumQueues,
		QueueSize:       DefaultDiskQueueSize,
		Sparse:          true,
		ImageType:       ImageUnknown,
		LockGranularity: LockByteRange,
	}
}

// DefaultNetConfig is a NIC with every field at its default (no MAC yet).
func DefaultNetConfig() NetConfig {
	return NetConfig{
		NumQueues:   DefaultNetNumQueues,
		QueueSize:   DefaultNetQueueSize,
		VhostMode:   VhostClient,
		OffloadTSO:  true,
		OffloadUFO:  true,
		OffloadCsum: true,
	}
}

// DefaultPlatformConfig is the platform with every field at its default.
func DefaultPlatformConfig() PlatformConfig {
	return PlatformConfig{
		NumPciSegments:        DefaultNumPciSegments,
		IommuAddressWidthBits: DefaultIommuAddressWidth,
		VfioP2PDma:            true,
	}
}

// DefaultVmConfig is what an empty JSON object decodes to.
func DefaultVmConfig() VmConfig {
	return VmConfig{
		Cpus:         DefaultCpusConfig(),
		Memory:       DefaultMemoryConfig(),
		Rng:          DefaultRngConfig(),
		Serial:       DefaultSerialConfig(),
		Console:      DefaultConsoleConfig(),
		DebugConsole: DefaultDebugConsoleConfig(),
	}
}

// DefaultSendMigrationData fills send-migration's optional fields.
func DefaultSendMigrationData() SendMigrationData {
	return SendMigrationData{
		DowntimeMs:      DefaultDowntimeMs,
		TimeoutS:        DefaultMigrationTimeoutS,
		TimeoutStrategy: TimeoutCancel,
		Connections:     DefaultMigrationConnection,
		MemoryMode:      MigrationPrecopy,
	}
}
