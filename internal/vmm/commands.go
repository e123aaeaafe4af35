package vmm

import (
	"context"
	"os"

	"github.com/nimbus-vmm/nimbus/internal/config"
)

// The internal API. Every front end (REST, CLI) turns what it receives into
// one of the Command values below and submits it, with a reply channel, to
// the single control-loop goroutine that owns the VM (see Controller). The
// loop runs each command to completion and replies exactly once.
//
// Commands with a JSON body carry the decoded value; the JSON tags of the
// small request structs here are upstream's (vmm/src/api/mod.rs), so the
// REST front end decodes bodies straight into them.

// Command is one request to the control loop. Name is upstream's endpoint
// name without the /api/v1/ prefix, e.g. "vm.boot".
type Command interface {
	Name() string
}

// Request is a command plus where to send its one reply.
type Request struct {
	Cmd   Command
	Reply chan<- Result
}

// Result is the reply to a Request. Value is nil for commands that answer
// 204 and otherwise one of: *PingResponse, *VmInfo, Counters,
// *PciDeviceInfo. Err wraps one of the sentinel categories in errors.go.
type Result struct {
	Value any
	Err   error
}

// Ping is vmm.ping.
type Ping struct{}

// ShutdownVMM is vmm.shutdown: delete the VM and stop the control loop.
type ShutdownVMM struct{}

// CreateVM is vm.create. Fds received with the request are not used by
// upstream; the front end closes them.
type CreateVM struct{ Config *config.VmConfig }

// BootVM is vm.boot.
type BootVM struct{}

// DeleteVM is vm.delete.
type DeleteVM struct{}

// ShutdownVM is vm.shutdown.
type ShutdownVM struct{}

// RebootVM is vm.reboot.
type RebootVM struct{}

// PauseVM is vm.pause.
type PauseVM struct{}

// ResumeVM is vm.resume.
type ResumeVM struct{}

// PowerButton is vm.power-button.
type PowerButton struct{}

// NMI is vm.nmi.
type NMI struct{}

// Info is vm.info.
type Info struct{}

// GetCounters is vm.counters.
type GetCounters struct{}

// Resize is vm.resize (VmResizeData). Explicit nulls are accepted.
type Resize struct {
	DesiredVcpus   *uint32 `json:"desired_vcpus,omitempty"`
	DesiredRAM     *uint64 `json:"desired_ram,omitempty"`
	DesiredBalloon *uint64 `json:"desired_balloon,omitempty"`
}

// ResizeDisk is vm.resize-disk (VmResizeDiskData); both fields required.
type ResizeDisk struct {
	ID          string `json:"id"`
	DesiredSize uint64 `json:"desired_size"`
}

// ResizeZone is vm.resize-zone (VmResizeZoneData); both fields required.
type ResizeZone struct {
	ID         string `json:"id"`
	DesiredRAM uint64 `json:"desired_ram"`
}

// AddDisk is vm.add-disk.
type AddDisk struct{ Config config.DiskConfig }

// AddNet is vm.add-net. Fds are the tap fds received over SCM_RIGHTS; the
// control loop owns them from submission on (closes them on failure).
type AddNet struct {
	Config config.NetConfig
	Fds    []*os.File
}

// AddFs is vm.add-fs.
type AddFs struct{ Config config.FsConfig }

// AddPmem is vm.add-pmem.
type AddPmem struct{ Config config.PmemConfig }

// AddDevice is vm.add-device (VFIO); at most one fd.
type AddDevice struct {
	Config config.DeviceConfig
	Fds    []*os.File
}

// AddUserDevice is vm.add-user-device.
type AddUserDevice struct{ Config config.UserDeviceConfig }

// AddVdpa is vm.add-vdpa.
type AddVdpa struct{ Config config.VdpaConfig }

// AddVsock is vm.add-vsock.
type AddVsock struct{ Config config.VsockConfig }

// AddGenericVhostUser is vm.add-generic-vhost-user.
type AddGenericVhostUser struct {
	Config config.GenericVhostUserConfig
}

// RemoveDevice is vm.remove-device (VmRemoveDeviceData).
type RemoveDevice struct {
	ID string `json:"id"`
}

// Snapshot is vm.snapshot (VmSnapshotConfig).
type Snapshot struct {
	DestinationURL string `json:"destination_url"`
}

// Coredump is vm.coredump (VmCoredumpData).
type Coredump struct {
	DestinationURL string `json:"destination_url"`
}

