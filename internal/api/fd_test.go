package api

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/nimbus-vmm/nimbus/internal/vmm"
	"golang.org/x/sys/unix"
)

// openFds counts this process's open fds.
func openFds(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// pipeFds returns n pipe read ends (closed at test end) and their inodes.
func pipeFds(t *testing.T, n int) ([]int, []uint64) {
	var fds []int
	var inos []uint64
	for i := 0; i < n; i++ {
		var p [2]int
		if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { unix.Close(p[0]); unix.Close(p[1]) })
		var st unix.Stat_t
		unix.Fstat(p[0], &st)
		fds = append(fds, p[0])
		inos = append(inos, st.Ino)
	}
	return fds, inos
}

func inode(t *testing.T, f *os.File) uint64 {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatalf("fstat received fd: %v", err)
	}
	return st.Ino
}

func addNetRequest(body string) []byte {
	return []byte("PUT /api/v1/vm.add-net HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\n" +
		"Content-Type: application/json\r\nContent-Length: " + fmt.Sprint(len(body)) + "\r\n\r\n" + body)
}

// TestAddNetFdsOneConnection replays Kata's and libvirt's add-net: several
// requests on one connection, each written whole in one sendmsg with its
// tap fds.
func TestAddNetFdsOneConnection(t *testing.T) {
	var mu sync.Mutex
	var got [][]*os.File
	h := &fakeHandler{reply: func(c vmm.Command) (any, error) {
		an := c.(vmm.AddNet)
		if len(an.Config.Fds) != 0 {
			t.Errorf("fd numbers from the JSON body reached the handler: %v", an.Config.Fds)
		}
		mu.Lock()
		got = append(got, an.Fds)
		n := len(got)
		mu.Unlock()
		if n == 2 {
			return nil, nil // cold add: 204
		}
		return &vmm.PciDeviceInfo{ID: fmt.Sprintf("_net%d", n), BDF: fmt.Sprintf("0000:00:%02x.0", 5+n)}, nil
	}}
	ts := startServer(t, h, Options{})
	rc := dialRaw(t, ts.path)

	sets := [][]int{}
	inos := [][]uint64{}
	for _, n := range []int{1, 4, 2} {
		f, i := pipeFds(t, n)
		sets = append(sets, f)
		inos = append(inos, i)
	}
	for i, fds := range sets {
		body := fmt.Sprintf(`{"mac":"12:34:56:78:90:0%d","ip":"192.168.249.1","mask":"255.255.255.0","num_queues":%d,"fds":[7,8]}`, i, 2*len(fds))
		r := rc.roundTrip(t, addNetRequest(body), fds...)
		want := 200
		if i == 1 {
			want = 204
		}
		if r.StatusCode != want {
			t.Fatalf("add-net %d: %d %s", i, r.StatusCode, r.body)
		}
	}
	if len(got) != 3 {
		t.Fatalf("handler saw %d add-net commands", len(got))
	}
	for i := range got {
		if len(got[i]) != len(inos[i]) {
			t.Fatalf("request %d: got %d fds, sent %d", i, len(got[i]), len(inos[i]))
		}
		for j, f := range got[i] {
			if inode(t, f) != inos[i][j] {
				t.Errorf("request %d fd %d is not the pipe that was sent", i, j)
			}
			flags, err := unix.FcntlInt(f.Fd(), unix.F_GETFD, 0)
			if err != nil || flags&unix.FD_CLOEXEC == 0 {
				t.Errorf("received fd %d not close-on-exec (flags %#x, %v)", f.Fd(), flags, err)
			}
			f.Close() // the handler (control loop) owns them
		}
	}
}

// TestFdsClosedWhenNotTaken checks that fds sent with a request that fails
// or does not take fds are closed, and that fds never linger after the
// connection ends.
func TestFdsClosedWhenNotTaken(t *testing.T) {
	h := &fakeHandler{reply: func(c vmm.Command) (any, error) {
		if c.Name() == "vm.add-net" {
			return nil, fmt.Errorf("open tap: %w", errors.New("EBUSY"))
		}
		return nil, nil
	}}
	ts := startServer(t, h, Options{})
	fds, _ := pipeFds(t, 3)
	before := openFds(t)

	rc := dialRaw(t, ts.path)
	cases := []struct {
		raw    string
		status int
	}{
		{"GET /api/v1/vmm.ping HTTP/1.1\r\nHost: localhost\r\n\r\n", 204},
		{string(addNetRequest(`{"mac":"12:34:56:78:90:01"}`)), 500},
		{string(addNetRequest(`{"mac":`)), 400},
		{"PUT /api/v1/vm.add-device HTTP/1.1\r\nHost: localhost\r\nContent-Length: 11\r\n\r\n{\"path\":\"\"}", 400},
		{"GET /api/v1/vm.nope HTTP/1.1\r\nHost: localhost\r\n\r\n", 404},
		{"PUT /api/v1/vm.create HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2\r\n\r\n{}", 204},
	}
	for _, tc := range cases {
		r := rc.roundTrip(t, []byte(tc.raw), fds...)
		if r.StatusCode != tc.status {
			t.Errorf("%q: %d %s", strings.SplitN(tc.raw, "\r\n", 2)[0], r.StatusCode, r.body)
		}
		// The connection's two ends are the only new fds.
		if n := openFds(t); n != before+2 {
			t.Errorf("%q: %d fds open, want %d", strings.SplitN(tc.raw, "\r\n", 2)[0], n, before+2)
		}
	}
	r := rc.roundTrip(t, []byte(cases[3].raw), fds[:1]...)
	if r.StatusCode != 204 {
		t.Errorf("add-device with one fd: %d %s", r.StatusCode, r.body)
	}
}

