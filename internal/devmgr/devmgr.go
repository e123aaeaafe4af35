// Package devmgr is the machine's device manager (upstream's
// DeviceManager and DeviceTree, vmm/src/device_manager.rs and
// device_tree.rs): one registry of every device, legacy, platform and
// PCI, with the handles each one holds (bus ranges, PCI address and BARs,
// legacy IRQs, and a release stack for everything else: GSIs, irqfds,
// ioeventfds, backends), and one lifecycle over all of them.
//
// A device is added in a transaction (Begin): every resource the builder
// takes is recorded on the transaction together with the function that
// gives it back. Commit registers the device; Abort, hot removal (Remove)
// and shutdown (Close) all run the same release functions, last taken
// first, so there is exactly one release path per resource.
//
// Pause is all or nothing: when a device fails to pause, the devices
// already paused are resumed and the error is returned.
//
// The manager is safe for concurrent use; the machine's control-loop
// calls mutate it, vCPU threads only read it (the PCI hotplug eject
// callback looks up a slot).
package devmgr

import (
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/nimbus-vmm/nimbus/internal/devices/bus"
	"github.com/nimbus-vmm/nimbus/internal/devices/pci"
)

// Errors; match with errors.Is.
var (
	// ErrDuplicateID: a device with that id is already registered.
	ErrDuplicateID = errors.New("device identifier is not unique")
	// ErrUnknownID: no device has that id.
	ErrUnknownID = errors.New("unknown device identifier")
	// ErrPause: a device failed to pause (the others were resumed).
	ErrPause = errors.New("pausing devices failed")
)

// Kind says what a node is; it decides whether vm.info shows it.
type Kind int

// Node kinds.
const (
	// Legacy: an I/O-port or fixed MMIO device upstream lists in
	// device_tree ("__serial", "__cmos", ...).
	Legacy Kind = iota + 1
	// Platform: VMM plumbing with guest-visible registers (the PCI root,
	// the GED, the hotplug controllers) that upstream does not list.
	Platform
	// PCI: a PCI function (a virtio-pci transport), with a BDF and BARs.
	PCI
	// Virtio: a virtio device, child of its transport node.
	Virtio
)

// Lifecycle is what a device does when the machine pauses and resumes.
// Devices without goroutines or input (most legacy ones) need none.
type Lifecycle interface {
	Pause() error
	Resume() error
}

// Counting devices report vm.counters.
type Counting interface {
	Counters() map[string]uint64
}

// Stateful devices save and restore their state for snapshots; the
// manager collects them in registration order (States).
type Stateful interface {
	// StateID names the state's format, versioned ("serial/v1").
	StateID() string
	// SaveState returns the device's state; the machine is paused.
	SaveState() ([]byte, error)
	// RestoreState sets it on a device built from the same config.
	RestoreState([]byte) error
}

// Range is a bus address range.
type Range struct{ Base, Size uint64 }

// Node is one registered device and the handles it holds.
type Node struct {
	ID       string
	Kind     Kind
	Parent   string   // the transport's id, for a Virtio node
	Children []string // the virtio device's id, for a PCI node
	PIO      []Range
	MMIO     []Range
	IRQs     []uint32 // legacy interrupt lines
	BDF      *pci.BDF
	// Function is the PCI function at BDF; its BARs are read from it when
	// asked, so a BAR the guest moved is where the tree says (upstream's
	// move_bar rewrites its device tree for the same reason).
	Function pci.Function
	// Device is the device itself: the virtio device for Virtio and PCI
	// nodes, the bus device for the others. It may implement Lifecycle,
	// Counting and Stateful.
	Device any

	releases []release
}

type release struct {
	what string
	fn   func() error
}

// Manager is the registry.
type Manager struct {
	io, mmio *bus.Bus

	mu    sync.Mutex
	nodes map[string]*Node
	order []string // registration order: pause, resume and counters follow it
}

// New returns a manager over the machine's two buses.
func New(io, mmio *bus.Bus) *Manager {
	return &Manager{io: io, mmio: mmio, nodes: map[string]*Node{}}
}

// IO and MMIO are the buses the manager inserts into.
func (m *Manager) IO() *bus.Bus   { return m.io }
func (m *Manager) MMIO() *bus.Bus { return m.mmio }

// Tx is one device being added. Its methods take resources and record
// how to give them back; it is used by one goroutine.
type Tx struct {
	m        *Manager
	node     *Node
	children []*Node
	done     bool
}

