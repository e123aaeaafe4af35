// Package libvirtsim does what libvirt's ch driver (src/ch/) does to a
// Cloud Hypervisor process, byte for byte where it matters, so that tests
// can drive Nimbus as libvirt would without libvirt: the --version parse
// of ch_conf.c and the hand-built vm.add-net exchange of ch_process.c.
package libvirtsim

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// MinVersion is ch_conf.c's MIN_VERSION (15.0.0) as major*1e6+minor*1e3+micro.
const MinVersion = 15 * 1000000

// ParseVersion is chExtractVersion: the output must start with
// "cloud-hypervisor "; what follows loses any "branch/" prefix, a leading
// 'v' and anything from the first '-' (chPreProcessVersionString), then
// parses as major[.minor[.micro]] up to the first other character
// (virStringParseVersion with allowMissing). It returns the version as
// major*1e6+minor*1e3+micro, refusing one below MinVersion.
func ParseVersion(out string) (uint64, error) {
	tmp, ok := strings.CutPrefix(out, "cloud-hypervisor ")
	if !ok {
		return 0, errors.New("Unexpected output of cloud-hypervisor binary")
	}
	tmp, _, _ = strings.Cut(tmp, "\n") // the string ends at the first component that is not a number
	if i := strings.LastIndexByte(tmp, '/'); i >= 0 {
		tmp = tmp[i+1:]
	}
	tmp = strings.TrimPrefix(tmp, "v")
	tmp, _, _ = strings.Cut(tmp, "-")
	var parts [3]uint64
	for i, f := range strings.SplitN(tmp, ".", 3) {
		end := strings.IndexFunc(f, func(r rune) bool { return r < '0' || r > '9' })
		if end >= 0 {
			f = f[:end]
		}
		v, err := strconv.ParseUint(f, 10, 32)
		if err != nil {
			return 0, fmt.Errorf("Unable to parse cloud-hypervisor version: %s", tmp)
		}
		parts[i] = v
	}
	version := parts[0]*1000000 + parts[1]*1000 + parts[2]
	if version < MinVersion {
		return version, errors.New("Cloud-Hypervisor version is too old (v15.0 is the minimum supported version)")
	}
	return version, nil
}

// AddNet is chProcessAddNetworkDevices for one NIC: a hand-built request
// sent with the tap fds (one per queue pair) in one sendmsg, then a single
// recv of at most 1023 bytes after a 500 ms poll; the reply must be a
// whole 200 or 204. It returns the bytes that recv got.
func AddNet(conn *net.UnixConn, body string, fds []int) ([]byte, error) {
	req := fmt.Sprintf("PUT /api/v1/vm.add-net HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
	n, _, err := conn.WriteMsgUnix([]byte(req), unix.UnixRights(fds...), nil)
	if err != nil || n != len(req) {
		return nil, fmt.Errorf("sendmsg: %d/%d %v", n, len(req), err)
	}
	raw, err := conn.SyscallConn()
	if err != nil {
		return nil, err
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
		return got, fmt.Errorf("recv: %v %v", err, rerr)
	}
	resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(got)), nil)
	if err != nil {
		return got, fmt.Errorf("the single recv got %q: %w", got, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 && resp.StatusCode != 204 {
		return got, fmt.Errorf("status %d: %q", resp.StatusCode, got)
	}
	if resp.ContentLength > 0 {
		b := make([]byte, resp.ContentLength)
		if _, err := resp.Body.Read(b); err != nil {
			return got, fmt.Errorf("the body was not in the same recv: %q", got)
		}
	}
	return got, nil
}
