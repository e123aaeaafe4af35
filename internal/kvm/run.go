package kvm

import (
	"encoding/binary"
	"fmt"
)

// ExitReason is kvm_run.exit_reason (KVM_EXIT_* in <linux/kvm.h>).
type ExitReason uint32

// Exit reasons.
const (
	ExitUnknown       ExitReason = 0
	ExitException     ExitReason = 1
	ExitIO            ExitReason = 2
	ExitHypercall     ExitReason = 3
	ExitDebug         ExitReason = 4
	ExitHLT           ExitReason = 5
	ExitMMIO          ExitReason = 6
	ExitIRQWindowOpen ExitReason = 7
	ExitShutdown      ExitReason = 8
	ExitFailEntry     ExitReason = 9
	ExitIntr          ExitReason = 10
	ExitSetTPR        ExitReason = 11
	ExitTPRAccess     ExitReason = 12
	ExitNMI           ExitReason = 16
	ExitInternalError ExitReason = 17
	ExitSystemEvent   ExitReason = 24
	ExitIOAPICEOI     ExitReason = 26
	ExitHyperV        ExitReason = 27
	ExitX86RDMSR      ExitReason = 29
	ExitX86WRMSR      ExitReason = 30
	ExitX86BusLock    ExitReason = 33
	ExitNotify        ExitReason = 37
)

var exitNames = map[ExitReason]string{
	ExitUnknown: "KVM_EXIT_UNKNOWN", ExitException: "KVM_EXIT_EXCEPTION", ExitIO: "KVM_EXIT_IO",
	ExitHypercall: "KVM_EXIT_HYPERCALL", ExitDebug: "KVM_EXIT_DEBUG", ExitHLT: "KVM_EXIT_HLT",
	ExitMMIO: "KVM_EXIT_MMIO", ExitIRQWindowOpen: "KVM_EXIT_IRQ_WINDOW_OPEN",
	ExitShutdown: "KVM_EXIT_SHUTDOWN", ExitFailEntry: "KVM_EXIT_FAIL_ENTRY", ExitIntr: "KVM_EXIT_INTR",
	ExitSetTPR: "KVM_EXIT_SET_TPR", ExitTPRAccess: "KVM_EXIT_TPR_ACCESS", ExitNMI: "KVM_EXIT_NMI",
	ExitInternalError: "KVM_EXIT_INTERNAL_ERROR", ExitSystemEvent: "KVM_EXIT_SYSTEM_EVENT",
	ExitIOAPICEOI: "KVM_EXIT_IOAPIC_EOI", ExitHyperV: "KVM_EXIT_HYPERV",
	ExitX86RDMSR: "KVM_EXIT_X86_RDMSR", ExitX86WRMSR: "KVM_EXIT_X86_WRMSR",
	ExitX86BusLock: "KVM_EXIT_X86_BUS_LOCK", ExitNotify: "KVM_EXIT_NOTIFY",
}

// String returns the C name, e.g. "KVM_EXIT_IO".
func (r ExitReason) String() string {
	if n, ok := exitNames[r]; ok {
		return n
	}
	return fmt.Sprintf("KVM_EXIT(%d)", uint32(r))
}

// Offsets into struct kvm_run (<linux/kvm.h>, x86-64). The exit union
// starts at byte 32 and is 256 bytes long.
const (
	runRequestInterruptWindow = 0
	runImmediateExit          = 1
	runExitReason             = 8
	runReadyForInjection      = 12
	runIFFlag                 = 13
	runFlags                  = 14
	runCR8                    = 16
	runAPICBase               = 24
	runExit                   = 32 // the union

	// io
	runIODirection  = runExit + 0
	runIOSize       = runExit + 1
	runIOPort       = runExit + 2
	runIOCount      = runExit + 4
	runIODataOffset = runExit + 8
	// mmio
	runMMIOPhysAddr = runExit + 0
	runMMIOData     = runExit + 8
	runMMIOLen      = runExit + 16
	runMMIOIsWrite  = runExit + 20
	// fail_entry
	runFailEntryReason = runExit + 0
	runFailEntryCPU    = runExit + 8
	// internal
	runInternalSuberror = runExit + 0
	runInternalNData    = runExit + 4
	runInternalData     = runExit + 8
	// system_event
	runSystemEventType  = runExit + 0
	runSystemEventNData = runExit + 4
	runSystemEventData  = runExit + 8
	// hw
	runHWExitReason = runExit + 0

	runExitUnionSize = 256
	runMinSize       = runExit + runExitUnionSize
)

// IO directions (KVM_EXIT_IO_IN/OUT).
const (
	IOIn  = 0
	IOOut = 1
)

// IOExit describes a KVM_EXIT_IO.
type IOExit struct {
	Direction uint8  // IOIn or IOOut
	Size      uint8  // bytes per access: 1, 2 or 4
	Port      uint16 //
	Count     uint32 // accesses (>1 for rep ins/outs)
	// Data aliases the vCPU's kvm_run page (Size*Count bytes): for IOOut it
	// holds the guest's data; for IOIn the handler fills it. It is valid
	// until the next Run.
	Data []byte
}

// MMIOExit describes a KVM_EXIT_MMIO.
type MMIOExit struct {
	Addr    uint64 // guest-physical address
	IsWrite bool
	// Data aliases kvm_run.mmio.data (Len bytes, at most 8): for writes it
	// holds the guest's data; for reads the handler fills it. Valid until
	// the next Run.
	Data []byte
}

