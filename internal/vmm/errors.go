package vmm

import (
	"errors"

	"github.com/nimbus-vmm/nimbus/internal/config"
)

// Sentinel error categories. Every error the control loop returns wraps
// one of these (fmt.Errorf("...: %w")), and internal/api maps the category
// to an HTTP status in one place:
//
//	ErrNotCreated, ErrMissingConfig, ErrNotFound -> 404
//	ErrConflict                                  -> 409
//	ErrBadConfig                                 -> 400
//	ErrBusy                                      -> 429
//	everything else                              -> 500
//
// Where upstream has a VmError for the case, the sentinel's text is its
// Display text, so the rendered error chain reads like Cloud Hypervisor's.
var (
	// ErrNotCreated: no VM configuration exists.
	ErrNotCreated = errors.New("VM is not created")
	// ErrMissingConfig: boot without a configuration.
	ErrMissingConfig = errors.New("VM config is missing")
	// ErrAlreadyCreated: create, boot or restore when a config or VM already exists.
	ErrAlreadyCreated = errors.New("VM is already created")
	// ErrNotRunning: the operation needs a booted VM.
	ErrNotRunning = errors.New("VM is not running")
	// ErrInvalidState: a transition upstream's state machine refuses.
	ErrInvalidState = errors.New("invalid VM state transition")
	// ErrBadConfig: validation failed (400 class). Same value as config.ErrInvalid.
	ErrBadConfig = config.ErrInvalid
	// ErrConflict: a duplicate device id or path (409 class). Same value as config.ErrDuplicate.
	ErrConflict = config.ErrDuplicate
	// ErrNotFound: an unknown device, disk or zone id.
	ErrNotFound = errors.New("no such device")
	// ErrBusy: retry later (upstream's 429 while a vCPU removal is pending).
	ErrBusy = errors.New("operation pending, retry later")
	// ErrDeviceManager: the machine's device manager failed a hotplug
	// (upstream's Error::DeviceManager, 500).
	ErrDeviceManager = errors.New("Error from device manager")
	// ErrMigrating: the VM is being migrated (upstream's VmMigrating, 500).
	ErrMigrating = errors.New("VM is currently migrating and can't be modified")
	// ErrUnsupported: Nimbus does not implement this yet.
	ErrUnsupported = errors.New("not supported")
)
