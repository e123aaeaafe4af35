// Package devices holds the small contracts every emulated device model
// shares: how a device raises an interrupt and how it asks the VMM to end
// or restart the guest. Device models never call into the VMM directly; the
// VM assembly backs these interfaces with KVM (irqfd, KVM_IRQ_LINE) and with
// its event channel to the control loop.
package devices

// IRQ is an interrupt line a device can pulse. The VM backs it with an
// irqfd (edge) for legacy devices, as upstream's InterruptSourceGroup
// trigger does. Trigger must not block: it is called on vCPU threads with
// device locks held.
type IRQ interface {
	Trigger() error
}

// IRQFunc adapts a function to IRQ.
type IRQFunc func() error

// Trigger calls f.
func (f IRQFunc) Trigger() error { return f() }

// ExitReason says why the guest wants the VM to stop running.
type ExitReason int

const (
	// ExitReset is a guest-requested reboot (i8042 0xFE, ACPI reset register, CMOS 0x8F).
	ExitReset ExitReason = iota + 1
	// ExitPoweroff is a guest-requested shutdown (ACPI S5).
	ExitPoweroff
)

// String names the reason as upstream's log lines do.
func (r ExitReason) String() string {
	switch r {
	case ExitReset:
		return "reset"
	case ExitPoweroff:
		return "poweroff"
	}
	return "unknown"
}

// ExitRequester receives guest-initiated exit requests. RequestExit must
// not block (it runs on a vCPU thread); the VM typically does a
// non-blocking send on a buffered channel or writes an eventfd.
type ExitRequester interface {
	RequestExit(ExitReason)
}

// ExitFunc adapts a function to ExitRequester.
type ExitFunc func(ExitReason)

// RequestExit calls f.
func (f ExitFunc) RequestExit(r ExitReason) { f(r) }
