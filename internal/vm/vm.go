package vm

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/nimbus-vmm/nimbus/internal/acpi"
	"github.com/nimbus-vmm/nimbus/internal/arch/x86"
	"github.com/nimbus-vmm/nimbus/internal/boot"
	"github.com/nimbus-vmm/nimbus/internal/config"
	"github.com/nimbus-vmm/nimbus/internal/devices/bus"
	"github.com/nimbus-vmm/nimbus/internal/devices/console"
	"github.com/nimbus-vmm/nimbus/internal/devices/cpuhp"
	"github.com/nimbus-vmm/nimbus/internal/devices/ged"
	"github.com/nimbus-vmm/nimbus/internal/devices/legacy"
	"github.com/nimbus-vmm/nimbus/internal/devices/memhp"
	"github.com/nimbus-vmm/nimbus/internal/devices/pcihp"
	"github.com/nimbus-vmm/nimbus/internal/devmgr"
	"github.com/nimbus-vmm/nimbus/internal/kvm"
	"github.com/nimbus-vmm/nimbus/internal/memory"
	"github.com/nimbus-vmm/nimbus/internal/ratelimit"
	"github.com/nimbus-vmm/nimbus/internal/virtio/balloon"
	"github.com/nimbus-vmm/nimbus/internal/virtio/vhostuser"
	"github.com/nimbus-vmm/nimbus/internal/vmm"
)

// Error categories; every error this package returns wraps one of them.
var (
	// ErrNoKVM: /dev/kvm cannot be opened (or lacks a required capability).
	ErrNoKVM = errors.New("KVM is not available")
	// ErrKVM: KVM refused an operation.
	ErrKVM = errors.New("KVM operation failed")
	// ErrSetup: building the machine failed (memory, tables, payload, devices).
	ErrSetup = errors.New("cannot create the VM")
	// ErrVcpu: a vCPU stopped on an error it cannot continue from.
	ErrVcpu = errors.New("vCPU error")
)

// ProcessStart is when the process started, for the boot-time log line
// ("first vCPU entry after ..."). cmd/nimbus may reset it at main's start.
var ProcessStart = time.Now()

// Factory returns the MachineFactory that builds KVM machines, logging to
// log (nil discards).
func Factory(log *slog.Logger) vmm.MachineFactory {
	return func(cfg *config.VmConfig, cons *console.Devices, prev vmm.Handover, exits chan<- vmm.MachineExit) (vmm.Machine, error) {
		ho, _ := prev.(*vhostuser.Handover) // nil at a boot
		return newVM(cfg, cons, ho, exits, log)
	}
}

// VM is one KVM machine. Its exported methods are called by the control
// loop only, one at a time (see vmm.Machine).
type VM struct {
	log     *slog.Logger
	exits   chan<- vmm.MachineExit
	ramSize uint64

	sys     *kvm.System
	kvm     *kvm.VM
	mem     *memory.Memory
	dm      *devmgr.Manager // every device and the resources it holds
	io      *bus.Bus        // the manager's buses, for the vCPU exit path
	mmio    *bus.Bus
	post    *legacy.PostPort
	ged     *ged.Device     // ACPI notifications: power button, hotplug
	pci     []*pciSegment   // the PCI segments, by id: roots and windows
	routes  *msiRoutes      // the VM's MSI routes, over every segment
	hp      hotplug         // PCI hotplug controller and pending ejects
	clock   *kvm.ClockData  // kvmclock saved at Pause, restored at Resume
	tables  acpi.Config     // what LoadPayload's ACPI tables describe
	cpus    cpuSetup        // how vCPUs are configured, boot and hot-added
	cpuhp   *cpuhp.Device   // ACPI CPU hotplug registers
	memhp   memHotplug      // ACPI memory hotplug window and registers
	balloon *balloon.Device // --balloon, or nil
	// prev is what the machine before a reboot handed over, taken by the
	// vhost-user devices Build makes (nil otherwise).
	prev *vhostuser.Handover
	// hotAdded are the ids of devices plugged into the running guest: a
	// machine rebuilt from the config would place them elsewhere.
	hotAdded map[string]bool
	// limitGroups are the rate_limit_groups' limiters, by group id.
	limitGroups map[string]*ratelimit.Limiter
	vcpuMu      sync.Mutex // vcpus: appended by hot add, read by kickAll on vCPU threads
	vcpus       []*vcpu

	// run state shared with the vCPU goroutines
	mu       sync.Mutex
	cond     *sync.Cond
	paused   bool
	halted   bool // the guest asked to power off or reset: no vCPU re-enters it
	stopping bool
	parked   int // vCPU goroutines waiting in park
	alive    int // vCPU goroutines not yet returned
	wg       sync.WaitGroup
	booted   bool
	entered  sync.Once
	entry    chan struct{} // closed at vCPU 0's first KVM_RUN
	closed   bool
}

