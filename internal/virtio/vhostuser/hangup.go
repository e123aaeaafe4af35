package vhostuser

import (
	"errors"
	"fmt"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/nimbus-vmm/nimbus/internal/virtio"
)

// hangupWatch notices the back end hanging up while Nimbus has nothing to
// ask it (upstream's epoll handler watches the socket for EPOLLHUP). It
// polls a duplicate of the socket for POLLRDHUP beside a stop eventfd, so
// it never reads (replies stay the requests'), and owns its goroutine.
type hangupWatch struct {
	dup  int
	quit *virtio.EventFD
	done chan struct{}
	once sync.Once
}

// watchHangup starts watching c; lost runs once if the peer hangs up.
func watchHangup(c *Conn, lost func(error)) (*hangupWatch, error) {
	raw, err := c.c.SyscallConn()
	if err != nil {
		return nil, err
	}
	dup := -1
	var derr error
	if err := raw.Control(func(fd uintptr) { dup, derr = unix.Dup(int(fd)) }); err != nil || derr != nil {
		return nil, fmt.Errorf("vhost-user: watching the socket: %w", errors.Join(err, derr))
	}
	quit, err := virtio.NewEventFD()
	if err != nil {
		unix.Close(dup)
		return nil, err
	}
	w := &hangupWatch{dup: dup, quit: quit, done: make(chan struct{})}
	go w.run(c, lost)
	return w, nil
}

func (w *hangupWatch) run(c *Conn, lost func(error)) {
	defer close(w.done)
	fds := []unix.PollFd{{Fd: int32(w.dup), Events: unix.POLLRDHUP}, {Fd: int32(w.quit.FD()), Events: unix.POLLIN}}
	for {
		_, err := unix.Poll(fds, -1)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil || fds[1].Revents != 0 {
			return
		}
		if fds[0].Revents&(unix.POLLRDHUP|unix.POLLHUP|unix.POLLERR) != 0 {
			err := fmt.Errorf("%w: the back end hung up", ErrDisconnected)
			c.markBroken(err)
			lost(err)
			return
		}
	}
}

// stop ends the watch and waits for its goroutine. Idempotent.
func (w *hangupWatch) stop() error {
	var err error
	w.once.Do(func() {
		err = w.quit.Signal()
		<-w.done
		err = errors.Join(err, w.quit.Close(), unix.Close(w.dup))
	})
	return err
}
