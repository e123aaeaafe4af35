package boot

import (
	"encoding/binary"
	"fmt"

	"github.com/nimbus-vmm/nimbus/internal/arch/x86"
)

func isBzImage(k []byte) bool {
	return len(k) >= 0x206 && binary.LittleEndian.Uint32(k[0x202:]) == hdrSMagic
}

// ParseSetupHeader reads and checks a bzImage's setup header: boot flag,
// "HdrS", protocol 2.12 or later with XLF_KERNEL_64 (the 64-bit entry),
// and LOADED_HIGH.
//
// Not u-root's pkg/boot/bzimage (although it is in go.mod): its
// BzImage.UnmarshalBinary always locates and decompresses the payload,
// which a boot does not need and which costs the start-up time we measure
// (ExtractVmlinux does that on demand), and it checks only protocol 2.08.
// We need the setup header as the exact byte layout boot_params embeds
// (SetupHeader with MarshalBinary, written back into the zero page) and
// the 64-bit boot protocol's checks above, so the header is parsed here.
func ParseSetupHeader(k []byte) (*SetupHeader, error) {
	if len(k) < setupHeaderOffset+SetupHeaderSize {
		return nil, fmt.Errorf("bzImage shorter than its setup header: %w", ErrInvalidKernel)
	}
	var h SetupHeader
	if err := h.UnmarshalBinary(k[setupHeaderOffset:]); err != nil {
		return nil, err
	}
	switch {
	case h.BootFlag != bootFlagMagic:
		return nil, fmt.Errorf("boot flag %#x, want %#x: %w", h.BootFlag, bootFlagMagic, ErrInvalidKernel)
	case h.Header != hdrSMagic:
		return nil, fmt.Errorf("no HdrS magic: %w", ErrInvalidKernel)
	case h.Version < 0x20c:
		return nil, fmt.Errorf("boot protocol %d.%02d, need 2.12 for the 64-bit entry: %w", h.Version>>8, h.Version&0xff, ErrInvalidKernel)
	case h.XLoadFlags&xlfKernel64 == 0:
		return nil, fmt.Errorf("kernel has no 64-bit entry point (XLF_KERNEL_64): %w", ErrInvalidKernel)
	case h.LoadFlags&loadedHigh == 0:
		return nil, fmt.Errorf("kernel is not loaded high: %w", ErrInvalidKernel)
	}
	return &h, nil
}

// loadBzImage follows linux-loader's BzImage::load and upstream's
// configure_64bit_boot: the protected-mode kernel goes to code32_start
// (1 MiB), boot_params to ZeroPageStart.
func loadBzImage(mem GuestMemory, ram []x86.Region, p Params) (*Result, error) {
	h, err := ParseSetupHeader(p.Kernel)
	if err != nil {
		return nil, err
	}
	setupSects := uint64(h.SetupSects)
	if setupSects == 0 {
		setupSects = 4
	}
	setupSize := (setupSects + 1) * 512
	if setupSize >= uint64(len(p.Kernel)) {
		return nil, fmt.Errorf("setup size %d beyond image size %d: %w", setupSize, len(p.Kernel), ErrInvalidKernel)
	}
	loadAddr := uint64(h.Code32Start)
	if loadAddr < x86.HighRAMStart {
		return nil, fmt.Errorf("code32_start %#x below 1 MiB: %w", loadAddr, ErrInvalidKernel)
	}
	payload := p.Kernel[setupSize:]
	// The kernel decompresses in place and needs init_size bytes from its
	// load address; reserve that so the initramfs does not get overwritten.
	span := max(uint64(len(payload)), uint64(h.InitSize))
	kernel := x86.Region{Start: loadAddr, Size: span}
	if !inRAM(ram, kernel.Start, kernel.Size) {
		return nil, fmt.Errorf("kernel [%#x, %#x): %w", kernel.Start, kernel.End(), ErrLayout)
	}
	if err := write(mem, payload, loadAddr, "kernel"); err != nil {
		return nil, err
	}

	cmd, err := writeCmdline(mem, ram, p.Cmdline, uint64(h.CmdlineSize))
	if err != nil {
		return nil, err
	}
	initrdMax := uint64(h.InitrdAddrMax) + 1
	initrd, err := placeInitramfs(mem, ram, p.Initramfs, kernel.End(), initrdMax)
	if err != nil {
		return nil, err
	}

	bp := BootParams{ACPIRSDPAddr: p.RSDPAddr, E820: MemoryMap(ram), Hdr: *h}
	if bp.Hdr.TypeOfLoader == 0 {
		bp.Hdr.TypeOfLoader = loaderTypeOther
	}
	bp.Hdr.CmdLinePtr = uint32(cmd.Start)
	bp.Hdr.CmdlineSize = uint32(cmd.Size) // upstream passes the size with the NUL
	bp.Hdr.RamdiskImage = uint32(initrd.Start)
	bp.Hdr.RamdiskSize = uint32(initrd.Size)
	zp, err := bp.MarshalBinary()
	if err != nil {
		return nil, err
	}
	if err := write(mem, zp, x86.ZeroPageStart, "boot_params"); err != nil {
		return nil, err
	}
	return &Result{
		Protocol:  Linux64,
		Entry:     loadAddr + 0x200,
		InfoAddr:  x86.ZeroPageStart,
		Kernel:    kernel,
		Initramfs: initrd,
		Cmdline:   cmd,
	}, nil
}
