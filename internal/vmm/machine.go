package vmm

import (
	"encoding/json"
	"fmt"
	"os"

	"github.com/nimbus-vmm/nimbus/internal/config"
	"github.com/nimbus-vmm/nimbus/internal/devices/console"
	"github.com/nimbus-vmm/nimbus/internal/migration"
)

// Machine is one booted (or booting) VM as the control loop sees it:
// upstream's Vm object. internal/vm implements it over KVM; tests use a
// double (internal/vmm/vmmtest). Only the control-loop goroutine calls its
// methods, one at a time, so implementations need no locking against the
// loop; they report guest-initiated events through the exits channel given
// to the MachineFactory, never by calling back into the Controller.
//
// The loop tracks the VM state (Created/Running/Paused) and checks
// upstream's transition table before calling Pause/Resume, so a Machine only
// does the work.
type Machine interface {
	// Boot starts the vCPUs and devices. It returns once the VM runs; the
	// machine may fill runtime values (pty paths) into its config until then.
	Boot() error
	// Pause stops the vCPUs and devices; Resume restarts them.
	Pause() error
	Resume() error
	// Shutdown stops and releases everything the machine holds (goroutines,
	// fds, guest memory). The loop drops the Machine afterwards even if
	// Shutdown fails, and calls no method on it again.
	Shutdown() error
	// PowerButton injects an ACPI power-button event; NMI an NMI to every vCPU.
	PowerButton() error
	NMI() error
	// Counters is vm.counters: device id -> counter -> value.
	Counters() Counters
	// DeviceTree is vm.info's device_tree.
	DeviceTree() map[string]*DeviceNode
}

// Handover is what a machine that reboots passes to the machine built
// next: connections to vhost-user back ends, which (virtiofsd) may serve
// one front end and exit when it hangs up. The loop closes it once the
// next machine is built (or failed to be), which releases what that
// machine did not take.
type Handover interface {
	Close() error
}

// Rebooter is a Machine with something to hand over at a reboot.
type Rebooter interface {
	// ShutdownForReboot is Shutdown, except that what the next machine
	// can take over is kept in the Handover (never nil) rather than
	// released.
	ShutdownForReboot() (Handover, error)
}

// Snapshotter is a Machine that writes snapshots (vm.snapshot). The loop
// asks CheckSnapshot first, so that a machine it cannot save leaves no
// file behind; then it writes config.json into dir and calls Snapshot on
// the paused machine, which writes the rest (state.json, memory-ranges).
type Snapshotter interface {
	CheckSnapshot() error
	Snapshot(dir string) error
}

// RestoreSource says where and how a restore reads a snapshot.
type RestoreSource struct {
	Dir      string // the snapshot directory (from source_url)
	Prefault bool   // populate all of guest RAM at once
	// OnDemand maps the memory file under guest RAM instead of copying
	// it (memory_restore_mode=ondemand).
	OnDemand bool
}

// RestoreFactory builds a Machine from a snapshot (upstream's Vm::new with
// a snapshot): cfg is the snapshot's config.json, validated and with the
// restore's fds patched in; the machine comes back paused, and Resume
// continues the guest. Otherwise as MachineFactory.
type RestoreFactory func(cfg *config.VmConfig, cons *console.Devices, src RestoreSource, exits chan<- MachineExit) (Machine, error)

// Migratable is a Machine that can be sent live (vm.send-migration).
// While a migration runs, its worker goroutine owns the machine: the loop
// calls no method on it until the worker is done.
type Migratable interface {
	// CheckMigratable refuses a machine whose state cannot be sent.
	CheckMigratable() error
	// RAM is every guest RAM range; ReadRAM maps one for sending.
	RAM() ([]migration.Range, error)
	ReadRAM(gpa, n uint64) ([]byte, error)
	// StartDirtyLog, DirtyRanges and StopDirtyLog track written memory
	// (migration.Source).
	StartDirtyLog() error
	DirtyRanges(final bool) ([]migration.Range, error)
	StopDirtyLog() error
	// MigrationState is the paused machine's state for the destination;
	// MemoryManagerData describes its RAM in the Config.
	MigrationState() ([]byte, error)
	MemoryManagerData() any
	// SetDiskLocks drops the disk image locks before the state goes out
	// and takes them again when the migration fails.
	SetDiskLocks(locked bool) error
	// MemoryFDs are guest RAM's memfds, slot by slot, for a local
	// migration; it fails unless all of RAM is shared.
	MemoryFDs() ([]int, error)
}

// IncomingMachine is a machine being received: RAM first, then the
// machine itself from the sender's state.
type IncomingMachine interface {
	migration.RAM
	// Restore builds the machine, paused; it owns the RAM from then on.
	Restore(cfg *config.VmConfig, cons *console.Devices, state []byte, exits chan<- MachineExit) (Machine, error)
	// Close frees the RAM unless Restore took it.
	Close() error
}

// IncomingFactory makes the RAM of an incoming migration for cfg; mmData
// is the sender's memory_manager_data, memFiles its RAM's memfds by slot
// in a local migration (nil otherwise: the RAM is new).
type IncomingFactory func(cfg *config.VmConfig, mmData json.RawMessage, memFiles []*os.File) (IncomingMachine, error)

