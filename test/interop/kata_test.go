package interop

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	chclient "github.com/kata-containers/kata-containers/src/runtime/virtcontainers/pkg/cloud-hypervisor/client"
	"github.com/nimbus-vmm/nimbus/internal/vmm"
)

// Kata's timeouts (clh.go, clients.md §1.6).
const (
	clhAPITimeout          = 1 * time.Second
	clhCreateAndBootVMTime = 10 * time.Second
	clhHotPlugAPITimeout   = 5 * time.Second
	clhStopSandboxTimeout  = 3 * time.Second
)

// kataVMConfig builds the VmConfig the way clh.go's CreateVM does for an
// image rootfs without NVDIMM (a readonly Raw disk), virtio-fs (so shared
// memory) and a hybrid vsock, in debug mode (serial Tty): constructors
// first, so every default-valued field is sent.
func kataVMConfig(sockDir string) chclient.VmConfig {
	vm := *chclient.NewVmConfig(*chclient.NewPayloadConfig())
	vm.Payload.SetKernel("/usr/share/kata-containers/vmlinux.container")
	vm.Payload.SetCmdline("tsc=reliable no_timer_check rcupdate.rcu_expedited=1 i8042.direct=1 i8042.dumbkbd=1 i8042.nopnp=1 i8042.noaux=1 noreplace-smp reboot=k cryptomgr.notests net.ifnames=0 pci=lastbus=0 root=/dev/vda1 rootflags=data=ordered,errors=remount-ro ro rootfstype=ext4 console=ttyS0,115200n8 systemd.log_target=console panic=1 nr_cpus=4 selinux=0")
	vm.Platform = chclient.NewPlatformConfig()
	vm.Platform.SetNumPciSegments(2)
	vm.Memory = chclient.NewMemoryConfig(2048 << 20)
	vm.Memory.Shared = func(b bool) *bool { return &b }(true)
	vm.Memory.Hugepages = func(b bool) *bool { return &b }(false)
	vm.Memory.HotplugSize = func(i int64) *int64 { return &i }(8192 << 20)
	vm.Balloon = chclient.NewBalloonConfig(0)
	vm.Balloon.SetFreePageReporting(true)
	vm.Cpus = chclient.NewCpusConfig(1, 4)
	vm.Rng = chclient.NewRngConfig("/dev/urandom")
	vm.Rng.SetIommu(false)
	disk := chclient.NewDiskConfig()
	path := "/usr/share/kata-containers/kata-containers.img"
	disk.Path = &path
	disk.SetReadonly(true)
	vm.Disks = &[]chclient.DiskConfig{*disk}
	vm.Serial = chclient.NewConsoleConfig("Tty")
	vm.Console = chclient.NewConsoleConfig("Off")
	vm.Console.SetIommu(false)
	topo := chclient.NewCpuTopology()
	topo.ThreadsPerCore = func(i int32) *int32 { return &i }(1)
	topo.CoresPerDie = func(i int32) *int32 { return &i }(4)
	topo.DiesPerPackage = func(i int32) *int32 { return &i }(1)
	topo.Packages = func(i int32) *int32 { return &i }(1)
	vm.Cpus.Topology = topo
	vm.Vsock = chclient.NewVsockConfig(3, sockDir+"/clh.sock")
	vm.Vsock.SetIommu(false)
	fs := chclient.NewFsConfig("kataShared", sockDir+"/virtiofsd.sock", 1, 1024)
	fs.SetPciSegment(1)
	vm.Fs = &[]chclient.FsConfig{*fs}
	return vm
}

// kataNet is one NIC as clh.go's addNet stores it: NewNetConfig (with the
// YAML's ip/mask defaults), the MAC, iommu; no tap name.
func kataNet(mac string) chclient.NetConfig {
	n := chclient.NewNetConfig()
	n.Mac = &mac
	n.SetIommu(false)
	return *n
}

