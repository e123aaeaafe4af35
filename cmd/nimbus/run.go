package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/nimbus-vmm/nimbus/internal/api"
	"github.com/nimbus-vmm/nimbus/internal/cli"
	"github.com/nimbus-vmm/nimbus/internal/config"
	"github.com/nimbus-vmm/nimbus/internal/events"
	"github.com/nimbus-vmm/nimbus/internal/landlock"
	"github.com/nimbus-vmm/nimbus/internal/seccomp"
	"github.com/nimbus-vmm/nimbus/internal/vm"
	"github.com/nimbus-vmm/nimbus/internal/vmm"
)

// apiShutdownTimeout bounds how long the exit waits for in-flight API
// requests (the one that asked for vmm.shutdown must get its reply).
const apiShutdownTimeout = 5 * time.Second

// runVMM is the cli.Runner: upstream's start_vmm. It returns once the
// control loop has stopped and everything it started is stopped and
// cleaned up (API socket and lock file removed, event file flushed).
func runVMM(o *cli.Options) error {
	// Before anything serves or runs a guest, as upstream's threads apply
	// their filters when they start; vCPU threads add their own.
	mode, err := seccomp.ParseMode(o.Seccomp)
	if err == nil {
		err = seccomp.InstallProcess(mode)
	}
	if err != nil {
		return &cli.StepError{Msg: "Error applying seccomp filter", Err: err}
	}

	// Subscribed before anything else so a SIGTERM during start-up is
	// handled by the control loop, never by the default action.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)

	logger, closeLog, err := newLogger(o)
	if err != nil {
		return &cli.StepError{Msg: "Error creating log file", Err: err}
	}
	defer closeLog()

	mon, closeMon, err := newEventMonitor(o, logger)
	if err != nil {
		return &cli.StepError{Msg: "Error doing event monitor I/O", Err: err}
	}
	defer closeMon()
	mon.Emit("vmm", "starting", nil)

	listener, err := openAPISocket(o)
	if err != nil {
		return &cli.StepError{Msg: "Failed to start the VMM thread", Err: err}
	}

	ctrl := vmm.New(vmm.Options{
		Factory:      machineFactory(logger),
		Restorer:     vm.RestoreFactory(logger),
		Incoming:     vm.IncomingFactory(logger),
		Events:       mon,
		NoShutdown:   o.NoShutdown,
		Version:      versionNumber(),
		BuildVersion: cli.Version,
		Logger:       logger,
		Signals:      sigs,
		Confine: func(cfg *config.VmConfig) error {
			abi, err := landlock.Apply(cfg)
			if err == nil {
				logger.Info("Landlock applied", "abi", abi)
			}
			return err
		},
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	runDone := make(chan error, 1)
	go func() { runDone <- ctrl.Run(ctx) }()

	var srv *api.Server
	serveDone := make(chan error, 1)
	if listener != nil {
		srv = api.New(ctrl, api.Options{
			Events: api.Events[events.Event](mon),
			Logf:   func(format string, args ...any) { logger.Info(fmt.Sprintf(format, args...)) },
		})
		go func() { serveDone <- srv.Serve(listener) }()
	}

	startErr := startVM(ctx, ctrl, o)
	if startErr != nil {
		if errors.Is(startErr, vmm.ErrStopped) {
			// The loop stopped first (a signal during boot): its
			// reason decides the exit, not the refused request.
			startErr = nil
		} else {
			logger.Error("Fatal error", "err", startErr)
			cancel() // upstream writes exit_evt: vmm_shutdown, then exit 1
		}
	}
	runErr := <-runDone
	logger.Info("VMM control loop stopped", "reason", ctrl.Reason())

	if srv != nil {
		sctx, scancel := context.WithTimeout(context.Background(), apiShutdownTimeout)
		if err := srv.Shutdown(sctx); err != nil {
			logger.Warn("API server did not stop in time; closing it", "err", err)
			srv.Close()
		}
		scancel()
		if err := <-serveDone; err != nil {
			logger.Warn("API server", "err", err)
		}
		// Serve's Shutdown closed it already; Close is idempotent and
		// removes the socket and its lock file for a path socket.
		listener.Close()
	}

	switch {
	case startErr != nil:
		return startErr
	case runErr != nil:
		return &cli.StepError{Msg: "VMM thread exited with error", Err: runErr}
	}
	return nil
}

// startVM sends what the command line asks for through the same internal
// API as REST: a payload means create then boot; otherwise --restore
// means restore; otherwise the VMM only serves the API.
func startVM(ctx context.Context, ctrl *vmm.Controller, o *cli.Options) error {
	switch {
	case o.VM != nil:
		if _, err := ctrl.Do(ctx, vmm.CreateVM{Config: o.VM}); err != nil {
			return &cli.StepError{Msg: "Error creating VM", Err: err}
		}
		if _, err := ctrl.Do(ctx, vmm.BootVM{}); err != nil {
			return &cli.StepError{Msg: "Error booting VM", Err: err}
		}
	case o.Restore != nil:
		if _, err := ctrl.Do(ctx, vmm.Restore{Config: *o.Restore, Fds: restoreFiles(o.Restore)}); err != nil {
			return &cli.StepError{Msg: "Error restoring VM", Err: err}
		}
	}
	return nil
}

// restoreFiles adopts the inherited fds that --restore names
// (net_fds=[net0@[3,4]], vfio_fds=[vfio0@5], iommufd_fd=6), in the order
// the control loop expects: net, vfio, iommufd.
func restoreFiles(rc *config.RestoreConfig) []*os.File {
	var nums []int32
	for _, n := range rc.NetFds {
		nums = append(nums, n.Fds...)
	}
	for _, v := range rc.VfioFds {
		if v.Fd != nil {
			nums = append(nums, *v.Fd)
		}
	}
	if rc.IommufdFd != nil {
		nums = append(nums, *rc.IommufdFd)
	}
	files := make([]*os.File, 0, len(nums))
	for _, n := range nums {
		files = append(files, os.NewFile(uintptr(n), fmt.Sprintf("restore-fd-%d", n)))
	}
	return files
}

// newLogger logs with log/slog at upstream's -v levels: none warn, -v
// info, -vv debug, more is trace, which slog does not have (debug). Logs
// go to stderr or, with --log-file, to that file (created or truncated).
// --log-format is accepted for compatibility; slog's text format is used.
func newLogger(o *cli.Options) (*slog.Logger, func(), error) {
	level := slog.LevelWarn
	switch {
	case o.Verbosity >= 2:
		level = slog.LevelDebug
	case o.Verbosity == 1:
		level = slog.LevelInfo
	}
	var w io.Writer = os.Stderr
	closeFn := func() {}
	if o.LogFile != "" {
		f, err := os.Create(o.LogFile)
		if err != nil {
			return nil, nil, err
		}
		w, closeFn = f, func() { f.Close() }
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level})), closeFn, nil
}

