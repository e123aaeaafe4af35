package pci

import (
	"encoding/binary"
	"fmt"
	"sync"
)

// MSI-X layout (PCI Local Bus Specification 3.0 §6.8.2, pci_regs.h
// PCI_MSIX_*; upstream pci/src/msix.rs).
const (
	// MaxMSIXVectors is the largest table the capability can describe.
	MaxMSIXVectors = 2048
	// MSIXEntrySize is one table entry: address low, address high, data, vector control.
	MSIXEntrySize = 16

	msixCtlEnable   = 1 << 15 // PCI_MSIX_FLAGS_ENABLE
	msixCtlMaskAll  = 1 << 14 // PCI_MSIX_FLAGS_MASKALL
	msixEntryMasked = 1       // PCI_MSIX_ENTRY_CTRL_MASKBIT
)

// MSIRouter connects MSI-X vectors to the hypervisor. The VM implements
// it with one GSI and irqfd per vector: Route updates the GSI's MSI route
// (kvm.MSIRoute) and, when masked, detaches the irqfd; Trigger writes the
// vector's irqfd (or KVM_SIGNAL_MSI). Both are called with the MSI-X
// state's lock held, from vCPU threads (table and capability writes) and
// device goroutines (Trigger); they must not block or call back into MSIX.
type MSIRouter interface {
	Route(vector int, addr uint64, data uint32, masked bool) error
	Trigger(vector int) error
}

// MSINotifier is an MSIRouter that hands out the eventfd behind a vector
// (its KVM irqfd), so that an external back end (vhost-user) interrupts
// the guest without a hop through Nimbus. It is called with the MSI-X
// lock held, like Route; the router must then keep the back end's writes
// to a masked vector for its unmasking.
type MSINotifier interface {
	Notifier(vector int) (fd int, ok bool)
}

// MSIXEntry is one vector's table entry.
type MSIXEntry struct {
	AddrLo, AddrHi, Data, Control uint32
}

// Addr is the 64-bit message address.
func (e MSIXEntry) Addr() uint64 { return uint64(e.AddrHi)<<32 | uint64(e.AddrLo) }

// Masked reports the per-vector mask bit.
func (e MSIXEntry) Masked() bool { return e.Control&msixEntryMasked != 0 }

// MSIX is a function's MSI-X state: the table, the pending bit array and
// the enable/function-mask bits of the capability's message control. It
// is safe for concurrent use.
type MSIX struct {
	mu       sync.Mutex
	table    []MSIXEntry
	pba      []uint64
	enabled  bool
	maskAll  bool
	router   MSIRouter
	routeErr error // last router failure, for debugging
}

// NewMSIX returns MSI-X state for n vectors (1..2048), every vector
// masked as after reset.
func NewMSIX(n int, router MSIRouter) (*MSIX, error) {
	if n < 1 || n > MaxMSIXVectors {
		return nil, fmt.Errorf("MSI-X with %d vectors: %w", n, ErrInvalid)
	}
	if router == nil {
		return nil, fmt.Errorf("MSI-X without a router: %w", ErrInvalid)
	}
	m := &MSIX{table: make([]MSIXEntry, n), pba: make([]uint64, (n+63)/64), router: router}
	for i := range m.table {
		m.table[i].Control = msixEntryMasked
	}
	return m, nil
}

// Notifier is vector v's eventfd, when the router has one. The vector's
// route is applied again, so that a router that treats handed-out vectors
// differently while masked (see MSINotifier) does so from now on.
func (m *MSIX) Notifier(v int) (int, bool) {
	n, ok := m.router.(MSINotifier)
	if !ok || v < 0 || v >= len(m.table) {
		return -1, false
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	fd, ok := n.Notifier(v)
	if ok {
		m.route(v)
	}
	return fd, ok
}

// Vectors is the table size.
func (m *MSIX) Vectors() int { return len(m.table) }

// TableSize is the table's size in bytes.
func (m *MSIX) TableSize() uint64 { return uint64(len(m.table)) * MSIXEntrySize }

// PBASize is the pending bit array's size in bytes (whole qwords).
func (m *MSIX) PBASize() uint64 { return uint64(len(m.pba)) * 8 }

// Capability returns the MSI-X capability body (without the ID/next
// header) for ConfigSpace.AddCapability: message control (table size-1),
// table offset|BIR and PBA offset|BIR. Offsets must be 8-byte aligned.
func (m *MSIX) Capability(tableBAR int, tableOff uint32, pbaBAR int, pbaOff uint32) []byte {
	b := make([]byte, 10)
	binary.LittleEndian.PutUint16(b[0:], uint16(len(m.table)-1)&0x7ff)
	binary.LittleEndian.PutUint32(b[2:], tableOff&^7|uint32(tableBAR&7))
	binary.LittleEndian.PutUint32(b[6:], pbaOff&^7|uint32(pbaBAR&7))
	return b
}

// ControlWritable is the mask of guest-writable bits of the register
// holding the capability's message control (at cap offset + 2).
const ControlWritable = (msixCtlEnable | msixCtlMaskAll) << 16

// Enabled reports the MSI-X enable bit.
func (m *MSIX) Enabled() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.enabled
}

