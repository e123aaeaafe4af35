package boot

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/nimbus-vmm/nimbus/internal/arch/x86"
)

// Error categories; every error Load returns wraps one of them (or an
// fs error for a missing file).
var (
	// ErrInvalidKernel: the kernel is neither an ELF nor a bzImage, or is malformed.
	ErrInvalidKernel = errors.New("invalid kernel image")
	// ErrNoPVH is upstream's KernelMissingPvhHeader text.
	ErrNoPVH = errors.New("Kernel lacks PVH header")
	// ErrInitramfsTooLarge: no room for the initramfs in low RAM.
	ErrInitramfsTooLarge = errors.New("initramfs does not fit in guest RAM")
	// ErrCmdlineTooLong: the command line exceeds what the kernel or layout allows.
	ErrCmdlineTooLong = errors.New("kernel command line too long")
	// ErrLayout: a structure or segment does not fit the guest RAM layout.
	ErrLayout = errors.New("does not fit guest memory")
	// ErrGuestMemory wraps failures of GuestMemory.WriteAt.
	ErrGuestMemory = errors.New("writing guest memory")
)

// GuestMemory is the guest-physical address space the loader writes to;
// internal/memory's type satisfies it.
type GuestMemory interface {
	WriteAt(p []byte, gpa int64) (int, error)
}

// Protocol says how the boot CPU must be started.
type Protocol int

const (
	// PVH: 32-bit protected mode, paging off, RBX = InfoAddr (hvm_start_info).
	PVH Protocol = iota + 1
	// Linux64: long mode with identity page tables, RSI = InfoAddr (boot_params).
	Linux64
)

func (p Protocol) String() string {
	switch p {
	case PVH:
		return "PVH boot protocol"
	case Linux64:
		return "Linux 64-bit boot protocol"
	}
	return fmt.Sprintf("Protocol(%d)", int(p))
}

// Params describes the payload to load.
type Params struct {
	Kernel    []byte
	Initramfs []byte // nil: none
	Cmdline   string
	// RSDPAddr is passed to the guest in boot_params/hvm_start_info; 0 when
	// there are no ACPI tables.
	RSDPAddr uint64
}

// Result says where the guest starts and where things were put.
type Result struct {
	Protocol Protocol
	// Entry is the first instruction: the PVH 32-bit entry, or the bzImage
	// 64-bit entry (load address + 0x200).
	Entry uint64
	// InfoAddr is hvm_start_info (PVH, for RBX) or boot_params (Linux64, for RSI).
	InfoAddr uint64
	// Kernel is the guest range the kernel occupies (for a bzImage it covers
	// init_size, the room the kernel needs to decompress in place).
	Kernel x86.Region
	// Initramfs is where the initramfs was written; Size 0 when none.
	Initramfs x86.Region
	// Cmdline is the NUL-terminated command line's range.
	Cmdline x86.Region
}

// Load reads the kernel and optional initramfs files and loads them with
// LoadImage.
func Load(mem GuestMemory, ram []x86.Region, kernelPath, initramfsPath, cmdline string, rsdpAddr uint64) (*Result, error) {
	kernel, err := os.ReadFile(kernelPath)
	if err != nil {
		return nil, fmt.Errorf("reading kernel: %w", err)
	}
	var initramfs []byte
	if initramfsPath != "" {
		if initramfs, err = os.ReadFile(initramfsPath); err != nil {
			return nil, fmt.Errorf("reading initramfs: %w", err)
		}
	}
	return LoadImage(mem, ram, Params{Kernel: kernel, Initramfs: initramfs, Cmdline: cmdline, RSDPAddr: rsdpAddr})
}

// LoadImage loads an ELF (PVH) or bzImage payload, trying ELF first as
// upstream does.
func LoadImage(mem GuestMemory, ram []x86.Region, p Params) (*Result, error) {
	if len(ram) == 0 || ram[0].Start != 0 || ram[0].Size < x86.HighRAMStart {
		return nil, fmt.Errorf("RAM must start at 0 and reach past 1 MiB: %w", ErrLayout)
	}
	if bytes.HasPrefix(p.Kernel, []byte("\x7fELF")) {
		return loadPVH(mem, ram, p)
	}
	if isBzImage(p.Kernel) {
		return loadBzImage(mem, ram, p)
	}
	// Upstream refuses these too (linux-loader's ELF, then bzImage, fail):
	// a QEMU flash image such as OVMF.fd lands here.
	return nil, fmt.Errorf("kernel is neither a PVH ELF nor a bzImage (firmware must be a PVH ELF such as CLOUDHV.fd, not a flash image such as OVMF.fd): %w", ErrInvalidKernel)
}

func write(mem GuestMemory, b []byte, gpa uint64, what string) error {
	if _, err := mem.WriteAt(b, int64(gpa)); err != nil {
		return fmt.Errorf("%s at %#x: %w: %w", what, gpa, ErrGuestMemory, err)
	}
	return nil
}

func inRAM(ram []x86.Region, addr, size uint64) bool {
	for _, r := range ram {
		if r.Contains(addr, size) {
			return true
		}
	}
	return false
}

// writeCmdline checks and writes the NUL-terminated command line at
// CmdlineStart; limit is the kernel's maximum length without the NUL.
func writeCmdline(mem GuestMemory, ram []x86.Region, cmdline string, limit uint64) (x86.Region, error) {
	if strings.IndexByte(cmdline, 0) >= 0 {
		return x86.Region{}, fmt.Errorf("command line contains a NUL byte: %w", ErrInvalidKernel)
	}
	size := uint64(len(cmdline)) + 1
	if size > x86.CmdlineMaxSize || uint64(len(cmdline)) > limit {
		return x86.Region{}, fmt.Errorf("%d bytes, at most %d: %w", len(cmdline), min(limit, x86.CmdlineMaxSize-1), ErrCmdlineTooLong)
	}
	r := x86.Region{Start: x86.CmdlineStart, Size: size}
	if !inRAM(ram, r.Start, r.Size) {
		return x86.Region{}, fmt.Errorf("command line: %w", ErrLayout)
	}
	return r, write(mem, append([]byte(cmdline), 0), r.Start, "command line")
}

const pageSize = 4096

// placeInitramfs puts the initramfs at the highest page-aligned address of
// the RAM region starting at 0 (upstream's initramfs_load_addr), below
// maxEnd, and above kernelEnd.
func placeInitramfs(mem GuestMemory, ram []x86.Region, initramfs []byte, kernelEnd, maxEnd uint64) (x86.Region, error) {
	if len(initramfs) == 0 {
		return x86.Region{}, nil
	}
	top := min(ram[0].End(), maxEnd)
	size := uint64(len(initramfs))
	if size > top {
		return x86.Region{}, fmt.Errorf("%d bytes: %w", size, ErrInitramfsTooLarge)
	}
	addr := (top - size) &^ (pageSize - 1)
	if addr < kernelEnd {
		return x86.Region{}, fmt.Errorf("%d bytes between kernel end %#x and %#x: %w", size, kernelEnd, top, ErrInitramfsTooLarge)
	}
	r := x86.Region{Start: addr, Size: size}
	return r, write(mem, initramfs, addr, "initramfs")
}
