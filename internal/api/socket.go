package api

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"sync"

	"golang.org/x/sys/unix"
)

// ErrSocketInUse means another live instance holds the API socket's lock
// (upstream's ApiSocketInUse).
var ErrSocketInUse = errors.New("API socket in use")

// DefaultSocketPath mirrors the default upstream's CLI used before the
// option became optional: /run/user/<uid>/nimbus.<pid>; as root, the
// sudo user's runtime dir, or /run/nimbus.<pid>.
func DefaultSocketPath() string {
	pid := os.Getpid()
	uid := os.Getuid()
	if uid == 0 {
		if su := os.Getenv("SUDO_UID"); su != "" {
			return fmt.Sprintf("/run/user/%s/nimbus.%d", su, pid)
		}
		return fmt.Sprintf("/run/nimbus.%d", pid)
	}
	return fmt.Sprintf("/run/user/%d/nimbus.%d", uid, pid)
}

// Listener is the API socket bound by Listen. Close removes the socket
// and releases the lock (upstream removes the socket on a clean exit
// only; a crash leaves a stale socket that the next Listen removes once it
// holds the lock).
//
// The <path>.lock file is never removed, as upstream never removes it:
// unlinking a lock file breaks the lock. An instance that opened the old
// file just before it was unlinked would lock that orphaned inode while a
// later one creates and locks a new file; both would then "hold" the lock
// and remove each other's live socket.
type Listener struct {
	*net.UnixListener
	path string
	lock *os.File

	closeOnce sync.Once
	closeErr  error
}

// umaskMu serialises the umask change around bind: umask is per process.
// The umask dance only serves embedders (tests, library users) that run
// with a permissive umask, closing the window between bind and Chmod in
// which the socket would be group/world-connectable; cmd/nimbus already
// runs under umask 077 as upstream's main does, so there it changes
// nothing.
var umaskMu sync.Mutex

// Listen binds the API socket at path, owner-only (mode 0600). It first
// takes an exclusive lock on <path>.lock, so a second instance fails with
// ErrSocketInUse instead of deleting a live socket, then removes any stale
// socket left by a crashed run.
func Listen(path string) (*Listener, error) {
	lockPath := path + ".lock"
	lock, err := os.OpenFile(lockPath, os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, fmt.Errorf("creating API socket lock %s: %w", lockPath, err)
	}
	// An open-file-description lock: it conflicts even between two
	// listeners in one process, unlike a classic POSIX record lock.
	fl := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0, Start: 0, Len: 0}
	if err := unix.FcntlFlock(lock.Fd(), unix.F_OFD_SETLK, &fl); err != nil {
		lock.Close()
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EACCES) {
			return nil, fmt.Errorf("%s: %w", path, ErrSocketInUse)
		}
		return nil, fmt.Errorf("locking %s: %w", lockPath, err)
	}
	// We hold the lock, so a socket at path is stale.
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		lock.Close()
		return nil, fmt.Errorf("removing stale API socket %s: %w", path, err)
	}

	umaskMu.Lock()
	old := unix.Umask(0o077)
	ul, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	unix.Umask(old)
	umaskMu.Unlock()
	if err != nil {
		lock.Close()
		return nil, fmt.Errorf("binding API socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ul.Close()
		lock.Close()
		return nil, fmt.Errorf("restricting API socket mode: %w", err)
	}
	// We remove the socket ourselves in Close, before the lock goes.
	ul.SetUnlinkOnClose(false)
	return &Listener{UnixListener: ul, path: path, lock: lock}, nil
}

// Path is the socket's path.
func (l *Listener) Path() string { return l.path }

// Close stops listening, removes the socket (not the lock file; see
// Listener) and releases the lock. It is safe to call more than once.
func (l *Listener) Close() error {
	l.closeOnce.Do(func() {
		l.closeErr = l.UnixListener.Close()
		os.Remove(l.path)
		l.lock.Close()
	})
	return l.closeErr
}

// ListenFD uses an inherited, already listening Unix socket
// (--api-socket fd=N). The fd is taken over: it is closed when the
// returned listener is. No lock or cleanup applies, as upstream.
func ListenFD(fd int) (*net.UnixListener, error) {
	if fd < 0 {
		return nil, fmt.Errorf("API socket fd %d: %w", fd, unix.EBADF)
	}
	f := os.NewFile(uintptr(fd), "api-socket-fd-"+strconv.Itoa(fd))
	defer f.Close() // FileListener dups it
	l, err := net.FileListener(f)
	if err != nil {
		return nil, fmt.Errorf("API socket fd %d: %w", fd, err)
	}
	ul, ok := l.(*net.UnixListener)
	if !ok {
		l.Close()
		return nil, fmt.Errorf("API socket fd %d is not a Unix socket", fd)
	}
	return ul, nil
}
