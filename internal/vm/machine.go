package vm

import (
	"errors"
	"fmt"
	"time"

	"github.com/nimbus-vmm/nimbus/internal/devices/pci"
	"github.com/nimbus-vmm/nimbus/internal/devmgr"
	"github.com/nimbus-vmm/nimbus/internal/kvm"
	"github.com/nimbus-vmm/nimbus/internal/virtio/vhostuser"
	"github.com/nimbus-vmm/nimbus/internal/vmm"
)

var _ vmm.Machine = (*VM)(nil)

// Boot starts one goroutine per vCPU and returns; the vCPUs run.
func (m *VM) Boot() error {
	if m.booted {
		return fmt.Errorf("%w: the machine already booted", vmm.ErrInvalidState)
	}
	m.booted = true
	for _, c := range m.vcpuList() {
		m.startVcpu(c)
	}
	return nil
}

func (m *VM) logFirstEntry() {
	close(m.entry)
	m.log.Info("first vCPU entry", "since_process_start", time.Since(ProcessStart))
}

// Entered is closed when the boot vCPU first enters the guest (for boot
// time measurements).
func (m *VM) Entered() <-chan struct{} { return m.entry }

// Pause kicks every vCPU out of the guest, waits until all are parked
// (or gone), then pauses every device and saves kvmclock. It is all or
// nothing: if a device cannot pause, the devices already paused and the
// vCPUs run again and the VM stays running.
func (m *VM) Pause() error {
	m.parkAll()
	if err := m.dm.Pause(); err != nil {
		m.unpark()
		return wrap(ErrSetup, err)
	}
	// As upstream: save kvmclock once the vCPUs are parked so that Resume
	// puts it back and the guest's clock does not jump by the paused time.
	// Flags are dropped: KVM_CLOCK_REALTIME on set would add that time back.
	clock, err := m.kvm.Clock()
	if err != nil {
		err = errors.Join(wrap(ErrKVM, err), m.dm.Resume())
		m.unpark()
		return err
	}
	m.clock = &kvm.ClockData{Clock: clock.Clock}
	return nil
}

// parkAll takes every vCPU out of the guest and waits until all are
// parked (or gone); unpark lets them run again.
func (m *VM) parkAll() {
	m.mu.Lock()
	m.paused = true
	m.mu.Unlock()
	m.kickAll()
	m.mu.Lock()
	for m.parked < m.alive {
		m.cond.Wait()
	}
	m.mu.Unlock()
}

func (m *VM) unpark() {
	m.mu.Lock()
	m.paused = false
	m.cond.Broadcast()
	m.mu.Unlock()
}

// Resume lets parked vCPUs enter the guest again.
func (m *VM) Resume() error {
	if m.clock != nil {
		if err := m.kvm.SetClock(*m.clock); err != nil {
			return wrap(ErrKVM, err)
		}
		m.clock = nil
	}
	if err := m.dm.Resume(); err != nil {
		return wrap(ErrSetup, err)
	}
	m.unpark()
	return nil
}

// Shutdown stops and joins the vCPU goroutines and releases every fd,
// mapping and backend.
func (m *VM) Shutdown() error {
	m.stopVcpus()
	return m.release()
}

// ShutdownForReboot implements vmm.Rebooter: Shutdown, except that each
// vhost-user device hands its back-end connection over to the machine
// the reboot builds next (see vhostuser.Handover).
func (m *VM) ShutdownForReboot() (vmm.Handover, error) {
	m.stopVcpus()
	h := vhostuser.NewHandover()
	var errs []error
	if m.dm != nil && !m.closed {
		for _, n := range m.dm.Nodes() {
			if d, ok := n.Device.(*vhostuser.Device); ok {
				if err := d.HandOver(h); err != nil {
					errs = append(errs, fmt.Errorf("%s: %w", n.ID, err))
				}
			}
		}
	}
	return h, errors.Join(append(errs, m.release())...)
}

// stopVcpus stops and joins the vCPU goroutines.
func (m *VM) stopVcpus() {
	m.mu.Lock()
	m.stopping = true
	m.cond.Broadcast()
	m.mu.Unlock()
	m.kickAll()
	m.wg.Wait()
}

// release closes everything New opened; vCPU goroutines must be stopped.
func (m *VM) release() error {
	if m.closed {
		return nil
	}
	m.closed = true
	var errs []error
	if m.dm != nil {
		// First: device goroutines use guest memory and the irqfds.
		errs = append(errs, m.dm.Close())
	}
	for _, c := range m.vcpuList() {
		errs = append(errs, c.v.Close())
	}
	if m.kvm != nil {
		errs = append(errs, m.kvm.Close())
	}
	if m.mem != nil {
		// After the VM fd: KVM drops its slots' references with the VM.
		errs = append(errs, m.mem.Close())
	}
	if m.sys != nil {
		errs = append(errs, m.sys.Close())
	}
	return errors.Join(errs...)
}

// PowerButton sets the GED's power-button bit and pulses its interrupt;
// the guest's _EVT method turns it into Notify(\_SB_.PWRB, 0x80).
func (m *VM) PowerButton() error {
	if m.ged == nil {
		return fmt.Errorf("power button: no ACPI GED device: %w", vmm.ErrUnsupported)
	}
	if err := m.ged.PowerButton(); err != nil {
		return wrap(ErrKVM, err)
	}
	return nil
}

// NMI injects an NMI into every vCPU, as upstream's CpuManager::nmi: it
// flags each vCPU and kicks it, and the vCPU's own thread makes the
// KVM_NMI ioctl before it re-enters the guest (see vcpu.nmi). A paused
// vCPU takes it when resumed.
func (m *VM) NMI() error {
	for _, c := range m.vcpuList() {
		c.nmi.Store(true)
	}
	m.kickAll()
	return nil
}

// Counters reports every virtio device that keeps counters, by id.
func (m *VM) Counters() vmm.Counters { return m.dm.Counters() }

// DeviceTree is vm.info's device_tree: every legacy, PCI and virtio node
// in the device manager (platform plumbing is not listed, as upstream).
func (m *VM) DeviceTree() map[string]*vmm.DeviceNode {
	out := map[string]*vmm.DeviceNode{}
	for _, n := range m.dm.Nodes() {
		if n.Kind == devmgr.Platform {
			continue
		}
		d := &vmm.DeviceNode{ID: n.ID, Resources: []map[string]any{}, Children: append([]string{}, n.Children...)}
		if n.Parent != "" {
			p := n.Parent
			d.Parent = &p
		}
		for _, r := range n.PIO {
			d.Resources = append(d.Resources, map[string]any{"PioAddressRange": map[string]any{"base": r.Base, "size": r.Size}})
		}
		for _, r := range n.MMIO {
			d.Resources = append(d.Resources, map[string]any{"MmioAddressRange": map[string]any{"base": r.Base, "size": r.Size}})
		}
		if n.Function != nil {
			for _, r := range pci.BARResources(n.Function) {
				d.Resources = append(d.Resources, map[string]any{"PciBar": *r.PciBar})
			}
		}
		for _, irq := range n.IRQs {
			d.Resources = append(d.Resources, map[string]any{"LegacyIrq": irq})
		}
		if n.BDF != nil {
			s := n.BDF.String()
			d.PciBDF = &s
		}
		out[n.ID] = d
	}
	return out
}