// Hotplugger is a Machine that adds and removes PCI devices on a running
// guest (upstream's PCI hotplug through the ACPI GED). The loop calls it
// with configs whose ids it assigned; a machine without it answers every
// hot add and removal with ErrUnsupported.
type Hotplugger interface {
	// AddDisk and AddNet build the device, plug it into a free (or its
	// pci_device_id) slot and notify the guest. AddNet fills in the tap
	// name and MAC it used.
	AddDisk(*config.DiskConfig) (*PciDeviceInfo, error)
	AddNet(*config.NetConfig) (*PciDeviceInfo, error)
	// AddVsock builds the virtio-vsock device and its Unix-socket backend.
	AddVsock(*config.VsockConfig) (*PciDeviceInfo, error)
	// AddFs connects a vhost-user-fs device to its virtiofsd.
	AddFs(*config.FsConfig) (*PciDeviceInfo, error)
	// AddPmem maps the virtio-pmem device's file into the guest.
	AddPmem(*config.PmemConfig) (*PciDeviceInfo, error)
	// RemoveDevice asks the guest to eject id's PCI device; the device
	// stays until the guest does.
	RemoveDevice(id string) error
	// Ejected is signalled (coalesced) when the guest has ejected devices;
	// the loop then calls ReleaseEjected, which takes them apart.
	Ejected() <-chan struct{}
	ReleaseEjected() []EjectedDevice
}

// CPUHotplugger is a Machine that adds and removes vCPUs on a running
// guest (upstream's ACPI CPU hotplug). ResizeVcpus returns whether
// anything changed; a removal completes when the guest ejects the vCPUs
// (reported through Hotplugger.Ejected), and until then another resize
// fails with ErrBusy (429).
type CPUHotplugger interface {
	ResizeVcpus(desired int) (changed bool, err error)
}

// MemoryHotplugger is a Machine that resizes guest RAM on a running guest
// (upstream's MemoryManager::resize): ACPI memory hotplug grows it, where
// asking for no more than the RAM it has changes nothing and succeeds;
// virtio-mem asks the guest's driver to plug or unplug up to the size.
// The loop then records the size for the next boot as upstream does.
type MemoryHotplugger interface {
	ResizeMemory(desired uint64) (changed bool, err error)
	// VirtioMemPlugged is what the guest's virtio-mem driver has plugged
	// (vm.info's memory_actual_size adds it).
	VirtioMemPlugged() uint64
}

// BalloonResizer is a Machine with a virtio-balloon: vm.resize's
// desired_balloon, and the balloon's size for memory_actual_size.
type BalloonResizer interface {
	ResizeBalloon(size uint64) error
	BalloonActual() uint64
}

// DiskResizer is a Machine whose disks can change size (vm.resize-disk).
type DiskResizer interface {
	ResizeDisk(id string, size uint64) error
}

// EjectedDevice is one device the guest ejected and the machine released.
type EjectedDevice struct {
	ID, BDF string
	Err     error // releasing some resource failed (logged)
}

// ExitReason says why a guest stopped on its own.
type ExitReason int

// Guest-initiated exits (upstream: guest_exit_evt, reset_evt, exit_evt from
// a vCPU error).
const (
	// ExitPoweroff: ACPI shutdown or a triple fault style exit.
	ExitPoweroff ExitReason = iota + 1
	// ExitReset: the guest asked for a reset (i8042, CMOS, ACPI reset register).
	ExitReset
	// ExitFatal: a vCPU hit an error it cannot continue from; Err says
	// which, including a register dump where the machine has one.
	ExitFatal
)

func (r ExitReason) String() string {
	switch r {
	case ExitPoweroff:
		return "poweroff"
	case ExitReset:
		return "reset"
	case ExitFatal:
		return "fatal"
	}
	return fmt.Sprintf("ExitReason(%d)", int(r))
}

// MachineExit is one guest-initiated exit.
type MachineExit struct {
	Reason ExitReason
	Err    error // for ExitFatal
}

// MachineFactory builds a Machine for a validated config (upstream's
// Vm::new) on the console backends the loop made for it (cons; its
// fields are nil for Off), which stay the loop's: the machine starts them
// but never closes them. exits has capacity 1 and belongs to this machine only; the
// machine must send with NotifyExit (never block: the loop may be busy
// shutting this very machine down), so like upstream's eventfds a second
// exit before the loop has looked is coalesced into the first. cfg is the
// loop's stored config: the machine may write runtime fill-ins into it
// during the factory call and Boot, and must not touch it afterwards.
// prev is what the previous machine handed over at a reboot (nil at a
// boot); the machine takes what it uses from it, the loop closes it.
type MachineFactory func(cfg *config.VmConfig, cons *console.Devices, prev Handover, exits chan<- MachineExit) (Machine, error)

// NotifyExit reports e on exits without blocking; it returns false when an
// exit is already pending (the new one is dropped).
func NotifyExit(exits chan<- MachineExit, e MachineExit) bool {
	select {
	case exits <- e:
		return true
	default:
		return false
	}
}

// kvmDevice is where NoKVMFactory looks for KVM.
var kvmDevice = "/dev/kvm"

// NoKVMFactory is the default factory until the KVM machine lands: it
// really opens /dev/kvm so the error says why booting is impossible here
// ("KVM is not available: open /dev/kvm: no such file or directory"), and
// when KVM is there it says the machine is not built yet. It never
// pretends to boot.
func NoKVMFactory(cfg *config.VmConfig, cons *console.Devices, _ Handover, exits chan<- MachineExit) (Machine, error) {
	f, err := os.OpenFile(kvmDevice, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("KVM is not available: %w", err)
	}
	f.Close()
	return nil, fmt.Errorf("the KVM machine is not built yet: %w", ErrUnsupported)
}
