// Package legacy emulates the small x86 platform devices Cloud Hypervisor
// puts on the I/O-port bus: the i8042 reset line, the CMOS/RTC, the ACPI
// shutdown/reset and PM timer registers, the POST code port, the debug
// console and the firmware debug port. Register behaviour follows upstream
// devices/src/legacy/{i8042,cmos,debug_port,fwdebug}.rs,
// devices/src/acpi.rs and devices/src/debug_console.rs.
//
// Every type implements bus.Device. Guest-initiated resets and poweroffs
// go out through devices.ExitRequester; nothing here calls the VMM.
package legacy

// Port placement on the I/O bus (upstream device_manager.rs).
const (
	I8042Base        = 0x61 // covers port B (0x61) and the command port (0x64)
	I8042Len         = 4
	CMOSBase         = 0x70
	CMOSLen          = 2
	POSTPort         = 0x80
	POSTLen          = 1
	DebugConsoleBase = 0xe9 // default --debug-console iobase
	DebugConsoleLen  = 1
	FwDebugPort      = 0x402
	FwDebugLen       = 1
	ACPIShutdownBase = 0x600 // FADT sleep control/status and reset register
	ACPIShutdownLen  = 4     // upstream reserves 8 ports but maps 4 on the bus
	PMTimerBase      = 0x608 // FADT PM_TMR_BLK
	PMTimerLen       = 4
)
