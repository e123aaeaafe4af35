package vm

import (
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/nimbus-vmm/nimbus/internal/config"
	"github.com/nimbus-vmm/nimbus/internal/virtio/net"
)

// newNet builds a virtio-net device on its own duplicates of the config's
// tap fds, leaving the originals to whoever holds them: the controller
// keeps the files received with vm.add-net until vm.delete, and a reboot
// builds a new machine from the same config. Wrapping the received
// descriptor itself would also give it a second os.File, which cannot
// register with the poller (the first one did) and so reads EAGAIN
// instead of waiting: the guest would send but never receive.
func newNet(nc config.NetConfig) (*net.Device, error) {
	if len(nc.Fds) == 0 {
		return net.New(nc)
	}
	dups := make([]int32, 0, len(nc.Fds))
	for _, fd := range nc.Fds {
		d, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 3)
		if err != nil {
			for _, d := range dups {
				unix.Close(int(d))
			}
			return nil, fmt.Errorf("tap fd %d: %w", fd, err)
		}
		dups = append(dups, int32(d))
	}
	nc.Fds = dups // nc is a copy: the config keeps the original numbers
	return net.New(nc)
}
