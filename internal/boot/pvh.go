package boot

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"fmt"

	"github.com/nimbus-vmm/nimbus/internal/arch/x86"
)

// xenElfnotePhys32Entry is XEN_ELFNOTE_PHYS32_ENTRY (xen/include/public/elfnote.h).
const xenElfnotePhys32Entry = 18

// progHeader is the part of an Elf64_Phdr the loader uses.
type progHeader struct {
	Type                         elf.ProgType
	Offset, Paddr, Filesz, Memsz uint64
}

// progHeaders reads the program headers from e_phoff as linux-loader does,
// and nothing else: section headers, e_version and the like are not looked
// at (debug/elf checks them and would refuse images upstream boots).
func progHeaders(image []byte) ([]progHeader, error) {
	le := binary.LittleEndian
	off, n := le.Uint64(image[32:]), uint64(le.Uint16(image[56:]))
	if off > uint64(len(image)) || n*elf64PhdrSize > uint64(len(image))-off {
		return nil, fmt.Errorf("Unable to read program header: %w", ErrInvalidKernel)
	}
	out := make([]progHeader, n)
	for i := range out {
		h := image[off+uint64(i)*elf64PhdrSize:]
		out[i] = progHeader{Type: elf.ProgType(le.Uint32(h[0:])), Offset: le.Uint64(h[8:]), Paddr: le.Uint64(h[24:]),
			Filesz: le.Uint64(h[32:]), Memsz: le.Uint64(h[40:])}
	}
	return out, nil
}

// segment is a program header's bytes in the image.
func segment(image []byte, p progHeader) ([]byte, error) {
	if p.Offset > uint64(len(image)) || p.Filesz > uint64(len(image))-p.Offset {
		return nil, fmt.Errorf("Unable to read kernel image: segment [%#x, +%#x) past the end of the file: %w", p.Offset, p.Filesz, ErrInvalidKernel)
	}
	return image[p.Offset : p.Offset+p.Filesz], nil
}

// pvhEntry returns the 32-bit PVH entry point from the PT_NOTE segments
// (a "Xen" note of type XEN_ELFNOTE_PHYS32_ENTRY), or ErrNoPVH.
func pvhEntry(image []byte, progs []progHeader) (uint64, error) {
	for _, p := range progs {
		if p.Type != elf.PT_NOTE {
			continue
		}
		data, err := segment(image, p)
		if err != nil {
			return 0, err
		}
		if entry, ok := findPVHNote(data, binary.LittleEndian); ok {
			return entry, nil
		}
	}
	return 0, ErrNoPVH
}

// findPVHNote walks ELF notes (namesz, descsz, type, name, desc, each
// padded to 4 bytes).
func findPVHNote(data []byte, bo binary.ByteOrder) (uint64, bool) {
	align4 := func(n uint64) uint64 { return (n + 3) &^ 3 }
	for len(data) >= 12 {
		namesz, descsz, typ := uint64(bo.Uint32(data)), uint64(bo.Uint32(data[4:])), bo.Uint32(data[8:])
		rest := data[12:]
		nameEnd := align4(namesz)
		descEnd := nameEnd + align4(descsz)
		if nameEnd > uint64(len(rest)) || nameEnd+descsz > uint64(len(rest)) {
			return 0, false
		}
		name := rest[:namesz]
		desc := rest[nameEnd : nameEnd+descsz]
		if typ == xenElfnotePhys32Entry && bytes.Equal(bytes.TrimRight(name, "\x00"), []byte("Xen")) {
			switch descsz {
			case 4:
				return uint64(bo.Uint32(desc)), true
			case 8:
				return bo.Uint64(desc), true
			}
			return 0, false
		}
		if descEnd > uint64(len(rest)) {
			return 0, false
		}
		data = rest[descEnd:]
	}
	return 0, false
}

// Sizes of Elf64_Ehdr and Elf64_Phdr.
const (
	elf64EhdrSize = 64
	elf64PhdrSize = 56
)

