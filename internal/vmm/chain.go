package vmm

import (
	"errors"
	"fmt"
)

// More error categories the control loop uses; all map to 500 in the API.
var (
	// ErrStopped: the control loop has returned, so nothing can run the command.
	ErrStopped = errors.New("the VMM control loop has stopped")
	// ErrGuestFatal: the guest hit a fatal error and the VMM stopped (Run's error).
	ErrGuestFatal = errors.New("guest fatal error")
	// ErrTooManyVsock: vm.add-vsock when a vsock device exists (upstream TooManyVsockDevices).
	ErrTooManyVsock = errors.New("Too many virtio-vsock devices")
	// ErrResizeZone: cold vm.resize-zone of an unknown zone (upstream VmError::ResizeZone).
	ErrResizeZone = errors.New("Failed resizing a memory zone")
	// ErrResizeDisk: vm.resize-disk on a VM that is not booted (upstream VmError::ResizeDisk).
	ErrResizeDisk = errors.New("Failed resizing a disk image")
	// ErrCreateConsoleDevices: the serial or console backend could not be
	// made at create, boot or reboot (upstream VmError::CreateConsoleDevices).
	ErrCreateConsoleDevices = errors.New("Error creating console devices")
	// ErrApplyLandlock: landlock_enable could not be applied at create,
	// restore or an incoming migration (upstream VmError::ApplyLandlock).
	ErrApplyLandlock = errors.New("Failed to apply landlock config during vm_create")
)

// leafError is a last chain entry whose text is upstream's exact Display
// but which still classifies as a sentinel for the API's status mapping.
// It has no Unwrap, so the rendered chain ends with its text.
type leafError struct {
	msg      string
	category error
}

func (e *leafError) Error() string        { return e.msg }
func (e *leafError) Is(target error) bool { return target == e.category }

// causeError is a chain level whose text is a sentinel's, classifying as
// it, with the cause below it: "<category>: <cause>".
type causeError struct{ category, err error }

func (e *causeError) Error() string        { return e.category.Error() + ": " + e.err.Error() }
func (e *causeError) Unwrap() error        { return e.err }
func (e *causeError) Is(target error) bool { return target == e.category }

func leaf(category error, format string, args ...any) error {
	return &leafError{msg: fmt.Sprintf(format, args...), category: category}
}

// StateTransitionError is upstream's VmError::InvalidStateTransition:
// "invalid VM state transition: A to B". It matches ErrInvalidState.
type StateTransitionError struct{ From, To State }

func (e *StateTransitionError) Error() string {
	return fmt.Sprintf("invalid VM state transition: %s to %s", e.From, e.To)
}

// Is classifies the error as ErrInvalidState.
func (e *StateTransitionError) Is(target error) bool { return target == ErrInvalidState }

// validTransition is upstream's VmState::valid_transition (vmm/src/vm.rs).
func validTransition(from, to State) error {
	ok := false
	switch from {
	case StateCreated:
		ok = to == StateRunning || to == StatePaused || to == StateBreakPoint || to == StateShutdown
	case StateRunning:
		ok = to == StatePaused || to == StateShutdown || to == StateBreakPoint
	case StateShutdown:
		ok = to == StateRunning
	case StatePaused:
		ok = to == StateRunning || to == StateShutdown
	case StateBreakPoint:
		ok = to == StateCreated || to == StateRunning
	}
	if !ok {
		return &StateTransitionError{From: from, To: to}
	}
	return nil
}

// migratableTransition renders a refused transition the way Vm::pause and
// Vm::resume do: anyhow!("Invalid transition: {:?}", e), a leaf matching
// ErrInvalidState.
func migratableTransition(err error) error {
	var te *StateTransitionError
	if errors.As(err, &te) {
		return leaf(ErrInvalidState, "Invalid transition: InvalidStateTransition(%s, %s)", te.From, te.To)
	}
	return err
}

// DeviceManagerError puts a machine's hotplug failure under upstream's
// "Error from device manager" chain level (ErrDeviceManager, 500).
func DeviceManagerError(err error) error { return &causeError{category: ErrDeviceManager, err: err} }

// DeviceManagerLeaf is a device manager failure with upstream's exact
// text as the chain's last entry, classified as category (e.g. ErrNotFound
// for an unknown id, 404).
func DeviceManagerLeaf(category error, format string, args ...any) error {
	return DeviceManagerError(leaf(category, format, args...))
}

// ErrMemoryManager is upstream's "Memory manager error" chain level
// (vm::Error::MemoryManager, 500).
var ErrMemoryManager = errors.New("Memory manager error")

// MemoryManagerError puts a memory hotplug failure under upstream's
// "Memory manager error" level.
func MemoryManagerError(err error) error { return &causeError{category: ErrMemoryManager, err: err} }

// MemoryManagerLeaf is a memory manager failure with upstream's exact
// text as the chain's last entry (500, as every memory resize failure).
func MemoryManagerLeaf(format string, args ...any) error {
	return MemoryManagerError(leaf(ErrMemoryManager, format, args...))
}

// ErrCPUManager is upstream's "Error from CPU manager" chain level.
var ErrCPUManager = errors.New("Error from CPU manager")

// CPUManagerError puts a vCPU hotplug failure under upstream's "Error from
// CPU manager" level (500 unless the cause says otherwise).
func CPUManagerError(err error) error { return &causeError{category: ErrCPUManager, err: err} }

// CPUManagerLeaf is a CPU manager failure with upstream's exact text,
// classified as category (ErrBusy: 429 while a removal is pending).
func CPUManagerLeaf(category error, format string, args ...any) error {
	return CPUManagerError(leaf(category, format, args...))
}
