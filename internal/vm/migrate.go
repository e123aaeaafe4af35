package vm

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"

	"github.com/nimbus-vmm/nimbus/internal/config"
	"github.com/nimbus-vmm/nimbus/internal/devices/console"
	"github.com/nimbus-vmm/nimbus/internal/devmgr"
	"github.com/nimbus-vmm/nimbus/internal/memory"
	"github.com/nimbus-vmm/nimbus/internal/migration"
	"github.com/nimbus-vmm/nimbus/internal/snapshot"
	"github.com/nimbus-vmm/nimbus/internal/virtio/blk"
	"github.com/nimbus-vmm/nimbus/internal/vmm"
)

var _ vmm.Migratable = (*VM)(nil)

// CheckMigratable implements vmm.Migratable: what a snapshot refuses, a
// migration refuses before it starts.
func (m *VM) CheckMigratable() error { return m.CheckSnapshot() }

// RAM implements vmm.Migratable: the guest RAM that exists on the host;
// pages never touched are zeros on the destination already.
func (m *VM) RAM() ([]migration.Range, error) {
	rs, err := m.mem.ResidentRanges()
	if err != nil {
		return nil, wrap(ErrSetup, err)
	}
	return toMigration(rs), nil
}

func toMigration(rs []memory.Region) []migration.Range {
	out := make([]migration.Range, len(rs))
	for i, r := range rs {
		out[i] = migration.Range{GPA: r.GPA, Length: r.Size}
	}
	return out
}

// ReadRAM implements vmm.Migratable: guest RAM to send, not counted as
// written.
func (m *VM) ReadRAM(gpa, n uint64) ([]byte, error) { return m.mem.Mapping(gpa, n) }

// StartDirtyLog implements vmm.Migratable. The devices of a running
// machine pause meanwhile, so that none still holds guest memory it took
// before the log started, and the vCPUs are parked while the memory
// slots change (a few ms; whether that matters is not known: a nested
// guest triple-faulted once while its slots changed under it, and others
// did with no migration at all).
func (m *VM) StartDirtyLog() error {
	return m.withStopped(func() error { return m.mem.StartDirtyLog(m.kvm) })
}

// StopDirtyLog implements vmm.Migratable; with no log on (a migration
// that failed before its first round) it stops nothing.
func (m *VM) StopDirtyLog() error {
	if !m.mem.DirtyLogging() {
		return nil
	}
	return m.withStopped(func() error { return m.mem.StopDirtyLog(m.kvm) })
}

// withStopped runs f with the vCPUs parked and the devices paused, then
// lets a machine that was running run again. It leaves kvmclock alone:
// the stop is short and the guest's clock goes on as it would.
func (m *VM) withStopped(f func() error) error {
	m.mu.Lock()
	running := !m.paused
	m.mu.Unlock()
	if running {
		m.parkAll()
		if err := m.dm.Pause(); err != nil {
			m.unpark()
			return wrap(ErrSetup, err)
		}
		defer func() {
			if err := m.dm.Resume(); err != nil {
				m.log.Error("resuming devices after changing the dirty log failed", "err", err)
			}
			m.unpark()
		}()
	}
	if err := f(); err != nil {
		return wrap(ErrKVM, err)
	}
	return nil
}

// DirtyRanges implements vmm.Migratable.
func (m *VM) DirtyRanges(final bool) ([]migration.Range, error) {
	rs, err := m.mem.DirtyRanges(m.kvm, final)
	if err != nil {
		return nil, wrap(ErrKVM, err)
	}
	return toMigration(rs), nil
}

// MigrationState implements vmm.Migratable: the paused machine's state
// tree, as state.json holds it.
func (m *VM) MigrationState() ([]byte, error) {
	top, _, err := m.saveState()
	if err != nil {
		return nil, err
	}
	return json.Marshal(top)
}

// MemoryManagerData implements vmm.Migratable: the memory ranges of
// upstream's VmMigrationConfig.memory_manager_data.
func (m *VM) MemoryManagerData() any { return memoryState{MemoryRanges: m.ramRanges()} }