// New builds the machine for cfg and loads its payload (upstream
// Vm::new then the payload half of Vm::boot): everything but starting the
// vCPUs. Its serial port, virtio console and debug port use cons (nil:
// none), which the caller made for cfg with console.OpenDevices and
// closes after Shutdown. On error nothing New opened is left open.
func New(cfg *config.VmConfig, cons *console.Devices, exits chan<- vmm.MachineExit, log *slog.Logger) (*VM, error) {
	return newVM(cfg, cons, nil, exits, log)
}

// newVM is New for a machine that takes over what prev holds (a reboot).
func newVM(cfg *config.VmConfig, cons *console.Devices, prev *vhostuser.Handover, exits chan<- vmm.MachineExit, log *slog.Logger) (*VM, error) {
	if cfg.Payload == nil || (cfg.Payload.Kernel == "" && cfg.Payload.Firmware == "") {
		return nil, wrap(ErrSetup, errors.New("no kernel or firmware payload"))
	}
	m, err := build(cfg, cons, prev, exits, log)
	if err != nil {
		return nil, err
	}
	if err := m.LoadPayload(cfg.Payload); err != nil {
		m.release()
		return nil, err
	}
	return m, nil
}

// Build makes the machine cfg describes without a payload: the KVM VM,
// guest memory, the devices and the vCPUs (CPUID, MSRs, LAPIC; no entry
// registers). Restore and incoming migration start here and load state
// instead of a payload; New adds the payload. Device ids are assigned in
// cfg and runtime values (tap name, MAC) written back into it. On error
// nothing Build opened is left open.
func Build(cfg *config.VmConfig, cons *console.Devices, exits chan<- vmm.MachineExit, log *slog.Logger) (_ *VM, err error) {
	return build(cfg, cons, nil, exits, log)
}

func build(cfg *config.VmConfig, cons *console.Devices, prev *vhostuser.Handover, exits chan<- vmm.MachineExit, log *slog.Logger) (*VM, error) {
	return buildOn(cfg, cons, prev, nil, exits, log)
}

