package vm

import (
	"errors"
	"fmt"
	"runtime"
	"sync/atomic"

	"github.com/nimbus-vmm/nimbus/internal/arch/x86"
	"github.com/nimbus-vmm/nimbus/internal/config"
	"github.com/nimbus-vmm/nimbus/internal/kvm"
	"github.com/nimbus-vmm/nimbus/internal/seccomp"
	"github.com/nimbus-vmm/nimbus/internal/vmm"
)

// The main goroutine keeps the process's main thread to itself. A vCPU
// goroutine locks its thread and never unlocks it, so the runtime ends the
// thread with the goroutine; but the runtime cannot end the main thread and
// parks it for good instead. A vCPU goroutine that had landed on the main
// thread left it behind after shutdown, still named "vcpuN", which is also
// the name ps shows for the whole process (the triple-fault test saw it).
// Locking here, in an init function, keeps every other goroutine off it.
func init() { runtime.LockOSThread() }

// vcpu is one vCPU and its goroutine's view of it.
type vcpu struct {
	id int
	v  *kvm.Vcpu
	// nmi asks the vCPU's own thread to inject an NMI before its next
	// entry. Any vCPU ioctl from another thread waits for KVM_RUN to
	// return (KVM holds vcpu->mutex in it), which a guest idle in HLT
	// never does; so only the vCPU thread makes vCPU ioctls.
	nmi atomic.Bool

	// Hotplug (control loop only, except as noted): running while its
	// goroutine runs (read by kickAll on any thread); stop asks the
	// goroutine to return at its next exit; done is closed when it has;
	// removing marks a vCPU the guest was asked to eject.
	running  atomic.Bool
	stop     atomic.Bool
	done     chan struct{}
	removing bool
}

// cpuSetup is what every vCPU, boot or hot-added, is configured from.
type cpuSetup struct {
	supported kvm.CPUID
	topo      x86.Topology
	tscKHz    uint32
	deadline  bool
	physBits  uint8
}

// createVcpus creates boot_vcpus vCPUs and sets their CPUID, MSRs and
// LAPIC; LoadPayload sets vCPU 0's entry registers. APs stay in KVM's
// default MP state, waiting for INIT/SIPI from the boot vCPU.
func (m *VM) createVcpus(cfg *config.VmConfig) error {
	n := max(cfg.Cpus.BootVcpus, 1)
	supported, err := m.sys.SupportedCPUID()
	if err != nil {
		return wrap(ErrKVM, err)
	}
	var topo x86.Topology
	if t := cfg.Cpus.Topology; t != nil {
		topo = x86.Topology{ThreadsPerCore: uint32(t.ThreadsPerCore), CoresPerDie: uint32(t.CoresPerDie),
			DiesPerPackage: uint32(t.DiesPerPackage), Packages: uint32(t.Packages)}
	}
	deadline, _ := m.sys.CheckExtension(kvm.CapTSCDeadlineTimer)
	m.cpus = cpuSetup{supported: supported, topo: topo.Normalize(max(n, cfg.Cpus.MaxVcpus)),
		deadline: deadline > 0, physBits: cfg.Cpus.MaxPhysBits}
	for i := 0; i < int(n); i++ {
		if err := m.createVcpu(i); err != nil {
			return err
		}
	}
	return nil
}

