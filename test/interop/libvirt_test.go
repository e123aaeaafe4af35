package interop

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"net/http"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// libvirtAddNet is chProcessAddNetworkDevices (src/ch/ch_process.c): a
// hand-built request sent with the tap fds in one sendmsg, then a single
// recv of at most 1023 bytes after a 500 ms poll. It returns what that
// recv got.
func libvirtAddNet(t *testing.T, conn *net.UnixConn, body string, fds []int) []byte {
	t.Helper()
	req := fmt.Sprintf("PUT /api/v1/vm.add-net HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
	n, _, err := conn.WriteMsgUnix([]byte(req), unix.UnixRights(fds...), nil)
	if err != nil || n != len(req) {
		t.Fatalf("sendmsg: %d/%d %v", n, len(req), err)
	}
	raw, err := conn.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var got []byte
	var rerr error
	err = raw.Control(func(fd uintptr) {
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		var k int
		for {
			k, rerr = unix.Poll(pfd, 500)
			if rerr != unix.EINTR {
				break
			}
		}
		if rerr != nil || k == 0 {
			rerr = fmt.Errorf("poll: %d ready, %v (libvirt gives up after 500 ms)", k, rerr)
			return
		}
		buf := make([]byte, 1023)
		k, rerr = unix.Read(int(fd), buf)
		if k > 0 {
			got = buf[:k]
		}
	})
	if err != nil || rerr != nil {
		t.Fatalf("recv: %v %v", err, rerr)
	}
	return got
}

// TestLibvirtAddNet: each reply must arrive whole in libvirt's single
// recv, with status 200 or 204, for several NICs on one connection.
func TestLibvirtAddNet(t *testing.T) {
	n := startNimbus(t, nil)
	cl := kataClient(t, n.sock)
	cfg := kataVMConfig("/run/libvirt/ch")
	cfg.Cpus.BootVcpus = 2 // two queue pairs need two vCPUs (upstream's check)
	if _, err := cl.CreateVM(t.Context()).VmConfig(cfg).Execute(); err != nil {
		t.Fatalf("vm.create: %v", openAPIClientError(err))
	}

	conn, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: n.sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	start := time.Now()
	for i, nfds := range []int{1, 2} {
		var fds []int
		for _, f := range pipes(t, nfds) {
			fds = append(fds, int(f.Fd()))
		}
		body := fmt.Sprintf(`{"mac":"52:54:00:00:00:0%d","num_queues":%d}`, i, 2*nfds)
		got := libvirtAddNet(t, conn, body, fds)
		resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(got)), nil)
		if err != nil {
			t.Fatalf("NIC %d: the single recv got %q: %v", i, got, err)
		}
		if resp.StatusCode != 200 && resp.StatusCode != 204 {
			t.Fatalf("NIC %d: %q", i, got)
		}
		// The whole reply, body included, was in that one recv.
		if resp.ContentLength > 0 {
			b := make([]byte, resp.ContentLength)
			if _, err := resp.Body.Read(b); err != nil {
				t.Errorf("NIC %d: body not in the same recv: %q", i, got)
			}
		}
	}
	t.Logf("two libvirt add-net exchanges took %v", time.Since(start))

	ctx := t.Context()
	info, _, err := cl.VmInfoGet(ctx).Execute()
	if err != nil || info.Config.Net == nil || len(*info.Config.Net) != 2 {
		t.Fatalf("vm.info after libvirt's add-net: %+v %v", info.Config.Net, err)
	}
	if q := (*info.Config.Net)[1].GetNumQueues(); q != 4 {
		t.Errorf("second NIC num_queues %d", q)
	}
}
