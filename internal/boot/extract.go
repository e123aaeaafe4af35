package boot

import (
	"bytes"
	"compress/bzip2"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
	txz "github.com/therootcompany/xz"
	"github.com/ulikunitz/xz/lzma"
)

// maxVmlinux bounds decompression so a hostile image cannot exhaust memory.
const maxVmlinux = 1 << 30

// ExtractVmlinux returns the ELF vmlinux inside a bzImage: the payload at
// payload_offset (relative to the protected-mode code), decompressed by
// the format its magic names. Linux appends the uncompressed size as a
// little-endian u32 to every payload (scripts/Makefile.lib size_append);
// it is used to check the result. This lets tests boot the same kernel
// through PVH.
func ExtractVmlinux(bzImage []byte) ([]byte, error) {
	h, err := ParseSetupHeader(bzImage)
	if err != nil {
		return nil, err
	}
	setupSects := int(h.SetupSects)
	if setupSects == 0 {
		setupSects = 4
	}
	start := (setupSects+1)*512 + int(h.PayloadOffset)
	end := start + int(h.PayloadLength)
	if h.PayloadLength < 4 || end > len(bzImage) || start < 0 {
		return nil, fmt.Errorf("payload [%d, %d) outside the %d-byte image: %w", start, end, len(bzImage), ErrInvalidKernel)
	}
	payload := bzImage[start:end]
	want := binary.LittleEndian.Uint32(payload[len(payload)-4:])
	data := payload[:len(payload)-4]

	r, format, err := decompressor(data)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	out, err := io.ReadAll(io.LimitReader(r, maxVmlinux+1))
	if err != nil {
		return nil, fmt.Errorf("decompressing %s payload: %w: %w", format, ErrInvalidKernel, err)
	}
	if len(out) > maxVmlinux || uint32(len(out)) != want {
		return nil, fmt.Errorf("%s payload decompressed to %d bytes, header says %d: %w", format, len(out), want, ErrInvalidKernel)
	}
	if !bytes.HasPrefix(out, []byte("\x7fELF")) {
		return nil, fmt.Errorf("%s payload is not an ELF: %w", format, ErrInvalidKernel)
	}
	return out, nil
}

// decompressor returns a reader of the payload in the format its magic
// names. The caller closes it: the zstd decoder holds buffers (and, with
// concurrency, goroutines) until closed.
func decompressor(data []byte) (io.ReadCloser, string, error) {
	br := bytes.NewReader(data)
	switch {
	case bytes.HasPrefix(data, []byte{0x1f, 0x8b}):
		r, err := gzip.NewReader(br)
		if err != nil {
			return nil, "gzip", fmt.Errorf("gzip payload: %w: %w", ErrInvalidKernel, err)
		}
		r.Multistream(false)
		return r, "gzip", nil
	case bytes.HasPrefix(data, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		d, err := zstd.NewReader(br, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(maxVmlinux))
		if err != nil {
			return nil, "zstd", fmt.Errorf("zstd payload: %w: %w", ErrInvalidKernel, err)
		}
		return d.IOReadCloser(), "zstd", nil
	case bytes.HasPrefix(data, []byte{0xfd, '7', 'z', 'X', 'Z', 0}):
		// Linux compresses with the x86 BCJ filter, which ulikunitz/xz
		// lacks; therootcompany/xz (a port of xz-embedded) has it.
		r, err := txz.NewReader(br, 0)
		if err != nil {
			return nil, "xz", fmt.Errorf("xz payload: %w: %w", ErrInvalidKernel, err)
		}
		return io.NopCloser(r), "xz", nil
	case bytes.HasPrefix(data, []byte{0x5d, 0, 0}):
		r, err := lzma.NewReader(br)
		if err != nil {
			return nil, "lzma", fmt.Errorf("lzma payload: %w: %w", ErrInvalidKernel, err)
		}
		return io.NopCloser(r), "lzma", nil
	case bytes.HasPrefix(data, []byte{0x02, 0x21, 0x4c, 0x18}):
		return io.NopCloser(lz4.NewReader(br)), "lz4", nil
	case bytes.HasPrefix(data, []byte("BZh")):
		return io.NopCloser(bzip2.NewReader(br)), "bzip2", nil
	}
	return nil, "", fmt.Errorf("unknown payload compression (magic % x): %w: %w", data[:min(len(data), 4)], ErrInvalidKernel, errUnsupportedCompression)
}

var errUnsupportedCompression = errors.New("unsupported compression (lzo?)")
