package net_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nimbus-vmm/nimbus/internal/guestimage"
	"github.com/nimbus-vmm/nimbus/internal/guestimage/guesttest"
	"github.com/nimbus-vmm/nimbus/internal/sandbox"
)

// dpdkPMDs are the DPDK drivers testpmd loads (sandbox.TestLibraries).
var dpdkPMDs = sandbox.TestLibraries

// startTestpmd runs DPDK's testpmd as a vhost-user-net back end listening
// on sock, reflecting every frame with its MACs swapped (macswap), with
// no hugepages and no PCI devices.
func startTestpmd(t *testing.T, sock string) {
	t.Helper()
	bin, err := exec.LookPath("dpdk-testpmd")
	if err != nil {
		guesttest.Missing(t, "dpdk-testpmd missing (Debian package dpdk-dev; scripts/install-deps.sh installs it)")
	}
	args := []string{"--no-huge", "-m", "512", "--no-pci", "--file-prefix", fmt.Sprintf("nimbus%d", os.Getpid()), "-l", "0,1"}
	for _, p := range dpdkPMDs {
		args = append(args, "-d", p)
	}
	args = append(args, "--vdev", "net_vhost0,iface="+sock+",queues=1", "--",
		"--forward-mode=macswap", "--auto-start", "--nb-cores=1", "--total-num-mbufs=2048")
	cmd := exec.Command(bin, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	// testpmd runs until its stdin closes ("Press enter to exit").
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		stdin.Close()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("testpmd:\n%s", out.String())
		}
	})
	guesttest.WaitSocket(t, "testpmd", sock, done, out.String)
}

// TestVhostUserNet: a virtio-net NIC served by DPDK's vhost-user driver
// (testpmd reflecting frames): the guest's frames reach the back end and
// come back through the same rings. The guest pings an address bound to a
// made-up MAC; every echo request returns with the MACs swapped, so its
// NIC receives what it sent (the IP layer drops them: no replies).
func TestVhostUserNet(t *testing.T) {
	a := guesttest.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), guestTimeout)
	defer cancel()
	dir, err := os.MkdirTemp("", "nimbus-vun")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "net.sock")
	startTestpmd(t, sock)
	const mac = "52:54:00:aa:00:09"
	script := `ip link set eth0 up
ip addr add 10.99.9.2/24 dev eth0
ip neigh add 10.99.9.1 lladdr 02:00:00:00:00:01 dev eth0 2>/dev/null || arp -s 10.99.9.1 02:00:00:00:00:01
cat /sys/class/net/eth0/address
ping -c 20 -i 0.2 -W 1 10.99.9.1 >/dev/null 2>&1
echo "VHOST-NET tx=$(cat /sys/class/net/eth0/statistics/tx_packets) rx=$(cat /sys/class/net/eth0/statistics/rx_packets)"
echo ` + doneMark + "\n"
	initrd := a.ImageFile(t, guestimage.Options{})
	v := newVMM(t)
	v.start(ctx, t, a, "--kernel", a.Kernel, "--initramfs", initrd, "--cmdline", guestCmdline(script),
		"--memory", "size=256M,shared=on", "--serial", "file="+v.serial, "--console", "off",
		"--net", "vhost_user=on,socket="+sock+",mac="+mac)
	if !waitFor(ctx, func() bool { return strings.Contains(readFile(v.serial), doneMark) }) {
		t.Fatalf("no %s from the guest; %s", doneMark, v.console())
	}
	log := readFile(v.serial)
	if !strings.Contains(log, mac) {
		t.Errorf("eth0 lacks the MAC %s from the config space; %s", mac, v.console())
	}
	m := regexp.MustCompile(`VHOST-NET tx=(\d+) rx=(\d+)`).FindStringSubmatch(log)
	if m == nil {
		t.Fatalf("no packet counts; %s", v.console())
	}
	tx, _ := strconv.Atoi(m[1])
	rx, _ := strconv.Atoi(m[2])
	t.Logf("guest eth0 over vhost-user-net: %d frames out, %d back", tx, rx)
	if tx < 20 || rx < 20 {
		t.Errorf("tx %d rx %d: want the 20 echo requests out and reflected back; %s", tx, rx, v.console())
	}
	info, err := v.c.Info(ctx)
	if err != nil || !bytes.Contains(info.Config, []byte(fmt.Sprintf("%q", mac))) {
		t.Errorf("vm.info config lacks the MAC: %v", err)
	}
	if err := v.c.ShutdownVMM(ctx); err != nil {
		t.Errorf("vmm.shutdown: %v", err)
	}
}
