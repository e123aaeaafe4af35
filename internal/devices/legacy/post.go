package legacy

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// PostCode is one byte the guest wrote to the POST port, with the time
// since the VM started.
type PostCode struct {
	Code  uint8
	Since time.Duration
}

// Range names upstream's code ranges (debug_port.rs): firmware 0x00-0x1f,
// bootloader 0x20-0x3f, kernel 0x40-0x5f, userspace 0x60-0x7f, custom
// above. The boot benchmark uses the kernel's 0x40/0x41 markers.
func (p PostCode) Range() string {
	switch {
	case p.Code < 0x20:
		return "Firmware"
	case p.Code < 0x40:
		return "Bootloader"
	case p.Code < 0x60:
		return "Kernel"
	case p.Code < 0x80:
		return "Userspace"
	}
	return "Custom"
}

// String renders the code like upstream's log line.
func (p PostCode) String() string {
	us := p.Since.Microseconds()
	return fmt.Sprintf("[Debug I/O port: %s code 0x%x] %d.%06d seconds", p.Range(), p.Code, us/1e6, us%1e6)
}

// MaxPostCodes bounds the recorded history so a chatty guest cannot grow
// host memory without limit; later codes are counted but not kept.
const MaxPostCodes = 4096

// PostPort is the debug/POST port at 0x80. It timestamps each code relative
// to the start time given at construction (the VM's start).
type PostPort struct {
	start time.Time
	log   *slog.Logger
	now   func() time.Time

	mu      sync.Mutex
	codes   []PostCode
	dropped uint64
}

// NewPostPort returns a POST port timing codes from start. log may be nil
// for slog.Default(); codes are logged at debug level.
func NewPostPort(start time.Time, log *slog.Logger) *PostPort {
	if log == nil {
		log = slog.Default()
	}
	return &PostPort{start: start, log: log, now: time.Now}
}

// Read implements bus.Device; the port is write-only and reads leave data
// untouched, as upstream.
func (p *PostPort) Read(base, offset uint64, data []byte) {}

// Write implements bus.Device: records data[0].
func (p *PostPort) Write(base, offset uint64, data []byte) {
	if len(data) == 0 {
		return
	}
	pc := PostCode{Code: data[0], Since: p.now().Sub(p.start)}
	p.mu.Lock()
	if len(p.codes) < MaxPostCodes {
		p.codes = append(p.codes, pc)
	} else {
		p.dropped++
	}
	p.mu.Unlock()
	if p.log.Enabled(context.Background(), slog.LevelDebug) {
		p.log.Debug(pc.String())
	}
}

// Codes returns a copy of the recorded codes in arrival order.
func (p *PostPort) Codes() []PostCode {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]PostCode(nil), p.codes...)
}

// First returns when code was first written.
func (p *PostPort) First(code uint8) (time.Duration, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.codes {
		if c.Code == code {
			return c.Since, true
		}
	}
	return 0, false
}

// Dropped reports codes not kept because MaxPostCodes was reached.
func (p *PostPort) Dropped() uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.dropped
}
