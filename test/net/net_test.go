package net_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netns"

	"github.com/nimbus-vmm/nimbus/internal/guestimage"
	"github.com/nimbus-vmm/nimbus/internal/guestimage/guesttest"
	"github.com/nimbus-vmm/nimbus/internal/testnet"
	"github.com/nimbus-vmm/nimbus/internal/testproc"
	"github.com/nimbus-vmm/nimbus/pkg/client"
)

// guestTimeout bounds one nested guest's boot, transfers and shutdown.
const guestTimeout = 4 * time.Minute

// payloadSize is sent to the guest and back in every test.
const payloadSize = 2 << 20

const baseCmdline = "console=ttyS0 panic=-1 quiet"

// vmmUnderTest is a nimbus process with its API socket and serial file.
type vmmUnderTest struct {
	*testproc.Proc
	c      *client.Client
	sock   string
	serial string // serial console file
	// ns, when open, is the network namespace nimbus runs in: the taps it
	// creates itself must never land in the machine's own namespace.
	ns netns.NsHandle
}

// newVMM picks the API socket and serial file paths; start runs nimbus.
func newVMM(t *testing.T) *vmmUnderTest {
	dir := t.TempDir()
	sock := filepath.Join(dir, "api.sock")
	return &vmmUnderTest{c: client.New(sock), sock: sock, serial: filepath.Join(dir, "serial.log"), ns: netns.None()}
}

// start runs the nimbus binary with the API socket and the given extra
// arguments, and waits for vmm.ping.
func (v *vmmUnderTest) start(ctx context.Context, t *testing.T, a *guesttest.Assets, args ...string) {
	t.Helper()
	if a.BinDir == "" {
		t.Fatal("no Nimbus binaries: run under nimbus-sandbox test (NIMBUS_BIN_DIR)")
	}
	v.Proc = testproc.StartVia(t, testnet.StartIn(v.ns), filepath.Join(a.BinDir, "nimbus"), append([]string{"--api-socket", "path=" + v.sock}, args...)...)
	if !waitFor(ctx, func() bool { _, err := v.c.Ping(ctx); return err == nil }) {
		t.Fatalf("no vmm.ping answer; output:\n%s", v.Output())
	}
}

