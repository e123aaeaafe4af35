package vm

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"

	"github.com/nimbus-vmm/nimbus/internal/config"
	"github.com/nimbus-vmm/nimbus/internal/devices/console"
	"github.com/nimbus-vmm/nimbus/internal/devmgr"
	"github.com/nimbus-vmm/nimbus/internal/kvm"
	"github.com/nimbus-vmm/nimbus/internal/memory"
	"github.com/nimbus-vmm/nimbus/internal/snapshot"
	"github.com/nimbus-vmm/nimbus/internal/virtio"
	vpci "github.com/nimbus-vmm/nimbus/internal/virtio/pci"
	"github.com/nimbus-vmm/nimbus/internal/vmm"
)

// stateVersion is the format of state.json this build writes and reads.
// Upstream's snapshots are not portable across versions either; Nimbus
// says so at once instead of restoring a wrong machine.
const stateVersion = 1

// Component ids in state.json, upstream's.
const (
	cpuManagerID    = "cpu-manager"
	memoryManagerID = "memory-manager"
	deviceManagerID = "device-manager"
)

// vmState is the top of state.json (upstream's VmSnapshot): the format
// version, kvmclock, and the in-kernel irqchip and PIT that upstream,
// with its user-space IOAPIC and no PIT, does not have.
type vmState struct {
	NimbusVersion int    `json:"nimbus_state_version"`
	Clock         uint64 `json:"clock"`
	PICMaster     []byte `json:"pic_master"`
	PICSlave      []byte `json:"pic_slave"`
	IOAPIC        []byte `json:"ioapic"`
	PIT           kvm.PitState2
}

// chipField is one in-kernel irqchip and its field in a vmState.
type chipField struct {
	id    uint32
	state *[]byte
}

func (s *vmState) irqChips() []chipField {
	return []chipField{{kvm.IRQChipPICMaster, &s.PICMaster}, {kvm.IRQChipPICSlave, &s.PICSlave}, {kvm.IRQChipIOAPIC, &s.IOAPIC}}
}

type cpuState struct {
	Vcpus []*kvm.VcpuState `json:"vcpus"`
}

type memoryState struct {
	MemoryRanges snapshot.RangeTable `json:"memory_ranges"`
}

// deviceState is one device in the device manager's snapshot: a legacy
// device's own state (Kind is its StateID) or a virtio-pci function's.
type deviceState struct {
	Kind      string          `json:"kind"`
	State     json.RawMessage `json:"state,omitempty"`
	Transport *vpci.State     `json:"transport,omitempty"`
}

var _ vmm.Snapshotter = (*VM)(nil)

// Snapshot implements vmm.Snapshotter: it writes state.json and
// memory-ranges into dir. The machine must be paused.
func (m *VM) Snapshot(dir string) error {
	top, ranges, err := m.saveState()
	if err != nil {
		return err
	}
	if err := snapshot.WriteState(dir, top); err != nil {
		return err
	}
	written, err := snapshot.WriteMemory(dir, ranges, ramReader{m.mem})
	if err != nil {
		return err
	}
	m.log.Info("snapshot written", "dir", dir, "ram", m.ramSize, "ram_written", written)
	return nil
}

// ramReader reads guest RAM out without counting it as written.
type ramReader struct{ mem *memory.Memory }

func (r ramReader) Slice(gpa, n uint64) ([]byte, error) { return r.mem.Mapping(gpa, n) }

// Populated implements snapshot.PopulatedRAM.
func (r ramReader) Populated(gpa, n uint64, vec []byte) error { return r.mem.Populated(gpa, n, vec) }

// saveState is the paused machine's state tree (state.json) and its RAM
// ranges (memory-ranges' table).
func (m *VM) saveState() (*snapshot.Snapshot, snapshot.RangeTable, error) {
	var ranges snapshot.RangeTable
	m.mu.Lock()
	paused := m.paused && m.parked == m.alive
	m.mu.Unlock()
	if !paused || m.clock == nil {
		return nil, ranges, fmt.Errorf("snapshot: the machine is not paused: %w", vmm.ErrInvalidState)
	}
	if err := m.CheckSnapshot(); err != nil {
		return nil, ranges, err
	}
	top, err := m.saveVM()
	if err != nil {
		return nil, ranges, err
	}
	cpus, err := m.saveCPUs()
	if err != nil {
		return nil, ranges, err
	}
	devs, err := m.saveDevices()
	if err != nil {
		return nil, ranges, err
	}
	ranges = m.ramRanges()
	mem, err := snapshot.New(memoryState{MemoryRanges: ranges})
	if err != nil {
		return nil, ranges, err
	}
	top.Add(cpuManagerID, cpus)
	top.Add(memoryManagerID, mem)
	top.Add(deviceManagerID, devs)
	return top, ranges, nil
}

