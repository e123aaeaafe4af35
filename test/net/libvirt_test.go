package net_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nimbus-vmm/nimbus/internal/guestimage"
	"github.com/nimbus-vmm/nimbus/internal/guestimage/guesttest"
	"github.com/nimbus-vmm/nimbus/internal/testnet"
	"github.com/nimbus-vmm/nimbus/internal/testproc"
	"github.com/nimbus-vmm/nimbus/pkg/client"
	"github.com/nimbus-vmm/nimbus/test/internal/libvirtsim"
)

// lockedBuffer collects what a reader goroutine reads.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestLibvirtStartup is libvirt's ch driver starting a domain, in its
// order (src/ch/ch_process.c, ch_monitor.c): the binary, installed as
// cloud-hypervisor, answers --version as ch_conf.c parses it; the API
// socket is one libvirt bound and passes as --api-socket fd=N; the event
// monitor is a FIFO libvirt opens for reading only after the VMM started;
// vm.create has a Pty console and a Socket serial; each NIC comes with
// vm.add-net carrying one tap fd per queue pair, answered within libvirt's
// single recv; vm.boot; vm.info gives the console's pty. The guest's
// serial output arrives on the socket, its NIC carries traffic, and
// libvirt's shutdown (vm.shutdown, vmm.shutdown) shows as events on the
// FIFO.
func TestLibvirtStartup(t *testing.T) {
	a := guesttest.Require(t)
	requireNetAdmin(t)
	ctx, cancel := context.WithTimeout(context.Background(), guestTimeout)
	defer cancel()
	dir, err := os.MkdirTemp("", "nimbus-lv") // socket paths must fit sun_path
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)

	// The binary as libvirt finds it: cloud-hypervisor on PATH.
	ch := filepath.Join(dir, "cloud-hypervisor")
	if err := os.Symlink(nimbusPath(t, a), ch); err != nil {
		t.Fatal(err)
	}
	vcmd := exec.Command(ch, "--version")
	vcmd.Env = append(os.Environ(), "LC_ALL=C")
	vout, err := vcmd.Output()
	if err != nil {
		t.Fatalf("--version: %v", err)
	}
	version, err := libvirtsim.ParseVersion(string(vout))
	if err != nil || version < 53000000 {
		t.Fatalf("libvirt's parse of %q: %d, %v", vout, version, err)
	}

	// The API socket libvirt binds, and the event FIFO.
	sock := filepath.Join(dir, "api.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	lnFile, err := ln.File()
	ln.SetUnlinkOnClose(false) // the path stays: it is the VMM's socket now
	ln.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer lnFile.Close()
	fifo := filepath.Join(dir, "events.fifo")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	ns := testnet.NewNetns(t)
	const host, guest, mac = "10.99.8.1", "10.99.8.2", "52:54:00:aa:00:08"
	tap := kataTap(t, ns, "tap0_8", host+"/24", 1)
	peer := newHostPeer(t, ns, payloadSize)
	cmd := exec.Command(ch, "--api-socket", "fd=3", "--event-monitor", "path="+fifo, "-v")
	cmd.ExtraFiles = []*os.File{lnFile}
	proc := testproc.StartCmd(t, testnet.StartIn(ns), cmd)
	lnFile.Close()

	// libvirt opens its reader after the start; the VMM waits for it.
	events := &lockedBuffer{}
	evDone := make(chan struct{})
	go func() {
		defer close(evDone)
		f, err := os.Open(fifo)
		if err != nil {
			return
		}
		defer f.Close()
		io.Copy(events, f)
	}()
	c := client.New(sock)
	if !waitFor(ctx, func() bool { _, err := c.Ping(ctx); return err == nil }) {
		t.Fatalf("no vmm.ping answer; output:\n%s", proc.Output())
	}

	serialSock := filepath.Join(dir, "serial.sock")
	initrd := a.ImageFile(t, guestimage.Options{})
	vm := map[string]any{
		"cpus":    map[string]any{"boot_vcpus": 1, "max_vcpus": 1},
		"memory":  map[string]any{"size": 256 << 20},
		"payload": map[string]any{"kernel": a.Kernel, "initramfs": initrd, "cmdline": guestCmdline(guestNetScript(guest, host, peer))},
		"console": map[string]any{"mode": "Pty"},
		"serial":  map[string]any{"mode": "Socket", "socket": serialSock},
	}
	body, _ := json.Marshal(vm)
	if err := c.Create(ctx, body); err != nil {
		t.Fatalf("vm.create: %v; output:\n%s", err, proc.Output())
	}
	conn, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var fds []int
	for _, f := range tap {
		fds = append(fds, int(f.Fd()))
	}
	if got, err := libvirtsim.AddNet(conn, fmt.Sprintf(`{"mac":%q,"num_queues":2}`, mac), fds); err != nil {
		t.Fatalf("vm.add-net as libvirt sends it: %v (got %q)", err, got)
	}
	for _, f := range tap {
		f.Close()
	}

	// The serial socket exists from vm.create on (upstream's
	// pre_create_console_devices); the guest's output comes through it.
	serial := &lockedBuffer{}
	sconn, err := net.Dial("unix", serialSock)
	if err != nil {
		t.Fatalf("the serial socket after vm.create: %v", err)
	}
	defer sconn.Close()
	serialDone := make(chan struct{})
	go func() { defer close(serialDone); io.Copy(serial, sconn) }()

	if err := c.Boot(ctx); err != nil {
		t.Fatalf("vm.boot: %v; output:\n%s", err, proc.Output())
	}
	info, err := c.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Console struct {
			File string `json:"file"`
		} `json:"console"`
	}
	json.Unmarshal(info.Config, &cfg)
	if !strings.HasPrefix(cfg.Console.File, "/dev/pts/") {
		t.Errorf("vm.info config.console.file %q, want the pty libvirt opens", cfg.Console.File)
	} else if fi, err := os.Stat(cfg.Console.File); err != nil || fi.Mode()&os.ModeCharDevice == 0 {
		t.Errorf("console pty %s: %v", cfg.Console.File, err)
	}

	console := func() string { return "serial:\n" + serial.String() + "\nnimbus output:\n" + proc.Output() }
	peer.Wait(ctx, t, console)
	if !waitFor(ctx, func() bool { return strings.Contains(serial.String(), doneMark) }) {
		t.Fatalf("no %s on the serial socket; %s", doneMark, console())
	}
	if out := serial.String(); !strings.Contains(out, " 0% packet loss") || !strings.Contains(out, mac) {
		t.Errorf("the guest's NIC: %s", console())
	}

	// libvirt's destroy: vm.shutdown, then vmm.shutdown.
	if err := c.Shutdown(ctx); err != nil {
		t.Fatalf("vm.shutdown: %v", err)
	}
	if err := c.ShutdownVMM(ctx); err != nil {
		t.Fatalf("vmm.shutdown: %v", err)
	}
	if ok, err := proc.Wait(ctx); !ok || err != nil {
		t.Fatalf("nimbus after vmm.shutdown: exited %v, %v; output:\n%s", ok, err, proc.Output())
	}
	select {
	case <-evDone:
	case <-time.After(30 * time.Second):
		t.Fatal("the event FIFO was not closed after the VMM exited")
	}
	<-serialDone
	var seen []string
	for _, chunk := range strings.Split(events.String(), "\n\n") {
		var e client.Event
		if json.Unmarshal([]byte(chunk), &e) == nil {
			seen = append(seen, e.Source+":"+e.Event)
		}
	}
	want := []string{"vmm:starting", "vm:booting", "vm:booted", "vm:shutdown", "vmm:shutdown"}
	j := 0
	for _, s := range seen {
		if j < len(want) && s == want[j] {
			j++
		}
	}
	if j != len(want) {
		t.Errorf("events on the FIFO %v, want %v in order", seen, want)
	}
}
