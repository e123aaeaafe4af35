package x86

import (
	"math/bits"

	"github.com/nimbus-vmm/nimbus/internal/kvm"
)

// CPUID leaves and bits patched for the guest (Intel SDM vol. 2A CPUID,
// AMD APM vol. 3 appendix E, Linux Documentation/virt/kvm/x86/cpuid.rst).
const (
	leafFeatures    = 0x1
	leafCache       = 0x4
	leafXSave       = 0xd
	leafTopology    = 0xb
	leafTopologyV2  = 0x1f
	leafKVMBase     = 0x4000_0000
	leafKVMFeatures = 0x4000_0001
	leafTiming      = 0x4000_0010 // TSC and APIC bus frequencies in kHz
	leafAddrSizes   = 0x8000_0008
	leafAMDExtAPIC  = 0x8000_001e

	ecxHypervisor  = 1 << 31 // leaf 1 ECX: running under a hypervisor
	ecxTSCDeadline = 1 << 24 // leaf 1 ECX: LAPIC TSC-deadline mode
	ecxXSAVE       = 1 << 26 // leaf 1 ECX: XSAVE and XCR0
	edxHTT         = 1 << 28 // leaf 1 EDX: EBX[23:16] is valid

	// topology level types in leaf 0xB/0x1F ECX[15:8]
	levelSMT  = 1
	levelCore = 2
	levelDie  = 5

	// APICBusKHz is the local APIC timer frequency KVM emulates: its
	// apic_bus_cycle_ns is 1, i.e. 1 GHz. Upstream reports the same
	// 1_000_000 kHz in leaf 0x40000010 EBX.
	APICBusKHz = 1_000_000
)

// kvmSignature is "KVMKVMKVM\0\0\0" as leaf 0x40000000 EBX, ECX, EDX.
var kvmSignature = [3]uint32{0x4b4d564b, 0x564b4d56, 0x0000004d}

// Topology is the guest CPU topology (upstream CpuTopology). The zero
// value means one package of n single-threaded cores (see Normalize).
type Topology struct {
	ThreadsPerCore, CoresPerDie, DiesPerPackage, Packages uint32
}

// Normalize fills an unset topology as upstream does for n vCPUs:
// 1 thread per core, n cores, 1 die, 1 package.
func (t Topology) Normalize(n uint32) Topology {
	if t.ThreadsPerCore == 0 || t.CoresPerDie == 0 || t.DiesPerPackage == 0 || t.Packages == 0 {
		return Topology{ThreadsPerCore: 1, CoresPerDie: max(n, 1), DiesPerPackage: 1, Packages: 1}
	}
	return t
}

// widthFor is the number of APIC-id bits a level of n items takes.
func widthFor(n uint32) uint32 {
	if n <= 1 {
		return 0
	}
	return uint32(bits.Len32(n - 1))
}

func (t Topology) widths() (thread, core, die uint32) {
	return widthFor(t.ThreadsPerCore), widthFor(t.CoresPerDie), widthFor(t.DiesPerPackage)
}

// X2APICID is vCPU id's APIC id: its thread, core, die and package
// numbers packed into bit fields as wide as each level needs (upstream
// get_x2apic_id). With the default topology it is id.
func (t Topology) X2APICID(id uint32) uint32 {
	tw, cw, dw := t.widths()
	thread := id % t.ThreadsPerCore
	core := id / t.ThreadsPerCore % t.CoresPerDie
	die := id / (t.ThreadsPerCore * t.CoresPerDie) % t.DiesPerPackage
	pkg := id / (t.ThreadsPerCore * t.CoresPerDie * t.DiesPerPackage)
	return thread | core<<tw | die<<(tw+cw) | pkg<<(tw+cw+dw)
}

// CPUIDConfig says how to patch KVM's supported CPUID for one vCPU.
type CPUIDConfig struct {
	// ID is the vCPU index (0 is the boot vCPU).
	ID uint32
	// Topology must be normalized.
	Topology Topology
	// TSCKHz is reported in leaf 0x40000010 so the guest need not calibrate
	// its TSC (slow and unreliable under nested virtualization); 0 omits it.
	TSCKHz uint32
	// PhysBits caps the guest physical address width (leaf 0x80000008
	// EAX[7:0]); 0 keeps KVM's value.
	PhysBits uint8
	// TSCDeadline advertises the LAPIC TSC-deadline timer (KVM emulates it
	// when KVM_CAP_TSC_DEADLINE_TIMER is present).
	TSCDeadline bool
}