// Begin starts adding device id of kind. The id is checked at Commit, but
// Begin already refuses one that is taken so a builder fails before it
// opens anything.
func (m *Manager) Begin(id string, kind Kind) (*Tx, error) {
	if m.Has(id) {
		return nil, fmt.Errorf("%w: %s", ErrDuplicateID, id)
	}
	return &Tx{m: m, node: &Node{ID: id, Kind: kind}}, nil
}

// Has says whether id is registered.
func (m *Manager) Has(id string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, ok := m.nodes[id]
	return ok
}

// OnRelease records fn as the way to give back a resource the builder
// took (what names it in errors). Release functions run last first.
func (t *Tx) OnRelease(what string, fn func() error) {
	t.node.releases = append(t.node.releases, release{what, fn})
}

// PIO inserts dev on the I/O-port bus at [base, base+size).
func (t *Tx) PIO(dev bus.Device, base, size uint64) error {
	return t.insert(t.m.io, "I/O ports", &t.node.PIO, dev, base, size)
}

// MMIO inserts dev on the MMIO bus at [base, base+size).
func (t *Tx) MMIO(dev bus.Device, base, size uint64) error {
	return t.insert(t.m.mmio, "MMIO", &t.node.MMIO, dev, base, size)
}

func (t *Tx) insert(b *bus.Bus, what string, ranges *[]Range, dev bus.Device, base, size uint64) error {
	if err := b.Insert(dev, base, size); err != nil {
		return fmt.Errorf("%s: %s at %#x: %w", t.node.ID, what, base, err)
	}
	*ranges = append(*ranges, Range{base, size})
	t.OnRelease(fmt.Sprintf("%s at %#x", what, base), func() error { _, err := b.Remove(base); return err })
	return nil
}

// IRQ records a legacy interrupt line the device raises.
func (t *Tx) IRQ(line uint32) { t.node.IRQs = append(t.node.IRQs, line) }

// PCI records the function and its address.
func (t *Tx) PCI(bdf pci.BDF, fn pci.Function) {
	t.node.BDF = &bdf
	t.node.Function = fn
}

// Child registers a child node (the virtio device under its transport)
// with the device. mmio lists guest-physical ranges the child occupies
// outside its BARs (virtio-pmem's memory, upstream's MmioAddressRange
// resource on the child); the parent's releases give them back.
func (t *Tx) Child(id string, kind Kind, dev any, mmio ...Range) {
	t.node.Children = append(t.node.Children, id)
	t.children = append(t.children, &Node{ID: id, Kind: kind, Parent: t.node.ID, Device: dev, MMIO: mmio})
}

// Commit registers the device (dev may be nil); on error (an id taken
// meanwhile) everything is released and the error returned.
func (t *Tx) Commit(dev any) error {
	if t.done {
		return errors.New("devmgr: transaction already ended")
	}
	t.node.Device = dev
	m := t.m
	m.mu.Lock()
	ids := []string{t.node.ID}
	for _, c := range t.children {
		ids = append(ids, c.ID)
	}
	for _, id := range ids {
		if _, ok := m.nodes[id]; ok {
			m.mu.Unlock()
			return errors.Join(fmt.Errorf("%w: %s", ErrDuplicateID, id), t.Abort())
		}
	}
	t.done = true
	m.nodes[t.node.ID] = t.node
	m.order = append(m.order, t.node.ID)
	for _, c := range t.children {
		m.nodes[c.ID] = c
	}
	m.mu.Unlock()
	return nil
}

// Abort gives back everything the transaction took, last first. It is a
// no-op after Commit or a first Abort, so builders may defer it.
func (t *Tx) Abort() error {
	if t.done {
		return nil
	}
	t.done = true
	return runReleases(t.node)
}

func runReleases(n *Node) error {
	var errs []error
	for i := len(n.releases) - 1; i >= 0; i-- {
		if err := n.releases[i].fn(); err != nil {
			errs = append(errs, fmt.Errorf("%s: release %s: %w", n.ID, n.releases[i].what, err))
		}
	}
	n.releases = nil
	return errors.Join(errs...)
}

// Lookup returns a copy of id's node.
func (m *Manager) Lookup(id string) (Node, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n, ok := m.nodes[id]
	if !ok {
		return Node{}, false
	}
	return *n, true
}

// Owner returns the node that holds id's resources: id itself, or its
// parent for a virtio device (upstream remove_device's PCI node).
func (m *Manager) Owner(id string) (Node, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n, ok := m.nodes[id]
	if !ok {
		return Node{}, fmt.Errorf("%w: %s", ErrUnknownID, id)
	}
	if n.Parent != "" {
		if p, ok := m.nodes[n.Parent]; ok {
			return *p, nil
		}
	}
	return *n, nil
}

