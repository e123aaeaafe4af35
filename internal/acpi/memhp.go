package acpi

import "fmt"

// MemoryHotplug describes upstream's ACPI memory hotplug controller, as
// its MemoryManager writes it last in the DSDT when memory.hotplug_method
// is acpi and hotplug_size is set (vmm/src/memory_manager.rs, `impl Aml
// for MemoryManager`, MemoryMethods, MemorySlots, MemoryNotify), over the
// register block of internal/devices/memhp:
//
//	Device (\_SB.MHPC) {
//	    Name (_HID, EisaId ("PNP0A06")) Name (_UID, "Memory Hotplug Controller")
//	    Mutex (MLCK, 0x00)
//	    Name (_CRS, ResourceTemplate () { QWordMemory (…, NonCacheable, ReadWrite, …, Base, Base+0x17, …, 0x18) })
//	    OperationRegion (MHPR, SystemMemory, Base, 0x18)
//	    Field (MHPR, DWordAcc, NoLock, Preserve) { MHBL, 32, MHBH, 32, MHLL, 32, MHLH, 32 }
//	    Field (MHPR, DWordAcc, NoLock, Preserve) { Offset (0x10), MHPX, 32 }
//	    Field (MHPR, ByteAcc, NoLock, WriteAsZeros) { Offset (0x14), MEN_, 1, MINS, 1, MRMV, 1, MEJ0, 1 }
//	    Field (MHPR, DWordAcc, NoLock, Preserve) { MSEL, 32, MOEV, 32, MOSC, 32 }
//	    Method (MTFY, 2, Serialized) { If ((Arg0 == slot)) { Notify (Mxxx, Arg1) } … }
//	    Method (MSCN, 0, Serialized) {        // the GED's bit 1
//	        Acquire (MLCK, 0xFFFF)  Local0 = Zero
//	        While ((Local0 < Slots)) {
//	            \_SB.MHPC.MSEL = Local0
//	            If ((\_SB.MHPC.MINS == One)) { MTFY (Local0, One)  \_SB.MHPC.MINS = One }
//	            If ((\_SB.MHPC.MRMV == One)) { MTFY (Local0, 0x03)  \_SB.MHPC.MRMV = One }
//	            Local0 += One
//	        }
//	        Release (MLCK)
//	    }
//	    Method (MSTA, 1, Serialized) { … 0x0F if MEN_ of slot Arg0, else 0 }
//	    Method (MCRS, 1, Serialized) { … a QWordMemory of slot Arg0's base and length }
//	    Device (M000) { Name (_HID, EisaId ("PNP0C80")) Name (_UID, 0)
//	                    Method (_STA) { Return (MSTA (0)) } Method (_CRS) { Return (MCRS (0)) } }
//	    … one per slot
//	}
type MemoryHotplug struct {
	Base  uint64 // the register block (memhp.Base); its size is MemoryHotplugSize
	Slots int    // DIMM slots, M000 to Mxxx (upstream: HOTPLUG_COUNT, 8)
}

// MemoryHotplugSize is MEMORY_MANAGER_ACPI_SIZE, the register block's size.
const MemoryHotplugSize = 0x18