// create sends vm.create for a 1-vCPU, 256 MiB guest running script,
// its serial port in v.serial and no console.
func (v *vmmUnderTest) create(ctx context.Context, t *testing.T, a *guesttest.Assets, initrd, script string) {
	t.Helper()
	create, err := json.Marshal(map[string]any{
		"cpus":    map[string]any{"boot_vcpus": 1, "max_vcpus": 1},
		"memory":  map[string]any{"size": 256 << 20},
		"payload": map[string]any{"kernel": a.Kernel, "initramfs": initrd, "cmdline": guestCmdline(script)},
		"serial":  map[string]any{"mode": "File", "file": v.serial},
		"console": map[string]any{"mode": "Off"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := v.c.Create(ctx, create); err != nil {
		t.Fatalf("vm.create: %v", err)
	}
}

// console is what the test shows when something fails: the serial log
// and the VMM's output.
func (v *vmmUnderTest) console() string {
	return "serial:\n" + readFile(v.serial) + "\nnimbus output:\n" + v.Output()
}

// finish waits for the guest's done marker, checks what the guest printed,
// returns the counters of the net device that carried the traffic, then
// shuts the VMM down and waits for it to exit.
func (v *vmmUnderTest) finish(ctx context.Context, t *testing.T, p *hostPeer, wantMAC string) map[string]uint64 {
	t.Helper()
	p.Wait(ctx, t, v.console)
	if !waitFor(ctx, func() bool { return strings.Contains(readFile(v.serial), doneMark) }) {
		t.Fatalf("no %s from the guest; %s", doneMark, v.console())
	}
	log := readFile(v.serial)
	if !strings.Contains(log, p.Sum()+"  /tmp/down") {
		t.Errorf("the guest's sha256 of the payload is not %s; %s", p.Sum(), v.console())
	}
	if wantMAC != "" && !strings.Contains(log, wantMAC) {
		t.Errorf("the guest's eth0 does not have MAC %s; %s", wantMAC, v.console())
	}
	if !strings.Contains(log, " 0% packet loss") {
		t.Errorf("the guest's ping lost packets; %s", v.console())
	}
	cs, err := v.c.Counters(ctx)
	if err != nil {
		t.Fatalf("vm.counters: %v", err)
	}
	var net map[string]uint64
	for id, c := range cs {
		if _, ok := c["rx_frames"]; ok && c["rx_bytes"] >= payloadSize {
			if net != nil {
				t.Errorf("two net devices carried the payload: %v", cs)
			}
			net = c
			t.Logf("counters of %s: %v", id, c)
		}
	}
	if net == nil {
		t.Fatalf("no net device counters with the traffic in %v", cs)
	}
	if err := v.c.ShutdownVMM(ctx); err != nil {
		t.Errorf("vmm.shutdown: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if ok, err := v.Wait(ctx); !ok || err != nil {
		t.Errorf("nimbus after vmm.shutdown: exited %v, err %v; output:\n%s", ok, err, v.Output())
	}
	return net
}

// guestCmdline runs script in a guest that stays up afterwards, so that the
// test reads the counters of a live VM.
func guestCmdline(script string) string {
	return baseCmdline + " " + guestimage.RunParam(script) + " " + guestimage.ParamStay + "=1"
}

// TestCLITap boots through the CLI with --net tap=NAME (created and
// configured by Nimbus with ip/mask) and with no tap name (vmtap0): the
// guest pings the tap's host address, fetches 2 MiB from the host and
// sends it back, the host checks the bytes, and vm.counters matches the
// traffic. The tap disappears when nimbus exits.
func TestCLITap(t *testing.T) {
	a := guesttest.Require(t)
	requireNetAdmin(t)
	initrd := a.ImageFile(t, guestimage.Options{})
	for _, tc := range []struct {
		name, tap, net, subnet string
	}{
		{"named", "ntap0", "tap=ntap0,", "10.99.1"},
		{"unnamed", "vmtap0", "", "10.99.2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ns := testnet.NewNetns(t)
			if linkIn(t, ns, tc.tap) {
				t.Fatalf("%s exists before the test", tc.tap)
			}
			ctx, cancel := context.WithTimeout(context.Background(), guestTimeout)
			defer cancel()
			p := newHostPeer(t, ns, payloadSize)
			const mac = "52:54:00:12:34:56"
			v := newVMM(t)
			v.ns = ns
			v.start(ctx, t, a, "--kernel", a.Kernel, "--initramfs", initrd,
				"--cmdline", guestCmdline(guestNetScript(tc.subnet+".2", tc.subnet+".1", p)),
				"--serial", "file="+v.serial, "--console", "off", "--memory", "size=256M",
				"--net", fmt.Sprintf("%sip=%s.1,mask=255.255.255.0,mac=%s", tc.net, tc.subnet, mac))
			// The tap exists while the VM runs: wait for the guest's
			// first fetch, which needs it.
			select {
			case err := <-p.downErr:
				p.downErr <- err
			case <-ctx.Done():
			}
			if !linkIn(t, ns, tc.tap) {
				t.Errorf("no host interface %s while the VM runs", tc.tap)
			}
			checkCounters(t, v.finish(ctx, t, p, mac), payloadSize)
			if linkIn(t, ns, tc.tap) {
				t.Errorf("%s still exists after nimbus exited", tc.tap)
			}
		})
	}
}

// kataNetBody is the NetConfig Kata sends with tap fds: its generated
// client's constructor defaults (the YAML's ip/mask among them, which a
// server must accept with fds and not apply), a MAC, offloads, and no tap
// name (clients.md §1.2, §1.4).
func kataNetBody(mac string) []byte {
	return []byte(`{"iommu":false,"ip":"192.168.249.1","mask":"255.255.255.0","num_queues":2,"queue_size":256,` +
		`"vhost_mode":"Client","vhost_user":false,"offload_tso":true,"offload_ufo":true,"offload_csum":true,"mac":"` + mac + `"}`)
}

// nic is one NIC to add with tap fds.
type nic struct {
	mac string
	fds []*os.File
}

// fdNetTest creates a namespace with two Kata-style taps (the first with
// the host address 10.99.<subnet>.1), vm.create, checks vm.info Created,
// lets add put both NICs into the VM with their fds, then vm.boot and
// vm.info Running. The guest sees both NICs with their MACs, pings the
// namespace's address and exchanges 2 MiB each way with it, and
// vm.counters matches the traffic.
func fdNetTest(t *testing.T, subnet int, add func(ctx context.Context, t *testing.T, v *vmmUnderTest, nics []nic)) {
	a := guesttest.Require(t)
	requireNetAdmin(t)
	ctx, cancel := context.WithTimeout(context.Background(), guestTimeout)
	defer cancel()
	ns := testnet.NewNetns(t)
	host, guest := fmt.Sprintf("10.99.%d.1", subnet), fmt.Sprintf("10.99.%d.2", subnet)
	tap0 := kataTap(t, ns, fmt.Sprintf("tap0_%d", subnet), host+"/24", 1)
	tap1 := kataTap(t, ns, fmt.Sprintf("tap1_%d", subnet), "", 1)
	p := newHostPeer(t, ns, payloadSize)
	const mac0, mac1 = "52:54:00:aa:00:01", "52:54:00:aa:00:02"
	// Before the script's done marker, after which the test shuts down.
	script := "cat /sys/class/net/eth1/address\n" + guestNetScript(guest, host, p)
	initrd := a.ImageFile(t, guestimage.Options{})

	v := newVMM(t)
	v.start(ctx, t, a)
	create, err := json.Marshal(map[string]any{
		"cpus":    map[string]any{"boot_vcpus": 1, "max_vcpus": 1},
		"memory":  map[string]any{"size": 256 << 20, "shared": false, "hotplug_method": "Acpi", "thp": true},
		"payload": map[string]any{"kernel": a.Kernel, "initramfs": initrd, "cmdline": guestCmdline(script)},
		"serial":  map[string]any{"mode": "File", "file": v.serial},
		"console": map[string]any{"mode": "Off"},
		// Kata also sends platform.num_pci_segments=2, which this build
		// refuses at boot until it has more than one PCI segment.
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := v.c.Create(ctx, create); err != nil {
		t.Fatalf("vm.create: %v", err)
	}
	if info, err := v.c.Info(ctx); err != nil || info.State != client.StateCreated {
		t.Fatalf("vm.info after create: %+v %v", info, err)
	}
	add(ctx, t, v, []nic{{mac0, tap0}, {mac1, tap1}})
	// The client closes its copies once the VMM has them.
	for _, f := range append(tap0, tap1...) {
		f.Close()
	}
	if err := v.c.Boot(ctx); err != nil {
		t.Fatalf("vm.boot: %v; %s", err, v.console())
	}
	info, err := v.c.Info(ctx)
	if err != nil || info.State != client.StateRunning {
		t.Fatalf("vm.info after boot: %+v %v", info, err)
	}
	var cfg struct {
		Net []struct {
			MAC string `json:"mac"`
		} `json:"net"`
	}
	if err := json.Unmarshal(info.Config, &cfg); err != nil || len(cfg.Net) != 2 || cfg.Net[0].MAC != mac0 || cfg.Net[1].MAC != mac1 {
		t.Errorf("vm.info config.net %+v (%v), want the two MACs in order", cfg.Net, err)
	}
	checkCounters(t, v.finish(ctx, t, p, mac0), payloadSize)
	if log := readFile(v.serial); !strings.Contains(log, mac1) {
		t.Errorf("the guest has no eth1 with MAC %s; serial:\n%s", mac1, log)
	}
}

// TestKataAddNetFds follows Kata's bootVM (clients.md §1.4): after
// vm.create, ONE connection carries a vm.add-net per NIC, each with its
// tap queue fds over SCM_RIGHTS and Kata's body; then vm.boot.
func TestKataAddNetFds(t *testing.T) {
	fdNetTest(t, 3, func(ctx context.Context, t *testing.T, v *vmmUnderTest, nics []nic) {
		conn, err := v.c.Dial(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		for i, n := range nics {
			var fds []int
			for _, f := range n.fds {
				fds = append(fds, int(f.Fd()))
			}
			resp, err := conn.Do(ctx, "PUT", "vm.add-net", kataNetBody(n.mac), fds...)
			if err != nil {
				t.Fatalf("vm.add-net %d on the shared connection: %v", i, err)
			}
			if resp.StatusCode != 200 && resp.StatusCode != 204 {
				t.Fatalf("vm.add-net %d: status %d", i, resp.StatusCode)
			}
		}
	})
}

// TestRemoteAddNetFd adds the NICs with `nimbus-remote add-net fd=[3],mac=…`,
// the tap fd inherited as its fd 3, as ch-remote is used.
func TestRemoteAddNetFd(t *testing.T) {
	fdNetTest(t, 4, func(ctx context.Context, t *testing.T, v *vmmUnderTest, nics []nic) {
		remote := filepath.Join(filepath.Dir(v.Cmd.Path), "nimbus-remote")
		for i, n := range nics {
			cmd := exec.CommandContext(ctx, remote, "--api-socket", v.sock, "add-net", "fd=[3],mac="+n.mac)
			cmd.ExtraFiles = n.fds
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("nimbus-remote add-net %d: %v: %s", i, err, out)
			}
		}
	})
}
