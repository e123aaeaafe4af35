package pci

import (
	"encoding/binary"
	"fmt"
	"sync"

	"github.com/nimbus-vmm/nimbus/internal/devices/bus"
)

// Function is one PCI function on a Root. Its bus.Device methods serve
// accesses to its BARs (base is the BAR's address, offset within it);
// the configuration methods are called with the Root's lock held.
// *ConfigSpace provides all but the bus.Device methods, so a function
// usually embeds one and overrides what it intercepts.
type Function interface {
	bus.Device
	// ReadConfig returns 32-bit configuration register reg (0..1023).
	ReadConfig(reg int) uint32
	// WriteConfig writes len(data) bytes at byte offset within register reg
	// and reports BARs the guest reprogrammed.
	WriteConfig(reg, offset int, data []byte) []BARMove
	// BARs lists the function's BARs with their current addresses.
	BARs() []BAR
	// PlaceBAR sets a BAR's address before the guest runs.
	PlaceBAR(index int, base uint64) error
}

// NumSlots is the number of device numbers on a bus.
const NumSlots = 32

// AnySlot asks Add for the first free device number.
const AnySlot = -1

// Host bridge identity (upstream pci/src/bus.rs PciRoot).
const (
	HostBridgeVendorID = 0x8086 // VENDOR_ID_INTEL
	HostBridgeDeviceID = 0x0d57 // DEVICE_ID_INTEL_VIRT_PCIE_HOST
)

// HostBridge is the root complex's function 00:00.0. It has no BARs.
type HostBridge struct{ *ConfigSpace }

// NewHostBridge returns upstream's host bridge: Intel 8086:0d57, class
// bridge/host, revision 0, no subsystem ids.
func NewHostBridge() *HostBridge {
	return &HostBridge{NewConfigSpace(Header{
		VendorID: HostBridgeVendorID, DeviceID: HostBridgeDeviceID,
		Class: ClassBridge, Subclass: SubclassHostBridge,
	})}
}

// Read is never called: the host bridge maps nothing.
func (*HostBridge) Read(_, _ uint64, data []byte) { fill(data, 0xff) }

// Write is never called: the host bridge maps nothing.
func (*HostBridge) Write(_, _ uint64, _ []byte) {}

// RootConfig configures a Root.
type RootConfig struct {
	// Segment is the PCI segment (pci_segment); BDFs carry it.
	Segment uint16
	// MMIO is the bus BARs are mapped on; nil leaves mapping to the caller.
	MMIO *bus.Bus
	// Window32 and Window64 allocate 32-bit and 64-bit memory BARs.
	Window32, Window64 *Allocator
	// BARMoved, if set, is told after the root moved a BAR the guest
	// reprogrammed (the VM re-registers ioeventfds). It runs with the
	// root's lock held on a vCPU thread and must not call back into the root.
	BARMoved func(BDF, Function, BARMove)
}

// Root is bus 0 of one PCI segment with upstream's host bridge at device
// 0: slot allocation, BAR placement and mapping, and the two configuration
// access mechanisms (ConfigIO, ConfigMMIO).
type Root struct {
	cfg RootConfig

	mu       sync.Mutex
	slots    [NumSlots]Function
	reserved [NumSlots]bool // taken by AllocateSlot or Add
	hidden   [NumSlots]bool // ejected by the guest, not yet removed (Hide)
	latch    uint32         // CONFIG_ADDRESS at 0xcf8
	moveErr  error
}

// NewRoot returns a root with the host bridge at 00:00.0.
func NewRoot(cfg RootConfig) (*Root, error) {
	r := &Root{cfg: cfg}
	r.slots[0] = NewHostBridge()
	r.reserved[0] = true
	return r, nil
}

// Segment is the root's PCI segment number.
func (r *Root) Segment() uint16 { return r.cfg.Segment }

// AllocateSlot reserves a device number: the first free one for AnySlot
// (upstream's next_device_id), otherwise exactly slot (pci_device_id).
func (r *Root) AllocateSlot(slot int) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.allocateSlot(slot)
}

func (r *Root) allocateSlot(slot int) (int, error) {
	if slot == AnySlot {
		for i, used := range r.reserved {
			if !used {
				r.reserved[i] = true
				return i, nil
			}
		}
		return 0, fmt.Errorf("segment %d: %w", r.cfg.Segment, ErrNoSlot)
	}
	if slot < 0 || slot >= NumSlots {
		return 0, fmt.Errorf("segment %d: device id %d out of range 0..%d: %w", r.cfg.Segment, slot, NumSlots-1, ErrInvalid)
	}
	if r.reserved[slot] {
		return 0, fmt.Errorf("segment %d: device id %d: %w", r.cfg.Segment, slot, ErrSlotInUse)
	}
	r.reserved[slot] = true
	return slot, nil
}

