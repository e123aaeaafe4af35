package boot

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nimbus-vmm/nimbus/internal/arch/x86"
)

const testRAM = 32 << 20

// recMem is flat guest RAM from 0 that records every write.
type recMem struct {
	buf    []byte
	writes map[uint64][]byte
}

func newRecMem(size int) *recMem {
	return &recMem{buf: make([]byte, size), writes: map[uint64][]byte{}}
}

func (m *recMem) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > int64(len(m.buf)) {
		return 0, io.ErrShortWrite
	}
	m.writes[uint64(off)] = append([]byte(nil), p...)
	return copy(m.buf[off:], p), nil
}

var le = binary.LittleEndian

// checkWrites asserts the loader wrote exactly want: same addresses, same bytes.
func checkWrites(t *testing.T, m *recMem, want map[uint64][]byte) {
	t.Helper()
	for addr, b := range want {
		got, ok := m.writes[addr]
		if !ok {
			t.Errorf("nothing written at %#x", addr)
			continue
		}
		if !bytes.Equal(got, b) {
			t.Errorf("bytes at %#x differ (len %d vs %d)\n got % x\nwant % x", addr, len(got), len(b), head(got), head(b))
		}
	}
	for addr := range m.writes {
		if _, ok := want[addr]; !ok {
			t.Errorf("unexpected write at %#x (%d bytes)", addr, len(m.writes[addr]))
		}
	}
}

func head(b []byte) []byte {
	if len(b) > 64 {
		return b[:64]
	}
	return b
}

// synthBzImage builds a minimal protocol-2.15 bzImage: one setup sector
// after the boot sector, then payload.
func synthBzImage(payload []byte) []byte {
	k := make([]byte, 1024+len(payload))
	k[0x1f1] = 1                    // setup_sects
	le.PutUint16(k[0x1fe:], 0xaa55) // boot_flag
	le.PutUint16(k[0x200:], 0x66eb) // jump
	le.PutUint32(k[0x202:], 0x53726448)
	le.PutUint16(k[0x206:], 0x020f)   // version 2.15
	k[0x211] = 1                      // loadflags: LOADED_HIGH
	le.PutUint32(k[0x214:], 0x100000) // code32_start
	le.PutUint32(k[0x22c:], 0x7fffffff)
	le.PutUint32(k[0x230:], 0x200000)
	k[0x234] = 1
	le.PutUint16(k[0x236:], 0x3)   // XLF_KERNEL_64 | XLF_CAN_BE_LOADED_ABOVE_4G
	le.PutUint32(k[0x238:], 0x7ff) // cmdline_size
	le.PutUint32(k[0x260:], 0x10000)
	copy(k[1024:], payload)
	return k
}

func TestSetupHeaderRoundTrip(t *testing.T) {
	k := synthBzImage([]byte("payload"))
	h, err := ParseSetupHeader(k)
	if err != nil {
		t.Fatal(err)
	}
	if h.Version != 0x20f || h.Code32Start != 0x100000 || h.InitSize != 0x10000 || h.CmdlineSize != 0x7ff {
		t.Errorf("parsed %+v", h)
	}
	b, err := h.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if len(b) != SetupHeaderSize || !bytes.Equal(b, k[0x1f1:0x26c]) {
		t.Errorf("marshal differs from source bytes:\n got % x\nwant % x", b, k[0x1f1:0x26c])
	}
}

func TestE820AndPVHStructBytes(t *testing.T) {
	e, _ := E820Entry{Addr: 0x0102030405060708, Size: 0x1112131415161718, Type: 2}.MarshalBinary()
	want := []byte{8, 7, 6, 5, 4, 3, 2, 1, 0x18, 0x17, 0x16, 0x15, 0x14, 0x13, 0x12, 0x11, 2, 0, 0, 0}
	if !bytes.Equal(e, want) {
		t.Errorf("e820 % x", e)
	}
	si, _ := (&StartInfo{Magic: StartInfoMagic, Version: 1, Flags: 2, NrModules: 3, ModlistPaddr: 0x6040,
		CmdlinePaddr: 0x20000, RSDPPaddr: 0xa0000, MemmapPaddr: 0x7000, MemmapEntries: 4}).MarshalBinary()
	wantSI := []byte{
		0x78, 0xc5, 0x6e, 0x33, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0,
		0x40, 0x60, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0,
		0, 0, 0x0a, 0, 0, 0, 0, 0, 0, 0x70, 0, 0, 0, 0, 0, 0,
		4, 0, 0, 0, 0, 0, 0, 0,
	}
	if !bytes.Equal(si, wantSI) {
		t.Errorf("start_info\n got % x\nwant % x", si, wantSI)
	}
	mod, _ := ModlistEntry{Paddr: 0x1000, Size: 0x20, CmdlinePaddr: 0x30}.MarshalBinary()
	wantMod := make([]byte, 32)
	wantMod[1], wantMod[8], wantMod[16] = 0x10, 0x20, 0x30
	if !bytes.Equal(mod, wantMod) {
		t.Errorf("modlist % x", mod)
	}
	mm, _ := MemmapEntry{Addr: 0x100000, Size: 0x200, Type: 1}.MarshalBinary()
	wantMM := make([]byte, 24)
	wantMM[2], wantMM[9], wantMM[16] = 0x10, 0x02, 1
	if !bytes.Equal(mm, wantMM) {
		t.Errorf("memmap % x", mm)
	}
}

