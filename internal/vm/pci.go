package vm

import (
	"errors"
	"fmt"

	"github.com/nimbus-vmm/nimbus/internal/arch/x86"
	"github.com/nimbus-vmm/nimbus/internal/config"
	"github.com/nimbus-vmm/nimbus/internal/devices/console"
	"github.com/nimbus-vmm/nimbus/internal/devices/pci"
	"github.com/nimbus-vmm/nimbus/internal/devmgr"
	"github.com/nimbus-vmm/nimbus/internal/kvm"
	"github.com/nimbus-vmm/nimbus/internal/virtio"
	vpci "github.com/nimbus-vmm/nimbus/internal/virtio/pci"
	"github.com/nimbus-vmm/nimbus/internal/vmm"
)

// virtioPCIPrefix names a virtio device's transport node in device_tree
// (upstream VIRTIO_PCI_DEVICE_NAME_PREFIX).
const virtioPCIPrefix = "_virtio-pci"

// platformDeviceAreaSize is reserved at the top of the guest physical
// address space for platform MMIO devices (upstream memory_manager.rs
// PLATFORM_DEVICE_AREA_SIZE); the 64-bit PCI window ends below it.
const platformDeviceAreaSize = 1 << 20

// pciSegment is one PCI segment (upstream builds segment 0 and, with
// --platform num_pci_segments, more): its root bus, BAR windows and
// virtio-pci functions. MSI routes are the VM's, shared by every segment.
type pciSegment struct {
	id    uint16
	root  *pci.Root
	win32 x86.Region
	win64 x86.Region
	// mem64 is the 64-bit window's allocator, shared with the root's
	// BARs: virtio-pmem's memory comes from it too.
	mem64 *pci.Allocator
	kvm   *kvm.VM
	log   func(msg string, args ...any)
}

// pciWindows returns each segment's 32-bit and 64-bit BAR windows as
// upstream's create_mmio_allocators splits them by the aperture weights:
// the 640 MiB below MMCONFIG, and the device area from deviceStart (the
// end of RAM and of the memory hotplug window, at least 4 GiB) to the top
// of the guest's physical address space less 64 KiB and the platform area
// (upstream's mmio_address_space_size and end_of_device_area).
func pciWindows(deviceStart uint64, physBits uint8, weights32, weights64 []uint32) (w32, w64 []x86.Region, err error) {
	s32, e32 := pci.Window32()
	if w32, err = pci.SplitWindows(s32, e32, weights32, pci.Mem32Alignment); err != nil {
		return nil, nil, err
	}
	start := max(deviceStart, uint64(x86.RAM64BitStart))
	end := uint64(1)<<physBits - 64<<10 - platformDeviceAreaSize - 1
	if end <= start {
		return nil, nil, fmt.Errorf("no 64-bit PCI window: the device area starts at %#x with %d physical address bits", start, physBits)
	}
	// Deliberately not upstream's: the device area is cut to whole 4 GiB
	// units from its start, so the last segment's window (where BARs go,
	// top down) ends 4 GiB-aligned as Nimbus's did before segments, not in
	// the last MiB below 2^physBits. Nested guests under the QEMU sandbox
	// were lost far more often (none in ~110 boots before, ~11 in ~300
	// after) once BARs sat at the very top; until that is understood the
	// old placement stays.
	if units := (end - start + 1) / pci.Mem64Alignment; units > 0 {
		end = start + units*pci.Mem64Alignment - 1
	}
	if w64, err = pci.SplitWindows(start, end, weights64, pci.Mem64Alignment); err != nil {
		return nil, nil, err
	}
	return w32, w64, nil
}

// apertureWeights are the segments' 32-bit and 64-bit window weights:
// 1 unless pci_segments says otherwise (a later entry wins, as upstream).
func apertureWeights(cfg *config.VmConfig, n int) (w32, w64 []uint32) {
	w32, w64 = make([]uint32, n), make([]uint32, n)
	for i := range n {
		w32[i], w64[i] = 1, 1
	}
	for _, s := range cfg.PciSegments {
		if int(s.PciSegment) < n {
			w32[s.PciSegment], w64[s.PciSegment] = s.Mmio32ApertureWeight, s.Mmio64ApertureWeight
		}
	}
	return w32, w64
}

// numPCISegments is platform.num_pci_segments (1 without a platform).
func numPCISegments(cfg *config.VmConfig) int {
	if cfg.Platform == nil || cfg.Platform.NumPciSegments == 0 {
		return 1
	}
	return int(cfg.Platform.NumPciSegments)
}

// segment returns PCI segment id, or an error naming the device.
func (m *VM) segment(id string, seg uint16) (*pciSegment, error) {
	if int(seg) >= len(m.pci) {
		return nil, wrap(ErrSetup, fmt.Errorf("%s: pci_segment %d: the VM has %d PCI segments: %w", id, seg, len(m.pci), vmm.ErrBadConfig))
	}
	return m.pci[seg], nil
}

