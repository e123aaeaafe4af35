package boot

import (
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
	"github.com/ulikunitz/xz"
	"github.com/ulikunitz/xz/lzma"

	"github.com/nimbus-vmm/nimbus/internal/arch/x86"
)

func compressWith(t *testing.T, format string, data []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	var w io.WriteCloser
	var err error
	switch format {
	case "gzip":
		w = gzip.NewWriter(&buf)
	case "zstd":
		w, err = zstd.NewWriter(&buf)
	case "xz":
		w, err = xz.NewWriter(&buf)
	case "lzma":
		w, err = lzma.NewWriter(&buf)
	case "lz4":
		lw := lz4.NewWriter(&buf)
		err = lw.Apply(lz4.LegacyOption(true))
		w = lw
	}
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// bzImageWithPayload wraps a compressed payload (plus Linux's size_append
// trailer) in a synthetic bzImage, after 16 bytes of decompressor stub.
func bzImageWithPayload(compressed []byte, size int) []byte {
	p := append(make([]byte, 16), compressed...)
	p = le.AppendUint32(p, uint32(size))
	k := synthBzImage(p)
	le.PutUint32(k[0x248:], 16)
	le.PutUint32(k[0x24c:], uint32(len(compressed)+4))
	return k
}

func TestExtractVmlinuxFormats(t *testing.T) {
	vmlinux := synthELF([]seg{
		{typ: 1, paddr: 0x1000000, memsz: 0x100, data: bytes.Repeat([]byte("text"), 64)},
		{typ: 4, data: elfNote("Xen", 18, le.AppendUint32(nil, 0x1000040))},
	})
	for _, format := range []string{"gzip", "zstd", "xz", "lzma", "lz4"} {
		k := bzImageWithPayload(compressWith(t, format, vmlinux), len(vmlinux))
		got, err := ExtractVmlinux(k)
		if err != nil {
			t.Errorf("%s: %v", format, err)
			continue
		}
		if !bytes.Equal(got, vmlinux) {
			t.Errorf("%s: extracted %d bytes differ", format, len(got))
		}
	}
	// The extracted kernel boots via PVH.
	got, _ := ExtractVmlinux(bzImageWithPayload(compressWith(t, "gzip", vmlinux), len(vmlinux)))
	res, err := LoadImage(newRecMem(testRAM), x86.RAMRegions(testRAM), Params{Kernel: got})
	if err != nil || res.Protocol != PVH || res.Entry != 0x1000040 {
		t.Errorf("PVH load of extracted kernel: %+v %v", res, err)
	}
}

func TestExtractVmlinuxErrors(t *testing.T) {
	elf := synthELF([]seg{{typ: 1, paddr: 0x1000000, memsz: 4, data: []byte("abcd")}})
	cases := map[string][]byte{
		"wrong size":  bzImageWithPayload(compressWith(t, "gzip", elf), len(elf)+1),
		"not elf":     bzImageWithPayload(compressWith(t, "gzip", []byte("hello")), 5),
		"lzo":         bzImageWithPayload([]byte{0x89, 'L', 'Z', 'O', 0, 0}, 10),
		"truncated":   bzImageWithPayload(compressWith(t, "xz", elf)[:20], len(elf)),
		"not bzImage": []byte("plain"),
	}
	for name, k := range cases {
		if _, err := ExtractVmlinux(k); !errors.Is(err, ErrInvalidKernel) {
			t.Errorf("%s: err = %v, want ErrInvalidKernel", name, err)
		}
	}
}

// TestRealKernel parses the host's Debian kernel when one is present.
func TestRealKernel(t *testing.T) {
	paths, _ := filepath.Glob("/boot/vmlinuz-*")
	more, _ := filepath.Glob("../../build/*/vmlinuz*")
	paths = append(paths, more...)
	if len(paths) == 0 {
		t.Skip("no /boot/vmlinuz-* or build/*/vmlinuz* kernel on this machine")
	}
	k, err := os.ReadFile(paths[0])
	if err != nil {
		t.Skipf("cannot read %s: %v", paths[0], err)
	}
	h, err := ParseSetupHeader(k)
	if err != nil {
		t.Fatalf("%s: %v", paths[0], err)
	}
	t.Logf("%s: protocol %#x, init_size %#x, payload %d bytes", paths[0], h.Version, h.InitSize, h.PayloadLength)
	vmlinux, err := ExtractVmlinux(k)
	if err != nil {
		t.Fatalf("extract: %v", err)
	}
	ram := x86.RAMRegions(512 << 20)
	mem := newRecMem(512 << 20)
	if res, err := LoadImage(mem, ram, Params{Kernel: vmlinux, Cmdline: "console=ttyS0"}); err != nil {
		t.Errorf("PVH load: %v", err)
	} else {
		t.Logf("PVH entry %#x, kernel %+v", res.Entry, res.Kernel)
	}
	if res, err := LoadImage(newRecMem(512<<20), ram, Params{Kernel: k, Cmdline: "console=ttyS0"}); err != nil {
		t.Errorf("bzImage load: %v", err)
	} else if res.Entry != 0x100200 {
		t.Errorf("bzImage entry %#x", res.Entry)
	}
}

// The zstd decoder must be handed back closable: ExtractVmlinux closes it,
// releasing its buffers, after which it reads no more.
func TestDecompressorZstdIsClosed(t *testing.T) {
	r, format, err := decompressor(compressWith(t, "zstd", []byte("vmlinux")))
	if err != nil || format != "zstd" {
		t.Fatalf("%s, %v", format, err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Read(make([]byte, 8)); !errors.Is(err, zstd.ErrDecoderClosed) {
		t.Fatalf("read after Close: %v, want ErrDecoderClosed", err)
	}
}