func TestMemoryMapMatchesUpstream(t *testing.T) {
	got := MemoryMap(x86.RAMRegions(4 << 30))
	want := []E820Entry{
		{0, 0xa0000, E820RAM},
		{0x100000, 0xc0000000 - 0x100000, E820RAM},
		{0x100000000, 1 << 30, E820RAM},
		{0xe8000000, 0x10000000, E820Reserved},
	}
	if len(got) != len(want) {
		t.Fatalf("got %+v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("[%d] = %+v, want %+v", i, got[i], want[i])
		}
	}
}

func TestLoadBzImageWritesExactBytes(t *testing.T) {
	payload := bytes.Repeat([]byte{0xcc, 0x90}, 300)
	kernel := synthBzImage(payload)
	initrd := bytes.Repeat([]byte("I"), 5000)
	cmdline := "console=ttyS0 panic=-1"
	mem := newRecMem(testRAM)
	ram := x86.RAMRegions(testRAM)
	res, err := LoadImage(mem, ram, Params{Kernel: kernel, Initramfs: initrd, Cmdline: cmdline, RSDPAddr: 0xa0000})
	if err != nil {
		t.Fatal(err)
	}
	initrdAddr := uint64(testRAM - 0x2000) // (32 MiB - 5000) rounded down to a page
	zp := make([]byte, 4096)
	le.PutUint64(zp[0x70:], 0xa0000) // acpi_rsdp_addr
	zp[0x1e8] = 3                    // e820_entries
	copy(zp[0x1f1:], kernel[0x1f1:0x26c])
	zp[0x210] = 0xff                             // type_of_loader
	le.PutUint32(zp[0x218:], uint32(initrdAddr)) // ramdisk_image
	le.PutUint32(zp[0x21c:], 5000)               // ramdisk_size
	le.PutUint32(zp[0x228:], 0x20000)            // cmd_line_ptr
	le.PutUint32(zp[0x238:], uint32(len(cmdline)+1))
	e := zp[0x2d0:]
	le.PutUint64(e[0:], 0)
	le.PutUint64(e[8:], 0xa0000)
	le.PutUint32(e[16:], 1)
	le.PutUint64(e[20:], 0x100000)
	le.PutUint64(e[28:], testRAM-0x100000)
	le.PutUint32(e[36:], 1)
	le.PutUint64(e[40:], 0xe8000000)
	le.PutUint64(e[48:], 0x10000000)
	le.PutUint32(e[56:], 2)
	checkWrites(t, mem, map[uint64][]byte{
		0x100000:   payload,
		0x20000:    append([]byte(cmdline), 0),
		initrdAddr: initrd,
		0x7000:     zp,
	})
	want := Result{Protocol: Linux64, Entry: 0x100200, InfoAddr: 0x7000,
		Kernel:    x86.Region{Start: 0x100000, Size: 0x10000},
		Initramfs: x86.Region{Start: initrdAddr, Size: 5000},
		Cmdline:   x86.Region{Start: 0x20000, Size: uint64(len(cmdline) + 1)}}
	if *res != want {
		t.Errorf("result %+v, want %+v", *res, want)
	}
}