// kataAddNets is clh.go's vmAddNetPutRequest, line for line: one
// connection, per NIC a DumpRequest'ed PUT written with its tap fds in one
// WriteMsgUnix, and the reply read through a fresh bufio.Reader.
func kataAddNets(sock string, nets []chclient.NetConfig, files map[string][]*os.File) error {
	addr, err := net.ResolveUnixAddr("unix", sock)
	if err != nil {
		return err
	}
	conn, err := net.DialUnix("unix", nil, addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	for _, netDevice := range nets {
		netDeviceAsJson, err := json.Marshal(netDevice)
		if err != nil {
			return err
		}
		netDeviceAsIoReader := bytes.NewBuffer(netDeviceAsJson)
		req, err := http.NewRequest(http.MethodPut, "http://localhost/api/v1/vm.add-net", netDeviceAsIoReader)
		if err != nil {
			return err
		}
		req.Header.Set("Accept", "application/json")
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Content-Length", strconv.Itoa(int(netDeviceAsIoReader.Len())))
		payload, err := httputil.DumpRequest(req, true)
		if err != nil {
			return err
		}
		var fds []int
		for _, f := range files[*netDevice.Mac] {
			fds = append(fds, int(f.Fd()))
		}
		oob := syscall.UnixRights(fds...)
		payloadn, oobn, err := conn.WriteMsgUnix(payload, oob, nil)
		if err != nil {
			return err
		}
		if payloadn != len(payload) || oobn != len(oob) {
			return fmt.Errorf("short write: %d/%d payload, %d/%d oob", payloadn, len(payload), oobn, len(oob))
		}
		resp, err := http.ReadResponse(bufio.NewReader(conn), req)
		if err != nil {
			return err
		}
		respBody, err := io.ReadAll(resp.Body)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != 200 && resp.StatusCode != 204 {
			return fmt.Errorf("Failed to add the network device '%+v' to Cloud Hypervisor: %v %s", netDevice, resp.StatusCode, respBody)
		}
		if resp.StatusCode == 200 {
			var info chclient.PciDeviceInfo
			if err := json.Unmarshal(respBody, &info); err != nil {
				return fmt.Errorf("add-net 200 body: %w", err)
			}
		}
	}
	return nil
}

// openAPIClientError is clh.go's: the status text plus the reply body.
func openAPIClientError(err error) error {
	if err == nil {
		return nil
	}
	var apiErr chclient.GenericOpenAPIError
	if errors.As(err, &apiErr) {
		return fmt.Errorf("%s reason: %s", err, apiErr.Body())
	}
	return err
}

// kataBDFCheck is clh.go's clhPciInfoToPath / hotPlugVFIODevice check.
func kataBDFCheck(bdf string) error {
	tokens := strings.Split(bdf, ":")
	if len(tokens) != 3 || tokens[0] != "0000" || tokens[1] != "00" {
		return fmt.Errorf("Unexpected PCI address %q from clh hotplug", bdf)
	}
	tokens = strings.Split(tokens[2], ".")
	if len(tokens) != 2 || tokens[1] != "0" || len(tokens[0]) != 2 {
		return fmt.Errorf("Unexpected PCI address %q from clh hotplug", bdf)
	}
	return nil
}

// kataResizeVCPUs is Kata HEAD's vCPU resize: up to 20 attempts 20 ms
// apart inside one clhAPITimeout, retried only while the error text (the
// status line) contains "Too Many Requests".
func kataResizeVCPUs(cl *chclient.DefaultApiService, n int32) (attempts int, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), clhAPITimeout)
	defer cancel()
	resize := *chclient.NewVmResize()
	resize.DesiredVcpus = &n
	for attempts = 1; attempts <= 20; attempts++ {
		_, err = cl.VmResizePut(ctx).VmResize(resize).Execute()
		if err == nil || !strings.Contains(err.Error(), "Too Many Requests") {
			return attempts, openAPIClientError(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return attempts, openAPIClientError(err)
}

// notSupported reports whether err is the reply Nimbus gives while a hot
// operation has no machine support yet (500, "not supported" in the body).
// err may be raw or already passed through openAPIClientError.
func notSupported(err error) bool {
	return err != nil && strings.HasPrefix(err.Error(), "500 Internal Server Error") &&
		strings.Contains(openAPIClientError(err).Error(), `"not supported"`)
}

func pipes(t *testing.T, n int) []*os.File {
	var out []*os.File
	for range n {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close(); w.Close() })
		out = append(out, r)
	}
	return out
}

