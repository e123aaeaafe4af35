package vmm

import (
	"fmt"
	"os"

	"github.com/nimbus-vmm/nimbus/internal/config"
	"github.com/nimbus-vmm/nimbus/internal/devices/console"
)

// handle runs one command on the loop goroutine. exit reports that the
// loop must stop after replying (vmm.shutdown). Every error is a chain
// headed by upstream's ApiError text for the endpoint.
func (c *Controller) handle(cmd Command) (value any, err error, exit bool) {
	if c.migrating != nil {
		if v, err, done := c.whileMigrating(cmd); done {
			return v, err, false
		}
	}
	switch v := normalize(cmd).(type) {
	case Ping:
		return &PingResponse{
			BuildVersion: c.opts.BuildVersion,
			Version:      c.opts.Version,
			Pid:          int64(os.Getpid()),
			Features:     append([]string(nil), c.opts.Features...),
		}, nil, false
	case ShutdownVMM:
		if err := c.vmDelete(); err != nil {
			c.log.Error("deleting the VM during vmm.shutdown failed", "err", err)
			c.dropMachine()
			c.emit("vmm", "shutdown")
			return nil, fmt.Errorf("The VMM could not shutdown: %w", err), true
		}
		c.emit("vmm", "shutdown")
		return nil, nil, true
	case CreateVM:
		return nil, wrap("The VM could not be created", c.vmCreate(v.Config)), false
	case BootVM:
		return nil, wrap("The VM could not boot", c.vmBoot()), false
	case DeleteVM:
		return nil, wrap("The VM could not be deleted", c.vmDelete()), false
	case ShutdownVM:
		return nil, wrap("The VM could not shutdown", c.vmShutdown()), false
	case RebootVM:
		return nil, wrap("The VM could not reboot", c.vmReboot()), false
	case PauseVM:
		return nil, wrap("The VM could not be paused", c.vmPause()), false
	case ResumeVM:
		return nil, wrap("The VM could not resume", c.vmResume()), false
	case PowerButton:
		return nil, wrap("Error triggering power button", c.withMachine(Machine.PowerButton)), false
	case NMI:
		return nil, wrap("Error triggering NMI", c.withMachine(Machine.NMI)), false
	case Info:
		info, err := c.vmInfo()
		if err != nil {
			return nil, wrap("The VM info is not available", err), false
		}
		return info, nil, false
	case GetCounters:
		if c.machine == nil {
			return nil, wrap("The VM info is not available", ErrNotRunning), false
		}
		// A booted VM always answers 200 with a JSON object, "{}" when no
		// device keeps counters (upstream serializes an empty map).
		ctrs := c.machine.Counters()
		if ctrs == nil {
			ctrs = Counters{}
		}
		return ctrs, nil, false
	case Snapshot:
		return nil, wrap("The VM could not be snapshotted", c.vmSnapshot(v.DestinationURL)), false
	case Coredump:
		if c.machine == nil {
			return nil, wrap("The VM could not be coredumped", ErrNotRunning), false
		}
		return nil, wrap("The VM could not be coredumped", fmt.Errorf("coredump: %w", ErrUnsupported)), false
	case Restore:
		return nil, wrap("The VM could not be restored", c.vmRestore(v)), false
	case ReceiveMigration:
		return nil, wrap("Error receiving migration", c.vmReceiveMigration(v)), false
	case SendMigration:
		return nil, wrap("Error dispatching the migration worker", c.vmSendMigration(v.Config)), false
	default:
		if r, e, ok := c.handleDevice(v); ok {
			return r, e, false
		}
		CloseFiles(commandFiles(cmd))
		return nil, fmt.Errorf("unknown command %q: %w", cmd.Name(), ErrUnsupported), false
	}
}

// restoreFdCount is how many fds a restore must carry, as upstream's
// VmRestore handler counts them: every net_fds entry's num_fds, one per
// vfio_fds entry, and one for iommufd_fd.
func restoreFdCount(rc *config.RestoreConfig) int {
	n := 0
	for _, nf := range rc.NetFds {
		n += int(nf.NumFds)
	}
	n += len(rc.VfioFds)
	if rc.IommufdFd != nil {
		n++
	}
	return n
}

func wrap(apiText string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%s: %w", apiText, err)
}

func (c *Controller) withMachine(f func(Machine) error) error {
	if c.machine == nil {
		return ErrNotRunning
	}
	return f(c.machine)
}

