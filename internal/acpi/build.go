package acpi

import (
	"errors"
	"fmt"
	"io"

	"github.com/nimbus-vmm/nimbus/internal/arch/x86"
	"github.com/nimbus-vmm/nimbus/internal/devices/pci"
)

// Platform addresses the tables describe.
const (
	APICAddress   = x86.APICStart
	IOAPICAddress = x86.IOAPICStart
)

// ECAMSize is the ECAM the tables describe: one bus (1 MiB), because
// upstream's PCI segments each have only bus 0 (pci_segment.rs,
// PCI_MMIO_CONFIG_SIZE_PER_SEGMENT).
const ECAMSize = 1 << 20

// ErrTables reports tables that cannot be built or placed.
var ErrTables = errors.New("acpi tables")

// Config is what the tables describe.
type Config struct {
	BootCPUs int // enabled vCPUs
	MaxCPUs  int // MADT entries; 0 means BootCPUs
	X2APIC   bool
	// Serial adds COM1 (PNP0501) at 0x3f8 with SerialIRQ (default 4).
	Serial    bool
	SerialIRQ uint32
	// PCISegments are the PCI segments, by id, each a host bridge
	// \_SB_.PCnn (nn its id in hex) with its own ECAM MiB; none means one
	// segment with the 32-bit device area below MMCONFIG as its window.
	PCISegments []PCISegment
	// GED, when set, adds the power button and the Generic Event Device
	// (see GED) after the other DSDT devices, as upstream.
	GED *GED
	// PCIHotplug, when set, adds upstream's PCI hotplug controller
	// (\_SB_.PHPR) and the slot objects in \_SB_.PC00, and makes the GED
	// call PSCN on a PCI-devices-changed notification.
	PCIHotplug *PCIHotplug
	// CPUHotplug, when set, adds upstream's \_SB_.PRES and \_SB_.CPUS
	// (one ACPI0007 device per possible vCPU) after the GED, and makes the
	// GED call CSCN on a CPU-devices-changed notification.
	CPUHotplug *CPUHotplug
	// MemoryHotplug, when set, adds upstream's \_SB_.MHPC last, and makes
	// the GED call MSCN on a memory-devices-changed notification.
	MemoryHotplug *MemoryHotplug
}

// PCISegment is one PCI segment's host bridge: its BAR windows.
type PCISegment struct {
	Win32, Win64 x86.Region // a zero Win64 means none
}

// segmentName is upstream's host bridge name for segment id: _SB_.PCnn.
func segmentName(id int) string { return fmt.Sprintf("_SB_.PC%02X", id) }

// term is the host bridge of segment id, as upstream's PciSegment AML
// writes the parts Nimbus builds (pci_segment.rs): _HID, _CID, _ADR,
// _SEG, _UID, then _CRS with bus 0, for segment 0 the 0xcf8 ports, the
// segment's ECAM MiB, its 32-bit and 64-bit windows, for segment 0 the
// other I/O ports; then the hotplug slot objects. (Upstream also has
// _CCA, SUPP, _PXM, _DSM and a _PRT for INTx; Nimbus's devices use MSI-X.)
func (seg PCISegment) term(id int, bridge []Term) (Term, error) {
	if seg.Win32.Size == 0 || seg.Win32.End() > 1<<32 {
		return nil, fmt.Errorf("%w: PCI segment %d: 32-bit window %+v", ErrTables, id, seg.Win32)
	}
	crs := []Resource{WordBusNumber(0, 0)}
	if id == 0 {
		crs = append(crs, IO{Min: 0xcf8, Max: 0xcf8, Align: 1, Length: 8})
	}
	crs = append(crs,
		Memory32Fixed{true, uint32(pci.ECAMBase(uint16(id))), ECAMSize},
		QWordMemory(NotCacheable, true, seg.Win32.Start, seg.Win32.End()-1),
	)
	if seg.Win64.Size > 0 {
		crs = append(crs, QWordMemory(NotCacheable, true, seg.Win64.Start, seg.Win64.End()-1))
	}
	if id == 0 {
		crs = append(crs, WordIO(0, 0xcf7), WordIO(0xd00, 0xffff))
	}
	return Device(segmentName(id), append([]Term{
		Name("_HID", EISAID("PNP0A08")),
		Name("_CID", EISAID("PNP0A03")),
		Name("_ADR", Int(0)),
		Name("_SEG", Int(uint64(id))),
		Name("_UID", Int(uint64(id))),
		Name("_CRS", ResourceTemplate(crs...)),
	}, bridge...)...), nil
}

// Tables reports where Build put each table.
type Tables struct {
	RSDP, XSDT, DSDT, FADT, MADT, MCFG uint64
	End                                uint64 // first byte after the last table
}