// createVcpu makes vCPU id (the next index) and configures it.
func (m *VM) createVcpu(id int) error {
	v, err := m.kvm.CreateVcpu(id)
	if err != nil {
		return wrap(ErrKVM, err)
	}
	if id == 0 {
		// The guest learns the TSC frequency from leaf 0x40000010 and
		// kvm-clock instead of calibrating (which stalls when nested).
		if khz, err := v.TSCKHz(); err == nil {
			m.cpus.tscKHz = khz
		} else {
			m.log.Warn("cannot read the TSC frequency; the guest will calibrate", "err", err)
		}
	}
	setup := x86.VcpuSetup{CPUID: x86.PatchCPUID(m.cpus.supported, x86.CPUIDConfig{
		ID: uint32(id), Topology: m.cpus.topo, TSCKHz: m.cpus.tscKHz, PhysBits: m.cpus.physBits, TSCDeadline: m.cpus.deadline,
	})}
	if err := x86.ConfigureVcpu(v, setup); err != nil {
		// Not listed: a half-configured vCPU must never run. KVM keeps
		// the id (a retry gets EEXIST), which is what it is.
		return wrap(ErrKVM, errors.Join(err, v.Close()))
	}
	m.vcpuMu.Lock()
	m.vcpus = append(m.vcpus, &vcpu{id: id, v: v})
	m.vcpuMu.Unlock()
	return nil
}

// startVcpu starts c's goroutine.
func (m *VM) startVcpu(c *vcpu) {
	m.mu.Lock()
	m.alive++
	m.mu.Unlock()
	c.stop.Store(false)
	c.done = make(chan struct{})
	c.running.Store(true)
	m.wg.Add(1)
	go m.runVcpu(c)
}

// vcpuList is a copy of the vCPUs, for any thread.
func (m *VM) vcpuList() []*vcpu {
	m.vcpuMu.Lock()
	defer m.vcpuMu.Unlock()
	return append([]*vcpu(nil), m.vcpus...)
}

// park blocks while the machine is paused; it returns false when the
// vCPU must stop: the machine is stopping, or c was ejected (releaseVcpu
// sets c.stop and broadcasts, so a parked vCPU hears it too).
func (m *VM) park(c *vcpu) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	for (m.paused || m.halted) && !m.stopping && !c.stop.Load() {
		m.parked++
		m.cond.Broadcast()
		m.cond.Wait()
		m.parked--
	}
	return !m.stopping && !c.stop.Load()
}

func (m *VM) stopping_() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.stopping
}

// runVcpu is a vCPU goroutine: it owns its OS thread (Kick signals it)
// until it returns, and reports guest exits through m.exits.
func (m *VM) runVcpu(c *vcpu) {
	defer func() {
		c.running.Store(false)
		m.mu.Lock()
		m.alive--
		m.cond.Broadcast()
		m.mu.Unlock()
		close(c.done)
		m.wg.Done()
	}()
	// Never unlocked: the thread ends with the goroutine, so no other
	// goroutine inherits its name or a pending kick signal.
	runtime.LockOSThread()
	if err := kvm.SetThreadName(fmt.Sprintf("vcpu%d", c.id)); err != nil {
		m.log.Debug("naming the vCPU thread failed", "vcpu", c.id, "err", err)
	}
	// Before the first entry: nothing a guest makes this thread do may
	// open files, make sockets or start threads.
	if err := seccomp.ConfineVcpuThread(); err != nil {
		m.fatal(c, wrap(ErrVcpu, fmt.Errorf("vcpu %d: applying the seccomp filter: %w", c.id, err)))
		return
	}
	for m.park(c) { // false also when ejected by the guest (releaseVcpu)
		if c.id == 0 {
			m.entered.Do(m.logFirstEntry)
		}
		if c.nmi.Swap(false) {
			if err := c.v.NMI(); err != nil {
				m.log.Warn("injecting an NMI failed", "vcpu", c.id, "err", err)
			}
		}
		exit, err := c.v.Run()
		if err != nil {
			if m.stopping_() {
				return
			}
			m.fatal(c, wrap(ErrVcpu, fmt.Errorf("vcpu %d: %w", c.id, err)))
			return
		}
		if !m.handleExit(c, exit) {
			return
		}
	}
}

