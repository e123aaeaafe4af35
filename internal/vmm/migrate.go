package vmm

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"github.com/nimbus-vmm/nimbus/internal/config"
	"github.com/nimbus-vmm/nimbus/internal/migration"
	"golang.org/x/sys/unix"
)

// outgoing is a migration being sent. Its worker goroutine owns the
// machine until it reports on done; the loop keeps its hands off.
type outgoing struct {
	done      chan error // the worker's result, once
	wasPaused bool
	info      *VmInfo // vm.info while migrating (upstream's cached VmInfo)
	m         migratableMachine

	mu       sync.Mutex
	conn     net.Conn
	canceled bool
	unlocked bool // the disk locks were dropped for the destination
}

// migratableMachine is the machine a migration sends.
type migratableMachine interface {
	Machine
	Migratable
}

// cancel makes the worker fail soon: its connection is closed.
func (o *outgoing) cancel() {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.canceled = true
	if o.conn != nil {
		o.conn.Close()
	}
}

func (c *Controller) migrationDone() <-chan error {
	if c.migrating == nil {
		return nil
	}
	return c.migrating.done
}

// exitsChan and ejectedChan are the machine's channels, except while a
// migration owns it: what the guest does then waits for the outcome.
func (c *Controller) exitsChan() <-chan MachineExit {
	if c.migrating != nil {
		return nil
	}
	return c.exits
}

func (c *Controller) ejectedChan() <-chan struct{} {
	if c.migrating != nil {
		return nil
	}
	return c.ejected
}

// whileMigrating answers what can be answered during a migration (ping,
// info from the copy taken at its start) and refuses everything else,
// as upstream's VmMigrating; done false lets handle serve cmd.
func (c *Controller) whileMigrating(cmd Command) (value any, err error, done bool) {
	switch normalize(cmd).(type) {
	case Ping:
		return nil, nil, false
	case Info:
		return c.migrating.info, nil, true
	}
	CloseFiles(commandFiles(cmd))
	return nil, fmt.Errorf("%s: %w", cmd.Name(), ErrMigrating), true
}

// vmSendMigration is upstream's vm_send_migration: it checks what it can
// at once and starts the worker; the reply does not wait for the
// migration (upstream since v53). The loop hears the outcome on
// migrationDone.
func (c *Controller) vmSendMigration(d config.SendMigrationData) error {
	if c.machine == nil {
		return ErrNotRunning
	}
	switch {
	case d.PreserveSource:
		return fmt.Errorf("preserve_source: %w", ErrUnsupported)
	case d.MemoryMode == config.MigrationPostcopy:
		return fmt.Errorf("postcopy migration: %w", ErrUnsupported)
	case d.TLSDir != "":
		return fmt.Errorf("migration over TLS: %w", ErrUnsupported)
	case d.Connections > 1:
		return fmt.Errorf("migration over %d connections: %w", d.Connections, ErrUnsupported)
	}
	network, _, err := migration.Endpoint(d.DestinationURL)
	if err != nil {
		return err
	}
	m, ok := c.machine.(migratableMachine)
	if !ok {
		return fmt.Errorf("live migration: %w", ErrUnsupported)
	}
	var memFDs []int
	if d.Local {
		if network != "unix" {
			return leaf(ErrBadConfig, "--local option is only supported with UNIX sockets")
		}
		if memFDs, err = m.MemoryFDs(); err != nil {
			return err
		}
	}
	if c.state != StateRunning && c.state != StatePaused {
		return fmt.Errorf("VM is not running or paused: %s: %w", c.state, ErrInvalidState)
	}
	if err := m.CheckMigratable(); err != nil {
		return err
	}
	info, err := c.vmInfo()
	if err != nil {
		return err
	}
	cfg, err := json.Marshal(struct {
		VmConfig          any `json:"vm_config"`
		MemoryManagerData any `json:"memory_manager_data"`
	}{c.cfg, m.MemoryManagerData()})
	if err != nil {
		return err
	}
	o := &outgoing{done: make(chan error, 1), wasPaused: c.state == StatePaused, info: info, m: m}
	c.migrating = o
	opts := migration.SendOptions{
		Downtime: time.Duration(d.DowntimeMs) * time.Millisecond, Timeout: time.Duration(d.TimeoutS) * time.Second,
		IgnoreTimeout: d.TimeoutStrategy == config.TimeoutIgnore, WasPaused: o.wasPaused, MemoryFDs: memFDs,
		Iteration: func(n int) {
			c.opts.Events.Emit("vm", "migration-memory-iteration", map[string]string{"id": fmt.Sprint(n)})
		},
	}
	c.log.Info("Sending migration", "destination_url", d.DestinationURL, "downtime_ms", d.DowntimeMs, "timeout_s", d.TimeoutS)
	c.emit("vm", "migration-started")
	go func() { o.done <- c.sendMigration(o, d.DestinationURL, cfg, opts) }()
	return nil
}