// CheckSnapshot implements vmm.Snapshotter: it refuses what a snapshot
// cannot carry yet, before any file is written.
func (m *VM) CheckSnapshot() error {
	if m.mem.Size() != m.ramSize {
		return fmt.Errorf("snapshot with hot-added memory: %w", vmm.ErrUnsupported)
	}
	for _, n := range m.dm.Nodes() {
		if n.Kind != devmgr.PCI { // a PCI node's Device is its virtio device
			continue
		}
		if _, ok := n.Device.(virtio.Snapshotter); !ok {
			return fmt.Errorf("snapshot %s: %w: %w", n.ID, vmm.ErrUnsupported, vpci.ErrNoSnapshot)
		}
		for _, id := range n.Children {
			if m.hotAdded[id] {
				// The restored machine builds it with the cold devices, in
				// config order: another slot or BAR than the guest knows.
				return fmt.Errorf("snapshot %s, hot-added after boot: %w", id, vmm.ErrUnsupported)
			}
		}
	}
	return nil
}

func (m *VM) ramRanges() snapshot.RangeTable { return ramRanges(m.mem) }

// ramRanges is mem's regions as a snapshot's memory range table.
func ramRanges(mem *memory.Memory) snapshot.RangeTable {
	var t snapshot.RangeTable
	for _, r := range mem.Regions() {
		t.Data = append(t.Data, snapshot.Range{GPA: r.GPA, Length: r.Size})
	}
	return t
}

func (m *VM) saveVM() (*snapshot.Snapshot, error) {
	s := vmState{NimbusVersion: stateVersion, Clock: m.clock.Clock}
	for _, c := range s.irqChips() {
		chip, err := m.kvm.IRQChip(c.id)
		if err != nil {
			return nil, wrap(ErrKVM, fmt.Errorf("save irqchip %d: %w", c.id, err))
		}
		*c.state = chip.Chip[:]
	}
	pit, err := m.kvm.PIT2()
	if err != nil {
		return nil, wrap(ErrKVM, fmt.Errorf("save PIT: %w", err))
	}
	s.PIT = pit
	return snapshot.New(s)
}

func (m *VM) saveCPUs() (*snapshot.Snapshot, error) {
	msrs, err := m.sys.MSRIndexList()
	if err != nil {
		return nil, wrap(ErrKVM, err)
	}
	var s cpuState
	for _, c := range m.vcpuList() {
		switch {
		case c.removing:
			return nil, fmt.Errorf("snapshot while vCPU %d is being removed: %w", c.id, vmm.ErrInvalidState)
		case !c.running.Load():
			// The guest asked for a reset or poweroff, or the vCPU failed:
			// the loop is about to act on it.
			return nil, fmt.Errorf("snapshot after vCPU %d stopped: %w", c.id, vmm.ErrInvalidState)
		}
		st, err := c.v.SaveState(msrs)
		if err != nil {
			return nil, wrap(ErrKVM, err)
		}
		s.Vcpus = append(s.Vcpus, st)
	}
	return snapshot.New(s)
}

// saveDevices saves every device with state: legacy devices that are
// devmgr.Stateful and every virtio-pci function, which fails for a
// device that cannot be snapshotted. Devices without state (the PCI
// roots, the POST and debug ports, the hotplug registers as the machine
// builds them) are left out and come back as built.
func (m *VM) saveDevices() (*snapshot.Snapshot, error) {
	top, err := snapshot.New(struct{}{})
	if err != nil {
		return nil, err
	}
	for _, n := range m.dm.Nodes() {
		var ds deviceState
		switch {
		case n.Kind == devmgr.PCI:
			t, err := m.transport(n)
			if err != nil {
				return nil, err
			}
			if ds.Transport, err = t.SaveState(); err != nil {
				return nil, fmt.Errorf("snapshot %s: %w: %w", n.ID, vmm.ErrUnsupported, err)
			}
			ds.Kind = "virtio-pci/v1"
		case n.Kind == devmgr.Virtio:
			continue // saved with its transport
		default:
			s, ok := n.Device.(devmgr.Stateful)
			if !ok {
				continue
			}
			ds.Kind = s.StateID()
			if ds.State, err = s.SaveState(); err != nil {
				return nil, fmt.Errorf("snapshot %s: %w", n.ID, err)
			}
		}
		child, err := snapshot.New(ds)
		if err != nil {
			return nil, err
		}
		top.Add(n.ID, child)
	}
	return top, nil
}

