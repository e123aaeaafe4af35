package debimage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// WriteGPTDisk writes out: a GPT disk laid out as a cloud image's, the EFI
// system partition esp from 1 MiB on, then the partition image part (named
// name), then 1 MiB for the backup GPT. Holes in part stay holes, so a
// 2 GiB file system costs what it holds. Partitioned with sfdisk (fdisk).
func WriteGPTDisk(ctx context.Context, out, esp, part, name string) error {
	const mib = 1 << 20
	espSize, err := copySparse(out, esp, mib, true)
	if err != nil {
		return err
	}
	partSize, err := copySparse(out, part, mib+espSize, false)
	if err != nil {
		return err
	}
	if err := os.Truncate(out, mib+espSize+partSize+mib); err != nil {
		return fmt.Errorf("%w: %w", ErrImage, err)
	}
	if espSize%512 != 0 || partSize%512 != 0 {
		return fmt.Errorf("%w: partition images must be whole sectors (%d, %d bytes)", ErrImage, espSize, partSize)
	}
	table := fmt.Sprintf("label: gpt\nstart=2048, size=%d, type=uefi, name=\"EFI system\"\nsize=%d, type=linux, name=%q\n",
		espSize/512, partSize/512, name)
	return run(ctx, ".", strings.NewReader(table), "sfdisk", "-q", out)
}

// copySparse copies src's data (not its holes) into dst at off, creating
// dst anew when create; it returns src's size.
func copySparse(dst, src string, off int64, create bool) (int64, error) {
	in, err := os.Open(src)
	if err != nil {
		return 0, fmt.Errorf("%w: %w", ErrImage, err)
	}
	defer in.Close()
	flags := os.O_WRONLY
	if create {
		flags |= os.O_CREATE | os.O_TRUNC
	}
	o, err := os.OpenFile(dst, flags, 0o644)
	if err != nil {
		return 0, fmt.Errorf("%w: %w", ErrImage, err)
	}
	defer o.Close() // for the error paths; the last Close's error is returned
	fi, err := in.Stat()
	if err != nil {
		return 0, fmt.Errorf("%w: %w", ErrImage, err)
	}
	size := fi.Size()
	for pos := int64(0); pos < size; {
		data, err := unix.Seek(int(in.Fd()), pos, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break // only a hole is left
		}
		if err != nil {
			return 0, fmt.Errorf("%w: seeking data in %s: %w", ErrImage, src, err)
		}
		hole, err := unix.Seek(int(in.Fd()), data, unix.SEEK_HOLE)
		if err != nil {
			return 0, fmt.Errorf("%w: seeking a hole in %s: %w", ErrImage, src, err)
		}
		if _, err := io.Copy(io.NewOffsetWriter(o, off+data), io.NewSectionReader(in, data, hole-data)); err != nil {
			return 0, fmt.Errorf("%w: copying %s: %w", ErrImage, src, err)
		}
		pos = hole
	}
	return size, o.Close()
}
