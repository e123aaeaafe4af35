package kvm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"

	"golang.org/x/sys/unix"
)

// fakeRun builds a kvm_run page the way the kernel fills it.
func fakeRun(reason ExitReason) []byte {
	run := make([]byte, 2*4096)
	binary.LittleEndian.PutUint32(run[8:], uint32(reason))
	return run
}

func TestDecodeIOExit(t *testing.T) {
	run := fakeRun(ExitIO)
	// struct kvm_io at offset 32: direction, size, port, count, data_offset.
	run[32] = IOOut
	run[33] = 2
	binary.LittleEndian.PutUint16(run[34:], 0x3f8)
	binary.LittleEndian.PutUint32(run[36:], 3)
	binary.LittleEndian.PutUint64(run[40:], 4096)
	copy(run[4096:], []byte{1, 2, 3, 4, 5, 6, 7})
	e, err := decodeExit(run)
	if err != nil {
		t.Fatal(err)
	}
	if e.Reason != ExitIO || e.IO.Direction != IOOut || e.IO.Size != 2 || e.IO.Port != 0x3f8 || e.IO.Count != 3 {
		t.Fatalf("got %+v", e.IO)
	}
	if !bytes.Equal(e.IO.Data, []byte{1, 2, 3, 4, 5, 6}) {
		t.Fatalf("data = %v, want 6 bytes from data_offset", e.IO.Data)
	}
	// An IN handler writes through Data into the page the kernel reads.
	e.IO.Data[0] = 0xaa
	if run[4096] != 0xaa {
		t.Fatal("IO data does not alias kvm_run")
	}
	if got := e.String(); got != "KVM_EXIT_IO out port=0x3f8 size=2 count=3" {
		t.Fatalf("String = %q", got)
	}
}

func TestDecodeIOExitRejectsBadOffset(t *testing.T) {
	for _, off := range []uint64{8192, 8191, 1 << 63, ^uint64(0)} {
		run := fakeRun(ExitIO)
		run[33] = 4
		binary.LittleEndian.PutUint32(run[36:], 1)
		binary.LittleEndian.PutUint64(run[40:], off)
		if _, err := decodeExit(run); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("offset %#x: err = %v, want ErrInvalidArgument", off, err)
		}
	}
	run := fakeRun(ExitIO)
	run[33] = 4
	binary.LittleEndian.PutUint32(run[36:], 0xffffffff)
	binary.LittleEndian.PutUint64(run[40:], 4096)
	if _, err := decodeExit(run); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("huge count: err = %v", err)
	}
	if _, err := decodeExit(make([]byte, 100)); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("short mapping: err = %v", err)
	}
}

func TestDecodeMMIOExit(t *testing.T) {
	run := fakeRun(ExitMMIO)
	binary.LittleEndian.PutUint64(run[32:], 0xd0010)
	copy(run[40:], []byte{0x5a, 0x5b, 0, 0, 0, 0, 0, 0})
	binary.LittleEndian.PutUint32(run[48:], 2)
	run[52] = 1
	e, err := decodeExit(run)
	if err != nil {
		t.Fatal(err)
	}
	if e.MMIO.Addr != 0xd0010 || !e.MMIO.IsWrite || !bytes.Equal(e.MMIO.Data, []byte{0x5a, 0x5b}) {
		t.Fatalf("got %+v", e.MMIO)
	}
	binary.LittleEndian.PutUint32(run[48:], 9)
	if _, err := decodeExit(run); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("len 9: err = %v", err)
	}
}

func TestDecodeOtherExits(t *testing.T) {
	run := fakeRun(ExitSystemEvent)
	binary.LittleEndian.PutUint32(run[32:], SystemEventReset)
	binary.LittleEndian.PutUint32(run[36:], 2)
	binary.LittleEndian.PutUint64(run[40:], 7)
	binary.LittleEndian.PutUint64(run[48:], 8)
	e, _ := decodeExit(run)
	if e.SystemEvent.Type != SystemEventReset || len(e.SystemEvent.Data) != 2 || e.SystemEvent.Data[1] != 8 {
		t.Fatalf("system event %+v", e.SystemEvent)
	}
	// Pre-5.18 kernels leave ndata as padding: keep the flags word.
	binary.LittleEndian.PutUint32(run[36:], 0)
	if e, _ = decodeExit(run); len(e.SystemEvent.Data) != 1 || e.SystemEvent.Data[0] != 7 {
		t.Fatalf("old-kernel system event %+v", e.SystemEvent)
	}

	run = fakeRun(ExitInternalError)
	binary.LittleEndian.PutUint32(run[32:], 1)
	binary.LittleEndian.PutUint32(run[36:], 99) // clamped to 16
	binary.LittleEndian.PutUint64(run[40:], 0x1234)
	if e, _ = decodeExit(run); e.Internal.Suberror != 1 || len(e.Internal.Data) != 16 || e.Internal.Data[0] != 0x1234 {
		t.Fatalf("internal error %+v", e.Internal)
	}

	run = fakeRun(ExitFailEntry)
	binary.LittleEndian.PutUint64(run[32:], 0x80000021)
	binary.LittleEndian.PutUint32(run[40:], 3)
	if e, _ = decodeExit(run); e.FailEntry.HardwareEntryFailureReason != 0x80000021 || e.FailEntry.CPU != 3 {
		t.Fatalf("fail entry %+v", e.FailEntry)
	}
	for r, want := range map[ExitReason]string{ExitHLT: "KVM_EXIT_HLT", ExitShutdown: "KVM_EXIT_SHUTDOWN", ExitIntr: "KVM_EXIT_INTR", 99: "KVM_EXIT(99)"} {
		if e, _ = decodeExit(fakeRun(r)); e.Reason != r || e.String() != want {
			t.Errorf("reason %d: %v %q", r, e.Reason, e.String())
		}
	}
}

