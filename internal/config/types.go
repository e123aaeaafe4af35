package config

// Placeholder type names: the config work (issue 2) fills these in with
// Cloud Hypervisor's fields, JSON names and defaults. Other packages may
// rely on the names below.

// VmConfig is the whole VM configuration (upstream vm_config.rs VmConfig).
type VmConfig struct{}

// DiskConfig is one virtio-blk disk.
type DiskConfig struct{}

// NetConfig is one virtio-net device.
type NetConfig struct{}

// FsConfig is one virtio-fs device (vhost-user).
type FsConfig struct{}

// PmemConfig is one virtio-pmem device.
type PmemConfig struct{}

// DeviceConfig is one VFIO device.
type DeviceConfig struct{}

// UserDeviceConfig is one vfio-user device.
type UserDeviceConfig struct{}

// VdpaConfig is one vDPA device.
type VdpaConfig struct{}

// VsockConfig is the virtio-vsock device.
type VsockConfig struct{}

// GenericVhostUserConfig is one generic vhost-user device.
type GenericVhostUserConfig struct{}

// RestoreConfig is the body of vm.restore and the value of --restore.
type RestoreConfig struct{}

// ReceiveMigrationData is the body of vm.receive-migration.
type ReceiveMigrationData struct{}

// SendMigrationData is the body of vm.send-migration.
type SendMigrationData struct{}