// buildOn is build on guest RAM made beforehand (an incoming migration
// fills it before the machine exists), which the machine then owns, even
// when building fails; nil makes it from cfg.
func buildOn(cfg *config.VmConfig, cons *console.Devices, prev *vhostuser.Handover, mem *memory.Memory,
	exits chan<- vmm.MachineExit, log *slog.Logger) (_ *VM, err error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cons == nil {
		cons = &console.Devices{}
	}
	m := &VM{log: log, exits: exits, entry: make(chan struct{}), prev: prev, mem: mem, hotAdded: map[string]bool{}}
	m.cond = sync.NewCond(&m.mu)
	m.hp.notify = make(chan struct{}, 1)
	defer func() {
		if err != nil {
			m.release()
		}
	}()
	m.limitGroups = groupLimiters(cfg.RateLimitGroups)
	if err = refuseUnbuilt(cfg); err != nil {
		return nil, err
	}
	if cfg.Cpus.CoreScheduling != config.CoreSchedulingOff {
		// Upstream's default, which can't be refused: say it is not applied.
		log.Info("core scheduling is not applied by this build: vCPU threads get no core-scheduling cookie",
			"core_scheduling", cfg.Cpus.CoreScheduling)
	}
	if m.sys, err = kvm.Open(); err != nil {
		// The plain open error reads best in upstream's error chain
		// ("KVM is not available" / "open /dev/kvm" / "no such file ...").
		if f, oerr := os.OpenFile(kvm.DevicePath, os.O_RDWR, 0); oerr != nil {
			err = oerr
		} else {
			f.Close()
		}
		return nil, wrap(ErrNoKVM, err)
	}
	if err = m.sys.RequireCaps(kvm.BaseCaps...); err != nil {
		return nil, wrap(ErrNoKVM, err)
	}
	if m.kvm, err = m.sys.CreateVM(); err != nil {
		return nil, wrap(ErrKVM, err)
	}
	// The identity map and TSS pages sit right after MMCONFIG, as upstream;
	// the identity map must be set before any vCPU exists.
	if err = m.kvm.SetIdentityMapAddr(x86.KVMIdentityMapStart); err != nil {
		return nil, wrap(ErrKVM, err)
	}
	if err = m.kvm.SetTSSAddr(x86.KVMTSSStart); err != nil {
		return nil, wrap(ErrKVM, err)
	}
	if err = m.kvm.CreateIRQChip(); err != nil {
		return nil, wrap(ErrKVM, err)
	}
	if err = m.kvm.CreatePIT2(kvm.PitConfig{Flags: kvm.PitSpeakerDummy}); err != nil {
		return nil, wrap(ErrKVM, err)
	}
	if m.mem == nil {
		if m.mem, err = newMemory(cfg.Memory); err != nil {
			return nil, wrap(ErrSetup, fmt.Errorf("guest memory: %w", err))
		}
	}
	m.ramSize = m.mem.Size()
	if _, err = m.mem.Register(m.kvm, 0, 0); err != nil {
		return nil, wrap(ErrKVM, err)
	}
	m.io, m.mmio = bus.NewIO(), bus.NewMMIO()
	m.dm = devmgr.New(m.io, m.mmio)
	if err = m.setupDevices(cfg, cons); err != nil {
		return nil, err
	}
	if err = m.setupMemoryHotplug(cfg.Memory); err != nil {
		return nil, err
	}
	if err = m.setupPCI(cfg, cons.Console); err != nil {
		return nil, err
	}
	if err = m.createVcpus(cfg); err != nil {
		return nil, err
	}
	if err = m.setupCPUHotplug(len(m.vcpus), max(int(cfg.Cpus.MaxVcpus), len(m.vcpus))); err != nil {
		return nil, err
	}
	boot, maxCPUs := int(max(cfg.Cpus.BootVcpus, 1)), int(cfg.Cpus.MaxVcpus)
	m.tables = acpi.Config{
		BootCPUs: boot, MaxCPUs: max(maxCPUs, boot),
		Serial: cfg.Serial.Mode != config.ConsoleOff, SerialIRQ: serialIRQ,
		GED:        &acpi.GED{Base: ged.Base, IRQ: ged.IRQ},
		PCIHotplug: &acpi.PCIHotplug{Base: pcihp.Base},
		CPUHotplug: &acpi.CPUHotplug{Base: cpuhp.Base, MaxCPUs: max(maxCPUs, boot)},
	}
	for _, p := range m.pci {
		m.tables.PCISegments = append(m.tables.PCISegments, acpi.PCISegment{Win32: p.win32, Win64: p.win64})
	}
	if m.memhp.regs != nil {
		m.tables.MemoryHotplug = &acpi.MemoryHotplug{Base: memhp.Base, Slots: memhp.Slots}
	}
	m.prev = nil // the loop closes it; devices added later dial their own
	return m, nil
}

func newMemory(mc config.MemoryConfig) (*memory.Memory, error) { return newMemoryOn(mc, nil) }