// guestPhysBits is the guest's physical address width: the host's
// (CPUID 0x80000008 as KVM reports it), capped by max_phys_bits as
// PatchCPUID caps it for the guest.
func guestPhysBits(supported kvm.CPUID, max uint8) uint8 {
	bits := uint8(36)
	for _, e := range supported {
		if e.Function == 0x8000_0008 {
			bits = uint8(e.EAX & 0xff)
		}
	}
	if max != 0 && max < bits {
		bits = max
	}
	return bits
}

// setupPCI puts the PCI segments on the buses (segment 0 also on
// 0xcf8; every segment's ECAM at its own MiB of MMCONFIG) and adds the
// virtio devices in upstream's order: the virtio console, then
// make_virtio_devices (disks, nets, rng, virtio-mem). Device ids come
// from AssignDeviceIDs; runtime values (pty path, tap name, MAC) are
// written back into cfg.
func (m *VM) setupPCI(cfg *config.VmConfig, cons console.Backend) error {
	supported, err := m.sys.SupportedCPUID()
	if err != nil {
		return wrap(ErrKVM, err)
	}
	n := numPCISegments(cfg)
	weights32, weights64 := apertureWeights(cfg, n)
	// The 64-bit windows start after RAM and the memory hotplug window
	// (upstream's start_of_device_area).
	w32, w64, err := pciWindows(m.memhp.end, guestPhysBits(supported, cfg.Cpus.MaxPhysBits), weights32, weights64)
	if err != nil {
		return wrap(ErrSetup, fmt.Errorf("PCI windows: %w", err))
	}
	m.routes = newMSIRoutes(m.kvm)
	for i := range n {
		if err := m.addPCISegment(uint16(i), w32[i], w64[i]); err != nil {
			return err
		}
	}
	// Routes for the legacy GSIs exactly as KVM set them up, so that a
	// later partial table never differs from the default.
	m.routes.mu.Lock()
	err = m.routes.commit()
	m.routes.mu.Unlock()
	if err != nil {
		return wrap(ErrKVM, err)
	}
	cfg.AssignDeviceIDs()
	return m.addVirtioDevices(cfg, cons)
}

// addPCISegment makes segment id's root bus over its windows and puts its
// configuration space on the buses: ECAM, and 0xcf8 for segment 0 only,
// as upstream's new_default_segment.
func (m *VM) addPCISegment(id uint16, w32, w64 x86.Region) error {
	p := &pciSegment{id: id, win32: w32, win64: w64, mem64: pci.NewAllocator(w64), kvm: m.kvm, log: m.log.Warn}
	var err error
	p.root, err = pci.NewRoot(pci.RootConfig{
		Segment: id, MMIO: m.dm.MMIO(),
		Window32: pci.NewAllocator(w32), Window64: p.mem64,
		BARMoved: p.barMoved,
	})
	if err != nil {
		return wrap(ErrSetup, err)
	}
	m.pci = append(m.pci, p)
	nodeID := idPCIConfig
	if id != 0 {
		nodeID = fmt.Sprintf("%s%d", idPCIConfig, id)
	}
	tx, err := m.dm.Begin(nodeID, devmgr.Platform)
	if err != nil {
		return wrap(ErrSetup, err)
	}
	if id == 0 {
		if err := tx.PIO(p.root.ConfigIO(), pci.ConfigIOPort, pci.ConfigIOSize); err != nil {
			return wrap(ErrSetup, errors.Join(err, tx.Abort()))
		}
	}
	if err := tx.MMIO(p.root.ConfigMMIO(), pci.ECAMBase(id), pci.ECAMSizePerSegment); err != nil {
		return wrap(ErrSetup, errors.Join(err, tx.Abort()))
	}
	if err := tx.Commit(nil); err != nil {
		return wrap(ErrSetup, err)
	}
	return nil
}

// addVirtio puts dev on a virtio-pci transport at slot (pci_device_id, or
// any) and registers the transport node (which holds every resource)
// with dev as its child. It owns dev: on error dev is closed and every
// resource taken so far given back, by the same release functions
// hot removal and shutdown run.
func (m *VM) addVirtio(id string, dev virtio.Device, common config.PciCommon) (pci.BDF, error) {
	return m.addVirtioWith(id, dev, common, nil)
}

// placeFunc places a device's resources outside its BARs (virtio-pmem's
// memory) on segment p before the guest can see the device. What it
// takes it gives back through tx's releases, which run before the device
// is closed; it returns the ranges to record on the device's node.
type placeFunc func(tx *devmgr.Tx, p *pciSegment) ([]devmgr.Range, error)

