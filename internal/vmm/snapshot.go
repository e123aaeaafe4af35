package vmm

import (
	"fmt"

	"github.com/nimbus-vmm/nimbus/internal/config"
	"github.com/nimbus-vmm/nimbus/internal/snapshot"
)

// vmSnapshot is upstream's vm_snapshot: a paused VM writes config.json,
// then the machine its state and memory, into the file:// directory.
func (c *Controller) vmSnapshot(url string) error {
	if c.machine == nil {
		return ErrNotRunning
	}
	c.emit("vm", "snapshotting")
	if c.state != StatePaused {
		return fmt.Errorf("Cannot snapshot VM: %w", fmt.Errorf("Failed to snapshot migratable component: %w",
			leaf(ErrInvalidState, "Trying to snapshot while VM is running")))
	}
	s, ok := c.machine.(Snapshotter)
	if !ok {
		return fmt.Errorf("Cannot snapshot VM: %w", fmt.Errorf("snapshot: %w", ErrUnsupported))
	}
	send := func(err error) error {
		return fmt.Errorf("Cannot send VM snapshot: %w", fmt.Errorf("Failed to send migratable component snapshot: %w", err))
	}
	if err := s.CheckSnapshot(); err != nil {
		return fmt.Errorf("Cannot snapshot VM: %w", err)
	}
	dir, err := snapshot.Dir(url)
	if err != nil {
		return send(err)
	}
	if err := snapshot.WriteConfig(dir, c.cfg); err != nil {
		return send(err)
	}
	if err := s.Snapshot(dir); err != nil {
		return fmt.Errorf("Cannot snapshot VM: %w", err)
	}
	c.emit("vm", "snapshotted")
	return nil
}

// vmRestore is upstream's vm_restore: the snapshot's config, validated
// and with the new tap fds in place, becomes the VM's config and a
// machine is built from the snapshot, paused (resumed with resume=true).
// On failure nothing is left: no config, no machine.
func (c *Controller) vmRestore(r Restore) (err error) {
	files := r.Fds
	defer func() {
		if err != nil {
			CloseFiles(files)
		}
	}()
	if want := restoreFdCount(&r.Config); len(files) != want {
		return leaf(ErrBadConfig, "Number of FDs expected: %d, but received: %d", want, len(files))
	}
	if c.cfg != nil || c.machine != nil {
		return ErrAlreadyCreated
	}
	if c.opts.Restorer == nil {
		return fmt.Errorf("restore: %w", ErrUnsupported)
	}
	dir, err := snapshot.Dir(r.Config.SourceURL)
	if err != nil {
		return err
	}
	b, err := snapshot.ReadConfig(dir)
	if err != nil {
		return err
	}
	cfg, err := config.Decode(b)
	if err != nil {
		return fmt.Errorf("Error deserialising VM config snapshot: %w", err)
	}
	if err := r.Config.Validate(cfg); err != nil {
		return fmt.Errorf("Failed to validate config: %w", err)
	}
	if err := validateConfig(cfg); err != nil {
		return err
	}
	// Each net_fds entry's fds replace the NIC's (in upstream's order:
	// the entries in turn, num_fds each); VFIO fds have no device here.
	rest := files
	for _, nf := range r.Config.NetFds {
		got := rest[:nf.NumFds]
		rest = rest[nf.NumFds:]
		for i := range cfg.Net {
			if cfg.Net[i].ID == nf.ID && len(cfg.Net[i].Fds) > 0 {
				cfg.Net[i].Fds = fdNumbers(got)
			}
		}
	}
	if len(rest) > 0 {
		return fmt.Errorf("restore with VFIO or iommufd fds: %w", ErrUnsupported)
	}
	if len(r.Config.ZoneUpdates) > 0 {
		// Memory zones are not bound to host NUMA nodes by this build.
		return fmt.Errorf("restore with zone_updates: %w", ErrUnsupported)
	}
	if c.idCounter, err = fillRuntime(cfg); err != nil {
		return err
	}
	c.emit("vm", "restoring")
	c.cfg = cfg
	defer func() {
		if err != nil && c.machine == nil {
			// As upstream, a failed restore deletes the VM.
			c.cfg = nil
			if c.consoles != nil {
				c.closeConsoles()
			}
		}
	}()
	if err := c.openConsoles(); err != nil {
		return err
	}
	exits := make(chan MachineExit, 1)
	m, err := c.opts.Restorer(cfg, c.consoles, RestoreSource{Dir: dir, Prefault: r.Config.Prefault,
		OnDemand: r.Config.MemoryRestoreMode == config.MemoryRestoreOnDemand}, exits)
	if err != nil {
		return err
	}
	// As upstream, after the snapshot is read and before the guest runs:
	// the snapshot directory need not be in the rules.
	if err := c.confine(cfg); err != nil {
		if serr := m.Shutdown(); serr != nil {
			c.log.Error("releasing the restored machine failed", "err", serr)
		}
		return err
	}
	c.machine, c.exits, c.state = m, exits, StatePaused
	if hp, ok := m.(Hotplugger); ok {
		c.ejected = hp.Ejected()
	}
	c.files, files = append(c.files, files...), nil
	c.emit("vm", "restored")
	if r.Config.Resume {
		if err := c.vmResume(); err != nil {
			// As upstream, a restore that fails deletes the VM.
			if derr := c.vmDelete(); derr != nil {
				c.log.Error("deleting the VM after a failed resume failed", "err", derr)
			}
			return err
		}
	}
	return nil
}
