package acpi

import "fmt"

// PCIHotplug describes the ACPI PCI hotplug objects upstream puts in its
// DSDT (vmm/src/device_manager.rs, `impl Aml for DeviceManager`, and
// vmm/src/pci_segment.rs, PciDevSlot, PciDevSlotNotify and
// PciDevSlotMethods), over the register block of internal/devices/pcihp:
//
//	Device (\_SB.PHPR) {
//	    Name (_HID, EisaId ("PNP0A06")) Name (_STA, 0x0B) Name (_UID, "PCI Hotplug Controller")
//	    Mutex (BLCK, 0x00)
//	    Name (_CRS, ResourceTemplate () { QWordMemory (…, NonCacheable, ReadWrite, …, Base, Base+0xF, …, 0x10) })
//	    OperationRegion (PCST, SystemMemory, Base, 0x10)
//	    Field (PCST, DWordAcc, NoLock, WriteAsZeros) { PCIU, 32, PCID, 32, B0EJ, 32, PSEG, 32 }
//	    Method (PCEJ, 2, Serialized) {
//	        Acquire (BLCK, 0xFFFF)  PSEG = Arg1  B0EJ = One << Arg0  Release (BLCK)  Return (Zero)
//	    }
//	    Method (PSCN, 0, Serialized) { \_SB.PC00.PCNT () … one call per bus }
//	}
//
// and, inside each PCI host bridge (next to its _SEG, which they read):
//
//	Device (S000) … Device (S031) {                // one per slot
//	    Name (_SUN, slot) Name (_ADR, slot << 16)
//	    Method (_EJ0, 1, Serialized) { \_SB.PHPR.PCEJ (_SUN, _SEG) }
//	}
//	Method (DVNT, 2, Serialized) {                 // Notify each slot set in Arg0 with Arg1
//	    Local0 = Arg0 & 1<<slot  If (Local0 == 1<<slot) { Notify (Sxxx, Arg1) }  … for each slot
//	}
//	Method (PCNT, 0, Serialized) {
//	    Acquire (\_SB.PHPR.BLCK, 0xFFFF)
//	    \_SB.PHPR.PSEG = _SEG
//	    DVNT (\_SB.PHPR.PCIU, One)                 // Device Check
//	    DVNT (\_SB.PHPR.PCID, 0x03)                // Eject Request
//	    Release (\_SB.PHPR.BLCK)
//	}
//
// The GED's ESCN calls \_SB.PHPR.PSCN on the PCI notification bit (set
// GED.PCIHotplug). Upstream has no _OSC, so the guest keeps PCI hotplug
// under ACPI control (Linux's acpiphp).
type PCIHotplug struct {
	Base uint64 // the register block (pcihp.Base); its size is PCIHotplugSize

	// Buses are the absolute paths of the host bridges, in segment order,
	// whose PCNT method PSCN calls; empty means `\_SB_.PC00`, the one bridge
	// DSDT builds. (Upstream names its bridges \_SB_.PCnn, nn the segment
	// in hex.) Each of them must contain BridgeTerms.
	Buses []string
}

// PCIHotplugSize is DEVICE_MANAGER_ACPI_SIZE, the register block's size.
const PCIHotplugSize = 0x10

// pciSlots is the number of slot devices per bridge (devices 0-31 of bus 0).
const pciSlots = 32

// Terms returns the \_SB_.PHPR device, to go in the DSDT before the host
// bridges as upstream orders it, and the terms to append to each host
// bridge's Device (after its _CRS; upstream then has only _PRT).
func (h PCIHotplug) Terms() (controller Term, bridge []Term, err error) {
	if h.Base == 0 || h.Base+PCIHotplugSize < h.Base {
		return nil, nil, fmt.Errorf("%w: PCI hotplug register address %#x", ErrTables, h.Base)
	}
	buses := h.Buses
	if len(buses) == 0 {
		buses = []string{`\_SB_.PC00`}
	}
	var pscn []Term
	for _, bus := range buses {
		pscn = append(pscn, Call(bus+".PCNT"))
	}
	controller = Device("_SB_.PHPR",
		Name("_HID", EISAID("PNP0A06")),
		Name("_STA", Int(0x0b)),
		Name("_UID", String("PCI Hotplug Controller")),
		Mutex("BLCK", 0),
		Name("_CRS", ResourceTemplate(QWordMemory(NotCacheable, true, h.Base, h.Base+PCIHotplugSize-1))),
		OperationRegion("PCST", SystemMemory, Int(h.Base), Int(PCIHotplugSize)),
		Field("PCST", DWordAcc, false, WriteAsZeros,
			FieldUnit{"PCIU", 32},
			FieldUnit{"PCID", 32},
			FieldUnit{"B0EJ", 32},
			FieldUnit{"PSEG", 32},
		),
		Method("PCEJ", 2, true,
			Acquire("BLCK", 0xffff),
			Store(Arg(1), Path("PSEG")),
			ShiftLeft(Int(1), Arg(0), Path("B0EJ")),
			Release("BLCK"),
			Return(Int(0)),
		),
		Method("PSCN", 0, true, pscn...),
	)
	return controller, BridgeTerms(), nil
}

// BridgeTerms returns the slot devices and the DVNT and PCNT methods that
// go inside every host bridge (upstream's PciDevSlot for devices 0-31 and
// PciDevSlotMethods); they depend on nothing but the bridge's _SEG.
func BridgeTerms() []Term {
	terms := make([]Term, 0, pciSlots+2)
	dvnt := make([]Term, 0, 2*pciSlots)
	for slot := 0; slot < pciSlots; slot++ {
		name := fmt.Sprintf("S%03d", slot)
		terms = append(terms, Device(name,
			Name("_SUN", Int(slot)),
			Name("_ADR", Int(slot<<16)),
			Method("_EJ0", 1, true, Call(`\_SB_.PHPR.PCEJ`, Path("_SUN"), Path("_SEG"))),
		))
		mask := Int(1) << slot
		dvnt = append(dvnt,
			And(Arg(0), mask, Local(0)),
			If(LEqual(Local(0), mask), Notify(Path(name), Arg(1))),
		)
	}
	return append(terms,
		Method("DVNT", 2, true, dvnt...),
		Method("PCNT", 0, true,
			Acquire(`\_SB_.PHPR.BLCK`, 0xffff),
			Store(Path("_SEG"), Path(`\_SB_.PHPR.PSEG`)),
			Call("DVNT", Path(`\_SB_.PHPR.PCIU`), Int(1)),
			Call("DVNT", Path(`\_SB_.PHPR.PCID`), Int(3)),
			Release(`\_SB_.PHPR.BLCK`),
		),
	)
}