// handleExit services one exit; false stops the vCPU.
func (m *VM) handleExit(c *vcpu, e kvm.Exit) bool {
	switch e.Reason {
	case kvm.ExitIO:
		size := uint64(e.IO.Size)
		for i := uint64(0); i < uint64(e.IO.Count); i++ {
			data := e.IO.Data[i*size : (i+1)*size]
			if e.IO.Direction == kvm.IOOut {
				m.io.Write(uint64(e.IO.Port), data)
			} else {
				m.io.Read(uint64(e.IO.Port), data)
			}
		}
	case kvm.ExitMMIO:
		if e.MMIO.IsWrite {
			m.mmio.Write(e.MMIO.Addr, e.MMIO.Data)
		} else {
			m.mmio.Read(e.MMIO.Addr, e.MMIO.Data)
		}
	case kvm.ExitIntr, kvm.ExitHLT:
		// A kick (pause/stop: park decides) or, without an in-kernel LAPIC,
		// an idle guest.
	case kvm.ExitShutdown:
		// A triple fault: upstream treats it as a reset request. Warn: the
		// guest crashed, and a guest that faults at every boot reboots
		// forever, so the operator must see why.
		m.log.Warn("guest triple fault", "vcpu", c.id, "regs", regDump(c.v))
		m.haltGuest()
		vmm.NotifyExit(m.exits, vmm.MachineExit{Reason: vmm.ExitReset})
		return false
	case kvm.ExitSystemEvent:
		m.haltGuest()
		switch e.SystemEvent.Type {
		case kvm.SystemEventShutdown:
			vmm.NotifyExit(m.exits, vmm.MachineExit{Reason: vmm.ExitPoweroff})
		case kvm.SystemEventReset:
			vmm.NotifyExit(m.exits, vmm.MachineExit{Reason: vmm.ExitReset})
		default:
			m.fatal(c, wrap(ErrVcpu, fmt.Errorf("vcpu %d: %v", c.id, e)))
		}
		return false
	default:
		m.fatal(c, wrap(ErrVcpu, fmt.Errorf("vcpu %d: unexpected exit %v%s", c.id, e, regDump(c.v))))
		return false
	}
	return true
}

// haltGuest keeps every vCPU out of the guest once it has asked to power
// off or reset, until the control loop tears the machine down (upstream's
// vcpus_kill_signalled). Left running, a guest whose first reset method
// "failed" goes on to the next ones (keyboard controller, triple fault)
// and spins; nested under TCG that starved the sandbox's own kernel.
// Safe from a vCPU thread: Kick only signals.
func (m *VM) haltGuest() {
	m.mu.Lock()
	m.halted = true
	m.mu.Unlock()
	m.kickAll()
}

// fatal reports an unrecoverable vCPU error.
func (m *VM) fatal(c *vcpu, err error) {
	m.haltGuest()
	m.log.Error("vCPU failed", "vcpu", c.id, "err", err)
	vmm.NotifyExit(m.exits, vmm.MachineExit{Reason: vmm.ExitFatal, Err: err})
}

// regDump renders the registers for a fatal error.
func regDump(v *kvm.Vcpu) string {
	r, err := v.Regs()
	if err != nil {
		return ""
	}
	s, err := v.Sregs()
	if err != nil {
		return ""
	}
	return fmt.Sprintf("; rip=%#x rsp=%#x rax=%#x rbx=%#x rcx=%#x rdx=%#x rsi=%#x rdi=%#x rflags=%#x cr0=%#x cr3=%#x cr4=%#x efer=%#x cs=%#x/%#x",
		r.RIP, r.RSP, r.RAX, r.RBX, r.RCX, r.RDX, r.RSI, r.RDI, r.RFLAGS, s.CR0, s.CR3, s.CR4, s.EFER, s.CS.Selector, s.CS.Base)
}

// kickAll makes every vCPU leave KVM_RUN.
func (m *VM) kickAll() {
	for _, c := range m.vcpuList() {
		if !c.running.Load() {
			continue
		}
		if err := c.v.Kick(); err != nil && !errors.Is(err, kvm.ErrClosed) {
			m.log.Warn("kicking a vCPU failed", "vcpu", c.id, "err", err)
		}
	}
}
