package vm

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"

	"github.com/nimbus-vmm/nimbus/internal/devmgr"
	"github.com/nimbus-vmm/nimbus/internal/kvm"
	"github.com/nimbus-vmm/nimbus/internal/virtio"
)

// GSIs 0-23 belong to the in-kernel IOAPIC (and 0-15 also to the PICs);
// MSI-X vectors get GSIs from here up, one each, as upstream's
// KvmMsiInterruptManager allocates them above the IOAPIC's pins.
const (
	firstMSIGSI = 24
	// maxGSI is KVM_MAX_IRQ_ROUTES (include/linux/kvm_host.h).
	maxGSI = 4096
	// ioapicPins is KVM_IOAPIC_NUM_PINS.
	ioapicPins = 24
)

// defaultRouting is KVM's own initial GSI table for the in-kernel irqchip
// (arch/x86/kvm/irq_comm.c default_routing, in its order): GSI n goes to
// IOAPIC pin n for n < 24 and also to PIC pin n%8 (master below 8, slave
// from 8) for n < 16. KVM_SET_GSI_ROUTING replaces the whole table, so
// every table we set starts with these, or the legacy devices (serial,
// PIT) would lose their interrupts.
func defaultRouting() kvm.IRQRouting {
	r := make(kvm.IRQRouting, 0, ioapicPins+16)
	for gsi := uint32(0); gsi < ioapicPins; gsi++ {
		r = append(r, kvm.IRQChipRoute(gsi, kvm.IRQChipIOAPIC, gsi))
		if gsi < 16 {
			chip := uint32(kvm.IRQChipPICMaster)
			if gsi >= 8 {
				chip = kvm.IRQChipPICSlave
			}
			r = append(r, kvm.IRQChipRoute(gsi, chip, gsi%8))
		}
	}
	return r
}

// msiRoutes owns the MSI part of the VM's GSI routing table and hands out
// GSIs. Every change sets the whole table (defaultRouting plus the
// unmasked MSI routes).
type msiRoutes struct {
	vm   *kvm.VM
	gsis *devmgr.GSIs

	mu     sync.Mutex
	routes map[uint32]kvm.IRQRoutingEntry
}

func newMSIRoutes(vm *kvm.VM) *msiRoutes {
	return &msiRoutes{vm: vm, gsis: devmgr.NewGSIs(firstMSIGSI, maxGSI), routes: map[uint32]kvm.IRQRoutingEntry{}}
}

// allocate reserves n consecutive GSIs and returns the first.
func (r *msiRoutes) allocate(n int) (uint32, error) { return r.gsis.Allocate(n) }

// free drops the routes of n GSIs from base, pushing the table once if
// any was set, and gives the GSIs back.
func (r *msiRoutes) free(base uint32, n int) error {
	r.mu.Lock()
	changed := false
	for gsi := base; gsi < base+uint32(n); gsi++ {
		if _, ok := r.routes[gsi]; ok {
			delete(r.routes, gsi)
			changed = true
		}
	}
	var err error
	if changed {
		err = r.commit()
	}
	r.mu.Unlock()
	return errors.Join(err, r.gsis.Free(base, n))
}

// set installs (or with masked, removes) gsi's MSI route and pushes the
// table to KVM when it changed.
func (r *msiRoutes) set(gsi uint32, addr uint64, data uint32, masked bool) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	old, had := r.routes[gsi]
	if masked {
		if !had {
			return nil
		}
		delete(r.routes, gsi)
	} else {
		e := kvm.MSIRoute(gsi, addr, data)
		if had && old == e {
			return nil
		}
		r.routes[gsi] = e
	}
	return r.commit()
}

// commit sets the full table. Lock held.
func (r *msiRoutes) commit() error {
	table := defaultRouting()
	for _, gsi := range slices.Sorted(maps.Keys(r.routes)) {
		table = append(table, r.routes[gsi])
	}
	if err := r.vm.SetGSIRouting(table); err != nil {
		return fmt.Errorf("set GSI routing (%d entries): %w", len(table), err)
	}
	return nil
}