// transport is the virtio-pci function of PCI node n.
func (m *VM) transport(n devmgr.Node) (*vpci.Device, error) {
	if n.BDF == nil || int(n.BDF.Segment) >= len(m.pci) {
		return nil, fmt.Errorf("%s: no PCI address", n.ID)
	}
	t, ok := m.pci[n.BDF.Segment].root.Function(int(n.BDF.Device)).(*vpci.Device)
	if !ok {
		return nil, fmt.Errorf("%s: no virtio-pci function at %s", n.ID, n.BDF)
	}
	return t, nil
}

// RestoreFactory returns the vmm.RestoreFactory that restores KVM
// machines, logging to log (nil discards).
func RestoreFactory(log *slog.Logger) vmm.RestoreFactory {
	return func(cfg *config.VmConfig, cons *console.Devices, src vmm.RestoreSource, exits chan<- vmm.MachineExit) (vmm.Machine, error) {
		return Restore(cfg, cons, src, exits, log)
	}
}

// Restore builds the machine cfg (the snapshot's config.json) describes
// and loads the snapshot's state into it instead of a payload: guest RAM,
// the irqchip, the vCPUs and every device. The machine comes back paused,
// its vCPU threads parked: Resume continues the guest where it was.
func Restore(cfg *config.VmConfig, cons *console.Devices, src vmm.RestoreSource, exits chan<- vmm.MachineExit, log *slog.Logger) (*VM, error) {
	top, err := snapshot.ReadState(src.Dir)
	if err != nil {
		return nil, wrap(ErrSetup, err)
	}
	return restoreState(cfg, cons, top, nil, exits, log, func(m *VM, ranges snapshot.RangeTable) error {
		if src.OnDemand {
			return snapshot.MapMemory(src.Dir, ranges, m.mem)
		}
		return snapshot.ReadMemory(src.Dir, ranges, m.mem, src.Prefault)
	})
}

// restoreState builds the machine for cfg (on mem, when not nil: its RAM
// already holds the guest's) and loads top into it; loadRAM fills guest
// RAM from the snapshot's ranges. The machine comes back paused.
func restoreState(cfg *config.VmConfig, cons *console.Devices, top *snapshot.Snapshot, mem *memory.Memory,
	exits chan<- vmm.MachineExit, log *slog.Logger, loadRAM func(*VM, snapshot.RangeTable) error) (_ *VM, err error) {
	var vs vmState
	if err := top.Decode(&vs); err != nil {
		return nil, wrap(ErrSetup, err)
	}
	if vs.NimbusVersion != stateVersion {
		return nil, wrap(ErrSetup, fmt.Errorf("the snapshot's state is version %d, this Nimbus reads version %d: %w",
			vs.NimbusVersion, stateVersion, snapshot.ErrFormat))
	}
	m, err := buildOn(cfg, cons, nil, mem, exits, log)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			m.release()
		}
	}()
	if err := m.restoreMemory(top, loadRAM); err != nil {
		return nil, err
	}
	if err := m.restoreVM(&vs); err != nil {
		return nil, err
	}
	if err := m.restoreCPUs(top); err != nil {
		return nil, err
	}
	if err := m.restoreDevices(top); err != nil {
		return nil, err
	}
	// Activated devices started their goroutines: stop them until Resume,
	// which also puts kvmclock back.
	if err := m.dm.Pause(); err != nil {
		return nil, wrap(ErrSetup, err)
	}
	m.clock = &kvm.ClockData{Clock: vs.Clock}
	m.paused, m.booted = true, true
	for _, c := range m.vcpuList() {
		m.startVcpu(c)
	}
	return m, nil
}

