package acpi

import (
	"encoding/binary"
	"fmt"
)

// CPUHotplug describes the ACPI CPU objects upstream's CpuManager puts in
// its DSDT on x86-64 with dynamic (hot-pluggable) vCPUs, after the device
// manager's objects (vmm/src/cpu.rs, `impl Aml for CpuManager`, Cpu,
// CpuNotify and CpuMethods), over the register block of
// internal/devices/cpuhp:
//
//	Device (\_SB.PRES) {
//	    Name (_HID, EisaId ("PNP0A06")) Name (_UID, "CPU Hotplug Controller")
//	    Mutex (CPLK, 0x00)
//	    Name (_CRS, ResourceTemplate () { QWordMemory (…, NonCacheable, ReadWrite, …, Base, Base+0xB, …, 0x0C) })
//	    OperationRegion (PRST, SystemMemory, Base, 0x0C)
//	    Field (PRST, ByteAcc, NoLock, WriteAsZeros) { Offset (0x04), CPEN, 1, CINS, 1, CRMV, 1, CEJ0, 1, , 4, CCMD, 8 }
//	    Field (PRST, DWordAcc, NoLock, Preserve) { CSEL, 32, , 32, CDAT, 32 }
//	}
//	Device (\_SB.CPUS) {
//	    Name (_HID, "ACPI0010") Name (_CID, EisaId ("PNP0A05"))
//	    Method (CSTA, 1, Serialized) {             // _STA of vCPU Arg0: 0x0F if CPEN, else 0
//	        Acquire (\_SB.PRES.CPLK, 0xFFFF)  \_SB.PRES.CSEL = Arg0  Local0 = Zero
//	        If ((\_SB.PRES.CPEN == One)) { Local0 = 0x0F }
//	        Release (\_SB.PRES.CPLK)  Return (Local0)
//	    }
//	    Method (CTFY, 2, Serialized) { If ((Arg0 == cpu)) { Notify (Cxxx, Arg1) } … for each vCPU }
//	    Method (CEJ0, 1, Serialized) {
//	        Acquire (\_SB.PRES.CPLK, 0xFFFF)  \_SB.PRES.CSEL = Arg0  \_SB.PRES.CEJ0 = One  Release (\_SB.PRES.CPLK)
//	    }
//	    Method (CSCN, 0, Serialized) {
//	        Acquire (\_SB.PRES.CPLK, 0xFFFF)  Local0 = Zero
//	        While ((Local0 < MaxCPUs)) {
//	            \_SB.PRES.CSEL = Local0
//	            If ((\_SB.PRES.CINS == One)) { CTFY (Local0, One)  \_SB.PRES.CINS = One }
//	            If ((\_SB.PRES.CRMV == One)) { CTFY (Local0, 0x03)  \_SB.PRES.CRMV = One }
//	            Local0 += One
//	        }
//	        Release (\_SB.PRES.CPLK)
//	    }
//	    Device (C000) … one per possible vCPU, the number in upper-case hex {
//	        Name (_HID, "ACPI0007") Name (_UID, cpu)
//	        Method (_STA, 0, NotSerialized) { Return (CSTA (cpu)) }
//	        Method (_PXM, 0, NotSerialized) { Return (proximity domain) }
//	        Name (_MAT, Buffer (0x10) { the MADT Processor Local x2APIC entry, enabled })
//	        Method (_EJ0, 1, NotSerialized) { CEJ0 (cpu) }
//	    }
//	}
//
// The GED's ESCN calls \_SB.CPUS.CSCN on the CPU notification bit (set
// GED.CPUHotplug).
type CPUHotplug struct {
	Base    uint64 // the register block (cpuhp.Base); its size is CPUHotplugSize
	MaxCPUs int    // possible vCPUs, 1 to 4096 (C000 to CFFF)

	// APICID maps a vCPU index to its x2APIC id for _MAT (upstream's
	// arch::x86_64::get_x2apic_id; x86.Topology.X2APICID). Nil means the
	// index itself, as upstream without a topology.
	APICID func(cpu uint32) uint32
	// ProximityDomain is the vCPU's NUMA node for _PXM; nil means 0, as
	// upstream for a vCPU in no NUMA node.
	ProximityDomain func(cpu uint32) uint32
}

// CPUHotplugSize is CPU_MANAGER_ACPI_SIZE, the register block's size.
const CPUHotplugSize = 0xc

