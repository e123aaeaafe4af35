package acpi

import "fmt"

// GED describes the ACPI Generic Event Device and the power button that
// Config.GED adds to the DSDT, as upstream's AcpiGedDevice::to_aml_bytes
// (devices/src/acpi.rs) and DeviceManager's DSDT (vmm/src/device_manager.rs)
// write them:
//
//	Device (\_SB.PWRB) { Name (_HID, EisaId ("PNP0C0C")) Name (_UID, Zero) }
//	Device (\_SB.GEC) {
//	    Name (_HID, EisaId ("PNP0A06")) Name (_UID, "Generic Event Controller")
//	    Name (_CRS, ResourceTemplate () { QWordMemory (…, NonCacheable, ReadWrite, …, Base, Base, …, 1) })
//	    OperationRegion (GDST, SystemMemory, Base, One)
//	    Field (GDST, ByteAcc, NoLock, WriteAsZeros) { GDAT, 8 }
//	    Method (ESCN, 0, Serialized) {
//	        Local0 = GDAT
//	        … one If per notification bit; for the power button (bit 3):
//	        Local1 = Local0 & 8
//	        If (Local1 == 8) { Notify (\_SB.PWRB, 0x80) }
//	    }
//	}
//	Device (\_SB.GED) {
//	    Name (_HID, "ACPI0013") Name (_UID, Zero)
//	    Name (_CRS, ResourceTemplate () { Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive) {IRQ} })
//	    Method (_EVT, 1, Serialized) { \_SB.GEC.ESCN () }
//	}
//
// Upstream's ESCN always calls \_SB.CPUS.CSCN, \_SB.MHPC.MSCN and
// \_SB.PHPR.PSCN for bits 0-2; here each of those branches is emitted only
// when its flag says the DSDT defines that method, so ESCN never names an
// object that does not exist.
type GED struct {
	Base uint64 // address of the one-byte notification register (ged.Base)
	IRQ  uint32 // its interrupt (ged.IRQ)

	CPUHotplug    bool // \_SB.CPUS.CSCN exists: call it on bit 0
	MemoryHotplug bool // \_SB.MHPC.MSCN exists: call it on bit 1
	PCIHotplug    bool // \_SB.PHPR.PSCN exists: call it on bit 2
}

// Notification bits ESCN tests (upstream's AcpiNotificationFlags; the
// device model is internal/devices/ged).
const (
	gedCPUBit         = 1
	gedMemoryBit      = 2
	gedPCIBit         = 4
	gedPowerButtonBit = 8
)

// gedSize is GED_DEVICE_ACPI_SIZE, the register's size.
const gedSize = 1

// Terms returns the DSDT terms for the power button and the GED, in
// upstream's order (PWRB, GEC_, GED_).
func (g GED) Terms() ([]Term, error) {
	if g.Base == 0 || g.Base+gedSize < g.Base {
		return nil, fmt.Errorf("%w: GED register address %#x", ErrTables, g.Base)
	}
	escn := []Term{Store(Path("GDAT"), Local(0))}
	branch := func(bit uint64, then Term) {
		escn = append(escn,
			And(Local(0), Int(bit), Local(1)),
			If(LEqual(Local(1), Int(bit)), then),
		)
	}
	if g.CPUHotplug {
		branch(gedCPUBit, Call(`\_SB_.CPUS.CSCN`))
	}
	if g.MemoryHotplug {
		branch(gedMemoryBit, Call(`\_SB_.MHPC.MSCN`))
	}
	if g.PCIHotplug {
		branch(gedPCIBit, Call(`\_SB_.PHPR.PSCN`))
	}
	branch(gedPowerButtonBit, Notify(Path(`\_SB_.PWRB`), Int(0x80)))
	return []Term{
		Device("_SB_.PWRB",
			Name("_HID", EISAID("PNP0C0C")),
			Name("_UID", Int(0)),
		),
		Device("_SB_.GEC_",
			Name("_HID", EISAID("PNP0A06")),
			Name("_UID", String("Generic Event Controller")),
			Name("_CRS", ResourceTemplate(QWordMemory(NotCacheable, true, g.Base, g.Base+gedSize-1))),
			OperationRegion("GDST", SystemMemory, Int(g.Base), Int(gedSize)),
			Field("GDST", ByteAcc, false, WriteAsZeros, FieldUnit{"GDAT", 8}),
			Method("ESCN", 0, true, escn...),
		),
		Device("_SB_.GED_",
			Name("_HID", String("ACPI0013")),
			Name("_UID", Int(0)),
			Name("_CRS", ResourceTemplate(Interrupt{Consumer: true, Edge: true, Number: g.IRQ})),
			Method("_EVT", 1, true, Call(`\_SB_.GEC_.ESCN`)),
		),
	}, nil
}
