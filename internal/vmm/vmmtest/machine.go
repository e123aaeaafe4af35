// Package vmmtest provides a test double for vmm.Machine, so the control
// loop and the front ends can be tested without KVM.
package vmmtest

import (
	"errors"
	"os"
	"path/filepath"
	"sync"

	"github.com/nimbus-vmm/nimbus/internal/config"
	"github.com/nimbus-vmm/nimbus/internal/devices/console"
	"github.com/nimbus-vmm/nimbus/internal/vmm"
)

// Machine is a vmm.Machine that records calls and returns preset errors.
// It starts no goroutines. Exit simulates a guest-initiated exit.
type Machine struct {
	mu    sync.Mutex
	cfg   *config.VmConfig
	exits chan<- vmm.MachineExit
	calls []string
	// Consoles are the backends the controller built this machine on.
	Consoles *console.Devices

	// Preset errors, returned by the matching method.
	BootErr, PauseErr, ResumeErr, ShutdownErr, PowerButtonErr, NMIErr, SnapshotErr, MigrateErr error
	// CheckSnapshotErr is CheckSnapshot's answer: a machine that cannot
	// be saved.
	CheckSnapshotErr error
	// RAMBytes is the guest RAM a migration sends (RAMSize bytes; made on
	// first use) or received.
	RAMBytes []byte
	// Restored is where Factory.Restore built this machine from (nil: New).
	Restored *vmm.RestoreSource
	// Values returned by the query methods.
	Tree map[string]*vmm.DeviceNode
	Ctrs vmm.Counters
}

func (m *Machine) record(name string, err error) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.calls = append(m.calls, name)
	return err
}

// Boot implements vmm.Machine.
func (m *Machine) Boot() error { return m.record("Boot", m.BootErr) }

// Pause implements vmm.Machine.
func (m *Machine) Pause() error { return m.record("Pause", m.PauseErr) }

// Resume implements vmm.Machine.
func (m *Machine) Resume() error { return m.record("Resume", m.ResumeErr) }

// Shutdown implements vmm.Machine.
func (m *Machine) Shutdown() error { return m.record("Shutdown", m.ShutdownErr) }

// PowerButton implements vmm.Machine.
func (m *Machine) PowerButton() error { return m.record("PowerButton", m.PowerButtonErr) }

// NMI implements vmm.Machine.
func (m *Machine) NMI() error { return m.record("NMI", m.NMIErr) }

// Counters implements vmm.Machine.
func (m *Machine) Counters() vmm.Counters { m.record("Counters", nil); return m.Ctrs }

// CheckSnapshot implements vmm.Snapshotter; it returns CheckSnapshotErr.
func (m *Machine) CheckSnapshot() error { return m.record("CheckSnapshot", m.CheckSnapshotErr) }

// Snapshot implements vmm.Snapshotter: it records "Snapshot <dir>" and
// writes a state.json and an empty memory-ranges, the files a machine
// adds to the loop's config.json.
func (m *Machine) Snapshot(dir string) error {
	if err := m.record("Snapshot "+dir, m.SnapshotErr); err != nil {
		return err
	}
	return errors.Join(os.WriteFile(filepath.Join(dir, "state.json"), []byte(`{"snapshots":{},"snapshot_data":null}`), 0o600),
		os.WriteFile(filepath.Join(dir, "memory-ranges"), nil, 0o600))
}

// DeviceTree implements vmm.Machine.
func (m *Machine) DeviceTree() map[string]*vmm.DeviceNode { return m.Tree }

// Calls returns the methods called so far, in order.
func (m *Machine) Calls() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]string(nil), m.calls...)
}

// Config is the config the machine was built from.
func (m *Machine) Config() *config.VmConfig { return m.cfg }

// Exit simulates a guest-initiated exit, as a real machine reports it.
func (m *Machine) Exit(e vmm.MachineExit) bool { return vmm.NotifyExit(m.exits, e) }

// Factory builds Machines and remembers them. Err, when set, makes the
// next builds fail; Prepare, when set, configures each new machine (e.g.
// preset errors) before the controller sees it.
type Factory struct {
	mu  sync.Mutex
	Err error
	// Hotplug makes New build HotplugMachines.
	Hotplug  bool
	Hotplugs []*HotplugMachine
	Prepare  func(*Machine)
	machines []*Machine
}

// New is a vmm.MachineFactory.
func (f *Factory) New(cfg *config.VmConfig, cons *console.Devices, _ vmm.Handover, exits chan<- vmm.MachineExit) (vmm.Machine, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.Err != nil {
		return nil, f.Err
	}
	m := &Machine{cfg: cfg, Consoles: cons, exits: exits}
	if f.Prepare != nil {
		f.Prepare(m)
	}
	f.machines = append(f.machines, m)
	if f.Hotplug {
		h := newHotplugMachine(m)
		f.Hotplugs = append(f.Hotplugs, h)
		return h, nil
	}
	return m, nil
}

// Restore is a vmm.RestoreFactory: New, with the source recorded in the
// machine's Restored.
func (f *Factory) Restore(cfg *config.VmConfig, cons *console.Devices, src vmm.RestoreSource, exits chan<- vmm.MachineExit) (vmm.Machine, error) {
	m, err := f.New(cfg, cons, nil, exits)
	if err != nil {
		return nil, err
	}
	f.Last().Restored = &src
	return m, nil
}

// Machines returns every machine built so far.
func (f *Factory) Machines() []*Machine {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*Machine(nil), f.machines...)
}

// Last returns the most recently built machine, or nil.
func (f *Factory) Last() *Machine {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.machines) == 0 {
		return nil
	}
	return f.machines[len(f.machines)-1]
}