// Terms returns \_SB_.PRES and \_SB_.CPUS, to go after the device
// manager's objects (i.e. after the GED), as upstream orders the DSDT.
func (c CPUHotplug) Terms() ([]Term, error) {
	if c.Base == 0 || c.Base+CPUHotplugSize < c.Base {
		return nil, fmt.Errorf("%w: CPU hotplug register address %#x", ErrTables, c.Base)
	}
	if c.MaxCPUs < 1 || c.MaxCPUs > 0x1000 {
		return nil, fmt.Errorf("%w: CPU hotplug for %d vCPUs (1 to 4096)", ErrTables, c.MaxCPUs)
	}
	pres := Device("_SB_.PRES",
		Name("_HID", EISAID("PNP0A06")),
		Name("_UID", String("CPU Hotplug Controller")),
		Mutex("CPLK", 0),
		Name("_CRS", ResourceTemplate(QWordMemory(NotCacheable, true, c.Base, c.Base+CPUHotplugSize-1))),
		OperationRegion("PRST", SystemMemory, Int(c.Base), Int(CPUHotplugSize)),
		Field("PRST", ByteAcc, false, WriteAsZeros,
			FieldUnit{"", 32},
			FieldUnit{"CPEN", 1},
			FieldUnit{"CINS", 1},
			FieldUnit{"CRMV", 1},
			FieldUnit{"CEJ0", 1},
			FieldUnit{"", 4},
			FieldUnit{"CCMD", 8},
		),
		Field("PRST", DWordAcc, false, Preserve,
			FieldUnit{"CSEL", 32},
			FieldUnit{"", 32},
			FieldUnit{"CDAT", 32},
		),
	)

	const (
		lock = `\_SB_.PRES.CPLK`
		sel  = `\_SB_.PRES.CSEL`
	)
	n := uint32(c.MaxCPUs)
	ctfy := make([]Term, 0, n)
	for cpu := uint32(0); cpu < n; cpu++ {
		ctfy = append(ctfy, If(LEqual(Arg(0), Int(cpu)), Notify(Path(cpuName(cpu)), Arg(1))))
	}
	cpus := []Term{
		Name("_HID", String("ACPI0010")),
		Name("_CID", EISAID("PNP0A05")),
		Method("CSTA", 1, true,
			Acquire(lock, 0xffff),
			Store(Arg(0), Path(sel)),
			Store(Int(0), Local(0)),
			If(LEqual(Path(`\_SB_.PRES.CPEN`), Int(1)), Store(Int(0xf), Local(0))),
			Release(lock),
			Return(Local(0)),
		),
		Method("CTFY", 2, true, ctfy...),
		Method("CEJ0", 1, true,
			Acquire(lock, 0xffff),
			Store(Arg(0), Path(sel)),
			Store(Int(1), Path(`\_SB_.PRES.CEJ0`)),
			Release(lock),
		),
		Method("CSCN", 0, true,
			Acquire(lock, 0xffff),
			Store(Int(0), Local(0)),
			While(LLess(Local(0), Int(n)),
				Store(Local(0), Path(sel)),
				If(LEqual(Path(`\_SB_.PRES.CINS`), Int(1)),
					Call("CTFY", Local(0), Int(1)),
					Store(Int(1), Path(`\_SB_.PRES.CINS`)),
				),
				If(LEqual(Path(`\_SB_.PRES.CRMV`), Int(1)),
					Call("CTFY", Local(0), Int(3)),
					Store(Int(1), Path(`\_SB_.PRES.CRMV`)),
				),
				Add(Local(0), Int(1), Local(0)),
			),
			Release(lock),
		),
	}
	for cpu := uint32(0); cpu < n; cpu++ {
		apicID, pxm := cpu, uint32(0)
		if c.APICID != nil {
			apicID = c.APICID(cpu)
		}
		if c.ProximityDomain != nil {
			pxm = c.ProximityDomain(cpu)
		}
		cpus = append(cpus, Device(cpuName(cpu),
			Name("_HID", String("ACPI0007")),
			Name("_UID", Int(cpu)),
			Method("_STA", 0, false, Return(Call("CSTA", Int(cpu)))),
			Method("_PXM", 0, false, Return(Int(pxm))),
			Name("_MAT", Buffer(localX2APIC(cpu, apicID))),
			Method("_EJ0", 1, false, Call("CEJ0", Int(cpu))),
		))
	}
	return []Term{pres, Device("_SB_.CPUS", cpus...)}, nil
}

func cpuName(cpu uint32) string { return fmt.Sprintf("C%03X", cpu) }

// localX2APIC is the MADT Processor Local x2APIC structure (ACPI 6.5
// 5.2.12.12) upstream's Cpu::generate_mat returns: type 9, length 16,
// reserved, x2APIC id, flags Enabled, ACPI processor UID.
func localX2APIC(uid, apicID uint32) []byte {
	b := []byte{madtLocalX2APIC, 16, 0, 0}
	b = binary.LittleEndian.AppendUint32(b, apicID)
	b = binary.LittleEndian.AppendUint32(b, madtEnabled)
	return binary.LittleEndian.AppendUint32(b, uid)
}