// newEventMonitor opens --event-monitor path=|fd=. Without the option the
// monitor still feeds the API's event stream. The returned func flushes
// the events and closes the file.
func newEventMonitor(o *cli.Options, logger *slog.Logger) (*events.Monitor, func(), error) {
	var f *os.File
	var err error
	switch {
	case o.EventMonitorFD != nil:
		f, err = events.OpenFd(*o.EventMonitorFD)
	case o.EventMonitorPath != "":
		f, err = events.OpenPath(o.EventMonitorPath)
	}
	if err != nil {
		return nil, nil, err
	}
	var sink io.Writer
	if f != nil {
		sink = f
	}
	mon := events.New(sink, events.WithLogger(logger))
	return mon, func() {
		mon.Close()
		if f != nil {
			f.Close()
		}
	}, nil
}

// socketInUse is upstream's ApiSocketInUse text; it still matches
// api.ErrSocketInUse.
type socketInUse struct{ path string }

func (e *socketInUse) Error() string {
	return fmt.Sprintf("API socket %q is already in use by another running instance", e.path)
}

func (e *socketInUse) Is(target error) bool { return target == api.ErrSocketInUse }

// openAPISocket binds --api-socket. Like upstream, no option means no API
// socket at all (nil listener, no error).
func openAPISocket(o *cli.Options) (net.Listener, error) {
	switch {
	case o.APISocketFD != nil:
		l, err := api.ListenFD(*o.APISocketFD)
		if err != nil {
			return nil, err // not a typed nil in the interface
		}
		return l, nil
	case o.APISocketPath != "":
		l, err := api.Listen(o.APISocketPath)
		if errors.Is(err, api.ErrSocketInUse) {
			return nil, &socketInUse{o.APISocketPath}
		}
		if err != nil {
			return nil, err
		}
		return l, nil
	}
	return nil, nil
}

// versionNumber is vmm.ping's "version": the release without the "v".
func versionNumber() string {
	v := cli.Version
	if len(v) > 0 && v[0] == 'v' {
		return v[1:]
	}
	return v
}