// Add puts fn at a slot (AnySlot or a pci_device_id), allocates each BAR
// whose address is zero from the matching window (aligned to max(size,
// BAR.Align)), places it and maps it on the MMIO bus. On error nothing is
// left allocated.
func (r *Root) Add(fn Function, slot int) (BDF, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s, err := r.allocateSlot(slot)
	if err != nil {
		return BDF{}, err
	}
	bdf := BDF{Segment: r.cfg.Segment, Device: uint8(s)}
	var undo []func()
	fail := func(err error) (BDF, error) {
		for i := len(undo) - 1; i >= 0; i-- {
			undo[i]()
		}
		r.reserved[s] = false
		return BDF{}, fmt.Errorf("add PCI device %s: %w", bdf, err)
	}
	for _, b := range fn.BARs() {
		base := b.Base
		if base == 0 {
			a := r.window(b.Type)
			if a == nil {
				return fail(fmt.Errorf("BAR %d: no %s window: %w", b.Index, b.Type, ErrNoSpace))
			}
			if base, err = a.Allocate(b.Size, max(b.Size, b.Align)); err != nil {
				return fail(fmt.Errorf("BAR %d: %w", b.Index, err))
			}
			undo = append(undo, func() { _ = a.Free(base) })
			if err := fn.PlaceBAR(b.Index, base); err != nil {
				return fail(err)
			}
		}
		if r.cfg.MMIO != nil && b.Type != BARIO {
			if err := r.cfg.MMIO.Insert(fn, base, b.Size); err != nil {
				return fail(fmt.Errorf("BAR %d: %w", b.Index, err))
			}
			undo = append(undo, func() { _, _ = r.cfg.MMIO.Remove(base) })
		}
	}
	r.slots[s] = fn
	return bdf, nil
}

func (r *Root) window(t BARType) *Allocator {
	switch t {
	case BARMem32:
		return r.cfg.Window32
	case BARMem64:
		return r.cfg.Window64
	}
	return nil
}

// Remove takes the function at slot off the bus, unmaps its BARs and
// frees their allocations and the slot.
func (r *Root) Remove(slot int) (Function, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if slot <= 0 || slot >= NumSlots || r.slots[slot] == nil {
		return nil, fmt.Errorf("remove PCI device %d: %w", slot, ErrNotFound)
	}
	fn := r.slots[slot]
	for _, b := range fn.BARs() {
		if r.cfg.MMIO != nil && b.Type != BARIO && !r.hidden[slot] {
			_, _ = r.cfg.MMIO.Remove(b.Base)
		}
		if a := r.window(b.Type); a != nil {
			_ = a.Free(b.Base) // a BAR placed by the caller has no allocation
		}
	}
	r.slots[slot] = nil
	r.reserved[slot] = false
	r.hidden[slot] = false
	return fn, nil
}

// Hide takes the function at slot off the bus at once, as upstream's
// eject_device does inside the guest's eject write: config space reads
// as absent and its BARs are unmapped, so a bus rescan the guest runs
// before Remove neither finds it again nor reaches it. The slot stays
// taken, and its BAR addresses allocated, until Remove.
func (r *Root) Hide(slot int) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if slot <= 0 || slot >= NumSlots || r.slots[slot] == nil {
		return fmt.Errorf("hide PCI device %d: %w", slot, ErrNotFound)
	}
	if r.hidden[slot] {
		return nil
	}
	for _, b := range r.slots[slot].BARs() {
		if r.cfg.MMIO != nil && b.Type != BARIO {
			_, _ = r.cfg.MMIO.Remove(b.Base)
		}
	}
	r.hidden[slot] = true
	return nil
}

// Function returns the function at slot, or nil.
func (r *Root) Function(slot int) Function {
	r.mu.Lock()
	defer r.mu.Unlock()
	if slot < 0 || slot >= NumSlots {
		return nil
	}
	return r.slots[slot]
}

// MoveError returns the last failure to remap a BAR the guest moved.
func (r *Root) MoveError() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.moveErr
}

// readConfig is the dword at (bus, dev, fn, reg); absent functions read
// all-ones, as a master abort does. Lock held.
func (r *Root) readConfig(busNum, dev, fn, reg int) uint32 {
	if busNum != 0 || fn != 0 || r.slots[dev] == nil || r.hidden[dev] {
		return allOnes32
	}
	return r.slots[dev].ReadConfig(reg)
}