func TestImmediateExitFlag(t *testing.T) {
	run := fakeRun(ExitHLT)
	run[0] = 1 // request_interrupt_window must survive
	setImmediateExit(run, true)
	if run[1] != 1 || run[0] != 1 {
		t.Fatalf("after set: % x", run[:2])
	}
	if !takeImmediateExit(run) || run[1] != 0 || run[0] != 1 {
		t.Fatalf("take: % x", run[:2])
	}
	if takeImmediateExit(run) {
		t.Fatal("flag reported twice")
	}
}

func TestMarshalCPUID(t *testing.T) {
	c := CPUID{{Function: 0x40000000, Index: 0, Flags: CPUIDFlagSignificantIndex, EAX: 1, EBX: 2, ECX: 3, EDX: 4}}
	b, _ := c.MarshalBinary()
	want := []byte{
		1, 0, 0, 0, 0, 0, 0, 0, // nent, padding
		0, 0, 0, 0x40, 0, 0, 0, 0, 1, 0, 0, 0, // function, index, flags
		1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0, 0, // eax..edx
		0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // padding[3]
	}
	if !bytes.Equal(b, want) {
		t.Fatalf("got  % x\nwant % x", b, want)
	}
	var back CPUID
	if err := back.UnmarshalBinary(b); err != nil || len(back) != 1 || back[0] != c[0] {
		t.Fatalf("round trip: %v %+v", err, back)
	}
	if back.Find(0x40000000, 5) != nil || back.Find(0x40000000, 0) == nil {
		t.Fatal("Find ignores the significant index")
	}
	if err := back.UnmarshalBinary(b[:20]); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("truncated: %v", err)
	}
}

func TestMarshalMSRs(t *testing.T) {
	m := MSRs{{Index: 0x174, Data: 0x10}, {Index: 0xc0000080, Data: 0x500}}
	b, _ := m.MarshalBinary()
	want := []byte{
		2, 0, 0, 0, 0, 0, 0, 0,
		0x74, 1, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0, 0, 0, 0, 0,
		0x80, 0, 0, 0xc0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0,
	}
	if !bytes.Equal(b, want) {
		t.Fatalf("got  % x\nwant % x", b, want)
	}
	var back MSRs
	if err := back.UnmarshalBinary(b); err != nil || len(back) != 2 || back[1] != m[1] {
		t.Fatalf("round trip: %v %+v", err, back)
	}
}

func TestMarshalIRQRouting(t *testing.T) {
	r := IRQRouting{IRQChipRoute(4, IRQChipIOAPIC, 4), MSIRoute(24, 0x1_fee0_0000, 0x4021)}
	b, _ := r.MarshalBinary()
	if len(b) != 8+2*48 {
		t.Fatalf("len %d", len(b))
	}
	le := binary.LittleEndian
	if le.Uint32(b) != 2 || le.Uint32(b[8:]) != 4 || le.Uint32(b[12:]) != IRQRoutingIRQChip ||
		le.Uint32(b[24:]) != IRQChipIOAPIC || le.Uint32(b[28:]) != 4 {
		t.Fatalf("irqchip entry % x", b[:56])
	}
	e := b[8+48:]
	if le.Uint32(e) != 24 || le.Uint32(e[4:]) != IRQRoutingMSI || le.Uint32(e[16:]) != 0xfee00000 ||
		le.Uint32(e[20:]) != 1 || le.Uint32(e[24:]) != 0x4021 {
		t.Fatalf("msi entry % x", e)
	}
}

func TestErrors(t *testing.T) {
	err := ioctlErr("KVM_CREATE_VM", unix.ENOMEM)
	if !errors.Is(err, ErrIoctl) || !errors.Is(err, unix.ENOMEM) || err.Error() != "KVM_CREATE_VM: cannot allocate memory" {
		t.Fatalf("%v", err)
	}
	err = &MissingCapError{Cap: CapSplitIRQChip}
	if !errors.Is(err, ErrMissingCap) || err.Error() != "kvm: required capability missing: KVM_CAP_SPLIT_IRQCHIP" {
		t.Fatalf("%v", err)
	}
	if Cap(9999).String() != "KVM_CAP(9999)" {
		t.Fatal(Cap(9999).String())
	}
	if _, err := OpenPath("/nonexistent/kvm"); !errors.Is(err, ErrUnavailable) || !errors.Is(err, unix.ENOENT) {
		t.Fatalf("OpenPath: %v", err)
	}
	// A file that is not KVM answers the version ioctl with ENOTTY.
	if _, err := OpenPath("/dev/null"); !errors.Is(err, ErrIoctl) || !errors.Is(err, unix.ENOTTY) {
		t.Fatalf("OpenPath(/dev/null): %v", err)
	}
}
