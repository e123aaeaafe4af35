package console

import (
	"errors"

	"github.com/nimbus-vmm/nimbus/internal/config"
)

// ErrNoSocketConsole is upstream's NoSocketOptionSupportForConsoleDevice:
// the virtio console has no Socket mode (the serial port has).
var ErrNoSocketConsole = errors.New("No socket option support for console device")

// ErrCreate is upstream's ConsoleDeviceError::CreateConsoleDevice: a
// backend's file, socket or pty could not be made.
var ErrCreate = errors.New("Error creating console device")

// Devices are the host ends of a VM's serial port and virtio console,
// made when the VM is created, as upstream's pre_create_console_devices
// (vmm/src/console_devices.rs): from then on a Pty's path is in the
// config (libvirt reads console.file right after vm.create), a File
// exists and a Socket listens. The control loop owns them and makes a new
// set for each machine (boot, reboot); a machine only uses them.
type Devices struct {
	Serial  Backend // nil: serial Off
	Console Backend // nil: console Off
	Debug   Backend // nil: debug console Off (x86 port 0xe9)
}

// OpenDevices makes the backends cfg's serial and console sections ask
// for and writes allocated pty paths into cfg. A section whose mode lacks
// its path (File without file, Socket without socket) is skipped: the
// config's validation at boot names it.
func OpenDevices(cfg *config.VmConfig) (*Devices, error) {
	if cfg.Console.Mode == config.ConsoleSocket || cfg.DebugConsole.Mode == config.ConsoleSocket {
		return nil, ErrNoSocketConsole
	}
	d := &Devices{}
	serialPath := cfg.Serial.File
	if cfg.Serial.Mode == config.ConsoleSocket {
		serialPath = cfg.Serial.Socket
	}
	var err error
	// Upstream's chain names no section; the cause names the path.
	if d.Serial, err = open(cfg.Serial.Mode, serialPath, &cfg.Serial.File); err != nil {
		return nil, err
	}
	if d.Console, err = open(cfg.Console.Mode, cfg.Console.File, &cfg.Console.File); err != nil {
		d.Close()
		return nil, err
	}
	if d.Debug, err = open(cfg.DebugConsole.Mode, cfg.DebugConsole.File, &cfg.DebugConsole.File); err != nil {
		d.Close()
		return nil, err
	}
	return d, nil
}

// open is Open for one section; a pty's path goes to *ptyPath.
func open(mode config.ConsoleOutputMode, path string, ptyPath *string) (Backend, error) {
	if path == "" && (mode == config.ConsoleFile || mode == config.ConsoleSocket) {
		return nil, nil
	}
	b, err := Open(Options{Mode: Mode(mode), Path: path})
	if err != nil {
		return nil, &createError{err}
	}
	if b != nil && b.Path() != "" {
		*ptyPath = b.Path()
	}
	return b, nil
}

// createError is ErrCreate caused by err, one level of the error chain
// ("Error creating console device: <cause>").
type createError struct{ err error }

func (e *createError) Error() string        { return ErrCreate.Error() + ": " + e.err.Error() }
func (e *createError) Unwrap() error        { return e.err }
func (e *createError) Is(target error) bool { return target == ErrCreate }

// Close closes every backend; Devices may be nil.
func (d *Devices) Close() error {
	if d == nil {
		return nil
	}
	var errs []error
	for _, b := range []Backend{d.Serial, d.Console, d.Debug} {
		if b != nil {
			errs = append(errs, b.Close())
		}
	}
	d.Serial, d.Console, d.Debug = nil, nil, nil
	return errors.Join(errs...)
}