func (m *VM) restoreMemory(top *snapshot.Snapshot, loadRAM func(*VM, snapshot.RangeTable) error) error {
	var ms memoryState
	if err := decodeChild(top, memoryManagerID, &ms); err != nil {
		return err
	}
	if here := m.ramRanges().Data; !slices.Equal(here, ms.MemoryRanges.Data) {
		return wrap(ErrSetup, fmt.Errorf("guest RAM %v here, %v in the snapshot: %w", here, ms.MemoryRanges.Data, snapshot.ErrFormat))
	}
	if err := loadRAM(m, ms.MemoryRanges); err != nil {
		return wrap(ErrSetup, err)
	}
	return nil
}

// decodeChild decodes component id's state in top into v.
func decodeChild(top *snapshot.Snapshot, id string, v any) error {
	c, err := top.Child(id)
	if err == nil {
		err = c.Decode(v)
	}
	if err != nil {
		return wrap(ErrSetup, err)
	}
	return nil
}

func (m *VM) restoreVM(vs *vmState) error {
	for _, c := range vs.irqChips() {
		chip := kvm.IRQChip{ChipID: c.id}
		if len(*c.state) != len(chip.Chip) {
			return wrap(ErrSetup, fmt.Errorf("irqchip %d: %d bytes: %w", c.id, len(*c.state), snapshot.ErrFormat))
		}
		copy(chip.Chip[:], *c.state)
		if err := m.kvm.SetIRQChip(chip); err != nil {
			return wrap(ErrKVM, fmt.Errorf("restore irqchip %d: %w", c.id, err))
		}
	}
	if err := m.kvm.SetPIT2(vs.PIT); err != nil {
		return wrap(ErrKVM, fmt.Errorf("restore PIT: %w", err))
	}
	return nil
}

func (m *VM) restoreCPUs(top *snapshot.Snapshot) error {
	var cs cpuState
	if err := decodeChild(top, cpuManagerID, &cs); err != nil {
		return err
	}
	vcpus := m.vcpuList()
	if len(cs.Vcpus) != len(vcpus) {
		return wrap(ErrSetup, fmt.Errorf("%d vCPUs in the snapshot, %d in its config: %w", len(cs.Vcpus), len(vcpus), snapshot.ErrFormat))
	}
	for i, c := range vcpus {
		refused, err := c.v.RestoreState(cs.Vcpus[i])
		if err != nil {
			return wrap(ErrKVM, err)
		}
		if len(refused) > 0 {
			m.log.Debug("MSRs not restored", "vcpu", c.id, "msrs", fmt.Sprintf("%#x", refused))
		}
	}
	return nil
}

func (m *VM) restoreDevices(top *snapshot.Snapshot) error {
	c, err := top.Child(deviceManagerID)
	if err != nil {
		return wrap(ErrSetup, err)
	}
	left := map[string]bool{}
	for id := range c.Snapshots {
		left[id] = true
	}
	for _, n := range m.dm.Nodes() {
		if n.Kind == devmgr.Virtio {
			continue
		}
		_, stateful := n.Device.(devmgr.Stateful)
		if n.Kind != devmgr.PCI && !stateful {
			continue
		}
		child, ok := c.Snapshots[n.ID]
		if !ok {
			return wrap(ErrSetup, fmt.Errorf("device %s has no state in the snapshot: %w", n.ID, snapshot.ErrFormat))
		}
		delete(left, n.ID)
		var ds deviceState
		if err := child.Decode(&ds); err != nil {
			return wrap(ErrSetup, fmt.Errorf("device %s: %w", n.ID, err))
		}
		if err := m.restoreDevice(n, &ds); err != nil {
			return wrap(ErrSetup, fmt.Errorf("restore %s: %w", n.ID, err))
		}
	}
	if len(left) > 0 {
		ids := make([]string, 0, len(left))
		for id := range left {
			ids = append(ids, id)
		}
		slices.Sort(ids)
		return wrap(ErrSetup, fmt.Errorf("devices %v of the snapshot are not in its config: %w", ids, snapshot.ErrFormat))
	}
	return nil
}

func (m *VM) restoreDevice(n devmgr.Node, ds *deviceState) error {
	if n.Kind == devmgr.PCI {
		t, err := m.transport(n)
		if err != nil {
			return err
		}
		if ds.Transport == nil {
			return fmt.Errorf("no virtio-pci state: %w", snapshot.ErrFormat)
		}
		return t.RestoreState(ds.Transport)
	}
	s := n.Device.(devmgr.Stateful)
	if ds.Kind != s.StateID() {
		return fmt.Errorf("state %q, the device reads %q: %w", ds.Kind, s.StateID(), snapshot.ErrFormat)
	}
	return s.RestoreState(ds.State)
}
