package legacy

import "github.com/nimbus-vmm/nimbus/internal/devices"

// I8042 emulates just enough of the PS/2 controller to reboot: it sits at
// 0x61 with length 4, so offset 0 is port B (0x61) and offset 3 is the
// command register (0x64).
type I8042 struct {
	exit devices.ExitRequester
}

// NewI8042 returns an i8042 that reports command 0xFE (pulse reset) to exit.
func NewI8042(exit devices.ExitRequester) *I8042 { return &I8042{exit: exit} }

// Read implements bus.Device. Port B reads 0x20 (bit 5, like kvmtool and
// upstream) so Linux's pit_calibrate_tsc() does not hang; the command port
// reads 0 (no data, input buffer empty).
func (d *I8042) Read(base, offset uint64, data []byte) {
	if len(data) != 1 {
		return
	}
	switch offset {
	case 0:
		data[0] = 0x20
	case 3:
		data[0] = 0
	}
}

// Write implements bus.Device: 0xFE written to 0x64 requests a reset.
func (d *I8042) Write(base, offset uint64, data []byte) {
	if len(data) == 1 && offset == 3 && data[0] == 0xfe && d.exit != nil {
		d.exit.RequestExit(devices.ExitReset)
	}
}
