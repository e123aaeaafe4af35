package client

import (
	"encoding/json"
	"time"
)

// Response and request bodies, with upstream's JSON names
// (vmm/src/api/mod.rs, vmm/src/lib.rs). They are this package's own types
// so that importers need nothing from Nimbus's internal packages; device
// and VM configurations travel as raw JSON.

// PingResponse is the body of vmm.ping (VmmPingResponse).
type PingResponse struct {
	BuildVersion string   `json:"build_version"`
	Version      string   `json:"version"`
	Pid          int64    `json:"pid"`
	Features     []string `json:"features"`
}

// VM states as vm.info reports them (upstream's VmState).
const (
	StateCreated    = "Created"
	StateRunning    = "Running"
	StateShutdown   = "Shutdown"
	StatePaused     = "Paused"
	StateBreakPoint = "BreakPoint"
)

// VmInfo is the body of vm.info (VmInfoResponse).
type VmInfo struct {
	// Config is the VM configuration as the server reports it.
	Config json.RawMessage `json:"config"`
	// State is one of the State* constants.
	State            string                 `json:"state"`
	MemoryActualSize uint64                 `json:"memory_actual_size"`
	DeviceTree       map[string]*DeviceNode `json:"device_tree,omitempty"`
}

// DeviceNode is one entry of vm.info's device_tree. Each resource is
// upstream's externally tagged enum, e.g. {"PioAddressRange":{...}}.
type DeviceNode struct {
	ID        string            `json:"id"`
	Resources []json.RawMessage `json:"resources"`
	Parent    *string           `json:"parent,omitempty"`
	Children  []string          `json:"children"`
	PciBDF    *string           `json:"pci_bdf,omitempty"`
}

// Counters is the body of vm.counters: device id -> counter -> value.
type Counters map[string]map[string]uint64

// PciDeviceInfo is the body of a hot-add reply, e.g.
// {"id":"_disk1","bdf":"0000:00:06.0"}.
type PciDeviceInfo struct {
	ID  string `json:"id"`
	BDF string `json:"bdf"`
}

// ResizeRequest is the body of vm.resize (VmResizeData). Nil fields are
// sent as JSON null, as ch-remote sends them.
type ResizeRequest struct {
	DesiredVcpus   *uint32 `json:"desired_vcpus"`
	DesiredRAM     *uint64 `json:"desired_ram"`
	DesiredBalloon *uint64 `json:"desired_balloon"`
}

// ResizeDiskRequest is the body of vm.resize-disk (VmResizeDiskData).
type ResizeDiskRequest struct {
	ID          string `json:"id"`
	DesiredSize uint64 `json:"desired_size"`
}

// ResizeZoneRequest is the body of vm.resize-zone (VmResizeZoneData).
type ResizeZoneRequest struct {
	ID         string `json:"id"`
	DesiredRAM uint64 `json:"desired_ram"`
}

// RemoveDeviceRequest is the body of vm.remove-device (VmRemoveDeviceData).
type RemoveDeviceRequest struct {
	ID string `json:"id"`
}

// DestinationRequest is the body of vm.snapshot (VmSnapshotConfig) and
// vm.coredump (VmCoredumpData).
type DestinationRequest struct {
	DestinationURL string `json:"destination_url"`
}

// Event is one event of the event monitor, as streamed by
// GET /api/v1/vmm.events.
type Event struct {
	Timestamp  Timestamp         `json:"timestamp"`
	Source     string            `json:"source"`
	Event      string            `json:"event"`
	Properties map[string]string `json:"properties"`
}

// Timestamp is the time since the event monitor started, in upstream's
// serialization of a Rust Duration.
type Timestamp struct {
	Secs  uint64 `json:"secs"`
	Nanos uint32 `json:"nanos"`
}

// Duration converts the timestamp to a time.Duration.
func (t Timestamp) Duration() time.Duration {
	return time.Duration(t.Secs)*time.Second + time.Duration(t.Nanos)
}