func (c *Controller) vmCreate(cfg *config.VmConfig) error {
	if c.cfg != nil {
		return ErrAlreadyCreated
	}
	if cfg == nil {
		return leaf(ErrBadConfig, "no VM config given")
	}
	// Stored as sent: validation happens at boot, as upstream.
	stored, err := cloneConfig(cfg)
	if err != nil {
		return err
	}
	c.cfg = stored
	// Upstream stores the config first, so even when the consoles or
	// Landlock fail the VM counts as created.
	if err := c.openConsoles(); err != nil {
		return err
	}
	return c.confine(stored)
}

// confine applies Landlock for a config that asks for it, after the
// console backends are open (upstream's vm_create order).
func (c *Controller) confine(cfg *config.VmConfig) error {
	switch {
	case !cfg.LandlockEnable:
		return nil
	case c.opts.Confine == nil:
		return &causeError{ErrApplyLandlock, fmt.Errorf("Landlock: %w", ErrUnsupported)}
	}
	if err := c.opts.Confine(cfg); err != nil {
		return &causeError{ErrApplyLandlock, err}
	}
	return nil
}

// openConsoles makes the console backends for the next machine unless
// they are open (upstream's pre_create_console_devices at create, boot
// and reboot); pty paths go into the stored config.
func (c *Controller) openConsoles() error {
	if c.consoles != nil {
		return nil
	}
	cons, err := console.OpenDevices(c.cfg)
	if err != nil {
		return &causeError{ErrCreateConsoleDevices, err}
	}
	c.consoles = cons
	return nil
}

// closeConsoles closes the backends of a machine that is gone.
func (c *Controller) closeConsoles() {
	if err := c.consoles.Close(); err != nil {
		c.log.Warn("closing the console backends failed", "err", err)
	}
	c.consoles = nil
}

// vmBoot is upstream's vm_boot: "vm booting" is emitted first, even when
// the boot then fails.
func (c *Controller) vmBoot() error {
	c.emit("vm", "booting")
	if c.cfg == nil {
		return ErrMissingConfig
	}
	if c.machine != nil {
		return ErrAlreadyCreated
	}
	cfg, err := cloneConfig(c.cfg)
	if err != nil {
		return err
	}
	// Validate what the user gave, then fill in ids and MACs; the filled
	// copy becomes the stored config so vm.info shows the runtime values.
	if err := validateConfig(cfg); err != nil {
		return err
	}
	if c.idCounter, err = fillRuntime(cfg); err != nil {
		return err
	}
	c.cfg = cfg
	if err := c.openConsoles(); err != nil {
		return err
	}
	if err := c.newMachine(nil); err != nil {
		// A failed build may have started them: the next boot makes new ones.
		c.closeConsoles()
		return err
	}
	// As upstream, a machine whose boot failed stays (state Created): a
	// second boot says "already created"; shutdown or delete recovers.
	if err := c.machine.Boot(); err != nil {
		return err
	}
	c.state = StateRunning
	c.emit("vm", "booted")
	return nil
}

// newMachine builds a machine for the stored config (upstream Vm::new),
// taking over what prev holds (nil but at a reboot).
func (c *Controller) newMachine(prev Handover) error {
	exits := make(chan MachineExit, 1)
	m, err := c.opts.Factory(c.cfg, c.consoles, prev, exits)
	if err != nil {
		return err
	}
	if m == nil {
		return fmt.Errorf("the machine factory returned no machine: %w", ErrUnsupported)
	}
	c.machine, c.exits, c.state = m, exits, StateCreated
	if hp, ok := m.(Hotplugger); ok {
		c.ejected = hp.Ejected()
	}
	return nil
}

// dropMachine shuts the machine down (if any) and forgets it.
func (c *Controller) dropMachine() error {
	_, err := c.takeDownMachine(false)
	return err
}

// takeDownMachine is dropMachine; for a reboot (reboot true) it returns
// what the machine hands over to the next one, if it is a Rebooter.
func (c *Controller) takeDownMachine(reboot bool) (Handover, error) {
	m := c.machine
	c.machine, c.exits, c.state, c.ejected = nil, nil, "", nil
	if m == nil {
		return nil, nil
	}
	var ho Handover
	var err error
	if r, ok := m.(Rebooter); ok && reboot {
		ho, err = r.ShutdownForReboot()
	} else {
		err = m.Shutdown()
	}
	// After the machine: its devices write to them until it stops.
	c.closeConsoles()
	return ho, err
}

// vmShutdown is upstream's vm_shutdown: the machine is taken out and
// dropped even when shutting it down fails; the config stays, so info
// says Created and boot works again.
func (c *Controller) vmShutdown() error {
	if c.machine == nil {
		return ErrNotRunning
	}
	// Upstream takes the Vm out before checking, so even a refused
	// transition drops the machine.
	terr := validTransition(c.state, StateShutdown)
	err := c.dropMachine()
	if terr != nil {
		return terr
	}
	if err != nil {
		return err
	}
	c.emit("vm", "shutdown")
	return nil
}