func TestBzImageRejections(t *testing.T) {
	ram := x86.RAMRegions(testRAM)
	old := synthBzImage(make([]byte, 16))
	le.PutUint16(old[0x206:], 0x020b)
	no64 := synthBzImage(make([]byte, 16))
	le.PutUint16(no64[0x236:], 0)
	cases := map[string]struct {
		p    Params
		want error
	}{
		"garbage":        {Params{Kernel: bytes.Repeat([]byte{1}, 4096)}, ErrInvalidKernel},
		"old protocol":   {Params{Kernel: old}, ErrInvalidKernel},
		"no 64-bit":      {Params{Kernel: no64}, ErrInvalidKernel},
		"cmdline > 2047": {Params{Kernel: synthBzImage(make([]byte, 16)), Cmdline: strings.Repeat("a", 0x800)}, ErrCmdlineTooLong},
		"initramfs huge": {Params{Kernel: synthBzImage(make([]byte, 16)), Initramfs: make([]byte, testRAM-0x100000)}, ErrInitramfsTooLarge},
	}
	for name, c := range cases {
		if _, err := LoadImage(newRecMem(testRAM), ram, c.p); !errors.Is(err, c.want) {
			t.Errorf("%s: err = %v, want %v", name, err, c.want)
		}
	}
	// exactly the limit is fine
	if _, err := LoadImage(newRecMem(testRAM), ram, Params{Kernel: synthBzImage(make([]byte, 16)), Cmdline: strings.Repeat("a", 0x7ff)}); err != nil {
		t.Errorf("cmdline at limit: %v", err)
	}
}

