package boot

import (
	"bytes"
	"compress/gzip"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz/lzma"

	"github.com/nimbus-vmm/nimbus/internal/arch/x86"
)

// checkedRAM is guest RAM that only checks where the loader writes: every
// byte must be inside one of the RAM regions the loader was given.
type checkedRAM struct {
	t   *testing.T
	ram []x86.Region
}

func (m checkedRAM) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 || !inRAM(m.ram, uint64(off), uint64(len(p))) {
		m.t.Errorf("loader wrote %d bytes at %#x, outside RAM %+v", len(p), off, m.ram)
		return 0, errors.New("outside RAM")
	}
	return len(p), nil
}

// fuzzLayouts are the guest RAM layouts a fuzz input picks from.
var fuzzLayouts = [][]x86.Region{
	x86.RAMRegions(16 << 20),
	{{Start: 0, Size: 2 << 20}},
	{{Start: 0, Size: 8 << 20}, {Start: x86.RAM64BitStart, Size: 8 << 20}},
	{{Start: 0, Size: x86.HighRAMStart + 4096}},
}

// loadErrors are the categories every LoadImage error wraps.
var loadErrors = []error{ErrInvalidKernel, ErrNoPVH, ErrInitramfsTooLarge, ErrCmdlineTooLong, ErrLayout, ErrGuestMemory}

// FuzzLoadKernel feeds arbitrary bytes as the kernel (and initramfs and
// command line) to the loader, both as bytes (LoadImage) and as a file
// (Load): kernel type detection, bzImage setup header checks, ELF header,
// program header and PVH note parsing, segment loading and the placement
// of the command line, initramfs, boot_params or hvm_start_info. It must
// return an error of one of the documented categories or a result inside
// RAM, never panic nor write outside guest RAM.
func FuzzLoadKernel(f *testing.F) {
	note := elfNote("Xen", 18, le.AppendUint32(nil, 0x1000000))
	f.Add(uint8(0), synthBzImage([]byte("payload")), []byte("initrd"), "console=ttyS0")
	f.Add(uint8(1), synthELF([]seg{{typ: 1, paddr: 0x100000, memsz: 0x3000, data: []byte("text")}, {typ: 4, data: note}}), []byte(nil), "")
	f.Add(uint8(2), synthELF([]seg{{typ: 4, data: append(elfNote("GNU", 3, []byte{1}), elfNote("Xen", 18, le.AppendUint64(nil, 0x100000))...)},
		{typ: 1, paddr: 0x100000, memsz: 8, data: []byte("DATADATA")}}), []byte("initrd"), "root=/dev/vda")
	if hdr, err := os.ReadFile(filepath.Join("testdata", "cloudhv-header.bin")); err == nil {
		fw := make([]byte, 64<<10)
		copy(fw, hdr)
		f.Add(uint8(0), hdr, []byte(nil), "")
		f.Add(uint8(0), fw, []byte(nil), "")
	}
	// The host's kernel, when there is one: its real setup header.
	if paths, _ := filepath.Glob("/boot/vmlinuz-*"); len(paths) > 0 {
		if k, err := os.ReadFile(paths[0]); err == nil {
			f.Add(uint8(0), k[:min(len(k), 64<<10)], []byte(nil), "console=ttyS0")
		}
	}
	kernelFile := filepath.Join(f.TempDir(), "kernel")
	f.Fuzz(func(t *testing.T, layout uint8, kernel, initramfs []byte, cmdline string) {
		ram := fuzzLayouts[int(layout)%len(fuzzLayouts)]
		check := func(initramfs []byte, res *Result, err error) {
			t.Helper()
			if err != nil {
				for _, e := range loadErrors {
					if errors.Is(err, e) {
						return
					}
				}
				t.Fatalf("error of no category: %v", err)
			}
			switch {
			case res.Protocol != PVH && res.Protocol != Linux64:
				t.Fatalf("protocol %v", res.Protocol)
			case !inRAM(ram, res.Kernel.Start, res.Kernel.Size) || res.Kernel.Start < x86.HighRAMStart:
				t.Fatalf("kernel %+v outside RAM above 1 MiB", res.Kernel)
			case !inRAM(ram, res.Cmdline.Start, res.Cmdline.Size) || res.Cmdline.Size != uint64(len(cmdline))+1:
				t.Fatalf("command line %+v for %d bytes", res.Cmdline, len(cmdline))
			case res.Initramfs.Size != uint64(len(initramfs)):
				t.Fatalf("initramfs %+v for %d bytes", res.Initramfs, len(initramfs))
			case res.Initramfs.Size > 0 && (!inRAM(ram, res.Initramfs.Start, res.Initramfs.Size) || res.Initramfs.Start < res.Kernel.End()):
				t.Fatalf("initramfs %+v overlaps the kernel %+v or is outside RAM", res.Initramfs, res.Kernel)
			case res.Protocol == Linux64 && res.Entry != res.Kernel.Start+0x200:
				t.Fatalf("bzImage entry %#x for a kernel at %#x", res.Entry, res.Kernel.Start)
			}
		}
		res, err := LoadImage(checkedRAM{t, ram}, ram, Params{Kernel: kernel, Initramfs: initramfs, Cmdline: cmdline, RSDPAddr: 0xa0000})
		check(initramfs, res, err)
		if err := os.WriteFile(kernelFile, kernel, 0o600); err != nil {
			t.Fatal(err)
		}
		res, err = Load(checkedRAM{t, ram}, ram, kernelFile, "", cmdline, 0)
		check(nil, res, err)
	})
}

// FuzzExtractVmlinux feeds arbitrary bytes as a bzImage to ExtractVmlinux
// (setup header, payload bounds, the six decompressors, the size check):
// an ELF or an ErrInvalidKernel error, never a panic.
func FuzzExtractVmlinux(f *testing.F) {
	elf := []byte("\x7fELF-vmlinux")
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(elf)
	zw.Close()
	f.Add(bzImageWithPayload(gz.Bytes(), len(elf)))
	zs, err := zstd.NewWriter(nil)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(bzImageWithPayload(zs.EncodeAll(elf, nil), len(elf)))
	zs.Close()
	var lz bytes.Buffer
	lw, err := lzma.NewWriter(&lz)
	if err != nil {
		f.Fatal(err)
	}
	lw.Write(elf)
	lw.Close()
	f.Add(bzImageWithPayload(lz.Bytes(), len(elf)))
	f.Add(synthBzImage([]byte("unknown")))
	f.Fuzz(func(t *testing.T, image []byte) {
		out, err := ExtractVmlinux(image)
		if err != nil {
			if !errors.Is(err, ErrInvalidKernel) {
				t.Fatalf("error of no category: %v", err)
			}
			return
		}
		if len(out) < 4 || string(out[:4]) != "\x7fELF" {
			t.Fatalf("extracted %d bytes that are no ELF", len(out))
		}
	})
}