// vmReboot is upstream's vm_reboot: shut the machine down and boot a new
// one from the same (already filled-in) config.
func (c *Controller) vmReboot() error {
	c.emit("vm", "rebooting")
	if c.machine == nil {
		return ErrNotCreated
	}
	ho, err := c.takeDownMachine(true)
	if ho != nil {
		// Whatever the new machine did not take, or all of it if none is built.
		defer func() {
			if err := ho.Close(); err != nil {
				c.log.Warn("releasing what the old machine handed over failed", "err", err)
			}
		}()
	}
	if err != nil {
		return err
	}
	if err := c.openConsoles(); err != nil {
		return err
	}
	if err := c.newMachine(ho); err != nil {
		c.closeConsoles()
		return err
	}
	if err := c.machine.Boot(); err != nil {
		// Upstream only stores the new Vm once it booted.
		if serr := c.dropMachine(); serr != nil {
			c.log.Error("releasing the machine after a failed reboot failed", "err", serr)
		}
		return err
	}
	c.state = StateRunning
	c.emit("vm", "rebooted")
	return nil
}

// vmDelete is upstream's vm_delete: idempotent; a booted VM is shut down
// first.
func (c *Controller) vmDelete() error {
	if c.cfg == nil {
		return nil
	}
	if c.machine != nil {
		if err := c.vmShutdown(); err != nil {
			return err
		}
	}
	c.cfg = nil
	c.closeConsoles()
	CloseFiles(c.files)
	c.files = nil
	c.emit("vm", "deleted")
	return nil
}

// vmmShutdown deletes the VM on the way out (signals, guest exits, ctx),
// making sure no machine survives even if deleting fails.
func (c *Controller) vmmShutdown() {
	if o := c.migrating; o != nil {
		// The worker owns the machine: stop it, and take the machine back
		// (or, if it got through, it is gone).
		o.cancel()
		if c.migrationFinished(<-o.done) {
			return
		}
	}
	if err := c.vmDelete(); err != nil {
		c.log.Error("deleting the VM during VMM shutdown failed", "err", err)
		if err := c.dropMachine(); err != nil {
			c.log.Error("releasing the machine failed", "err", err)
		}
		c.cfg = nil
		c.closeConsoles()
		CloseFiles(c.files)
		c.files = nil
	}
	c.emit("vmm", "shutdown")
}

// vmPause is Vm::pause: "vm pausing" first, then the transition check.
func (c *Controller) vmPause() error {
	if c.machine == nil {
		return ErrNotRunning
	}
	c.emit("vm", "pausing")
	if err := validTransition(c.state, StatePaused); err != nil {
		return fmt.Errorf("Cannot pause VM: %w", fmt.Errorf("Failed to pause migratable component: %w", migratableTransition(err)))
	}
	if err := c.machine.Pause(); err != nil {
		return fmt.Errorf("Cannot pause VM: %w", err)
	}
	c.state = StatePaused
	c.emit("vm", "paused")
	return nil
}

// vmResume is Vm::resume.
func (c *Controller) vmResume() error {
	if c.machine == nil {
		return ErrNotRunning
	}
	c.emit("vm", "resuming")
	if err := validTransition(c.state, StateRunning); err != nil {
		return fmt.Errorf("Cannot resume VM: %w", fmt.Errorf("Failed to resume migratable component: %w", migratableTransition(err)))
	}
	if err := c.machine.Resume(); err != nil {
		return fmt.Errorf("Cannot resume VM: %w", err)
	}
	c.state = StateRunning
	c.emit("vm", "resumed")
	return nil
}

func (c *Controller) vmInfo() (*VmInfo, error) {
	if c.cfg == nil {
		return nil, ErrNotCreated
	}
	cfg, err := cloneConfig(c.cfg) // the reply is encoded on another goroutine
	if err != nil {
		return nil, err
	}
	// As upstream, memory_actual_size comes from the config, which a hot
	// resize updates, less the balloon, plus what virtio-mem has plugged.
	info := &VmInfo{Config: cfg, State: StateCreated, MemoryActualSize: memoryActualSize(cfg)}
	if c.machine != nil {
		info.State = c.state
		info.DeviceTree = c.machine.DeviceTree()
		if br, ok := c.machine.(BalloonResizer); ok {
			info.MemoryActualSize -= min(info.MemoryActualSize, br.BalloonActual())
		}
		if hp, ok := c.machine.(MemoryHotplugger); ok {
			info.MemoryActualSize += hp.VirtioMemPlugged()
		}
	}
	return info, nil
}