// elfNote encodes one ELF note with 4-byte padding.
func elfNote(name string, typ uint32, desc []byte) []byte {
	n := append([]byte(name), 0)
	b := le.AppendUint32(nil, uint32(len(n)))
	b = le.AppendUint32(b, uint32(len(desc)))
	b = le.AppendUint32(b, typ)
	b = append(b, n...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	b = append(b, desc...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

type seg struct {
	typ          uint32
	paddr, memsz uint64
	data         []byte
}

// synthELF builds an ELF64 x86-64 executable with the given program headers.
func synthELF(segs []seg) []byte {
	const ehsize, phsize = 64, 56
	off := uint64(ehsize + phsize*len(segs))
	h := make([]byte, ehsize)
	copy(h, "\x7fELF")
	h[4], h[5], h[6] = 2, 1, 1
	le.PutUint16(h[16:], 2)  // ET_EXEC
	le.PutUint16(h[18:], 62) // EM_X86_64
	le.PutUint32(h[20:], 1)
	le.PutUint64(h[24:], 0xffffffff81000000)
	le.PutUint64(h[32:], ehsize)
	le.PutUint16(h[52:], ehsize)
	le.PutUint16(h[54:], phsize)
	le.PutUint16(h[56:], uint16(len(segs)))
	var ph, body []byte
	for _, s := range segs {
		p := make([]byte, phsize)
		le.PutUint32(p[0:], s.typ)
		le.PutUint32(p[4:], 5)
		le.PutUint64(p[8:], off)
		le.PutUint64(p[16:], s.paddr|0xffffffff80000000)
		le.PutUint64(p[24:], s.paddr)
		le.PutUint64(p[32:], uint64(len(s.data)))
		le.PutUint64(p[40:], s.memsz)
		le.PutUint64(p[48:], 4)
		ph = append(ph, p...)
		body = append(body, s.data...)
		off += uint64(len(s.data))
	}
	return append(append(h, ph...), body...)
}

func TestLoadPVHWritesExactBytes(t *testing.T) {
	text := []byte("\x0f\x01\xd9KERNELTEXT")
	notes := append(elfNote("GNU", 3, []byte{1, 2, 3, 4, 5}), elfNote("Xen", 18, le.AppendUint32(nil, 0x1000123))...)
	kernel := synthELF([]seg{
		{typ: 1, paddr: 0x1000000, memsz: 0x3000, data: text},
		{typ: 4, data: notes},
		{typ: 1, paddr: 0x1200000, memsz: 8, data: []byte("DATADATA")},
	})
	initrd := bytes.Repeat([]byte("R"), 4096)
	mem := newRecMem(testRAM)
	res, err := LoadImage(mem, x86.RAMRegions(testRAM), Params{Kernel: kernel, Initramfs: initrd, Cmdline: "root=/dev/vda", RSDPAddr: 0xa0000})
	if err != nil {
		t.Fatal(err)
	}
	seg1 := make([]byte, 0x3000)
	copy(seg1, text)
	initrdAddr := uint64(testRAM - 4096)
	si := []byte{
		0x78, 0xc5, 0x6e, 0x33, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, // magic, version, flags, nr_modules
		0x40, 0x60, 0, 0, 0, 0, 0, 0, // modlist_paddr
		0, 0, 2, 0, 0, 0, 0, 0, // cmdline_paddr
		0, 0, 0x0a, 0, 0, 0, 0, 0, // rsdp_paddr
		0, 0x70, 0, 0, 0, 0, 0, 0, // memmap_paddr
		3, 0, 0, 0, 0, 0, 0, 0, // memmap_entries, reserved
	}
	mod := make([]byte, 32)
	le.PutUint64(mod, initrdAddr)
	le.PutUint64(mod[8:], 4096)
	var mm []byte
	for _, e := range [][3]uint64{{0, 0xa0000, 1}, {0x100000, testRAM - 0x100000, 1}, {0xe8000000, 0x10000000, 2}} {
		mm = le.AppendUint64(mm, e[0])
		mm = le.AppendUint64(mm, e[1])
		mm = le.AppendUint32(mm, uint32(e[2]))
		mm = le.AppendUint32(mm, 0)
	}
	checkWrites(t, mem, map[uint64][]byte{
		0x1000000:  seg1,
		0x1200000:  []byte("DATADATA"),
		0x20000:    []byte("root=/dev/vda\x00"),
		initrdAddr: initrd,
		0x6040:     mod,
		0x7000:     mm,
		0x6000:     si,
	})
	want := Result{Protocol: PVH, Entry: 0x1000123, InfoAddr: 0x6000,
		Kernel:    x86.Region{Start: 0x1000000, Size: 0x200008},
		Initramfs: x86.Region{Start: initrdAddr, Size: 4096},
		Cmdline:   x86.Region{Start: 0x20000, Size: 14}}
	if *res != want {
		t.Errorf("result %+v, want %+v", *res, want)
	}
}

func TestPVHErrors(t *testing.T) {
	ram := x86.RAMRegions(testRAM)
	noNote := synthELF([]seg{{typ: 1, paddr: 0x1000000, memsz: 4, data: []byte("abcd")}, {typ: 4, data: elfNote("GNU", 3, []byte{1, 2, 3, 4})}})
	_, err := LoadImage(newRecMem(testRAM), ram, Params{Kernel: noNote})
	if !errors.Is(err, ErrNoPVH) || err.Error() != "Kernel lacks PVH header" {
		t.Errorf("no note: %v", err)
	}
	note := elfNote("Xen", 18, le.AppendUint32(nil, 0x1000000))
	outside := synthELF([]seg{{typ: 1, paddr: 0x4000000, memsz: 4, data: []byte("abcd")}, {typ: 4, data: note}})
	if _, err := LoadImage(newRecMem(testRAM), ram, Params{Kernel: outside}); !errors.Is(err, ErrLayout) {
		t.Errorf("segment outside RAM: %v", err)
	}
	ok := synthELF([]seg{{typ: 1, paddr: 0x1000000, memsz: 4, data: []byte("abcd")}, {typ: 4, data: note}})
	if _, err := LoadImage(newRecMem(testRAM), ram, Params{Kernel: ok, Cmdline: strings.Repeat("x", 0x10000)}); !errors.Is(err, ErrCmdlineTooLong) {
		t.Errorf("long cmdline: %v", err)
	}
	// The initramfs may not overlap the kernel.
	if _, err := LoadImage(newRecMem(testRAM), ram, Params{Kernel: ok, Initramfs: make([]byte, testRAM-0x1000000)}); !errors.Is(err, ErrInitramfsTooLarge) {
		t.Errorf("big initramfs: %v", err)
	}
	if _, err := LoadImage(newRecMem(testRAM), ram, Params{Kernel: []byte("\x7fELFjunk")}); !errors.Is(err, ErrInvalidKernel) {
		t.Errorf("broken ELF: %v", err)
	}
}

func TestLoadFiles(t *testing.T) {
	dir := t.TempDir()
	kpath := filepath.Join(dir, "bzImage")
	if err := os.WriteFile(kpath, synthBzImage([]byte("k")), 0o600); err != nil {
		t.Fatal(err)
	}
	ram := x86.RAMRegions(testRAM)
	if _, err := Load(newRecMem(testRAM), ram, filepath.Join(dir, "missing"), "", "", 0); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing kernel: %v", err)
	}
	if _, err := Load(newRecMem(testRAM), ram, kpath, filepath.Join(dir, "missing"), "", 0); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing initramfs: %v", err)
	}
	res, err := Load(newRecMem(testRAM), ram, kpath, "", "quiet", 0)
	if err != nil || res.Protocol != Linux64 {
		t.Errorf("load: %v %+v", err, res)
	}
}

// TestCloudHvFirmware: Debian's CLOUDHV.fd (package cloudhv-efi-x86-64;
// testdata holds its ELF header, program headers and PVH note) is an
// ELFCLASS64 image with e_machine EM_386 and one 4 MiB PT_LOAD at 1 MiB.
// Upstream boots it through --kernel and --firmware; so does Nimbus.
func TestCloudHvFirmware(t *testing.T) {
	hdr, err := os.ReadFile(filepath.Join("testdata", "cloudhv-header.bin"))
	if err != nil {
		t.Fatal(err)
	}
	if m := le.Uint16(hdr[18:]); m != 3 {
		t.Fatalf("testdata e_machine %d, want EM_386 (3)", m)
	}
	fw := make([]byte, 4<<20)
	copy(fw, hdr)
	res, err := LoadImage(newRecMem(testRAM), x86.RAMRegions(testRAM), Params{Kernel: fw})
	if err != nil {
		t.Fatal(err)
	}
	if res.Protocol != PVH || res.Entry != 0x4fffd0 || res.Kernel != (x86.Region{Start: 0x100000, Size: 4 << 20}) {
		t.Fatalf("loaded %+v", *res)
	}
}

// TestELFHeaderChecks: upstream's header checks, each refused with
// ErrInvalidKernel; and a QEMU flash image (OVMF.fd: a firmware volume,
// no ELF, no bzImage) refused with a message that says what boots.
func TestELFHeaderChecks(t *testing.T) {
	note := elfNote("Xen", 18, le.AppendUint32(nil, 0x1000000))
	good := synthELF([]seg{{typ: 1, paddr: 0x1000000, memsz: 4, data: []byte("abcd")}, {typ: 4, data: note}})
	ram := x86.RAMRegions(testRAM)
	if _, err := LoadImage(newRecMem(testRAM), ram, Params{Kernel: good}); err != nil {
		t.Fatalf("the unmodified image: %v", err)
	}
	for name, c := range map[string]struct {
		edit func(h []byte)
		want string
	}{
		"big-endian":        {func(h []byte) { h[5] = 2 }, "big-endian"},
		"phentsize":         {func(h []byte) { le.PutUint16(h[54:], 32) }, "program header size"},
		"phoff":             {func(h []byte) { le.PutUint64(h[32:], 16) }, ""},
		"entry below 1 MiB": {func(h []byte) { le.PutUint64(h[24:], 0xfff0) }, "entry address"},
	} {
		k := append([]byte(nil), good...)
		c.edit(k)
		_, err := LoadImage(newRecMem(testRAM), ram, Params{Kernel: k})
		if !errors.Is(err, ErrInvalidKernel) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v", name, err)
		}
	}
	// What linux-loader never reads does not matter: versions, a section
	// header table past the end of the file.
	odd := append([]byte(nil), good...)
	odd[6] = 0                    // EI_VERSION
	le.PutUint32(odd[20:], 0)     // e_version
	le.PutUint64(odd[40:], 1<<40) // e_shoff
	le.PutUint16(odd[60:], 7)     // e_shnum
	le.PutUint16(odd[62:], 9)     // e_shstrndx
	if _, err := LoadImage(newRecMem(testRAM), ram, Params{Kernel: odd}); err != nil {
		t.Errorf("an image with a bogus section table and versions: %v", err)
	}
	machine := append([]byte(nil), good...)
	le.PutUint16(machine[18:], 3) // EM_386, as CLOUDHV.fd
	if _, err := LoadImage(newRecMem(testRAM), ram, Params{Kernel: machine}); err != nil {
		t.Errorf("EM_386 in a 64-bit PVH image refused: %v", err)
	}
	flash := make([]byte, 2<<20)
	copy(flash[40:], "_FVH")
	_, err := LoadImage(newRecMem(testRAM), ram, Params{Kernel: flash})
	if !errors.Is(err, ErrInvalidKernel) || !strings.Contains(err.Error(), "neither a PVH ELF nor a bzImage") {
		t.Errorf("flash image: %v", err)
	}
}
