package legacy

import (
	"sync"
	"time"

	"github.com/nimbus-vmm/nimbus/internal/devices"
)

// CMOS register indexes (MC146818 RTC plus the PC CMOS memory map).
const (
	cmosSeconds   = 0x00
	cmosMinutes   = 0x02
	cmosHours     = 0x04
	cmosWeekday   = 0x06
	cmosDay       = 0x07
	cmosMonth     = 0x08
	cmosYear      = 0x09
	cmosRegA      = 0x0a
	cmosRegB      = 0x0b
	cmosRegD      = 0x0d
	cmosShutdown  = 0x0f
	cmosCentury   = 0x32
	cmosExtMemLo  = 0x34 // memory 16 MiB..4 GiB in 64 KiB units (upstream)
	cmosExtMemHi  = 0x35
	cmosHighMem0  = 0x5b // memory above 4 GiB in 64 KiB units, 3 bytes
	cmosIndexMask = 0x7f // bit 7 of the index port is the NMI mask

	regBHour24 = 0x02 // register B: 24-hour mode
	regBBinary = 0x04 // register B: binary instead of BCD
	hourPM     = 0x80 // 12-hour mode PM flag in the hours register

	// The update-in-progress bit is held for the last 244 µs of each second
	// (8 cycles of the 32.768 kHz clock), as upstream computes it.
	uipHold = 8 * time.Second / 32768
)

// CMOS is the MC146818-compatible RTC and CMOS memory at 0x70 (index) and
// 0x71 (data). Time registers read the host's UTC wall clock.
//
// Upstream always answers in BCD, 24-hour, and leaves register B at 0.
// Here register B starts at 0x02 (24-hour, BCD), which yields the same
// bytes, and the guest may switch it to binary or 12-hour mode: time
// registers are then encoded as register B says, as on real hardware.
type CMOS struct {
	mu    sync.Mutex
	index uint8
	data  [128]byte
	exit  devices.ExitRequester
	now   func() time.Time
}

// NewCMOS returns a CMOS holding the memory sizes firmware reads:
// memBelow4G and memAbove4G are guest RAM bytes below and above the 32-bit
// hole. Writing 0 to register 0x8f (shutdown status, with NMI masked)
// requests a reset, as upstream does.
func NewCMOS(memBelow4G, memAbove4G uint64, exit devices.ExitRequester) *CMOS {
	c := &CMOS{exit: exit, now: time.Now}
	const unit = 64 << 10
	var ext uint64
	if memBelow4G > 16<<20 {
		ext = min(0xffff, (memBelow4G-16<<20)/unit)
	}
	c.data[cmosExtMemLo] = uint8(ext)
	c.data[cmosExtMemHi] = uint8(ext >> 8)
	high := min(0x00ff_ffff, memAbove4G/unit)
	c.data[cmosHighMem0] = uint8(high)
	c.data[cmosHighMem0+1] = uint8(high >> 8)
	c.data[cmosHighMem0+2] = uint8(high >> 16)
	c.data[cmosRegB] = regBHour24
	return c
}

// Write implements bus.Device.
func (c *CMOS) Write(base, offset uint64, data []byte) {
	if len(data) != 1 {
		return
	}
	v := data[0]
	c.mu.Lock()
	defer c.mu.Unlock()
	switch offset {
	case 0:
		c.index = v
	case 1:
		if c.index == 0x80|cmosShutdown && v == 0 {
			if c.exit != nil {
				c.exit.RequestExit(devices.ExitReset)
			}
			return
		}
		c.data[c.index&cmosIndexMask] = v
	}
}

// Read implements bus.Device.
func (c *CMOS) Read(base, offset uint64, data []byte) {
	if len(data) != 1 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	switch offset {
	case 0:
		data[0] = c.index
	case 1:
		data[0] = c.readData(c.index & cmosIndexMask)
	}
}

func (c *CMOS) readData(idx uint8) uint8 {
	switch idx {
	case cmosSeconds, cmosMinutes, cmosHours, cmosWeekday, cmosDay, cmosMonth, cmosYear, cmosCentury, cmosRegA:
	default:
		if idx == cmosRegD {
			return 0x80 // valid RAM and time: the battery is good
		}
		return c.data[idx]
	}
	now := c.now()
	t := now.UTC()
	switch idx {
	case cmosRegA:
		// Bit 5: 32.768 kHz time base; bit 7: update in progress.
		v := uint8(1 << 5)
		if time.Duration(t.Nanosecond()) >= time.Second-uipHold {
			v |= 1 << 7
		}
		return v
	case cmosSeconds:
		return c.encode(t.Second())
	case cmosMinutes:
		return c.encode(t.Minute())
	case cmosHours:
		h := t.Hour()
		if c.data[cmosRegB]&regBHour24 != 0 {
			return c.encode(h)
		}
		pm := uint8(0)
		if h >= 12 {
			pm = hourPM
		}
		if h%12 == 0 {
			return c.encode(12) | pm
		}
		return c.encode(h%12) | pm
	case cmosWeekday:
		return c.encode(int(t.Weekday()) + 1) // 1 = Sunday
	case cmosDay:
		return c.encode(t.Day())
	case cmosMonth:
		return c.encode(int(t.Month()))
	case cmosYear:
		return c.encode(t.Year() % 100)
	default: // cmosCentury
		return c.encode(t.Year() / 100)
	}
}

func (c *CMOS) encode(v int) uint8 {
	if c.data[cmosRegB]&regBBinary != 0 {
		return uint8(v)
	}
	return uint8(v/10<<4 | v%10)
}