// TestKataSequence replays Kata's whole life cycle of a sandbox (clients.md
// §1.4) with Kata's own generated client and its hand-built add-net, each
// call under Kata's timeout.
func TestKataSequence(t *testing.T) {
	n := startNimbus(t, nil)
	cl := kataClient(t, n.sock)

	// waitVMM: ping with a 1 s timeout.
	ctx, cancel := context.WithTimeout(context.Background(), clhAPITimeout)
	ping, _, err := cl.VmmPingGet(ctx).Execute()
	cancel()
	if err != nil || ping.Version != "54.0.0" {
		t.Fatalf("vmm.ping: %+v %v", ping, openAPIClientError(err))
	}

	info := func(want string) chclient.VmInfo {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), clhAPITimeout)
		defer cancel()
		i, resp, err := cl.VmInfoGet(ctx).Execute()
		if err != nil {
			t.Fatalf("vm.info: %v", openAPIClientError(err))
		}
		if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("vm.info Content-Type %q", ct)
		}
		if i.State != want {
			t.Fatalf("vm.info state %q, want %q", i.State, want)
		}
		return i
	}

	// bootVM: create, info=Created, add-net, boot, info=Running, all in 10 s.
	bootCtx, bootCancel := context.WithTimeout(context.Background(), clhCreateAndBootVMTime)
	defer bootCancel()
	if _, err := cl.CreateVM(bootCtx).VmConfig(kataVMConfig("/run/vc/vm/sb")).Execute(); err != nil {
		t.Fatalf("vm.create: %v", openAPIClientError(err))
	}
	i := info("Created")
	if i.Config.Cpus == nil || i.Config.Cpus.BootVcpus != 1 || i.Config.Cpus.MaxVcpus != 4 || i.Config.Memory == nil || i.Config.Memory.Size != 2048<<20 {
		t.Errorf("vm.info config after create: cpus %+v memory %+v", i.Config.Cpus, i.Config.Memory)
	}
	if i.Config.Platform == nil || i.Config.Platform.GetNumPciSegments() != 2 {
		t.Errorf("platform %+v", i.Config.Platform)
	}

	nets := []chclient.NetConfig{kataNet("02:00:ca:fe:00:01"), kataNet("02:00:ca:fe:00:02"), kataNet("02:00:ca:fe:00:03")}
	files := map[string][]*os.File{
		"02:00:ca:fe:00:01": pipes(t, 1),
		"02:00:ca:fe:00:02": pipes(t, 1),
		"02:00:ca:fe:00:03": pipes(t, 1),
	}
	if err := kataAddNets(n.sock, nets, files); err != nil {
		t.Fatalf("add-net: %v", err)
	}
	if _, err := cl.BootVM(bootCtx).Execute(); err != nil {
		t.Fatalf("vm.boot: %v", openAPIClientError(err))
	}
	i = info("Running")
	if i.Config.Net == nil || len(*i.Config.Net) != 3 {
		t.Fatalf("vm.info net after boot: %+v", i.Config.Net)
	}
	for k, nc := range *i.Config.Net {
		if nc.GetMac() != *nets[k].Mac || nc.GetId() == "" {
			t.Errorf("net %d: mac %q id %q", k, nc.GetMac(), nc.GetId())
		}
	}
	if m := n.factory.Last(); m == nil || len(m.Config().Net) != 3 {
		t.Errorf("the machine was not built with the three NICs")
	}

	// ResizeVCPUs: the hot path has no machine support yet, which must
	// come back as a plain, final 500 (not a 429 Kata would retry).
	if attempts, err := kataResizeVCPUs(cl, 2); err != nil && !(notSupported(err) && attempts == 1) {
		t.Errorf("vm.resize: %v after %d attempts", err, attempts)
	}

	// hotplugAddBlockDevice, then HotplugRemoveDevice.
	hctx, hcancel := context.WithTimeout(context.Background(), clhHotPlugAPITimeout)
	disk := *chclient.NewDiskConfig()
	dpath := "/dev/mapper/vol1"
	ro := false
	disk.Path, disk.Readonly = &dpath, &ro
	disk.VhostUser = func(b bool) *bool { return &b }(false)
	q, qs := int32(1), int32(1024)
	disk.NumQueues, disk.QueueSize = &q, &qs
	disk.SetIommu(false)
	// The machine is the hotplug test double (test/lifecycle hotplugs into
	// a real guest); what counts here is that Kata's calls succeed.
	pci, _, err := cl.VmAddDiskPut(hctx).DiskConfig(disk).Execute()
	if err != nil {
		t.Fatalf("vm.add-disk: %v", openAPIClientError(err))
	}
	if err := kataBDFCheck(pci.Bdf); err != nil || pci.Id == "" {
		t.Errorf("vm.add-disk reply %+v: %v", pci, err)
	}
	rm := *chclient.NewVmRemoveDevice()
	id := pci.Id
	rm.Id = &id
	if _, err := cl.VmRemoveDevicePut(hctx).VmRemoveDevice(rm).Execute(); err != nil {
		t.Errorf("vm.remove-device %s: %v", id, openAPIClientError(err))
	}
	hcancel()

	// Pause, snapshot, resume, each under clhAPITimeout.
	call := func(name string, f func(context.Context) (*http.Response, error)) error {
		ctx, cancel := context.WithTimeout(context.Background(), clhAPITimeout)
		defer cancel()
		_, err := f(ctx)
		return openAPIClientError(err)
	}
	if err := call("pause", func(ctx context.Context) (*http.Response, error) { return cl.PauseVM(ctx).Execute() }); err != nil {
		t.Fatalf("vm.pause: %v", err)
	}
	info("Paused")
	snapDir := t.TempDir()
	err = call("snapshot", func(ctx context.Context) (*http.Response, error) {
		sc := *chclient.NewVmSnapshotConfig()
		url := "file://" + snapDir
		sc.DestinationUrl = &url
		return cl.VmSnapshotPut(ctx).VmSnapshotConfig(sc).Execute()
	})
	if err == nil {
		for _, f := range []string{"config.json", "state.json", "memory-ranges"} {
			if _, err := os.Stat(snapDir + "/" + f); err != nil {
				t.Errorf("snapshot: %v", err)
			}
		}
	} else if !strings.Contains(err.Error(), "not supported") {
		t.Errorf("vm.snapshot: %v", err)
	}
	if err := call("resume", func(ctx context.Context) (*http.Response, error) { return cl.ResumeVM(ctx).Execute() }); err != nil {
		t.Fatalf("vm.resume: %v", err)
	}
	info("Running")

	// StopVM: vmm.shutdown, then the process must go away within 3 s.
	sctx, scancel := context.WithTimeout(context.Background(), clhStopSandboxTimeout)
	defer scancel()
	if _, err := cl.ShutdownVMM(sctx).Execute(); err != nil {
		t.Fatalf("vmm.shutdown: %v", openAPIClientError(err))
	}
	select {
	case err := <-n.runDone:
		n.runDone <- err // for the cleanup
		if err != nil {
			t.Errorf("control loop: %v", err)
		}
	case <-sctx.Done():
		t.Fatal("the control loop did not stop within Kata's 3 s")
	}
	if r := n.ctl.Reason(); r != vmm.StopVMMShutdown {
		t.Errorf("stop reason %v", r)
	}
}