// sendMigration is the worker: it runs on its own goroutine and touches
// nothing of the loop's but the machine it owns, the log and the events.
func (c *Controller) sendMigration(o *outgoing, url string, cfg []byte, opts migration.SendOptions) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	conn, err := migration.Dial(ctx, url)
	cancel()
	if err != nil {
		return fmt.Errorf("Error connecting to the destination: %w", err)
	}
	o.mu.Lock()
	o.conn = conn
	canceled := o.canceled
	o.mu.Unlock()
	defer conn.Close()
	if canceled {
		return fmt.Errorf("migration canceled: %w", ErrMigrating)
	}
	st, err := migration.Send(conn, cfg, migrationSource{o.m, o}, opts)
	if err != nil {
		return err
	}
	c.log.Info("Migration complete", "rounds", st.Rounds, "bytes", st.Bytes, "last_round_bytes", st.LastBytes,
		"downtime", st.Downtime, "total", st.Total)
	return nil
}

// migrationSource is the machine as migration.Send sees it: the dirty
// log and RAM ranges are the machine's own.
type migrationSource struct {
	migratableMachine
	o *outgoing
}

func (s migrationSource) Slice(gpa, n uint64) ([]byte, error) { return s.ReadRAM(gpa, n) }

// Pause stops a running VM for the last round; a paused one already is.
func (s migrationSource) Pause() error {
	if s.o.wasPaused {
		return nil
	}
	return s.migratableMachine.Pause()
}

// State drops the disk locks after taking the state: the destination
// opens the disks while building the machine from it.
func (s migrationSource) State() ([]byte, error) {
	b, err := s.MigrationState()
	if err != nil {
		return nil, err
	}
	if err := s.SetDiskLocks(false); err != nil {
		return nil, err
	}
	s.o.mu.Lock()
	s.o.unlocked = true
	s.o.mu.Unlock()
	return b, nil
}

// migrationFinished takes the machine back from a finished worker
// (upstream's check_migration): after a success the VM is gone and the
// VMM exits (migrated true); after a failure the machine is as before.
func (c *Controller) migrationFinished(err error) (migrated bool) {
	o := c.migrating
	c.migrating = nil
	if err == nil {
		c.emit("vm", "migration-finished")
		c.vmmShutdown()
		return true
	}
	c.emit("vm", "migration-failed")
	c.log.Error("Migration failed", "err", err)
	if err := o.m.StopDirtyLog(); err != nil {
		c.log.Debug("stopping the dirty log after a failed migration", "err", err)
	}
	if o.unlocked {
		if err := o.m.SetDiskLocks(true); err != nil {
			c.log.Error("taking the disk locks back after a failed migration failed", "err", err)
		}
	}
	if !o.wasPaused {
		// The last round may have paused it.
		if err := o.m.Resume(); err != nil {
			c.log.Error("resuming the VM after a failed migration failed", "err", err)
		}
	}
	return false
}

