package vmm

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"reflect"
	"sync/atomic"
	"syscall"

	"github.com/nimbus-vmm/nimbus/internal/config"
	"github.com/nimbus-vmm/nimbus/internal/devices/console"
	"github.com/nimbus-vmm/nimbus/internal/events"
)

// Options configures a Controller.
type Options struct {
	// Factory builds machines at boot and reboot; nil means NoKVMFactory.
	Factory MachineFactory
	// Incoming makes the RAM of incoming migrations (vm.receive-migration);
	// nil refuses them as unsupported.
	Incoming IncomingFactory
	// Restorer builds machines from snapshots (vm.restore, --restore);
	// nil refuses restores as unsupported.
	Restorer RestoreFactory
	// Events receives lifecycle events; nil discards them.
	Events *events.Monitor
	// NoShutdown (--no-shutdown): a guest poweroff shuts the VM down but
	// keeps the VMM running.
	NoShutdown bool
	// Version and BuildVersion are vmm.ping's version and build_version.
	Version, BuildVersion string
	// Features is vmm.ping's features; nil means ["kvm"].
	Features []string
	// Logger; nil means slog.Default().
	Logger *slog.Logger
	// Confine restricts the process's file system access to the paths a
	// config names (internal/landlock), for a config with landlock_enable,
	// at create, restore and an incoming migration. Nil refuses
	// landlock_enable as unsupported.
	Confine func(*config.VmConfig) error
	// Signals delivers SIGTERM/SIGINT to the loop. Nil means Run subscribes
	// to the process's SIGTERM and SIGINT itself (tests inject a channel).
	Signals <-chan os.Signal
}

// StopReason says why Run returned.
type StopReason int

// Reasons for Run to return.
const (
	StopNone          StopReason = iota // Run has not returned
	StopVMMShutdown                     // vmm.shutdown request
	StopSignal                          // SIGTERM or SIGINT
	StopGuestPoweroff                   // the guest powered off (without NoShutdown)
	StopGuestFatal                      // a fatal guest error
	StopRebootFailed                    // a guest reset could not reboot the VM
	StopContext                         // Run's context ended
	StopMigrated                        // the VM was migrated away
)

// Controller is the VMM control loop: one goroutine (Run) owns the VM
// config, the Machine and the state, and runs every Request to completion
// in arrival order, replying exactly once. It implements Handler.
type Controller struct {
	opts     Options
	log      *slog.Logger
	requests chan Request  // unbuffered: a request is accepted only by the loop
	stopped  chan struct{} // closed when Run returns
	running  atomic.Bool
	reason   StopReason // written by Run before stopped is closed

	// Owned by the loop goroutine.
	cfg     *config.VmConfig
	files   []*os.File // fds adopted into cfg by cold add-net/add-device
	machine Machine
	state   State
	exits   chan MachineExit // the current machine's; nil without one
	// ejected is the current machine's Hotplugger.Ejected; nil without one.
	ejected   <-chan struct{}
	idCounter int // upstream's device_id_cnt: the next generated id's number
	// consoles are the serial and console backends for the next or
	// current machine (upstream's console_info); nil when none are open.
	consoles *console.Devices
	// migrating is the outgoing migration in progress, nil without one.
	migrating *outgoing
}