// addVirtioWith is addVirtio with place, when not nil, run once the
// device's own resources are taken.
func (m *VM) addVirtioWith(id string, dev virtio.Device, common config.PciCommon, place placeFunc) (_ pci.BDF, err error) {
	p, err := m.segment(id, common.PciSegment)
	if err != nil {
		dev.Close()
		return pci.BDF{}, err
	}
	tid := virtioPCIPrefix + "-" + id
	tx, err := m.dm.Begin(tid, devmgr.PCI)
	if err == nil && m.dm.Has(id) {
		err = fmt.Errorf("%w: %s", devmgr.ErrDuplicateID, id)
	}
	if err != nil {
		dev.Close()
		return pci.BDF{}, wrap(ErrSetup, err)
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, tx.Abort())
		}
	}()
	// Released last first: ioeventfds, slot, transport and device (its
	// goroutines may still signal), then the vectors.
	var vectors *msixVectors
	var t *vpci.Device
	tx.OnRelease("MSI-X vectors", func() error {
		if vectors == nil {
			return nil
		}
		return vectors.Close()
	})
	tx.OnRelease("virtio device", func() error {
		if t != nil {
			return t.Close() // closes dev too
		}
		return dev.Close()
	})
	if vectors, err = newMSIXVectors(m.kvm, m.routes, len(dev.QueueSizes())+1); err != nil {
		return pci.BDF{}, wrap(ErrKVM, fmt.Errorf("%s: %w", id, err))
	}
	var placed []devmgr.Range
	if place != nil {
		if placed, err = place(tx, p); err != nil {
			return pci.BDF{}, err
		}
	}
	// Upstream gives cold-plugged block devices on segment 0 a 32-bit BAR
	// so firmware reaches them without identity-mapping high memory;
	// everything else gets 64-bit (use_64bit_bar_for_virtio_device).
	bar32 := dev.Type() == virtio.TypeBlock && p.id == 0 && !m.booted
	t, err = vpci.New(vpci.Config{Device: dev, Memory: m.mem, Router: vectors, BAR32: bar32, Log: m.log})
	if err != nil {
		return pci.BDF{}, wrap(ErrSetup, fmt.Errorf("%s: %w", id, err))
	}
	slot := pci.AnySlot
	if common.PciDeviceID != nil {
		slot = int(*common.PciDeviceID)
	}
	bdf, err := p.root.Add(t, slot)
	if err != nil {
		return pci.BDF{}, wrap(ErrSetup, fmt.Errorf("%s: %w", id, err))
	}
	tx.OnRelease("PCI slot", func() error {
		_, err := p.root.Remove(int(bdf.Device))
		return err
	})
	for _, na := range t.NotifyAddresses() {
		if err := m.kvm.SetIOEventFD(ioeventfd(na.Addr, na.FD, false)); err != nil {
			return pci.BDF{}, wrap(ErrKVM, fmt.Errorf("%s: ioeventfd for queue %d: %w", id, na.Queue, err))
		}
		q := na.Queue
		tx.OnRelease(fmt.Sprintf("ioeventfd for queue %d", q), func() error {
			// Where the notification is now: the guest may have moved the BAR.
			for _, cur := range t.NotifyAddresses() {
				if cur.Queue == q {
					err := m.kvm.SetIOEventFD(ioeventfd(cur.Addr, cur.FD, true))
					if errors.Is(err, kvm.ErrClosed) {
						return nil
					}
					return err
				}
			}
			return nil
		})
	}
	tx.PCI(bdf, t)
	tx.Child(id, devmgr.Virtio, nil, placed...)
	if err := tx.Commit(dev); err != nil {
		return pci.BDF{}, wrap(ErrSetup, err)
	}
	return bdf, nil
}

// ioeventfd is a queue notification registration: any width, no
// datamatch, as upstream's register_ioevent(.., None).
func ioeventfd(addr uint64, fd int, deassign bool) kvm.IOEventFD {
	e := kvm.IOEventFD{Addr: addr, FD: int32(fd)}
	if deassign {
		e.Flags = kvm.IOEventFDDeassign
	}
	return e
}

// barMoved follows a guest BAR reprogramming: the transport's notify
// addresses moved with its BAR, so the ioeventfds move too. It runs on a
// vCPU thread with the root's lock held. (vm.info's device tree reads
// the BARs from the function itself.)
func (p *pciSegment) barMoved(bdf pci.BDF, fn pci.Function, mv pci.BARMove) {
	t, ok := fn.(*vpci.Device)
	if !ok || mv.Index != vpci.BARIndex {
		return
	}
	for _, na := range t.NotifyAddresses() {
		old := na.Addr - mv.New + mv.Old
		err := errors.Join(
			p.kvm.SetIOEventFD(ioeventfd(old, na.FD, true)),
			p.kvm.SetIOEventFD(ioeventfd(na.Addr, na.FD, false)))
		if err != nil {
			// The transport still signals the eventfd on a trapped
			// notify write, so the queue keeps working, only slower.
			p.log("moving a queue notification ioeventfd failed", "bdf", bdf.String(), "queue", na.Queue, "err", err)
		}
	}
}