// checkELFHeader makes the checks upstream's loader (linux-loader 0.13's
// Elf::validate_header and load) makes, and no others: little-endian,
// 64-bit program headers after the ELF header, an entry point above
// 1 MiB. The machine field is not checked: Cloud Hypervisor's own UEFI
// firmware, CLOUDHV.fd, is an ELFCLASS64 image whose e_machine says
// EM_386, and upstream boots it.
func checkELFHeader(image []byte) error {
	if len(image) < elf64EhdrSize {
		return fmt.Errorf("Unable to read elf header: %w", ErrInvalidKernel)
	}
	if !bytes.HasPrefix(image, []byte(elf.ELFMAG)) {
		return fmt.Errorf("Invalid Elf magic number: %w", ErrInvalidKernel)
	}
	if elf.Data(image[elf.EI_DATA]) != elf.ELFDATA2LSB {
		return fmt.Errorf("Trying to load big-endian binary on little-endian machine: %w", ErrInvalidKernel)
	}
	le := binary.LittleEndian
	if phentsize := le.Uint16(image[54:]); phentsize != elf64PhdrSize {
		return fmt.Errorf("Invalid program header size %d (not a 64-bit ELF): %w", phentsize, ErrInvalidKernel)
	}
	if phoff := le.Uint64(image[32:]); phoff < elf64EhdrSize {
		return fmt.Errorf("Invalid program header offset %#x: %w", phoff, ErrInvalidKernel)
	}
	if entry := le.Uint64(image[24:]); entry < x86.HighRAMStart {
		return fmt.Errorf("Invalid entry address %#x (below 1 MiB): %w", entry, ErrInvalidKernel)
	}
	return nil
}

// loadPVH loads PT_LOAD segments at their physical addresses and writes
// hvm_start_info, the module list and the memory map as upstream's
// configure_pvh does.
func loadPVH(mem GuestMemory, ram []x86.Region, p Params) (*Result, error) {
	if err := checkELFHeader(p.Kernel); err != nil {
		return nil, err
	}
	progs, err := progHeaders(p.Kernel)
	if err != nil {
		return nil, err
	}
	entry, err := pvhEntry(p.Kernel, progs)
	if err != nil {
		return nil, err
	}
	var kernel x86.Region
	loaded := false
	for _, prog := range progs {
		// linux-loader skips segments with nothing in the file.
		if prog.Type != elf.PT_LOAD || prog.Filesz == 0 {
			continue
		}
		if prog.Filesz > prog.Memsz {
			return nil, fmt.Errorf("segment at %#x: file size above memory size: %w", prog.Paddr, ErrInvalidKernel)
		}
		if prog.Paddr < x86.HighRAMStart || !inRAM(ram, prog.Paddr, prog.Memsz) {
			return nil, fmt.Errorf("segment [%#x, +%#x) outside RAM above 1 MiB: %w", prog.Paddr, prog.Memsz, ErrLayout)
		}
		data, err := segment(p.Kernel, prog)
		if err != nil {
			return nil, err
		}
		seg := make([]byte, prog.Memsz) // the bss part must read as zero
		copy(seg, data)
		if err := write(mem, seg, prog.Paddr, "kernel segment"); err != nil {
			return nil, err
		}
		end := prog.Paddr + prog.Memsz
		if !loaded {
			kernel = x86.Region{Start: prog.Paddr, Size: prog.Memsz}
			loaded = true
		} else {
			start := min(kernel.Start, prog.Paddr)
			kernel = x86.Region{Start: start, Size: max(kernel.End(), end) - start}
		}
	}
	if !loaded {
		return nil, fmt.Errorf("ELF has no PT_LOAD segment: %w", ErrInvalidKernel)
	}

	cmd, err := writeCmdline(mem, ram, p.Cmdline, x86.CmdlineMaxSize-1)
	if err != nil {
		return nil, err
	}
	initrd, err := placeInitramfs(mem, ram, p.Initramfs, kernel.End(), ^uint64(0))
	if err != nil {
		return nil, err
	}

	si := StartInfo{
		Magic:        StartInfoMagic,
		Version:      1,
		CmdlinePaddr: cmd.Start,
		RSDPPaddr:    p.RSDPAddr,
		MemmapPaddr:  x86.MemmapStart,
	}
	if initrd.Size > 0 {
		mb, _ := ModlistEntry{Paddr: initrd.Start, Size: initrd.Size}.MarshalBinary()
		if err := write(mem, mb, x86.ModlistStart, "PVH module list"); err != nil {
			return nil, err
		}
		si.NrModules = 1
		si.ModlistPaddr = x86.ModlistStart
	}
	var mm []byte
	for _, e := range MemoryMap(ram) {
		b, _ := MemmapEntry(e).MarshalBinary()
		mm = append(mm, b...)
		si.MemmapEntries++
	}
	// The table must end before the boot stack page at 0x8000.
	if x86.MemmapStart+uint64(len(mm)) > x86.BootStackStart {
		return nil, fmt.Errorf("PVH memory map with %d entries: %w", si.MemmapEntries, ErrLayout)
	}
	if err := write(mem, mm, x86.MemmapStart, "PVH memory map"); err != nil {
		return nil, err
	}
	sb, _ := si.MarshalBinary()
	if err := write(mem, sb, x86.PVHInfoStart, "hvm_start_info"); err != nil {
		return nil, err
	}
	return &Result{
		Protocol:  PVH,
		Entry:     entry,
		InfoAddr:  x86.PVHInfoStart,
		Kernel:    kernel,
		Initramfs: initrd,
		Cmdline:   cmd,
	}, nil
}