// msixVectors backs one function's MSI-X vectors with KVM: vector v is
// GSI base+v with an irqfd. It implements devices/pci.MSIRouter: Route
// keeps the GSI's MSI route in step with the table entry, Trigger writes
// the vector's irqfd. A masked vector has no route; the MSI-X code keeps
// Nimbus's own messages pending instead of calling Trigger. A vector whose
// eventfd was handed to a vhost-user back end (Notifier) also loses its
// irqfd while masked, so the back end's writes stay counted in the
// eventfd, which KVM delivers when unmasking binds it again (upstream's
// irqfd mask/unmask, KVM_IRQFD's assign-time poll).
type msixVectors struct {
	routes *msiRoutes
	base   uint32
	n      int // GSIs allocated from base
	fds    []*virtio.EventFD
	bound  []bool // fds[i] is a registered irqfd
	// external[i]: fds[i] went to a back end (Notifier). Only those are
	// unbound while masked: Nimbus's own devices never write a masked
	// vector, and keep the path every in-process device was tested on.
	external []bool
	vm       *kvm.VM
}

// newMSIXVectors allocates n GSIs and binds an eventfd to each.
func newMSIXVectors(vm *kvm.VM, routes *msiRoutes, n int) (_ *msixVectors, err error) {
	base, err := routes.allocate(n)
	if err != nil {
		return nil, err
	}
	v := &msixVectors{routes: routes, base: base, n: n, vm: vm, bound: make([]bool, n), external: make([]bool, n)}
	defer func() {
		if err != nil {
			err = errors.Join(err, v.Close())
		}
	}()
	for i := 0; i < n; i++ {
		fd, err := virtio.NewEventFD()
		if err != nil {
			return nil, err
		}
		v.fds = append(v.fds, fd)
		if err := v.bind(i, true); err != nil {
			return nil, err
		}
	}
	return v, nil
}

// bind registers (or unregisters) vector i's irqfd.
func (v *msixVectors) bind(i int, on bool) error {
	if v.bound[i] == on {
		return nil
	}
	gsi := v.base + uint32(i)
	if on {
		if err := v.vm.RegisterIRQFD(v.fds[i].FD(), gsi); err != nil {
			return fmt.Errorf("irqfd for GSI %d: %w", gsi, err)
		}
	} else if err := v.vm.UnregisterIRQFD(v.fds[i].FD(), gsi); err != nil && !errors.Is(err, kvm.ErrClosed) {
		return fmt.Errorf("irqfd for GSI %d: %w", gsi, err)
	}
	v.bound[i] = on
	return nil
}

// Route implements pci.MSIRouter: the route first, so that an unmasked
// vector's pending eventfd count is delivered to the new message.
func (v *msixVectors) Route(vector int, addr uint64, data uint32, masked bool) error {
	if vector < 0 || vector >= len(v.fds) {
		return fmt.Errorf("vector %d of %d", vector, len(v.fds))
	}
	if masked {
		var err error
		if v.external[vector] {
			err = v.bind(vector, false)
		}
		return errors.Join(err, v.routes.set(v.base+uint32(vector), addr, data, true))
	}
	if err := v.routes.set(v.base+uint32(vector), addr, data, false); err != nil {
		return err
	}
	return v.bind(vector, true)
}

// Notifier implements pci.MSINotifier: the vector's irqfd eventfd, from
// then on unbound while the vector is masked. It is called with the MSI-X
// lock held, like Route.
func (v *msixVectors) Notifier(vector int) (int, bool) {
	if vector < 0 || vector >= len(v.fds) {
		return -1, false
	}
	v.external[vector] = true
	return v.fds[vector].FD(), true
}

// Trigger implements pci.MSIRouter.
func (v *msixVectors) Trigger(vector int) error {
	if vector < 0 || vector >= len(v.fds) {
		return fmt.Errorf("vector %d of %d", vector, len(v.fds))
	}
	return v.fds[vector].Signal()
}

// Close unbinds and closes the irqfds, drops the vectors' routes and
// gives their GSIs back: the one release path for a function's vectors,
// on hot removal, a failed add and shutdown alike.
func (v *msixVectors) Close() error {
	if v.routes == nil {
		return nil
	}
	var errs []error
	for i, fd := range v.fds {
		errs = append(errs, v.bind(i, false), fd.Close())
	}
	v.fds = nil
	errs = append(errs, v.routes.free(v.base, v.n))
	v.routes = nil
	return errors.Join(errs...)
}
