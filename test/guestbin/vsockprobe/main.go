// Command vsockprobe is a guest-side test program (busybox has no vsock
// tool): it runs inside test guests, statically linked, and drives
// AF_VSOCK streams so end-to-end tests can check the VMM's virtio-vsock
// device and its Unix-socket backend.
//
//	vsockprobe listen PORT                 accept streams; for each, read a
//	                                       request "SEND n\n" and answer
//	                                       with n pseudo-random bytes, or
//	                                       "SUM\n" then bytes to EOF, and
//	                                       answer "SUM <sha256 hex> <n>\n"
//	vsockprobe connect CID PORT N STREAMS  open STREAMS streams to CID:PORT
//	                                       at once, send N pseudo-random
//	                                       bytes on each, half-close, read
//	                                       the reply line and print
//	                                       "VSOCK-CONNECT ok i <line>"
//
// Every line it prints starts with VSOCK-.
package main

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/nimbus-vmm/nimbus/test/guestbin/pattern"
)

func main() {
	if len(os.Args) < 3 {
		fail("usage: vsockprobe listen PORT | connect CID PORT N STREAMS")
	}
	switch os.Args[1] {
	case "listen":
		listen(uint32(num(os.Args[2])))
	case "connect":
		if len(os.Args) != 6 {
			fail("usage: vsockprobe connect CID PORT N STREAMS")
		}
		connect(uint32(num(os.Args[2])), uint32(num(os.Args[3])), num(os.Args[4]), int(num(os.Args[5])))
	default:
		fail("unknown mode " + os.Args[1])
	}
}

func num(s string) uint64 {
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		fail(err.Error())
	}
	return n
}

func fail(msg string) {
	fmt.Println("VSOCK-ERROR", msg)
	os.Exit(1)
}

// stream is one vsock connection as an io.ReadWriteCloser.
type stream struct{ fd int }

func (s stream) Read(p []byte) (int, error) {
	n, err := unix.Read(s.fd, p)
	if n == 0 && err == nil {
		return 0, io.EOF
	}
	if n < 0 {
		n = 0
	}
	return n, err
}

func (s stream) Write(p []byte) (int, error) {
	done := 0
	for done < len(p) {
		n, err := unix.Write(s.fd, p[done:])
		if err != nil {
			return done, err
		}
		done += n
	}
	return done, nil
}

func listen(port uint32) {
	fd, err := unix.Socket(unix.AF_VSOCK, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		fail("socket: " + err.Error())
	}
	if err := unix.Bind(fd, &unix.SockaddrVM{CID: unix.VMADDR_CID_ANY, Port: port}); err != nil {
		fail("bind: " + err.Error())
	}
	if err := unix.Listen(fd, 128); err != nil {
		fail("listen: " + err.Error())
	}
	fmt.Println("VSOCK-LISTENING", port)
	for {
		c, _, err := unix.Accept(fd)
		if err != nil {
			fail("accept: " + err.Error())
		}
		go serve(stream{c})
	}
}

func serve(s stream) {
	defer unix.Close(s.fd)
	r := bufio.NewReader(s)
	line, err := r.ReadString('\n')
	if err != nil {
		return
	}
	f := strings.Fields(line)
	switch {
	case len(f) == 2 && f[0] == "SEND":
		n, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil {
			return
		}
		io.Copy(s, pattern.N(n))
	case len(f) == 1 && f[0] == "SUM":
		h := sha256.New()
		n, _ := io.Copy(h, r)
		fmt.Fprintf(s, "SUM %s %d\n", hex.EncodeToString(h.Sum(nil)), n)
	case len(f) == 1 && f[0] == "PING":
		fmt.Fprintf(s, "PONG\n")
	}
}

func connect(cid, port uint32, n uint64, streams int) {
	var wg sync.WaitGroup
	var mu sync.Mutex
	for i := range streams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			line, err := oneStream(cid, port, n)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				fmt.Println("VSOCK-CONNECT fail", i, err)
				return
			}
			fmt.Println("VSOCK-CONNECT ok", i, line)
		}()
	}
	wg.Wait()
	fmt.Println("VSOCK-CONNECT done")
}

func oneStream(cid, port uint32, n uint64) (string, error) {
	fd, err := unix.Socket(unix.AF_VSOCK, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return "", err
	}
	defer unix.Close(fd)
	if err := unix.Connect(fd, &unix.SockaddrVM{CID: cid, Port: port}); err != nil {
		return "", fmt.Errorf("connect: %w", err)
	}
	s := stream{fd}
	if _, err := io.Copy(s, pattern.N(int64(n))); err != nil {
		return "", fmt.Errorf("send: %w", err)
	}
	if err := unix.Shutdown(fd, unix.SHUT_WR); err != nil {
		return "", fmt.Errorf("shutdown: %w", err)
	}
	line, err := bufio.NewReader(s).ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("reply: %w", err)
	}
	return strings.TrimSpace(line), nil
}