// SetDiskLocks implements vmm.Migratable: the disks' image locks go
// before the destination opens the images and come back if the
// migration fails (upstream's release_disk_locks).
func (m *VM) SetDiskLocks(locked bool) error {
	var errs []error
	for _, n := range m.dm.Nodes() {
		if d, ok := n.Device.(*blk.Device); ok && n.Kind == devmgr.PCI {
			if err := d.SetLocked(locked); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", n.ID, err))
			}
		}
	}
	return errors.Join(errs...)
}

// MemoryFDs implements vmm.Migratable.
func (m *VM) MemoryFDs() ([]int, error) {
	fds := m.mem.ZoneFDs()
	for _, fd := range fds {
		if fd < 0 {
			// Upstream also takes hugepages; here only shared RAM has memfds.
			return nil, fmt.Errorf("Local migration requires shared memory (shared=on): %w", vmm.ErrBadConfig)
		}
	}
	return fds, nil
}

// Incoming is a machine being received: its guest RAM exists from the
// migration's Config on and is filled by its memory rounds; Restore
// builds the machine on it from the sender's state.
type Incoming struct {
	mem *memory.Memory
	log *slog.Logger
}

// IncomingFactory returns the vmm.IncomingFactory for KVM machines.
func IncomingFactory(log *slog.Logger) vmm.IncomingFactory {
	return func(cfg *config.VmConfig, mmData json.RawMessage, memFiles []*os.File) (vmm.IncomingMachine, error) {
		return NewIncoming(cfg, mmData, memFiles, log)
	}
}

// NewIncoming makes the guest RAM cfg describes, on memFiles (the
// sender's memfds, zone by zone) when given; mmData is the sender's
// memory_manager_data, whose ranges must be this RAM's.
func NewIncoming(cfg *config.VmConfig, mmData json.RawMessage, memFiles []*os.File, log *slog.Logger) (*Incoming, error) {
	var ms memoryState
	if err := json.Unmarshal(mmData, &ms); err != nil {
		return nil, wrap(ErrSetup, fmt.Errorf("memory_manager_data: %w", err))
	}
	mem, err := newMemoryOn(cfg.Memory, memFiles)
	if err != nil {
		return nil, wrap(ErrSetup, fmt.Errorf("guest memory: %w", err))
	}
	if here := ramRanges(mem).Data; !slices.Equal(here, ms.MemoryRanges.Data) {
		mem.Close()
		return nil, wrap(ErrSetup, fmt.Errorf("guest RAM %v here, %v on the sender: %w", here, ms.MemoryRanges.Data, snapshot.ErrFormat))
	}
	return &Incoming{mem: mem, log: log}, nil
}

// Slice implements migration.RAM.
func (in *Incoming) Slice(gpa, n uint64) ([]byte, error) {
	if in.mem == nil {
		return nil, fmt.Errorf("incoming RAM already handed over: %w", vmm.ErrInvalidState)
	}
	return in.mem.Mapping(gpa, n)
}

// Restore implements vmm.IncomingMachine: the machine, built on the
// received RAM (which it owns from now on, also on failure) and loaded
// with state, paused.
func (in *Incoming) Restore(cfg *config.VmConfig, cons *console.Devices, state []byte, exits chan<- vmm.MachineExit) (vmm.Machine, error) {
	top := &snapshot.Snapshot{}
	if err := json.Unmarshal(state, top); err != nil {
		return nil, wrap(ErrSetup, fmt.Errorf("VM state: %w: %w", snapshot.ErrFormat, err))
	}
	mem := in.mem
	in.mem = nil
	return restoreState(cfg, cons, top, mem, exits, in.log, func(*VM, snapshot.RangeTable) error { return nil })
}

// Close implements vmm.IncomingMachine: it frees the RAM unless Restore
// took it.
func (in *Incoming) Close() error {
	if in.mem == nil {
		return nil
	}
	err := in.mem.Close()
	in.mem = nil
	return err
}