// vmReceiveMigration is upstream's vm_receive_migration: it listens on
// the receiver URL and serves one migration to its end, blocking the
// loop meanwhile as upstream blocks its API. On failure no VM is left.
func (c *Controller) vmReceiveMigration(r ReceiveMigration) (err error) {
	CloseFiles(r.Fds)
	d := r.Config
	switch {
	case c.machine != nil:
		return fmt.Errorf("Can't receive a migration when a VM is already created: %w", ErrAlreadyCreated)
	case c.opts.Incoming == nil:
		return fmt.Errorf("live migration: %w", ErrUnsupported)
	case len(r.Fds) > 0 || len(d.VfioFds) > 0 || d.IommufdFd != nil:
		return fmt.Errorf("migration with VFIO devices: %w", ErrUnsupported)
	case d.MemoryMode == config.MigrationPostcopy:
		return fmt.Errorf("postcopy migration: %w", ErrUnsupported)
	case d.TLSDir != "":
		return fmt.Errorf("migration over TLS: %w", ErrUnsupported)
	case len(d.ZoneUpdates) > 0:
		return fmt.Errorf("migration with zone_updates: %w", ErrUnsupported)
	}
	network, addr, err := migration.Endpoint(d.ReceiverURL)
	if err != nil {
		return err
	}
	ln, err := net.Listen(network, addr)
	if err != nil {
		return fmt.Errorf("Error binding to the migration socket: %w", err)
	}
	defer ln.Close()
	if network == "unix" {
		defer os.Remove(addr)
	}
	if c.cfg != nil {
		c.log.Warn("The existing VM config will be overwritten")
	}
	c.emit("vm", "migration-receive-ready")
	conn, err := ln.Accept()
	if err != nil {
		return fmt.Errorf("Error accepting the migration connection: %w", err)
	}
	defer conn.Close()
	c.emit("vm", "migration-receive-started")
	t := &incomingTarget{c: c}
	if err := migration.Receive(conn, t); err != nil {
		c.emit("vm", "migration-receive-failed")
		t.abort()
		return err
	}
	c.emit("vm", "migration-receive-finished")
	return nil
}

// incomingTarget builds the VM on the loop goroutine as the migration
// arrives.
type incomingTarget struct {
	c        *Controller
	in       IncomingMachine
	memFiles []*os.File // a local migration's memfds, by slot
}

func (t *incomingTarget) MemoryFd(slot uint32, f *os.File) error {
	if int(slot) != len(t.memFiles) || slot > 64 {
		return fmt.Errorf("memory fd for slot %d after %d slots", slot, len(t.memFiles))
	}
	fd, err := unix.FcntlInt(f.Fd(), unix.F_DUPFD_CLOEXEC, 3)
	if err != nil {
		return err
	}
	t.memFiles = append(t.memFiles, os.NewFile(uintptr(fd), fmt.Sprintf("guest-ram-%d", slot)))
	return nil
}

func (t *incomingTarget) Configure(b []byte) (migration.RAM, error) {
	c := t.c
	var mc struct {
		VmConfig          json.RawMessage `json:"vm_config"`
		MemoryManagerData json.RawMessage `json:"memory_manager_data"`
	}
	if err := json.Unmarshal(b, &mc); err != nil {
		return nil, fmt.Errorf("Error deserialising config: %w", err)
	}
	cfg, err := config.Decode(mc.VmConfig)
	if err != nil {
		return nil, err
	}
	if err := validateConfig(cfg); err != nil {
		return nil, err
	}
	if c.idCounter, err = fillRuntime(cfg); err != nil {
		return nil, err
	}
	if c.consoles != nil {
		c.closeConsoles()
	}
	c.cfg = cfg
	if err := c.openConsoles(); err != nil {
		return nil, err
	}
	if err := c.confine(cfg); err != nil {
		return nil, err
	}
	t.in, err = c.opts.Incoming(cfg, mc.MemoryManagerData, t.memFiles)
	CloseFiles(t.memFiles) // the RAM keeps its own
	t.memFiles = nil
	if err != nil {
		return nil, err
	}
	return t.in, nil
}

func (t *incomingTarget) Restore(state []byte) error {
	c := t.c
	in := t.in
	t.in = nil // the machine owns the RAM now, built or not
	exits := make(chan MachineExit, 1)
	m, err := in.Restore(c.cfg, c.consoles, state, exits)
	if err != nil {
		return err
	}
	c.machine, c.exits, c.state = m, exits, StatePaused
	if hp, ok := m.(Hotplugger); ok {
		c.ejected = hp.Ejected()
	}
	return nil
}

func (t *incomingTarget) Complete(resume bool) error {
	if resume {
		return t.c.vmResume()
	}
	return nil
}

// abort drops whatever the migration built.
func (t *incomingTarget) abort() {
	c := t.c
	CloseFiles(t.memFiles)
	if t.in != nil {
		if err := t.in.Close(); err != nil {
			c.log.Warn("freeing the incoming RAM failed", "err", err)
		}
	}
	if err := c.dropMachine(); err != nil {
		c.log.Warn("dropping the incoming machine failed", "err", err)
	}
	c.cfg = nil
	if c.consoles != nil {
		c.closeConsoles()
	}
}
