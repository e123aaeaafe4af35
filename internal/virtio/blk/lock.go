package blk

import (
	"fmt"
	"io"

	"golang.org/x/sys/unix"

	"github.com/nimbus-vmm/nimbus/internal/virtio"
)

// SetLocked drops (false) or takes again (true) the image's lock, for a
// live migration: the destination opens and locks the image before the
// source closes it (upstream's release_disk_locks).
func (d *Device) SetLocked(locked bool) error {
	if locked {
		return d.img.lock(d.img.granularity)
	}
	lk := unix.Flock_t{Type: unix.F_UNLCK, Whence: io.SeekStart}
	if err := unix.FcntlFlock(d.img.f.Fd(), unix.F_OFD_SETLK, &lk); err != nil {
		return fmt.Errorf("unlock disk image: %w: %w", virtio.ErrBackend, err)
	}
	return nil
}