// Restore is vm.restore; Fds in upstream's order (net, vfio, iommufd).
type Restore struct {
	Config config.RestoreConfig
	Fds    []*os.File
}

// ReceiveMigration is vm.receive-migration.
type ReceiveMigration struct {
	Config config.ReceiveMigrationData
	Fds    []*os.File
}

// SendMigration is vm.send-migration.
type SendMigration struct{ Config config.SendMigrationData }

// PingResponse is the body of vmm.ping (VmmPingResponse).
type PingResponse struct {
	BuildVersion string   `json:"build_version"`
	Version      string   `json:"version"`
	Pid          int64    `json:"pid"`
	Features     []string `json:"features"`
}

// VmInfo is the body of vm.info (VmInfoResponse).
type VmInfo struct {
	Config           *config.VmConfig       `json:"config"`
	State            State                  `json:"state"`
	MemoryActualSize uint64                 `json:"memory_actual_size"`
	DeviceTree       map[string]*DeviceNode `json:"device_tree,omitempty"`
}

// DeviceNode is one entry of vm.info's device_tree. Resources holds
// upstream's externally tagged enum values, e.g.
// {"PioAddressRange":{"base":1016,"size":8}}.
type DeviceNode struct {
	ID        string           `json:"id"`
	Resources []map[string]any `json:"resources"`
	Parent    *string          `json:"parent,omitempty"`
	Children  []string         `json:"children"`
	PciBDF    *string          `json:"pci_bdf,omitempty"`
}

// Counters is the body of vm.counters: device id -> counter -> value.
type Counters map[string]map[string]uint64

// PciDeviceInfo is the body of a hot-add reply, e.g.
// {"id":"_disk1","bdf":"0000:00:06.0"}.
type PciDeviceInfo struct {
	ID  string `json:"id"`
	BDF string `json:"bdf"`
}

// State is upstream's VmState.
type State string

// Upstream's VM states.
const (
	StateCreated    State = "Created"
	StateRunning    State = "Running"
	StateShutdown   State = "Shutdown"
	StatePaused     State = "Paused"
	StateBreakPoint State = "BreakPoint"
)

// Name implementations: the route name each command serves.
func (Ping) Name() string                { return "vmm.ping" }
func (ShutdownVMM) Name() string         { return "vmm.shutdown" }
func (CreateVM) Name() string            { return "vm.create" }
func (BootVM) Name() string              { return "vm.boot" }
func (DeleteVM) Name() string            { return "vm.delete" }
func (ShutdownVM) Name() string          { return "vm.shutdown" }
func (RebootVM) Name() string            { return "vm.reboot" }
func (PauseVM) Name() string             { return "vm.pause" }
func (ResumeVM) Name() string            { return "vm.resume" }
func (PowerButton) Name() string         { return "vm.power-button" }
func (NMI) Name() string                 { return "vm.nmi" }
func (Info) Name() string                { return "vm.info" }
func (GetCounters) Name() string         { return "vm.counters" }
func (Resize) Name() string              { return "vm.resize" }
func (ResizeDisk) Name() string          { return "vm.resize-disk" }
func (ResizeZone) Name() string          { return "vm.resize-zone" }
func (AddDisk) Name() string             { return "vm.add-disk" }
func (AddNet) Name() string              { return "vm.add-net" }
func (AddFs) Name() string               { return "vm.add-fs" }
func (AddPmem) Name() string             { return "vm.add-pmem" }
func (AddDevice) Name() string           { return "vm.add-device" }
func (AddUserDevice) Name() string       { return "vm.add-user-device" }
func (AddVdpa) Name() string             { return "vm.add-vdpa" }
func (AddVsock) Name() string            { return "vm.add-vsock" }
func (AddGenericVhostUser) Name() string { return "vm.add-generic-vhost-user" }
func (RemoveDevice) Name() string        { return "vm.remove-device" }
func (Snapshot) Name() string            { return "vm.snapshot" }
func (Coredump) Name() string            { return "vm.coredump" }
func (Restore) Name() string             { return "vm.restore" }
func (ReceiveMigration) Name() string    { return "vm.receive-migration" }
func (SendMigration) Name() string       { return "vm.send-migration" }

// Handler is what every front end talks to: it submits cmd to the control
// loop and waits for the one reply (or for ctx to end, in which case the
// loop still runs the command to completion). The Controller implements
// it; unit tests of front ends may use a test double.
type Handler interface {
	Do(ctx context.Context, cmd Command) (any, error)
}
