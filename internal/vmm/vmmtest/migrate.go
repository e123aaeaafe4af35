package vmmtest

import (
	"encoding/json"
	"fmt"
	"os"

	"github.com/nimbus-vmm/nimbus/internal/config"
	"github.com/nimbus-vmm/nimbus/internal/devices/console"
	"github.com/nimbus-vmm/nimbus/internal/migration"
	"github.com/nimbus-vmm/nimbus/internal/vmm"
)

var _ vmm.Migratable = (*Machine)(nil)

// RAMSize is the double's guest RAM (at GPA 0), what a migration sends.
const RAMSize = 64 << 10

func (m *Machine) ram() []byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.RAMBytes == nil {
		m.RAMBytes = make([]byte, RAMSize)
	}
	return m.RAMBytes
}

// CheckMigratable implements vmm.Migratable; it returns MigrateErr.
func (m *Machine) CheckMigratable() error { return m.record("CheckMigratable", m.MigrateErr) }

// RAM implements vmm.Migratable.
func (m *Machine) RAM() ([]migration.Range, error) {
	return []migration.Range{{GPA: 0, Length: RAMSize}}, nil
}

// ReadRAM implements vmm.Migratable.
func (m *Machine) ReadRAM(gpa, n uint64) ([]byte, error) {
	if gpa+n > RAMSize {
		return nil, fmt.Errorf("no RAM at %#x+%#x", gpa, n)
	}
	return m.ram()[gpa : gpa+n], nil
}

// StartDirtyLog implements vmm.Migratable.
func (m *Machine) StartDirtyLog() error { return m.record("StartDirtyLog", nil) }

// DirtyRanges implements vmm.Migratable: nothing is ever dirty.
func (m *Machine) DirtyRanges(bool) ([]migration.Range, error) { return nil, nil }

// StopDirtyLog implements vmm.Migratable.
func (m *Machine) StopDirtyLog() error { return m.record("StopDirtyLog", nil) }

// MigrationState implements vmm.Migratable.
func (m *Machine) MigrationState() ([]byte, error) {
	return []byte(`"state"`), m.record("MigrationState", nil)
}

// MemoryManagerData implements vmm.Migratable.
func (m *Machine) MemoryManagerData() any { return map[string]int{"size": RAMSize} }

// SetDiskLocks implements vmm.Migratable.
func (m *Machine) SetDiskLocks(locked bool) error {
	return m.record(fmt.Sprintf("SetDiskLocks %v", locked), nil)
}

// MemoryFDs implements vmm.Migratable: the double's RAM is not shared.
func (m *Machine) MemoryFDs() ([]int, error) {
	return nil, fmt.Errorf("Local migration requires shared memory (shared=on): %w", vmm.ErrBadConfig)
}

// Incoming is a vmm.IncomingFactory; the machine Restore builds has the
// received RAM.
func (f *Factory) Incoming(cfg *config.VmConfig, mmData json.RawMessage, _ []*os.File) (vmm.IncomingMachine, error) {
	var mm struct{ Size int }
	if err := json.Unmarshal(mmData, &mm); err != nil || mm.Size != RAMSize {
		return nil, fmt.Errorf("memory_manager_data %s: %v", mmData, err)
	}
	return &incoming{f: f, ram: make([]byte, RAMSize)}, nil
}

type incoming struct {
	f     *Factory
	ram   []byte
	State []byte
}

func (in *incoming) Slice(gpa, n uint64) ([]byte, error) {
	if gpa+n > uint64(len(in.ram)) {
		return nil, fmt.Errorf("no RAM at %#x+%#x", gpa, n)
	}
	return in.ram[gpa : gpa+n], nil
}

func (in *incoming) Restore(cfg *config.VmConfig, cons *console.Devices, state []byte, exits chan<- vmm.MachineExit) (vmm.Machine, error) {
	if string(state) != `"state"` {
		return nil, fmt.Errorf("state %q", state)
	}
	m, err := in.f.New(cfg, cons, nil, exits)
	if err != nil {
		return nil, err
	}
	in.f.Last().RAMBytes = in.ram
	return m, nil
}

func (in *incoming) Close() error { return nil }
