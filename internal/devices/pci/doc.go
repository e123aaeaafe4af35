// Package pci emulates the PCI side of Nimbus's x86 machine as Cloud
// Hypervisor does (pci/src in upstream): type-0 configuration spaces with
// BARs and a capability list, a host bridge at 00:00.0, a root per PCI
// segment answering configuration mechanism #1 (ports 0xcf8/0xcfc) and
// ECAM/MMCONFIG, a slot allocator, top-down BAR allocation over the 32-bit
// and 64-bit device windows, and MSI-X (capability, table, PBA) whose
// vectors are routed to the hypervisor through the MSIRouter interface.
//
// The VM uses it like this:
//
//	r, _ := pci.NewRoot(pci.RootConfig{Segment: 0, MMIO: mmioBus, Window32: a32, Window64: a64})
//	pio.Insert(r.ConfigIO(), pci.ConfigIOPort, pci.ConfigIOSize)
//	mmio.Insert(r.ConfigMMIO(), pci.ECAMBase(0), pci.ECAMSizePerSegment)
//	bdf, _ := r.Add(fn, pci.AnySlot)  // BARs allocated, placed and mapped
//
// Concurrency: every configuration access goes through the Root's mutex,
// as upstream serializes them through its PciBus lock; BAR accesses go to
// the function directly and the function does its own locking.
package pci