// FunctionMasked reports the function mask bit.
func (m *MSIX) FunctionMasked() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.maskAll
}

// Entry returns a copy of vector v's table entry.
func (m *MSIX) Entry(v int) (MSIXEntry, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if v < 0 || v >= len(m.table) {
		return MSIXEntry{}, false
	}
	return m.table[v], true
}

// Pending reports vector v's pending bit.
func (m *MSIX) Pending(v int) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return v >= 0 && v < len(m.table) && m.pba[v/64]&(1<<(v%64)) != 0
}

// RouteError returns the last error the router returned, if any; the
// guest-facing paths cannot report it.
func (m *MSIX) RouteError() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.routeErr
}

// SetControl applies the guest's message control value (the enable and
// function-mask bits). Turning on or unmasking reprograms every route and
// delivers vectors left pending, as upstream's set_msg_ctl does.
func (m *MSIX) SetControl(ctl uint16) {
	m.mu.Lock()
	defer m.mu.Unlock()
	wasActive := m.enabled && !m.maskAll
	m.enabled = ctl&msixCtlEnable != 0
	m.maskAll = ctl&msixCtlMaskAll != 0
	active := m.enabled && !m.maskAll
	if active == wasActive {
		return
	}
	for v := range m.table {
		m.route(v)
	}
	if active {
		for v := range m.table {
			m.deliverPending(v)
		}
	}
}

// route pushes vector v's current state to the router. Lock held.
func (m *MSIX) route(v int) {
	e := m.table[v]
	masked := !m.enabled || m.maskAll || e.Masked()
	if err := m.router.Route(v, e.Addr(), e.Data, masked); err != nil {
		m.routeErr = fmt.Errorf("MSI-X vector %d: %w", v, err)
	}
}

func (m *MSIX) deliverPending(v int) {
	bit := uint64(1) << (v % 64)
	if m.pba[v/64]&bit == 0 || m.table[v].Masked() || !m.enabled || m.maskAll {
		return
	}
	m.pba[v/64] &^= bit
	if err := m.router.Trigger(v); err != nil {
		m.routeErr = fmt.Errorf("MSI-X vector %d: %w", v, err)
	}
}

// Signal raises vector v for the device. While MSI-X is disabled the
// message is dropped (there is no INTx fallback); while the vector or the
// function is masked its pending bit is set instead and delivered on unmask.
func (m *MSIX) Signal(v int) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if v < 0 || v >= len(m.table) {
		return fmt.Errorf("MSI-X vector %d of %d: %w", v, len(m.table), ErrInvalid)
	}
	if !m.enabled {
		return nil
	}
	if m.maskAll || m.table[v].Masked() {
		m.pba[v/64] |= 1 << (v % 64)
		return nil
	}
	return m.router.Trigger(v)
}

// ReadTable reads the table at offset (4- or 8-byte accesses; others and
// offsets past the table read all-ones).
func (m *MSIX) ReadTable(off uint64, data []byte) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.tableAccessOK(off, len(data)) {
		fill(data, 0xff)
		return
	}
	for i := 0; i < len(data); i += 4 {
		e := &m.table[(off+uint64(i))/MSIXEntrySize]
		binary.LittleEndian.PutUint32(data[i:], *entryField(e, (off+uint64(i))%MSIXEntrySize))
	}
}

// WriteTable writes the table at offset (aligned 4- or 8-byte accesses;
// others are dropped). A changed entry is re-routed; unmasking a vector
// delivers its pending message.
func (m *MSIX) WriteTable(off uint64, data []byte) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.tableAccessOK(off, len(data)) {
		return
	}
	v := int(off / MSIXEntrySize)
	old := m.table[v]
	for i := 0; i < len(data); i += 4 {
		*entryField(&m.table[v], (off+uint64(i))%MSIXEntrySize) = binary.LittleEndian.Uint32(data[i:])
	}
	m.table[v].Control &= msixEntryMasked // other control bits are reserved
	e := m.table[v]
	if e == old {
		return
	}
	// Routes only matter while the function can deliver; SetControl
	// programs them all when it starts to.
	if m.enabled && !m.maskAll {
		m.route(v)
		if old.Masked() && !e.Masked() {
			m.deliverPending(v)
		}
	}
}

func (m *MSIX) tableAccessOK(off uint64, n int) bool {
	return (n == 4 || n == 8) && off%uint64(n) == 0 && off < m.TableSize() && off+uint64(n) <= m.TableSize()
}

func entryField(e *MSIXEntry, off uint64) *uint32 {
	switch off {
	case 0:
		return &e.AddrLo
	case 4:
		return &e.AddrHi
	case 8:
		return &e.Data
	}
	return &e.Control
}

// ReadPBA reads the pending bit array (read-only; any width within it).
func (m *MSIX) ReadPBA(off uint64, data []byte) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for i := range data {
		o := off + uint64(i)
		if o >= m.PBASize() {
			data[i] = 0xff
			continue
		}
		data[i] = byte(m.pba[o/8] >> (8 * (o % 8)))
	}
}

func fill(b []byte, v byte) {
	for i := range b {
		b[i] = v
	}
}