// writeConfig forwards a write and carries out BAR moves. Lock held.
func (r *Root) writeConfig(busNum, dev, fn, reg, off int, data []byte) {
	if busNum != 0 || fn != 0 || r.slots[dev] == nil || r.hidden[dev] || off+len(data) > 4 {
		return
	}
	f := r.slots[dev]
	for _, m := range f.WriteConfig(reg, off, data) {
		r.moveBAR(BDF{Segment: r.cfg.Segment, Device: uint8(dev)}, f, m)
	}
}

// moveBAR follows a guest BAR reprogramming on the MMIO bus and in the
// allocator, as upstream's DeviceRelocation::move_bar. A failure leaves
// the old mapping in place and is recorded. Lock held.
func (r *Root) moveBAR(bdf BDF, f Function, m BARMove) {
	if m.Type != BARIO && r.cfg.MMIO != nil {
		if _, err := r.cfg.MMIO.Remove(m.Old); err == nil {
			if err := r.cfg.MMIO.Insert(f, m.New, m.Size); err != nil {
				_ = r.cfg.MMIO.Insert(f, m.Old, m.Size)
				r.moveErr = fmt.Errorf("move %s BAR %d %#x->%#x: %w", bdf, m.Index, m.Old, m.New, err)
				return
			}
		}
	}
	if a := r.window(m.Type); a != nil && a.Free(m.Old) == nil {
		// The guest may move a BAR outside the window; keep the
		// allocation in step only when the new range fits.
		_ = a.AllocateAt(m.New, m.Size)
	}
	if r.cfg.BARMoved != nil {
		r.cfg.BARMoved(bdf, f, m)
	}
}

// ConfigIO returns the device to insert on the I/O bus at ConfigIOPort
// (length ConfigIOSize): configuration mechanism #1.
func (r *Root) ConfigIO() bus.Device { return configIO{r} }

// ConfigMMIO returns the device to insert on the MMIO bus at
// ECAMBase(segment): the ECAM (MMCONFIG) window.
func (r *Root) ConfigMMIO() bus.Device { return configMMIO{r} }

type configIO struct{ r *Root }

// CONFIG_ADDRESS fields (PCI Local Bus Specification 3.0 §3.2.2.3.2).
func decodeIO(a uint32) (busNum, dev, fn, reg int) {
	return int(a>>16) & 0xff, int(a>>11) & 0x1f, int(a>>8) & 7, int(a>>2) & 0x3f
}

func (c configIO) Read(_, offset uint64, data []byte) {
	r := c.r
	start := int(offset % 4)
	if offset >= ConfigIOSize || start+len(data) > 4 {
		fill(data, 0xff)
		return
	}
	r.mu.Lock()
	var v uint32
	if offset < 4 {
		v = r.latch
	} else if r.latch&0x8000_0000 == 0 {
		v = allOnes32
	} else {
		v = r.readConfig(decodeIO(r.latch))
	}
	r.mu.Unlock()
	for i := range data {
		data[i] = byte(v >> (8 * (start + i)))
	}
}

func (c configIO) Write(_, offset uint64, data []byte) {
	r := c.r
	start := int(offset % 4)
	if offset >= ConfigIOSize || start+len(data) > 4 || len(data) == 0 {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if offset < 4 {
		// Any width at any offset updates just those latch bytes.
		for i, b := range data {
			shift := uint(8 * (start + i))
			r.latch = r.latch&^(0xff<<shift) | uint32(b)<<shift
		}
		return
	}
	if r.latch&0x8000_0000 == 0 {
		return
	}
	busNum, dev, fn, reg := decodeIO(r.latch)
	r.writeConfig(busNum, dev, fn, reg, start, data)
}

type configMMIO struct{ r *Root }

// ECAM offset fields (PCI Express Base Specification 5.0 §7.2.2).
func decodeECAM(off uint64) (busNum, dev, fn, reg int) {
	return int(off>>20) & 0xff, int(off>>15) & 0x1f, int(off>>12) & 7, int(off>>2) & 0x3ff
}

func (c configMMIO) Read(_, offset uint64, data []byte) {
	start := int(offset % 4)
	if start+len(data) > 4 || offset >= 1<<28 {
		fill(data, 0xff)
		return
	}
	c.r.mu.Lock()
	v := c.r.readConfig(decodeECAM(offset))
	c.r.mu.Unlock()
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], v)
	copy(data, b[start:])
}

func (c configMMIO) Write(_, offset uint64, data []byte) {
	start := int(offset % 4)
	if start+len(data) > 4 || len(data) == 0 || offset >= 1<<28 {
		return
	}
	c.r.mu.Lock()
	defer c.r.mu.Unlock()
	busNum, dev, fn, reg := decodeECAM(offset)
	c.r.writeConfig(busNum, dev, fn, reg, start, data)
}
