package pci

import "fmt"

// MSIXState is an MSI-X function's state for snapshots: the table, the
// pending bits and the message control bits.
type MSIXState struct {
	Table   []MSIXEntry
	PBA     []uint64
	Enabled bool
	MaskAll bool
}

// State returns a copy of the MSI-X state.
func (m *MSIX) State() MSIXState {
	m.mu.Lock()
	defer m.mu.Unlock()
	return MSIXState{Table: append([]MSIXEntry(nil), m.table...), PBA: append([]uint64(nil), m.pba...),
		Enabled: m.enabled, MaskAll: m.maskAll}
}

// SetState restores s and programs every route from it, as a guest
// enabling MSI-X does; pending vectors stay pending until unmasked.
func (m *MSIX) SetState(s MSIXState) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(s.Table) != len(m.table) || len(s.PBA) != len(m.pba) {
		return fmt.Errorf("MSI-X state for %d vectors, the function has %d: %w", len(s.Table), len(m.table), ErrInvalid)
	}
	copy(m.table, s.Table)
	copy(m.pba, s.PBA)
	m.enabled, m.maskAll = s.Enabled, s.MaskAll
	for v := range m.table {
		m.route(v)
	}
	return m.routeErr
}

// Regs returns the configuration space registers, for snapshots.
func (c *ConfigSpace) Regs() []uint32 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]uint32(nil), c.regs[:]...)
}

// SetRegs restores registers saved with Regs on a function built from the
// same configuration. Its BARs must be where they were: moving them is
// the root's job (BAR relocation), which a restore does not do.
func (c *ConfigSpace) SetRegs(regs []uint32) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(regs) != NumRegs {
		return fmt.Errorf("configuration space of %d registers: %w", len(regs), ErrInvalid)
	}
	for i := range NumBARs {
		if regs[regBAR0+i] != c.regs[regBAR0+i] {
			return fmt.Errorf("BAR %d is at %#x here, %#x in the snapshot: %w", i, c.regs[regBAR0+i], regs[regBAR0+i], ErrInvalid)
		}
	}
	copy(c.regs[:], regs)
	return nil
}
