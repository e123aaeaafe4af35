package vmmtest

import (
	"fmt"

	"github.com/nimbus-vmm/nimbus/internal/config"
	"github.com/nimbus-vmm/nimbus/internal/vmm"
)

// HotplugMachine is a Machine that also implements vmm.Hotplugger: hot
// adds get slots from 00:05.0 up, RemoveDevice records the request and
// Eject simulates the guest ejecting a device.
type HotplugMachine struct {
	*Machine
	// AddErr, when set, fails the next hot adds; ResizeErr the resizes.
	AddErr, ResizeErr error

	next     int
	slots    map[string]string // id -> bdf
	ejected  chan struct{}
	pending  []vmm.EjectedDevice
	Requests []string // RemoveDevice ids, in order
}

func newHotplugMachine(m *Machine) *HotplugMachine {
	return &HotplugMachine{Machine: m, next: 5, slots: map[string]string{}, ejected: make(chan struct{}, 1)}
}

func (h *HotplugMachine) plug(id string) (*vmm.PciDeviceInfo, error) {
	if h.AddErr != nil {
		return nil, h.AddErr
	}
	bdf := fmt.Sprintf("0000:00:%02x.0", h.next)
	h.next++
	h.mu.Lock()
	h.slots[id] = bdf
	h.mu.Unlock()
	return &vmm.PciDeviceInfo{ID: id, BDF: bdf}, nil
}

// AddDisk implements vmm.Hotplugger.
func (h *HotplugMachine) AddDisk(d *config.DiskConfig) (*vmm.PciDeviceInfo, error) {
	h.record("AddDisk", nil)
	return h.plug(d.ID)
}

// AddNet implements vmm.Hotplugger; it fills in a tap name and MAC.
func (h *HotplugMachine) AddNet(n *config.NetConfig) (*vmm.PciDeviceInfo, error) {
	h.record("AddNet", nil)
	if n.Tap == "" && len(n.Fds) == 0 {
		n.Tap = "vmtap9"
	}
	if n.MAC == "" {
		n.MAC = "52:54:00:00:00:09"
	}
	return h.plug(n.ID)
}

// AddVsock implements vmm.Hotplugger.
func (h *HotplugMachine) AddVsock(v *config.VsockConfig) (*vmm.PciDeviceInfo, error) {
	h.record("AddVsock", nil)
	return h.plug(v.ID)
}

// AddFs implements vmm.Hotplugger.
func (h *HotplugMachine) AddFs(f *config.FsConfig) (*vmm.PciDeviceInfo, error) {
	h.record("AddFs", nil)
	return h.plug(f.ID)
}

// AddPmem implements vmm.Hotplugger.
func (h *HotplugMachine) AddPmem(p *config.PmemConfig) (*vmm.PciDeviceInfo, error) {
	h.record("AddPmem", nil)
	return h.plug(p.ID)
}

// RemoveDevice implements vmm.Hotplugger.
func (h *HotplugMachine) RemoveDevice(id string) error {
	h.record("RemoveDevice", nil)
	h.mu.Lock()
	_, ok := h.slots[id]
	h.mu.Unlock()
	if !ok {
		return vmm.DeviceManagerLeaf(vmm.ErrNotFound, "Failed to find device corresponding to the given identifier: %s", id)
	}
	h.Requests = append(h.Requests, id)
	return nil
}

// Eject simulates the guest ejecting id's slot: the loop is told and
// then calls ReleaseEjected. Call it from the test goroutine only while
// no request is running.
func (h *HotplugMachine) Eject(id string) {
	h.mu.Lock()
	h.pending = append(h.pending, vmm.EjectedDevice{ID: id, BDF: h.slots[id]})
	h.mu.Unlock()
	select {
	case h.ejected <- struct{}{}:
	default:
	}
}

// Ejected implements vmm.Hotplugger.
func (h *HotplugMachine) Ejected() <-chan struct{} { return h.ejected }

// ReleaseEjected implements vmm.Hotplugger.
func (h *HotplugMachine) ReleaseEjected() []vmm.EjectedDevice {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := h.pending
	h.pending = nil
	for _, d := range out {
		delete(h.slots, d.ID)
	}
	return out
}

// ResizeVcpus implements vmm.CPUHotplugger: it records the count and
// returns ResizeErr.
func (h *HotplugMachine) ResizeVcpus(desired int) (bool, error) {
	h.record(fmt.Sprintf("ResizeVcpus(%d)", desired), nil)
	if h.ResizeErr != nil {
		return false, h.ResizeErr
	}
	return true, nil
}

// ResizeMemory implements vmm.MemoryHotplugger: it records the size and
// returns ResizeErr.
func (h *HotplugMachine) ResizeMemory(desired uint64) (bool, error) {
	h.record(fmt.Sprintf("ResizeMemory(%d)", desired), nil)
	if h.ResizeErr != nil {
		return false, h.ResizeErr
	}
	return true, nil
}

// VirtioMemPlugged implements vmm.MemoryHotplugger.
func (h *HotplugMachine) VirtioMemPlugged() uint64 { return 0 }