// TestFdsSentWithoutRequest: fds that arrive on a connection that then
// closes are closed by the server.
func TestFdsLeftOnClosedConnection(t *testing.T) {
	ts := startServer(t, &fakeHandler{}, Options{})
	fds, _ := pipeFds(t, 2)
	before := openFds(t)
	rc := dialRaw(t, ts.path)
	// Half a request with fds, then hang up.
	if _, _, err := rc.WriteMsgUnix([]byte("PUT /api/v1/vm.add-net HTTP/1.1\r\n"), unixRights(fds...), nil); err != nil {
		t.Fatal(err)
	}
	rc.Close()
	// Shutdown waits for the connection to finish; then nothing lingers.
	ts.Shutdown(t.Context())
	if n := openFds(t); n > before {
		t.Errorf("%d fds open after close, want <= %d", n, before)
	}
}

func TestManyFdsInOneMessage(t *testing.T) {
	var got int
	h := &fakeHandler{reply: func(c vmm.Command) (any, error) {
		got = len(c.(vmm.AddNet).Fds)
		vmm.CloseFiles(c.(vmm.AddNet).Fds)
		return nil, nil
	}}
	ts := startServer(t, h, Options{})
	fds, _ := pipeFds(t, maxFdsPerMsg)
	r := dialRaw(t, ts.path).roundTrip(t, addNetRequest(`{}`), fds...)
	if r.StatusCode != 204 || got != maxFdsPerMsg {
		t.Errorf("%d fds: status %d, handler got %d", maxFdsPerMsg, r.StatusCode, got)
	}
}

func TestSocketLock(t *testing.T) {
	dir := shortTempDir(t)
	path := filepath.Join(dir, "api.sock")
	// A stale socket from a crashed run is replaced.
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	l, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode()&os.ModeSocket == 0 || st.Mode().Perm() != 0o600 {
		t.Errorf("socket %v mode %v", err, st.Mode())
	}
	if _, err := os.Stat(path + ".lock"); err != nil {
		t.Errorf("lock file: %v", err)
	}
	// A second instance refuses the path instead of stealing it.
	if _, err := Listen(path); !errors.Is(err, ErrSocketInUse) || !strings.Contains(err.Error(), "API socket in use") {
		t.Errorf("second Listen: %v", err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Errorf("second Listen removed the live socket: %v", err)
	}
	// A later instance that opened the lock file while this one held it.
	late, err := os.OpenFile(path+".lock", os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer late.Close()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	// The socket goes; the lock file stays, as upstream leaves it.
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket left after Close: %v", err)
	}
	if _, err := os.Stat(path + ".lock"); err != nil {
		t.Errorf("lock file removed by Close: %v", err)
	}
	l2, err := Listen(path)
	if err != nil {
		t.Fatalf("Listen after Close: %v", err)
	}
	defer l2.Close()
	// The late opener's file is the one l2 locked, so it cannot take the
	// lock too (had Close unlinked the file, it would lock an orphan and
	// both would believe they own the socket).
	fl := unix.Flock_t{Type: unix.F_WRLCK}
	if err := unix.FcntlFlock(late.Fd(), unix.F_OFD_SETLK, &fl); !errors.Is(err, unix.EAGAIN) && !errors.Is(err, unix.EACCES) {
		t.Errorf("late opener locked the lock file while l2 holds it: %v", err)
	}
}

func TestListenFD(t *testing.T) {
	path := filepath.Join(shortTempDir(t), "fd.sock")
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(fd, 8); err != nil {
		t.Fatal(err)
	}
	l, err := ListenFD(fd)
	if err != nil {
		t.Fatal(err)
	}
	s := New(stateful(), Options{})
	done := make(chan error, 1)
	go func() { done <- s.Serve(l) }()
	r := dialRaw(t, path).roundTrip(t, []byte("GET /api/v1/vmm.ping HTTP/1.1\r\nHost: localhost\r\n\r\n"))
	if r.StatusCode != 200 {
		t.Errorf("ping over inherited fd: %d", r.StatusCode)
	}
	s.Shutdown(t.Context())
	if err := <-done; err != nil {
		t.Error(err)
	}
	if _, err := ListenFD(-1); err == nil {
		t.Error("ListenFD(-1) succeeded")
	}
}

func TestDefaultSocketPath(t *testing.T) {
	p := DefaultSocketPath()
	want := fmt.Sprintf("nimbus.%d", os.Getpid())
	if !strings.HasSuffix(p, "/"+want) || !strings.HasPrefix(p, "/run/") {
		t.Errorf("DefaultSocketPath() = %q", p)
	}
}