// PatchCPUID returns a copy of supported (KVM_GET_SUPPORTED_CPUID) patched
// for one vCPU, following upstream's generate_common_cpuid and
// configure_vcpu: APIC ids, topology, hypervisor bit, the KVM leaves with
// the TSC frequency leaf, and the physical address width.
func PatchCPUID(supported kvm.CPUID, c CPUIDConfig) kvm.CPUID {
	t := c.Topology
	apicID := t.X2APICID(c.ID)
	tw, cw, dw := t.widths()
	perPackage := t.ThreadsPerCore * t.CoresPerDie * t.DiesPerPackage

	out := make(kvm.CPUID, 0, len(supported)+8)
	maxBasic := uint32(0)
	for _, e := range supported {
		if e.Function == 0 {
			maxBasic = e.EAX
		}
		switch e.Function {
		case leafTopology, leafTopologyV2, leafTiming:
			continue // rebuilt below
		case leafFeatures:
			e.EBX = e.EBX&0x0000_ffff | min(perPackage, 0xff)<<16 | apicID<<24
			e.ECX |= ecxHypervisor
			if c.TSCDeadline {
				e.ECX |= ecxTSCDeadline
			}
			if perPackage > 1 {
				e.EDX |= edxHTT
			}
		case leafCache:
			// EAX[31:26]: cores per package - 1; EAX[25:14]: logical
			// processors sharing this cache - 1 (a core's threads for L1/L2,
			// the package for L3).
			if e.EAX&0x1f == 0 {
				break // no more caches
			}
			sharing := t.ThreadsPerCore
			if (e.EAX>>5)&7 >= 3 {
				sharing = perPackage
			}
			cores := t.CoresPerDie * t.DiesPerPackage
			e.EAX = e.EAX&0x3fff | (min(sharing, 4096)-1)<<14 | (min(cores, 64)-1)<<26
		case leafKVMBase:
			if c.TSCKHz != 0 {
				e.EAX = leafTiming
			}
			e.EBX, e.ECX, e.EDX = kvmSignature[0], kvmSignature[1], kvmSignature[2]
		case leafAddrSizes:
			if c.PhysBits != 0 && uint32(c.PhysBits) < e.EAX&0xff {
				e.EAX = e.EAX&^0xff | uint32(c.PhysBits)
			}
		case leafAMDExtAPIC:
			e.EAX = apicID
		}
		out = append(out, e)
	}

	sig := uint32(kvm.CPUIDFlagSignificantIndex)
	if maxBasic >= leafTopology {
		out = append(out,
			kvm.CPUIDEntry{Function: leafTopology, Index: 0, Flags: sig, EAX: tw, EBX: t.ThreadsPerCore, ECX: levelSMT << 8, EDX: apicID},
			kvm.CPUIDEntry{Function: leafTopology, Index: 1, Flags: sig, EAX: tw + cw + dw, EBX: perPackage, ECX: levelCore<<8 | 1, EDX: apicID},
			kvm.CPUIDEntry{Function: leafTopology, Index: 2, Flags: sig, ECX: 2, EDX: apicID},
		)
	}
	if maxBasic >= leafTopologyV2 {
		out = append(out,
			kvm.CPUIDEntry{Function: leafTopologyV2, Index: 0, Flags: sig, EAX: tw, EBX: t.ThreadsPerCore, ECX: levelSMT << 8, EDX: apicID},
			kvm.CPUIDEntry{Function: leafTopologyV2, Index: 1, Flags: sig, EAX: tw + cw, EBX: t.ThreadsPerCore * t.CoresPerDie, ECX: levelCore<<8 | 1, EDX: apicID},
			kvm.CPUIDEntry{Function: leafTopologyV2, Index: 2, Flags: sig, EAX: tw + cw + dw, EBX: perPackage, ECX: levelDie<<8 | 2, EDX: apicID},
			kvm.CPUIDEntry{Function: leafTopologyV2, Index: 3, Flags: sig, ECX: 3, EDX: apicID},
		)
	}
	if c.TSCKHz != 0 {
		out = append(out, kvm.CPUIDEntry{Function: leafTiming, EAX: c.TSCKHz, EBX: APICBusKHz})
	}
	return out
}

// GuestXCR0 is the XCR0 a Linux guest with CPUID c enables for itself:
// every state component leaf 0xD sub-leaf 0 reports (Linux writes its
// whole supported user set), or 0 when c has no XSAVE.
//
// Starting vCPUs with this XCR0 instead of the reset value 1 changes
// nothing for a guest under a hypervisor that intercepts XSETBV: Linux
// sets it before use, and XCR0 means nothing until CR4.OSXSAVE is set.
// But QEMU's TCG before 8.x does not intercept XSETBV for its SVM guests,
// so under nested KVM on such a QEMU (the KVM sandbox) KVM never learns
// the XCR0 the guest set: CPUID leaf 0xD then disagrees with it ("XSAVE
// consistency problem"), and each VM entry puts XCR0 back to 1 under a
// guest that uses AVX, which hangs or kills it now and then.
func GuestXCR0(c kvm.CPUID) uint64 {
	f := c.Find(leafFeatures, 0)
	x := c.Find(leafXSave, 0)
	if f == nil || f.ECX&ecxXSAVE == 0 || x == nil {
		return 0
	}
	return uint64(x.EDX)<<32 | uint64(x.EAX)
}