// New returns a Controller; start it with Run.
func New(opts Options) *Controller {
	if opts.Factory == nil {
		opts.Factory = NoKVMFactory
	}
	if opts.Features == nil {
		opts.Features = []string{"kvm"}
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Controller{
		opts:     opts,
		log:      log,
		requests: make(chan Request),
		stopped:  make(chan struct{}),
	}
}

// Do implements Handler: it submits cmd to the loop and waits for the
// reply. If ctx ends first Do returns ctx.Err(), but a command the loop
// has accepted still runs to completion. Fds carried by cmd belong to the
// controller from this call on: they are closed on every failure path,
// including when the command is never accepted.
func (c *Controller) Do(ctx context.Context, cmd Command) (any, error) {
	reply := make(chan Result, 1) // buffered: the loop never blocks on a gone caller
	select {
	case c.requests <- Request{Cmd: cmd, Reply: reply}:
	case <-ctx.Done():
		CloseFiles(commandFiles(cmd))
		return nil, ctx.Err()
	case <-c.stopped:
		CloseFiles(commandFiles(cmd))
		return nil, fmt.Errorf("%s: %w", cmd.Name(), ErrStopped)
	}
	select {
	case r := <-reply:
		return r.Value, r.Err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Reason says why Run returned (StopNone while it runs).
func (c *Controller) Reason() StopReason {
	select {
	case <-c.stopped:
		return c.reason
	default:
		return StopNone
	}
}

// Run is the control loop. It returns when the VMM should exit, with the
// VM deleted: nil after vmm.shutdown, a signal or a guest poweroff; an
// error wrapping ErrGuestFatal after a fatal guest error; the reboot error
// when a guest reset cannot reboot; ctx.Err() when ctx ends. Reason says
// which. Run may be called once.
func (c *Controller) Run(ctx context.Context) error {
	if !c.running.CompareAndSwap(false, true) {
		return errors.New("vmm: Controller.Run called twice")
	}
	defer close(c.stopped)
	sigs := c.opts.Signals
	if sigs == nil {
		ch := make(chan os.Signal, 1)
		signal.Notify(ch, syscall.SIGTERM, syscall.SIGINT)
		defer signal.Stop(ch)
		sigs = ch
	}
	for {
		select {
		case req := <-c.requests:
			value, err, exit := c.handle(req.Cmd)
			req.Reply <- Result{Value: value, Err: err}
			if exit {
				c.reason = StopVMMShutdown
				return nil
			}
		case sig := <-sigs:
			c.log.Info("VMM received signal, shutting down", "signal", sig)
			c.vmmShutdown()
			c.reason = StopSignal
			return nil
		case <-c.ejectedChan():
			c.releaseEjected()
		case ex := <-c.exitsChan():
			if stop, err := c.guestExit(ex); stop != StopNone {
				c.reason = stop
				return err
			}
		case res := <-c.migrationDone():
			if c.migrationFinished(res) {
				c.reason = StopMigrated
				return nil
			}
		case <-ctx.Done():
			c.vmmShutdown()
			c.reason = StopContext
			return ctx.Err()
		}
	}
}

// guestExit handles a guest-initiated exit like upstream's control loop
// (GuestExit, Reset and Exit events).
func (c *Controller) guestExit(ex MachineExit) (StopReason, error) {
	switch ex.Reason {
	case ExitPoweroff:
		c.log.Info("VM guest exit event")
		if c.opts.NoShutdown {
			if err := c.vmShutdown(); err != nil {
				c.log.Error("shutting the VM down after guest poweroff failed", "err", err)
			}
			return StopNone, nil
		}
		c.vmmShutdown()
		return StopGuestPoweroff, nil
	case ExitReset:
		c.log.Info("VM reset event")
		if err := c.vmReboot(); err != nil {
			c.log.Error("rebooting the VM after guest reset failed", "err", err)
			c.vmmShutdown()
			return StopRebootFailed, fmt.Errorf("Error rebooting VM: %w", err)
		}
		return StopNone, nil
	default:
		// Fatal (or unknown): never leave a broken guest running.
		c.log.Error("VM fatal error, shutting down", "reason", ex.Reason, "err", ex.Err)
		c.vmmShutdown()
		err := ex.Err
		if err == nil {
			err = fmt.Errorf("guest exit %v", ex.Reason)
		}
		return StopGuestFatal, fmt.Errorf("%w: %w", ErrGuestFatal, err)
	}
}

func (c *Controller) emit(source, event string) { c.opts.Events.Emit(source, event, nil) }

// normalize turns a *T command into T, so front ends may submit either.
func normalize(cmd Command) Command {
	rv := reflect.ValueOf(cmd)
	if rv.Kind() == reflect.Pointer && !rv.IsNil() {
		if v, ok := rv.Elem().Interface().(Command); ok {
			return v
		}
	}
	return cmd
}

// commandFiles lists the fds a command carries.
func commandFiles(cmd Command) []*os.File {
	switch v := normalize(cmd).(type) {
	case AddNet:
		return v.Fds
	case AddDevice:
		return v.Fds
	case Restore:
		return v.Fds
	case ReceiveMigration:
		return v.Fds
	}
	return nil
}

// CloseFiles closes every non-nil file: the fds that came with an API
// request and that nobody took ownership of.
func CloseFiles(fs []*os.File) {
	for _, f := range fs {
		if f != nil {
			f.Close()
		}
	}
}
