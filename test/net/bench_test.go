package net_test

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/nimbus-vmm/nimbus/internal/guestimage"
	"github.com/nimbus-vmm/nimbus/internal/guestimage/guesttest"
	"github.com/nimbus-vmm/nimbus/internal/syncbuf"
	"github.com/nimbus-vmm/nimbus/internal/testnet"
)

// benchRounds is how many times each VMM runs, alternating, because
// nested timings are noisy.
const benchRounds = 2

// benchMiB is the default amount sent each way (NIMBUS_BENCH_NET_MIB, set
// where the test binary runs). Nested under TCG a flow runs at a few MB/s.
const benchMiB = 16

// flowTimer serves one timed TCP flow per direction on the host: guest to
// host (Up: read to EOF) and host to guest (Down: write the bytes, half
// close, read until the guest's nc closes after the EOF).
type flowTimer struct {
	size     int
	up, down net.Listener
	wg       sync.WaitGroup
	upRes    flowResult
	downRes  flowResult
}

type flowResult struct {
	bytes int64
	took  time.Duration
	err   error
}

func (r flowResult) mbps() float64 { return float64(r.bytes) / r.took.Seconds() / 1e6 }

// newFlowTimer listens in ns, the namespace of the VMM's tap.
func newFlowTimer(t *testing.T, ns netns.NsHandle, size int) *flowTimer {
	t.Helper()
	f := &flowTimer{size: size}
	if err := testnet.InNetns(ns, func() (err error) {
		if f.up, err = net.Listen("tcp4", ":0"); err != nil {
			return err
		}
		if f.down, err = net.Listen("tcp4", ":0"); err != nil {
			f.up.Close()
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	f.wg.Add(2)
	go func() {
		defer f.wg.Done()
		c, err := f.up.Accept()
		if err != nil {
			f.upRes.err = err
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(2 * guestTimeout)) // a vanished guest sends no RST
		start := time.Now()
		f.upRes.bytes, f.upRes.err = io.Copy(io.Discard, c)
		f.upRes.took = time.Since(start)
	}()
	go func() {
		defer f.wg.Done()
		c, err := f.down.Accept()
		if err != nil {
			f.downRes.err = err
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(2 * guestTimeout)) // a vanished guest sends no RST
		start := time.Now()
		buf := make([]byte, 64<<10)
		for sent := 0; sent < size; sent += len(buf) {
			if _, err := c.Write(buf); err != nil {
				f.downRes.err = err
				return
			}
		}
		c.(*net.TCPConn).CloseWrite()
		io.Copy(io.Discard, c) // until the guest's nc has everything and exits
		f.downRes.took = time.Since(start)
		f.downRes.bytes = int64(size)
	}()
	t.Cleanup(f.close)
	return f
}

// close stops the listeners and waits for the flows (idempotent).
func (f *flowTimer) close() {
	f.up.Close()
	f.down.Close()
	f.wg.Wait()
}

func (f *flowTimer) ports() (up, down int) {
	return f.up.Addr().(*net.TCPAddr).Port, f.down.Addr().(*net.TCPAddr).Port
}

// benchScript sends size bytes of zeros to the host's Up port with dd|nc,
// then receives size bytes from the Down port into dd, and powers off. The
// download's nc keeps the console as stdin, so it does not half-close
// early and exits only at the host's EOF.
func benchScript(guestIP, hostIP string, f *flowTimer) string {
	up, down := f.ports()
	return fmt.Sprintf(`ip link set eth0 up
ip addr add %[1]s/24 dev eth0
ping -c 1 -w 30 %[2]s >/dev/null || echo ping failed
dd if=/dev/zero bs=64k count=%[3]d 2>/dev/null | nc %[2]s %[4]d >/dev/null
nc %[2]s %[5]d | dd of=/dev/null bs=64k 2>/dev/null
`, guestIP, hostIP, f.size/(64<<10), up, down)
}

// runBench runs one VMM to completion and returns its two flows.
func runBench(t *testing.T, ns netns.NsHandle, f *flowTimer, name string, args ...string) (up, down flowResult) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*guestTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	var out syncbuf.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := testnet.StartIn(ns)(cmd.Start)
	if err == nil {
		err = cmd.Wait()
	}
	f.close()
	if err != nil || f.upRes.err != nil || f.downRes.err != nil || f.upRes.bytes != int64(f.size) || f.downRes.took == 0 {
		t.Fatalf("%s: %v; up %+v down %+v; output:\n%s", name, err, f.upRes, f.downRes, out.String())
	}
	if strings.Contains(out.String(), "ping failed") {
		t.Logf("%s: the guest's first ping failed", name)
	}
	return f.upRes, f.downRes
}

// TestNetThroughput is the network benchmark (make bench-net): guest to
// host and host to guest TCP throughput with busybox nc and dd, over
// virtio-net on a tap, under Nimbus and under QEMU/KVM (microvm,
// virtio-net-device, userspace virtio: vhost=off) in the same sandbox,
// alternating. It prints figures and asserts nothing about them.
func TestNetThroughput(t *testing.T) {
	if f := flag.Lookup("test.run"); f == nil || !strings.Contains(f.Value.String(), "TestNetThroughput") {
		t.Skip("network benchmark: run with -run TestNetThroughput (make bench-net)")
	}
	a := guesttest.Require(t)
	requireNetAdmin(t)
	mib := benchMiB
	if s := os.Getenv("NIMBUS_BENCH_NET_MIB"); s != "" {
		if n, err := strconv.Atoi(s); err == nil && n > 0 {
			mib = n
		}
	}
	size := mib << 20
	initrd := a.ImageFile(t, guestimage.Options{})
	cmdline := "console=ttyS0 rdinit=/init panic=-1 reboot=t quiet"

	// Both VMMs, their taps and the host ends of the flows live in a
	// namespace of the test's own. QEMU opens a tap the test made
	// (persistent, so it outlives QEMU); Nimbus creates its own.
	ns := testnet.NewNetns(t)
	const qtap = "qtap0"
	if a.QEMU != "" {
		h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
		if err != nil {
			t.Fatal(err)
		}
		defer h.Close()
		tap := &netlink.Tuntap{LinkAttrs: netlink.LinkAttrs{Name: qtap}, Mode: netlink.TUNTAP_MODE_TAP, Flags: netlink.TUNTAP_NO_PI | netlink.TUNTAP_VNET_HDR}
		if err := testnet.InNetns(ns, func() error { return netlink.LinkAdd(tap) }); err != nil {
			t.Fatalf("creating %s: %v", qtap, err)
		}
		l, err := h.LinkByName(qtap)
		if err != nil {
			t.Fatal(err)
		}
		addr, _ := netlink.ParseAddr("10.99.9.1/24")
		if err := h.AddrAdd(l, addr); err != nil {
			t.Fatal(err)
		}
		if err := h.LinkSetUp(l); err != nil {
			t.Fatal(err)
		}
	}

	type run struct{ up, down flowResult }
	logRun := func(name string, i int, r run) {
		t.Logf("%-6s run %d: guest->host %7.1f MB/s (%d MiB in %.2fs)  host->guest %7.1f MB/s (%d MiB in %.2fs)",
			name, i+1, r.up.mbps(), r.up.bytes>>20, r.up.took.Seconds(), r.down.mbps(), r.down.bytes>>20, r.down.took.Seconds())
	}
	var nimbus, qemu []run
	for i := range benchRounds {
		if a.QEMU != "" {
			f := newFlowTimer(t, ns, size)
			up, down := runBench(t, ns, f, a.QEMU, "-M", "microvm", "-accel", "kvm", "-cpu", "host", "-m", "512M", "-smp", "1",
				"-nographic", "-no-reboot", "-kernel", a.Kernel, "-initrd", initrd,
				"-append", cmdline+" "+guestimage.RunParam(benchScript("10.99.9.2", "10.99.9.1", f)),
				"-netdev", "tap,id=n0,ifname="+qtap+",script=no,downscript=no,vhost=off",
				"-device", "virtio-net-device,netdev=n0")
			qemu = append(qemu, run{up, down})
			logRun("qemu", i, qemu[i])
		}
		f := newFlowTimer(t, ns, size)
		up, down := runBench(t, ns, f, nimbusPath(t, a), "--kernel", a.Kernel, "--initramfs", initrd,
			"--cmdline", cmdline+" "+guestimage.RunParam(benchScript("10.99.8.2", "10.99.8.1", f)),
			"--serial", "tty", "--console", "off", "--memory", "size=512M", "--cpus", "boot=1",
			"--net", "tap=btap0,ip=10.99.8.1,mask=255.255.255.0")
		nimbus = append(nimbus, run{up, down})
		logRun("nimbus", i, nimbus[i])
	}
	mean := func(runs []run) (up, down float64) {
		for _, r := range runs {
			up += r.up.mbps() / float64(len(runs))
			down += r.down.mbps() / float64(len(runs))
		}
		return up, down
	}
	nu, nd := mean(nimbus)
	if len(qemu) == 0 {
		t.Logf("mean: nimbus guest->host %.1f MB/s, host->guest %.1f MB/s (no QEMU for a ratio)", nu, nd)
		return
	}
	qu, qd := mean(qemu)
	t.Logf("mean guest->host: nimbus %.1f MB/s, qemu %.1f MB/s, ratio nimbus/qemu %.2f", nu, qu, nu/qu)
	t.Logf("mean host->guest: nimbus %.1f MB/s, qemu %.1f MB/s, ratio nimbus/qemu %.2f", nd, qd, nd/qd)
}

func nimbusPath(t *testing.T, a *guesttest.Assets) string {
	t.Helper()
	if a.BinDir == "" {
		t.Fatal("no Nimbus binaries: run under nimbus-sandbox test (NIMBUS_BIN_DIR)")
	}
	return a.BinDir + "/nimbus"
}