// DSDT returns the Differentiated System Description Table: the S5 sleep
// state the shutdown device decodes, COM1, the PCI host bridge and the
// motherboard resource reserving MMCONFIG (as upstream's device manager).
func DSDT(cfg Config) (*SDT, error) {
	terms := []Term{Name("_S5_", Package(Int(5)))}
	if cfg.Serial {
		irq := cfg.SerialIRQ
		if irq == 0 {
			irq = 4
		}
		terms = append(terms, Device("_SB_.COM1",
			Name("_HID", EISAID("PNP0501")),
			Name("_UID", Int(0)),
			Name("_DDN", String("COM1")),
			Name("_CRS", ResourceTemplate(
				Interrupt{Consumer: true, Edge: true, Number: irq},
				IO{Min: 0x3f8, Max: 0x3f8, Length: 8},
			)),
		))
	}
	segs := cfg.PCISegments
	if len(segs) == 0 {
		segs = []PCISegment{{Win32: x86.Region{Start: x86.Mem32BitReservedStart, Size: x86.Mem32BitDevicesSize}}}
	}
	var bridge []Term
	if cfg.PCIHotplug != nil {
		h := *cfg.PCIHotplug
		if len(h.Buses) == 0 {
			for i := range segs {
				h.Buses = append(h.Buses, `\`+segmentName(i))
			}
		}
		phpr, br, err := h.Terms()
		if err != nil {
			return nil, err
		}
		terms, bridge = append(terms, phpr), br
	}
	var mbrd []Resource
	for i, seg := range segs {
		t, err := seg.term(i, bridge)
		if err != nil {
			return nil, err
		}
		terms = append(terms, t)
		mbrd = append(mbrd, Memory32Fixed{true, uint32(pci.ECAMBase(uint16(i))), ECAMSize})
	}
	terms = append(terms, Device("_SB_.MBRD",
		Name("_HID", EISAID("PNP0C02")),
		Name("_UID", Int(0)),
		Name("_CRS", ResourceTemplate(mbrd...)),
	))
	if cfg.GED != nil {
		g := *cfg.GED
		g.PCIHotplug = cfg.PCIHotplug != nil
		g.CPUHotplug = cfg.CPUHotplug != nil
		g.MemoryHotplug = cfg.MemoryHotplug != nil
		ged, err := g.Terms()
		if err != nil {
			return nil, err
		}
		terms = append(terms, ged...)
	}
	if c := cfg.CPUHotplug; c != nil {
		cpus, err := c.Terms()
		if err != nil {
			return nil, err
		}
		terms = append(terms, cpus...)
	}
	if m := cfg.MemoryHotplug; m != nil {
		mhpc, err := m.Term()
		if err != nil {
			return nil, err
		}
		terms = append(terms, mhpc)
	}
	aml, err := Marshal(terms...)
	if err != nil {
		return nil, err
	}
	return &SDT{Signature: "DSDT", Revision: 6, OEMTableID: "CHDSDT", Body: aml}, nil
}

// Build writes the tables back to back from the RSDP at 0xa0000 in
// upstream's order (RSDP, DSDT, FACP, APIC, MCFG, XSDT) and returns their
// addresses; RSDP is what boot_params/hvm_start_info must carry.
func Build(mem io.WriterAt, cfg Config) (Tables, error) {
	if cfg.MaxCPUs == 0 {
		cfg.MaxCPUs = cfg.BootCPUs
	}
	dsdt, err := DSDT(cfg)
	if err != nil {
		return Tables{}, err
	}
	madt, err := MADT(cfg.BootCPUs, cfg.MaxCPUs, cfg.X2APIC)
	if err != nil {
		return Tables{}, fmt.Errorf("%w: %w", ErrTables, err)
	}
	t := Tables{RSDP: x86.RSDPPointer}
	next := t.RSDP + 36
	var blobs [][]byte
	var addrs []uint64
	place := func(s *SDT) (uint64, error) {
		b, err := s.MarshalBinary()
		if err != nil {
			return 0, fmt.Errorf("%w: %w", ErrTables, err)
		}
		addr := next
		blobs, addrs = append(blobs, b), append(addrs, addr)
		next += uint64(len(b))
		return addr, nil
	}
	if t.DSDT, err = place(dsdt); err != nil {
		return Tables{}, err
	}
	if t.FADT, err = place(FADT(t.DSDT)); err != nil {
		return Tables{}, err
	}
	if t.MADT, err = place(madt); err != nil {
		return Tables{}, err
	}
	if t.MCFG, err = place(MCFG(max(len(cfg.PCISegments), 1))); err != nil {
		return Tables{}, err
	}
	if t.XSDT, err = place(XSDT([]uint64{t.FADT, t.MADT, t.MCFG})); err != nil {
		return Tables{}, err
	}
	t.End = next
	// Keep clear of the SMBIOS entry point at 0xf0000.
	if t.End > x86.SMBIOSStart {
		return Tables{}, fmt.Errorf("%w: tables end at %#x, past %#x", ErrTables, t.End, x86.SMBIOSStart)
	}
	blobs = append(blobs, RSDP(t.XSDT))
	addrs = append(addrs, t.RSDP)
	for i, b := range blobs {
		if _, err := mem.WriteAt(b, int64(addrs[i])); err != nil {
			return Tables{}, fmt.Errorf("%w: writing table at %#x: %w", ErrTables, addrs[i], err)
		}
	}
	return t, nil
}