// Term returns \_SB_.MHPC, to go last in the DSDT, after the CPU objects.
func (m MemoryHotplug) Term() (Term, error) {
	if m.Base == 0 || m.Base+MemoryHotplugSize < m.Base {
		return nil, fmt.Errorf("%w: memory hotplug register address %#x", ErrTables, m.Base)
	}
	if m.Slots < 1 || m.Slots > 1000 {
		return nil, fmt.Errorf("%w: memory hotplug with %d slots (1 to 1000)", ErrTables, m.Slots)
	}
	reg := func(name string) Term { return Path(`\_SB_.MHPC.` + name) }
	slot := func(i int) string { return fmt.Sprintf("M%03d", i) }

	var mtfy []Term
	for i := 0; i < m.Slots; i++ {
		mtfy = append(mtfy, If(LEqual(Arg(0), Int(uint64(i))), Notify(Path(slot(i)), Arg(1))))
	}
	mscn := []Term{
		Acquire("MLCK", 0xffff),
		Store(Int(0), Local(0)),
		While(LLess(Local(0), Int(uint64(m.Slots))),
			Store(Local(0), reg("MSEL")),
			If(LEqual(reg("MINS"), Int(1)),
				Call("MTFY", Local(0), Int(1)),
				Store(Int(1), reg("MINS")),
			),
			If(LEqual(reg("MRMV"), Int(1)),
				Call("MTFY", Local(0), Int(3)),
				Store(Int(1), reg("MRMV")),
			),
			Add(Local(0), Int(1), Local(0)),
		),
		Release("MLCK"),
	}
	msta := []Term{
		Acquire("MLCK", 0xffff),
		Store(Arg(0), reg("MSEL")),
		Store(Int(0), Local(0)),
		If(LEqual(reg("MEN_"), Int(1)), Store(Int(0xf), Local(0))),
		Release("MLCK"),
		Return(Local(0)),
	}
	// The byte offsets of the QWord descriptor's _MIN, _MAX and _LEN, and
	// of their high halves, as upstream's MCRS addresses them.
	mr64 := Path("MR64")
	mcrs := []Term{
		Acquire("MLCK", 0xffff),
		Store(Arg(0), reg("MSEL")),
		Name("MR64", ResourceTemplate(QWordMemory(Cacheable, true, 0, 0xffff_ffff_ffff_fffe))),
		CreateQWordField(mr64, Int(14), "MINL"),
		CreateDWordField(mr64, Int(18), "MINH"),
		CreateQWordField(mr64, Int(22), "MAXL"),
		CreateDWordField(mr64, Int(26), "MAXH"),
		CreateQWordField(mr64, Int(38), "LENL"),
		CreateDWordField(mr64, Int(42), "LENH"),
		Store(reg("MHBL"), Path("MINL")),
		Store(reg("MHBH"), Path("MINH")),
		Store(reg("MHLL"), Path("LENL")),
		Store(reg("MHLH"), Path("LENH")),
		Add(Path("MINL"), Path("LENL"), Path("MAXL")),
		Add(Path("MINH"), Path("LENH"), Path("MAXH")),
		If(LLess(Path("MAXL"), Path("MINL")), Add(Int(1), Path("MAXH"), Path("MAXH"))),
		Subtract(Path("MAXL"), Int(1), Path("MAXL")),
		Release("MLCK"),
		Return(mr64),
	}
	children := []Term{
		Name("_HID", EISAID("PNP0A06")),
		Name("_UID", String("Memory Hotplug Controller")),
		Mutex("MLCK", 0),
		Name("_CRS", ResourceTemplate(QWordMemory(NotCacheable, true, m.Base, m.Base+MemoryHotplugSize-1))),
		OperationRegion("MHPR", SystemMemory, Int(m.Base), Int(MemoryHotplugSize)),
		Field("MHPR", DWordAcc, false, Preserve,
			FieldUnit{"MHBL", 32}, FieldUnit{"MHBH", 32}, FieldUnit{"MHLL", 32}, FieldUnit{"MHLH", 32}),
		Field("MHPR", DWordAcc, false, Preserve, FieldUnit{"", 128}, FieldUnit{"MHPX", 32}),
		Field("MHPR", ByteAcc, false, WriteAsZeros,
			FieldUnit{"", 160}, FieldUnit{"MEN_", 1}, FieldUnit{"MINS", 1}, FieldUnit{"MRMV", 1}, FieldUnit{"MEJ0", 1}),
		Field("MHPR", DWordAcc, false, Preserve, FieldUnit{"MSEL", 32}, FieldUnit{"MOEV", 32}, FieldUnit{"MOSC", 32}),
		Method("MTFY", 2, true, mtfy...),
		Method("MSCN", 0, true, mscn...),
		Method("MSTA", 1, true, msta...),
		Method("MCRS", 1, true, mcrs...),
	}
	for i := 0; i < m.Slots; i++ {
		n := Int(uint64(i))
		children = append(children, Device(slot(i),
			Name("_HID", EISAID("PNP0C80")),
			Name("_UID", n),
			Method("_STA", 0, false, Return(Call("MSTA", n))),
			Method("_CRS", 0, false, Return(Call("MCRS", n))),
		))
	}
	return Device("_SB_.MHPC", children...), nil
}