// System event types (KVM_SYSTEM_EVENT_*).
const (
	SystemEventShutdown = 1
	SystemEventReset    = 2
	SystemEventCrash    = 3
)

// SystemEventExit describes a KVM_EXIT_SYSTEM_EVENT.
type SystemEventExit struct {
	Type uint32
	// Data holds the event's data words (ndata on Linux 5.18+; before
	// that only Data[0], the flags word, is meaningful).
	Data []uint64
}

// InternalErrorExit describes a KVM_EXIT_INTERNAL_ERROR.
type InternalErrorExit struct {
	Suberror uint32 // KVM_INTERNAL_ERROR_*: 1 emulation, 2 simul ex, 3 delivery ev
	Data     []uint64
}

// FailEntryExit describes a KVM_EXIT_FAIL_ENTRY.
type FailEntryExit struct {
	HardwareEntryFailureReason uint64
	CPU                        uint32
}

// Exit is a decoded kvm_run after KVM_RUN returned. Only the member that
// matches Reason is set.
type Exit struct {
	Reason      ExitReason
	IO          IOExit
	MMIO        MMIOExit
	SystemEvent SystemEventExit
	Internal    InternalErrorExit
	FailEntry   FailEntryExit
	// HardwareExitReason is set for ExitUnknown.
	HardwareExitReason uint64
}

func (e Exit) String() string {
	switch e.Reason {
	case ExitIO:
		dir := "in"
		if e.IO.Direction == IOOut {
			dir = "out"
		}
		return fmt.Sprintf("%v %s port=%#x size=%d count=%d", e.Reason, dir, e.IO.Port, e.IO.Size, e.IO.Count)
	case ExitMMIO:
		return fmt.Sprintf("%v addr=%#x len=%d write=%v", e.Reason, e.MMIO.Addr, len(e.MMIO.Data), e.MMIO.IsWrite)
	case ExitSystemEvent:
		return fmt.Sprintf("%v type=%d data=%#x", e.Reason, e.SystemEvent.Type, e.SystemEvent.Data)
	case ExitInternalError:
		return fmt.Sprintf("%v suberror=%d data=%#x", e.Reason, e.Internal.Suberror, e.Internal.Data)
	case ExitFailEntry:
		return fmt.Sprintf("%v reason=%#x cpu=%d", e.Reason, e.FailEntry.HardwareEntryFailureReason, e.FailEntry.CPU)
	case ExitUnknown:
		return fmt.Sprintf("%v hardware_exit_reason=%#x", e.Reason, e.HardwareExitReason)
	}
	return e.Reason.String()
}

// decodeExit interprets a kvm_run mapping. It never indexes outside run: a
// corrupt data_offset or size yields an error instead of a panic.
func decodeExit(run []byte) (Exit, error) {
	if len(run) < runMinSize {
		return Exit{}, fmt.Errorf("kvm_run mapping of %d bytes: %w", len(run), ErrInvalidArgument)
	}
	le := binary.LittleEndian
	e := Exit{Reason: ExitReason(le.Uint32(run[runExitReason:]))}
	switch e.Reason {
	case ExitIO:
		io := IOExit{
			Direction: run[runIODirection],
			Size:      run[runIOSize],
			Port:      le.Uint16(run[runIOPort:]),
			Count:     le.Uint32(run[runIOCount:]),
		}
		off := le.Uint64(run[runIODataOffset:])
		n := uint64(io.Size) * uint64(io.Count)
		if off > uint64(len(run)) || n > uint64(len(run))-off {
			return e, fmt.Errorf("KVM_EXIT_IO data at %#x+%d outside kvm_run (%d bytes): %w", off, n, len(run), ErrInvalidArgument)
		}
		io.Data = run[off : off+n : off+n]
		e.IO = io
	case ExitMMIO:
		n := le.Uint32(run[runMMIOLen:])
		if n > 8 {
			return e, fmt.Errorf("KVM_EXIT_MMIO len %d: %w", n, ErrInvalidArgument)
		}
		e.MMIO = MMIOExit{
			Addr:    le.Uint64(run[runMMIOPhysAddr:]),
			IsWrite: run[runMMIOIsWrite] != 0,
			Data:    run[runMMIOData : runMMIOData+int(n) : runMMIOData+int(n)],
		}
	case ExitSystemEvent:
		n := le.Uint32(run[runSystemEventNData:])
		if n == 0 || n > 16 {
			n = 1 // pre-5.18 kernels: only the flags word
		}
		e.SystemEvent = SystemEventExit{Type: le.Uint32(run[runSystemEventType:]), Data: words(run[runSystemEventData:], int(n))}
	case ExitInternalError:
		n := le.Uint32(run[runInternalNData:])
		if n > 16 {
			n = 16
		}
		e.Internal = InternalErrorExit{Suberror: le.Uint32(run[runInternalSuberror:]), Data: words(run[runInternalData:], int(n))}
	case ExitFailEntry:
		e.FailEntry = FailEntryExit{
			HardwareEntryFailureReason: le.Uint64(run[runFailEntryReason:]),
			CPU:                        le.Uint32(run[runFailEntryCPU:]),
		}
	case ExitUnknown:
		e.HardwareExitReason = le.Uint64(run[runHWExitReason:])
	}
	return e, nil
}

func words(b []byte, n int) []uint64 {
	out := make([]uint64, n)
	for i := range out {
		out[i] = binary.LittleEndian.Uint64(b[8*i:])
	}
	return out
}
