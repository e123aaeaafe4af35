package legacy

import (
	"encoding/binary"
	"math/bits"
	"time"

	"github.com/nimbus-vmm/nimbus/internal/devices"
)

// ACPI sleep control values (upstream acpi.rs AcpiShutdownDevice): the DSDT
// declares S5 as SLP_TYP 5; SLP_TYP sits in bits 2-4 and SLP_EN is bit 5,
// so an S5 request is the byte 0x34. The FADT reset register takes 1.
const (
	acpiResetValue = 1
	acpiS5Value    = 5<<2 | 1<<5
)

// ACPIShutdown is the sleep control/status and reset register block at
// 0x600 that the FADT points at.
type ACPIShutdown struct {
	exit devices.ExitRequester
}

// NewACPIShutdown returns the device; S5 requests a poweroff and the reset
// value requests a reset.
func NewACPIShutdown(exit devices.ExitRequester) *ACPIShutdown {
	return &ACPIShutdown{exit: exit}
}

// Read implements bus.Device: the spec has all fields read as zero.
func (d *ACPIShutdown) Read(base, offset uint64, data []byte) { clear(data) }

// Write implements bus.Device. Like upstream, only the first byte counts
// and the offset is ignored.
func (d *ACPIShutdown) Write(base, offset uint64, data []byte) {
	if len(data) == 0 || d.exit == nil {
		return
	}
	switch data[0] {
	case acpiResetValue:
		d.exit.RequestExit(devices.ExitReset)
	case acpiS5Value:
		d.exit.RequestExit(devices.ExitPoweroff)
	}
}

// PMTimerHz is the ACPI power management timer frequency.
const PMTimerHz = 3_579_545

// PMTimer is the ACPI PM timer at 0x608: a free-running counter at
// 3.579545 MHz derived from Go's monotonic clock. Upstream returns all 32
// bits (NewPMTimer); NewPMTimer24 masks to 24 bits for a FADT that leaves
// TMR_VAL_EXT clear.
type PMTimer struct {
	start time.Time
	mask  uint32
	now   func() time.Time
}

// NewPMTimer returns a 32-bit PM timer counting from now.
func NewPMTimer() *PMTimer { return &PMTimer{start: time.Now(), mask: 0xffff_ffff, now: time.Now} }

// NewPMTimer24 returns a 24-bit PM timer counting from now.
func NewPMTimer24() *PMTimer {
	t := NewPMTimer()
	t.mask = 0x00ff_ffff
	return t
}

// Count is the current counter value.
func (t *PMTimer) Count() uint32 {
	ns := uint64(t.now().Sub(t.start))
	// ns * Hz overflows 64 bits after ~85 minutes; use a 128-bit product.
	hi, lo := bits.Mul64(ns, PMTimerHz)
	ticks, _ := bits.Div64(hi%1_000_000_000, lo, 1_000_000_000)
	return uint32(ticks) & t.mask
}

// Read implements bus.Device. Only 4-byte reads are answered, as upstream.
func (t *PMTimer) Read(base, offset uint64, data []byte) {
	if len(data) != 4 {
		return
	}
	binary.LittleEndian.PutUint32(data, t.Count())
}

// Write implements bus.Device: the timer is read-only.
func (t *PMTimer) Write(base, offset uint64, data []byte) {}
