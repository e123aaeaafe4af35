package legacy

import (
	"io"
	"sync"
)

// DebugConsole is QEMU-style debugcon (upstream debug_console.rs): every
// byte written to its port goes to out. It is stateless; reads leave data
// untouched, as upstream. out must not block (console backends buffer).
type DebugConsole struct {
	mu  sync.Mutex
	out io.Writer
}

// NewDebugConsole returns a debug console writing to out (nil discards).
func NewDebugConsole(out io.Writer) *DebugConsole {
	if out == nil {
		out = io.Discard
	}
	return &DebugConsole{out: out}
}

// Read implements bus.Device.
func (d *DebugConsole) Read(base, offset uint64, data []byte) {}

// Write implements bus.Device.
func (d *DebugConsole) Write(base, offset uint64, data []byte) {
	d.mu.Lock()
	_, _ = d.out.Write(data) // output loss must not stall the guest
	d.mu.Unlock()
}

// FwDebug is the firmware debug port at 0x402 (upstream fwdebug.rs):
// reads return 0xe9 so firmware can detect it, 1-byte writes go to out.
type FwDebug struct {
	mu  sync.Mutex
	out io.Writer
}

// NewFwDebug returns the firmware debug port writing to out (nil discards).
func NewFwDebug(out io.Writer) *FwDebug {
	if out == nil {
		out = io.Discard
	}
	return &FwDebug{out: out}
}

// Read implements bus.Device.
func (d *FwDebug) Read(base, offset uint64, data []byte) {
	if len(data) == 1 {
		data[0] = 0xe9
	}
}

// Write implements bus.Device.
func (d *FwDebug) Write(base, offset uint64, data []byte) {
	if len(data) != 1 {
		return
	}
	d.mu.Lock()
	_, _ = d.out.Write(data)
	d.mu.Unlock()
}