// BySlot returns the PCI node at segment seg, device slot.
func (m *Manager) BySlot(seg uint16, slot int) (Node, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, id := range m.order {
		n := m.nodes[id]
		if n.BDF != nil && n.BDF.Segment == seg && int(n.BDF.Device) == slot {
			return *n, true
		}
	}
	return Node{}, false
}

// Remove unregisters the device that owns id (see Owner) with its
// children and releases its resources, last taken first. Its Device is
// released by a release function the builder recorded.
func (m *Manager) Remove(id string) (Node, error) {
	m.mu.Lock()
	n, ok := m.nodes[id]
	if ok && n.Parent != "" {
		n, ok = m.nodes[n.Parent]
	}
	if !ok {
		m.mu.Unlock()
		return Node{}, fmt.Errorf("%w: %s", ErrUnknownID, id)
	}
	m.unregister(n)
	m.mu.Unlock()
	return *n, runReleases(n)
}

// unregister drops n and its children. Lock held.
func (m *Manager) unregister(n *Node) {
	for _, c := range n.Children {
		delete(m.nodes, c)
	}
	delete(m.nodes, n.ID)
	m.order = slices.DeleteFunc(m.order, func(s string) bool { return s == n.ID })
}

// Close removes every device, last registered first, and returns every
// release error.
func (m *Manager) Close() error {
	m.mu.Lock()
	nodes := m.ordered()
	for _, n := range nodes {
		m.unregister(n)
	}
	m.mu.Unlock()
	var errs []error
	for i := len(nodes) - 1; i >= 0; i-- {
		errs = append(errs, runReleases(nodes[i]))
	}
	return errors.Join(errs...)
}

// ordered returns the registered nodes in registration order. Lock held.
func (m *Manager) ordered() []*Node {
	out := make([]*Node, 0, len(m.order))
	for _, id := range m.order {
		out = append(out, m.nodes[id])
	}
	return out
}

func (m *Manager) snapshot() []*Node {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.ordered()
}

// Pause pauses every device in registration order. If one fails, those
// already paused are resumed, last first, and the pause error returned:
// either every device is paused or none is.
func (m *Manager) Pause() error {
	nodes := m.snapshot()
	for i, n := range nodes {
		l, ok := n.Device.(Lifecycle)
		if !ok {
			continue
		}
		if err := l.Pause(); err != nil {
			err = fmt.Errorf("%w: %s: %w", ErrPause, n.ID, err)
			var errs []error
			for j := i - 1; j >= 0; j-- {
				if l, ok := nodes[j].Device.(Lifecycle); ok {
					if rerr := l.Resume(); rerr != nil {
						errs = append(errs, fmt.Errorf("resume %s: %w", nodes[j].ID, rerr))
					}
				}
			}
			return errors.Join(append([]error{err}, errs...)...)
		}
	}
	return nil
}

// Resume resumes every device in registration order; it tries them all
// and returns every error.
func (m *Manager) Resume() error {
	var errs []error
	for _, n := range m.snapshot() {
		if l, ok := n.Device.(Lifecycle); ok {
			if err := l.Resume(); err != nil {
				errs = append(errs, fmt.Errorf("resume %s: %w", n.ID, err))
			}
		}
	}
	return errors.Join(errs...)
}

// Counters is vm.counters: every device that keeps counters, by the
// virtio device's id.
func (m *Manager) Counters() map[string]map[string]uint64 {
	out := map[string]map[string]uint64{}
	for _, n := range m.snapshot() {
		c, ok := n.Device.(Counting)
		if !ok {
			continue
		}
		if v := c.Counters(); v != nil {
			id := n.ID
			if len(n.Children) == 1 {
				id = n.Children[0]
			}
			out[id] = v
		}
	}
	return out
}

// States returns every Stateful device's id and device, in
// registration order (the order a restore must follow).
func (m *Manager) States() (ids []string, devs []Stateful) {
	for _, n := range m.snapshot() {
		if s, ok := n.Device.(Stateful); ok {
			ids, devs = append(ids, n.ID), append(devs, s)
		}
	}
	return ids, devs
}

// Nodes returns a copy of every node, children included, for vm.info's
// device_tree.
func (m *Manager) Nodes() []Node {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Node, 0, len(m.nodes))
	for _, n := range m.nodes {
		c := *n
		c.releases = nil
		out = append(out, c)
	}
	return out
}