// newMemoryOn is newMemory with the zones mapping files (a local
// migration's memfds, zone by zone; none: new memory).
func newMemoryOn(mc config.MemoryConfig, files []*os.File) (*memory.Memory, error) {
	backing := func(i int) *os.File {
		if i < len(files) {
			return files[i]
		}
		return nil
	}
	nzones := max(len(mc.Zones), 1)
	if files != nil && len(files) != nzones {
		return nil, fmt.Errorf("%d memory fds for %d memory zones", len(files), nzones)
	}
	hp := func(p *uint64) uint64 {
		if p == nil {
			return 0
		}
		return *p
	}
	if len(mc.Zones) > 0 {
		if mc.Size != 0 {
			// Upstream's MemoryManager refuses it the same way.
			return nil, errors.New("Memory configuration is not valid: memory.size must be 0 beside memory zones")
		}
		zones := make([]memory.Zone, 0, len(mc.Zones))
		for _, z := range mc.Zones {
			zones = append(zones, memory.Zone{ID: z.ID, Size: z.Size, Options: memory.Options{
				Shared: z.Shared, Hugepages: z.Hugepages, HugepageSize: hp(z.HugepageSize),
				Prefault: z.Prefault, Reserve: z.Reserve, THP: mc.Thp,
			}, Backing: backing(len(zones))})
		}
		return memory.NewZones(zones)
	}
	return memory.NewZones([]memory.Zone{{Size: mc.Size, Options: memory.Options{
		Shared: mc.Shared, Hugepages: mc.Hugepages, HugepageSize: hp(mc.HugepageSize),
		Prefault: mc.Prefault, Reserve: mc.Reserve, THP: mc.Thp,
	}, Backing: backing(0)}})
}

// LoadPayload loads the kernel (or firmware) with its initramfs and
// command line, writes the ACPI and MP tables and puts the boot vCPU at
// the payload's entry (upstream Vm::boot's load_payload and
// configure_system). Call it once, before Boot.
func (m *VM) LoadPayload(p *config.PayloadConfig) error {
	if p == nil || (p.Kernel == "" && p.Firmware == "") {
		return wrap(ErrSetup, errors.New("no kernel or firmware payload"))
	}
	if m.booted {
		return fmt.Errorf("%w: the machine already booted", vmm.ErrInvalidState)
	}
	ram := x86.RAMRegions(m.ramSize)
	kernel, initramfs, cmdline := p.Kernel, p.Initramfs, p.Cmdline
	if kernel == "" {
		// Upstream loads --firmware like a kernel and drops cmdline and initramfs.
		kernel, initramfs, cmdline = p.Firmware, "", ""
	}
	// Boot loads the payload first so that a bad kernel is reported as such
	// rather than as whatever table happened to be written before it.
	res, err := boot.Load(m.mem, ram, kernel, initramfs, cmdline, x86.RSDPPointer)
	if err != nil {
		return wrap(ErrSetup, err)
	}
	if err := m.writeTables(); err != nil {
		return err
	}
	bs := &x86.BootState{Entry: res.Entry, Info: res.InfoAddr, PVH: res.Protocol == boot.PVH}
	if bs.PVH {
		bs.System, err = x86.SetupProtectedMode(m.mem)
	} else {
		bs.System, err = x86.SetupLongMode(m.mem)
	}
	if err != nil {
		return wrap(ErrSetup, err)
	}
	if err := x86.SetBootState(m.vcpus[0].v, bs); err != nil {
		return wrap(ErrKVM, err)
	}
	m.log.Debug("payload loaded", "protocol", res.Protocol.String(), "entry", fmt.Sprintf("%#x", res.Entry),
		"kernel_start", fmt.Sprintf("%#x", res.Kernel.Start), "initramfs_size", res.Initramfs.Size)
	return nil
}

// categoryError puts an error under one of this package's categories
// while keeping a single-cause chain, so upstream-style error chains
// (internal/cli.ErrorChain) print one level per cause.
type categoryError struct{ cat, err error }

func wrap(cat, err error) error { return &categoryError{cat: cat, err: err} }

func (e *categoryError) Error() string        { return e.cat.Error() + ": " + e.err.Error() }
func (e *categoryError) Unwrap() error        { return e.err }
func (e *categoryError) Is(target error) bool { return target == e.cat }
