package vmm_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/nimbus-vmm/nimbus/internal/config"
	"github.com/nimbus-vmm/nimbus/internal/devices/console"
	"github.com/nimbus-vmm/nimbus/internal/events"
	"github.com/nimbus-vmm/nimbus/internal/vmm"
	"github.com/nimbus-vmm/nimbus/internal/vmm/vmmtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// chain renders err the way internal/api does: each level's own text.
func chain(err error) []string {
	var out []string
	for err != nil {
		msg := err.Error()
		inner := errors.Unwrap(err)
		if inner != nil {
			msg = strings.TrimSuffix(msg, ": "+inner.Error())
		}
		out = append(out, msg)
		err = inner
	}
	return out
}

type harness struct {
	t       *testing.T
	c       *vmm.Controller
	f       *vmmtest.Factory
	mon     *events.Monitor
	evs     <-chan events.Event
	sigs    chan os.Signal
	done    chan error
	cancel  context.CancelFunc
	stopped bool
}

func start(t *testing.T, noShutdown bool, opts ...func(*vmm.Options)) *harness {
	t.Helper()
	h := &harness{t: t, f: &vmmtest.Factory{}, sigs: make(chan os.Signal, 1), done: make(chan error, 1)}
	h.mon = events.New(nil)
	var cancelSub func()
	h.evs, cancelSub = h.mon.Subscribe()
	vopts := vmm.Options{
		Factory: h.f.New, Events: h.mon, NoShutdown: noShutdown,
		Version: "54.0.0", BuildVersion: "v54.0.0-nimbus", Signals: h.sigs,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	for _, o := range opts {
		o(&vopts)
	}
	h.c = vmm.New(vopts)
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	go func() { h.done <- h.c.Run(ctx) }()
	t.Cleanup(func() {
		if !h.stopped {
			cancel()
			<-h.done
		}
		cancel()
		cancelSub()
		h.mon.Close()
	})
	return h
}

// wait returns Run's result.
func (h *harness) wait() error {
	h.stopped = true
	return <-h.done
}

func (h *harness) do(cmd vmm.Command) (any, error) {
	return h.c.Do(context.Background(), cmd)
}

func (h *harness) mustDo(cmd vmm.Command) any {
	h.t.Helper()
	v, err := h.do(cmd)
	if err != nil {
		h.t.Fatalf("%s: %v", cmd.Name(), err)
	}
	return v
}

// expectErr checks the category and the exact rendered chain.
func (h *harness) expectErr(cmd vmm.Command, category error, want ...string) {
	h.t.Helper()
	_, err := h.do(cmd)
	if err == nil {
		h.t.Fatalf("%s: no error, want %v", cmd.Name(), want)
	}
	if !errors.Is(err, category) {
		h.t.Errorf("%s: %v is not %v", cmd.Name(), err, category)
	}
	if got := chain(err); !reflect.DeepEqual(got, want) {
		h.t.Errorf("%s: chain\n got %q\nwant %q", cmd.Name(), got, want)
	}
}

// events drains the events emitted so far, up to and including one named
// last ("source event").
func (h *harness) eventsUntil(last string) []string {
	h.t.Helper()
	var out []string
	for ev := range h.evs {
		name := ev.Source + " " + ev.Event
		out = append(out, name)
		if name == last {
			return out
		}
	}
	h.t.Fatalf("event stream ended before %q; got %q", last, out)
	return nil
}

func validConfig(t *testing.T) *config.VmConfig {
	t.Helper()
	c, err := config.Decode([]byte(`{"cpus":{"boot_vcpus":2,"max_vcpus":2},"memory":{"size":1073741824},
		"payload":{"kernel":"/k","cmdline":"console=ttyS0"},"disks":[{"path":"/a.img"}],"net":[{"num_queues":2}]}`))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func disk(t *testing.T, body string) config.DiskConfig {
	t.Helper()
	d, err := config.DecodeBody[config.DiskConfig]([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	return *d
}

func info(h *harness) *vmm.VmInfo {
	h.t.Helper()
	return h.mustDo(vmm.Info{}).(*vmm.VmInfo)
}

func TestPing(t *testing.T) {
	h := start(t, false)
	got := h.mustDo(vmm.Ping{}).(*vmm.PingResponse)
	want := &vmm.PingResponse{BuildVersion: "v54.0.0-nimbus", Version: "54.0.0", Pid: int64(os.Getpid()), Features: []string{"kvm"}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v want %+v", got, want)
	}
}

func TestLifecycle(t *testing.T) {
	h := start(t, false)
	h.mustDo(vmm.CreateVM{Config: validConfig(t)})
	i := info(h)
	if i.State != vmm.StateCreated || i.DeviceTree != nil || i.MemoryActualSize != 1<<30 {
		t.Fatalf("info after create: %+v", i)
	}
	if i.Config.Disks[0].ID != "" {
		t.Fatalf("id assigned before boot: %q", i.Config.Disks[0].ID)
	}

	h.mustDo(vmm.BootVM{})
	m := h.f.Last()
	m.Tree = map[string]*vmm.DeviceNode{"_disk0": {ID: "_disk0"}}
	i = info(h)
	if i.State != vmm.StateRunning || i.DeviceTree["_disk0"] == nil {
		t.Fatalf("info after boot: %+v", i)
	}
	// Runtime fill-ins show in vm.info: ids and a generated MAC.
	if i.Config.Disks[0].ID != "_disk0" || i.Config.Net[0].ID != "_net1" || i.Config.Net[0].MAC == "" {
		t.Fatalf("fill-ins missing: disk %q net %q mac %q", i.Config.Disks[0].ID, i.Config.Net[0].ID, i.Config.Net[0].MAC)
	}
	if m.Config().Disks[0].ID != "_disk0" {
		t.Fatal("machine built from a config without ids")
	}
	h.expectErr(vmm.BootVM{}, vmm.ErrAlreadyCreated, "The VM could not boot", "VM is already created")
	h.expectErr(vmm.CreateVM{Config: validConfig(t)}, vmm.ErrAlreadyCreated, "The VM could not be created", "VM is already created")

	h.expectErr(vmm.Snapshot{DestinationURL: "file:///tmp"}, vmm.ErrInvalidState, "The VM could not be snapshotted",
		"Cannot snapshot VM", "Failed to snapshot migratable component", "Trying to snapshot while VM is running")
	h.expectErr(vmm.ResumeVM{}, vmm.ErrInvalidState, "The VM could not resume", "Cannot resume VM",
		"Failed to resume migratable component", "Invalid transition: InvalidStateTransition(Running, Running)")
	h.mustDo(vmm.PauseVM{})
	if s := info(h).State; s != vmm.StatePaused {
		t.Fatalf("state %s", s)
	}
	h.expectErr(vmm.PauseVM{}, vmm.ErrInvalidState, "The VM could not be paused", "Cannot pause VM",
		"Failed to pause migratable component", "Invalid transition: InvalidStateTransition(Paused, Paused)")
	snap := t.TempDir()
	h.mustDo(vmm.Snapshot{DestinationURL: "file://" + snap})
	if calls := m.Calls(); calls[len(calls)-1] != "Snapshot "+snap {
		t.Fatalf("machine calls %q", calls)
	}
	h.mustDo(vmm.ResumeVM{})
	h.mustDo(vmm.PowerButton{})
	h.mustDo(vmm.NMI{})
	m.Ctrs = vmm.Counters{"_disk0": {"read_bytes": 7}}
	if got := h.mustDo(vmm.GetCounters{}).(vmm.Counters); got["_disk0"]["read_bytes"] != 7 {
		t.Fatalf("counters %v", got)
	}

	h.mustDo(vmm.ShutdownVM{})
	if i := info(h); i.State != vmm.StateCreated || i.DeviceTree != nil {
		t.Fatalf("info after shutdown: %+v", i)
	}
	h.expectErr(vmm.ShutdownVM{}, vmm.ErrNotRunning, "The VM could not shutdown", "VM is not running")
	h.expectErr(vmm.RebootVM{}, vmm.ErrNotCreated, "The VM could not reboot", "VM is not created")

	h.mustDo(vmm.BootVM{}) // boots again after shutdown
	h.mustDo(vmm.PauseVM{})
	h.mustDo(vmm.RebootVM{}) // from Paused
	if n := len(h.f.Machines()); n != 3 {
		t.Fatalf("%d machines, want 3", n)
	}
	if s := info(h).State; s != vmm.StateRunning {
		t.Fatalf("state after reboot %s", s)
	}
	h.mustDo(vmm.DeleteVM{})
	h.mustDo(vmm.DeleteVM{}) // idempotent
	h.expectErr(vmm.Info{}, vmm.ErrNotCreated, "The VM info is not available", "VM is not created")
	for i, m := range h.f.Machines() {
		calls := m.Calls()
		if calls[len(calls)-1] != "Shutdown" {
			t.Errorf("machine %d not shut down: %v", i, calls)
		}
	}

	got := h.eventsUntil("vm deleted")
	want := []string{
		"vm booting", "vm booted",
		"vm booting", // the failed second boot still says booting, as upstream
		"vm snapshotting", "vm resuming", "vm pausing", "vm paused", "vm pausing",
		"vm snapshotting", "vm snapshotted", "vm resuming", "vm resumed",
		"vm shutdown", "vm rebooting",
		"vm booting", "vm booted", "vm pausing", "vm paused", "vm rebooting", "vm rebooted",
		"vm shutdown", "vm deleted",
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("events\n got %q\nwant %q", got, want)
	}
}

func TestErrorsWithoutVM(t *testing.T) {
	h := start(t, false)
	nr := []string{"VM is not running"}
	cases := []struct {
		cmd  vmm.Command
		cat  error
		want []string
	}{
		{vmm.Info{}, vmm.ErrNotCreated, []string{"The VM info is not available", "VM is not created"}},
		{vmm.BootVM{}, vmm.ErrMissingConfig, []string{"The VM could not boot", "VM config is missing"}},
		{vmm.PauseVM{}, vmm.ErrNotRunning, append([]string{"The VM could not be paused"}, nr...)},
		{vmm.ResumeVM{}, vmm.ErrNotRunning, append([]string{"The VM could not resume"}, nr...)},
		{vmm.ShutdownVM{}, vmm.ErrNotRunning, append([]string{"The VM could not shutdown"}, nr...)},
		{vmm.RebootVM{}, vmm.ErrNotCreated, []string{"The VM could not reboot", "VM is not created"}},
		{vmm.PowerButton{}, vmm.ErrNotRunning, append([]string{"Error triggering power button"}, nr...)},
		{vmm.NMI{}, vmm.ErrNotRunning, append([]string{"Error triggering NMI"}, nr...)},
		{vmm.GetCounters{}, vmm.ErrNotRunning, append([]string{"The VM info is not available"}, nr...)},
		{vmm.Snapshot{}, vmm.ErrNotRunning, append([]string{"The VM could not be snapshotted"}, nr...)},
		{vmm.Resize{}, vmm.ErrNotCreated, []string{"The VM could not be resized", "VM is not created"}},
		{vmm.ResizeZone{ID: "z"}, vmm.ErrNotCreated, []string{"The memory zone could not be resized", "VM is not created"}},
		{vmm.ResizeDisk{ID: "d"}, vmm.ErrNotCreated, []string{"The disk could not be resized", "VM is not created"}},
		{vmm.AddDisk{}, vmm.ErrNotCreated, []string{"The disk could not be added to the VM", "VM is not created"}},
		{vmm.AddVsock{}, vmm.ErrNotCreated, []string{"The vsock device could not be added to the VM", "VM is not created"}},
		{vmm.RemoveDevice{ID: "x"}, vmm.ErrNotCreated, []string{"The device could not be removed from the VM", "VM is not created"}},
	}
	for _, tc := range cases {
		h.expectErr(tc.cmd, tc.cat, tc.want...)
	}
	h.mustDo(vmm.DeleteVM{}) // nothing to delete: still fine
	// Restore needs no config and is not implemented yet.
	if _, err := h.do(vmm.Restore{}); !errors.Is(err, vmm.ErrUnsupported) {
		t.Fatalf("restore: %v", err)
	}
	h.mustDo(vmm.CreateVM{Config: validConfig(t)})
	h.expectErr(vmm.Restore{}, vmm.ErrAlreadyCreated, "The VM could not be restored", "VM is already created")
	h.expectErr(vmm.ResizeDisk{ID: "d"}, vmm.ErrResizeDisk, "The disk could not be resized", "Failed resizing a disk image")
	h.expectErr(vmm.CreateVM{}, vmm.ErrAlreadyCreated, "The VM could not be created", "VM is already created")
}

func TestBootValidatesAndCreateDoesNot(t *testing.T) {
	h := start(t, false)
	bad := validConfig(t)
	bad.Payload = nil
	h.mustDo(vmm.CreateVM{Config: bad}) // stored without validation
	h.expectErr(vmm.BootVM{}, vmm.ErrBadConfig, "The VM could not boot", "Failed to validate config",
		"No bootitem provided: neither firmware nor kernel")
	if len(h.f.Machines()) != 0 {
		t.Fatal("a machine was built for an invalid config")
	}
	if s := info(h).State; s != vmm.StateCreated {
		t.Fatalf("state %s", s)
	}
}

func TestBootFailureKeepsMachineUntilShutdown(t *testing.T) {
	h := start(t, false)
	bootErr := errors.New("Kernel lacks PVH header")
	first := true
	h.f.Prepare = func(m *vmmtest.Machine) {
		if first {
			m.BootErr = bootErr
			first = false
		}
	}
	h.mustDo(vmm.CreateVM{Config: validConfig(t)})
	_, err := h.do(vmm.BootVM{})
	if !errors.Is(err, bootErr) || !reflect.DeepEqual(chain(err), []string{"The VM could not boot", "Kernel lacks PVH header"}) {
		t.Fatalf("boot: %q", chain(err))
	}
	if s := info(h).State; s != vmm.StateCreated {
		t.Fatalf("state %s", s)
	}
	h.expectErr(vmm.BootVM{}, vmm.ErrAlreadyCreated, "The VM could not boot", "VM is already created")
	h.mustDo(vmm.ShutdownVM{}) // recovers
	h.mustDo(vmm.BootVM{})
	if s := info(h).State; s != vmm.StateRunning {
		t.Fatalf("state %s", s)
	}
}

func TestFactoryFailureLeavesNoMachine(t *testing.T) {
	h := start(t, false)
	h.f.Err = errors.New("KVM is not available")
	h.mustDo(vmm.CreateVM{Config: validConfig(t)})
	h.expectErr(vmm.BootVM{}, h.f.Err, "The VM could not boot", "KVM is not available")
	h.f.Err = nil
	h.mustDo(vmm.BootVM{}) // nothing was stored, so boot can be retried
}

func TestColdDeviceChanges(t *testing.T) {
	h := start(t, false)
	h.mustDo(vmm.CreateVM{Config: validConfig(t)})
	if v := h.mustDo(vmm.AddDisk{Config: disk(t, `{"path":"/b.img"}`)}); v != nil {
		t.Fatalf("cold add returned %v", v)
	}
	d := disk(t, `{"path":"/c.img","id":"data"}`)
	h.mustDo(vmm.AddDisk{Config: d})
	h.expectErr(vmm.AddDisk{Config: d}, vmm.ErrConflict, "The disk could not be added to the VM",
		"Failed to validate config", `Identifier data is not unique`)
	h.mustDo(vmm.AddVsock{Config: config.VsockConfig{Cid: 3, Socket: "/v.sock"}})
	h.expectErr(vmm.AddVsock{Config: config.VsockConfig{Cid: 4, Socket: "/w.sock"}}, vmm.ErrTooManyVsock,
		"The vsock device could not be added to the VM", "Too many virtio-vsock devices")

	cfg := info(h).Config
	if len(cfg.Disks) != 3 || cfg.Disks[1].ID != "" || cfg.Disks[2].ID != "data" {
		t.Fatalf("disks %+v", cfg.Disks)
	}
	h.expectErr(vmm.RemoveDevice{ID: "_disk1"}, vmm.ErrNotFound, "The device could not be removed from the VM",
		`No device with id "_disk1" to remove`)
	h.mustDo(vmm.RemoveDevice{ID: "data"})
	if n := len(info(h).Config.Disks); n != 2 {
		t.Fatalf("%d disks after remove", n)
	}

	vcpus, ram := uint32(1), uint64(2<<30)
	h.mustDo(vmm.Resize{DesiredVcpus: &vcpus, DesiredRAM: &ram})
	if c := info(h).Config; c.Cpus.BootVcpus != 1 || c.Memory.Size != 2<<30 {
		t.Fatalf("resize: %+v %+v", c.Cpus, c.Memory)
	}
	h.expectErr(vmm.ResizeZone{ID: "nope", DesiredRAM: 1}, vmm.ErrResizeZone,
		"The memory zone could not be resized", "Failed resizing a memory zone")

	h.mustDo(vmm.BootVM{})
	_, err := h.do(vmm.AddDisk{Config: disk(t, `{"path":"/d.img"}`)})
	if !errors.Is(err, vmm.ErrUnsupported) {
		t.Fatalf("hot add: %v", err)
	}
}

// TestHotResizeToWhatTheVMHas: on a running VM, vm.resize to the current
// vCPU count and RAM size succeeds with upstream's resizing/resized events
// (Kata does it on every container start); a real change is refused with
// the chain upstream's handler puts first, and the config keeps its values.
func TestHotResizeToWhatTheVMHas(t *testing.T) {
	h, _ := boot(t, false)
	cfg := info(h).Config
	vcpus, ram := cfg.Cpus.BootVcpus, cfg.Memory.Size
	h.mustDo(vmm.Resize{DesiredVcpus: &vcpus})
	h.mustDo(vmm.Resize{DesiredVcpus: &vcpus, DesiredRAM: &ram})
	if got := h.eventsUntil("vm resized"); !reflect.DeepEqual(got, []string{"vm resizing", "vm resized"}) {
		t.Fatalf("events %q", got)
	}
	if got := h.eventsUntil("vm resized"); !reflect.DeepEqual(got, []string{"vm resizing", "vm resized"}) {
		t.Fatalf("events %q", got)
	}
	more, bigger := vcpus+1, ram*2
	for _, r := range []vmm.Resize{{DesiredVcpus: &more}, {DesiredRAM: &bigger}, {DesiredBalloon: &ram}} {
		_, err := h.do(r)
		if !errors.Is(err, vmm.ErrUnsupported) || !strings.Contains(err.Error(), "The VM could not be resized") {
			t.Fatalf("resize %+v: %v, want an unsupported error in the resize chain", r, err)
		}
	}
	if c := info(h).Config; c.Cpus.BootVcpus != vcpus || c.Memory.Size != ram {
		t.Fatalf("refused resizes changed the config: %+v %+v", c.Cpus, c.Memory)
	}
}

// pipeFd returns the write end to hand over and the read end, which
// reads EOF once the write end is closed.
func pipeFd(t *testing.T) (w, r *os.File) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return w, r
}

func assertClosed(t *testing.T, r *os.File, what string) {
	t.Helper()
	if _, err := r.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("%s: write end still open (read: %v)", what, err)
	}
}

func TestFdsClosedOnFailure(t *testing.T) {
	h := start(t, false)
	netp, err := config.DecodeBody[config.NetConfig]([]byte(`{"num_queues":2}`))
	if err != nil {
		t.Fatal(err)
	}
	net := *netp

	w, r := pipeFd(t)
	if _, err := h.do(vmm.AddNet{Config: net, Fds: []*os.File{w}}); !errors.Is(err, vmm.ErrNotCreated) {
		t.Fatalf("add-net without VM: %v", err)
	}
	assertClosed(t, r, "add-net without config")

	h.mustDo(vmm.CreateVM{Config: validConfig(t)})
	w1, r1 := pipeFd(t)
	w2, r2 := pipeFd(t)
	if _, err := h.do(vmm.AddDevice{Config: config.DeviceConfig{Path: "/sys/x"}, Fds: []*os.File{w1, w2}}); !errors.Is(err, vmm.ErrBadConfig) {
		t.Fatalf("add-device with 2 fds: %v", err)
	}
	assertClosed(t, r1, "add-device fd 1")
	assertClosed(t, r2, "add-device fd 2")

	w, r = pipeFd(t)
	if _, err := h.do(vmm.Restore{Fds: []*os.File{w}}); err == nil {
		t.Fatal("restore succeeded")
	}
	assertClosed(t, r, "restore")

	// Success keeps the fd open (it is in the config) until delete.
	w, r = pipeFd(t)
	h.mustDo(vmm.AddNet{Config: net, Fds: []*os.File{w}})
	nets := info(h).Config.Net
	if fds := nets[len(nets)-1].Fds; len(fds) != 1 || fds[0] <= 2 {
		t.Fatalf("net fds in config: %v", fds)
	}
	if _, err := w.Write([]byte("x")); err != nil {
		t.Fatalf("adopted fd closed early: %v", err)
	}
	h.mustDo(vmm.DeleteVM{})
	if _, err := r.Read(make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	assertClosed(t, r, "net fd after delete")

	// Commands that never reach the loop still close their fds.
	h.mustDo(vmm.ShutdownVMM{})
	if err := h.wait(); err != nil {
		t.Fatal(err)
	}
	w, r = pipeFd(t)
	if _, err := h.do(vmm.AddNet{Config: net, Fds: []*os.File{w}}); !errors.Is(err, vmm.ErrStopped) {
		t.Fatalf("after stop: %v", err)
	}
	assertClosed(t, r, "after stop")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	w, r = pipeFd(t)
	c2 := vmm.New(vmm.Options{Signals: make(chan os.Signal)}) // never run
	if _, err := c2.Do(ctx, &vmm.AddNet{Config: net, Fds: []*os.File{w}}); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled ctx: %v", err)
	}
	assertClosed(t, r, "cancelled ctx")
}

func TestConcurrentDo(t *testing.T) {
	h := start(t, false)
	const n = 64
	var wg sync.WaitGroup
	var mu sync.Mutex
	created, replies := 0, 0
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var err error
			switch i % 3 {
			case 0:
				_, err = h.do(vmm.CreateVM{Config: validConfig(t)})
				mu.Lock()
				if err == nil {
					created++
				} else if !errors.Is(err, vmm.ErrAlreadyCreated) {
					t.Errorf("create: %v", err)
				}
				mu.Unlock()
			case 1:
				_, err = h.do(vmm.Ping{})
				if err != nil {
					t.Errorf("ping: %v", err)
				}
			default:
				_, err = h.do(vmm.Info{})
				if err != nil && !errors.Is(err, vmm.ErrNotCreated) {
					t.Errorf("info: %v", err)
				}
			}
			mu.Lock()
			replies++
			mu.Unlock()
		}()
	}
	wg.Wait()
	if created != 1 || replies != n {
		t.Fatalf("created %d (want 1), replies %d (want %d)", created, replies, n)
	}
}

func TestVMMShutdownStopsRun(t *testing.T) {
	h := start(t, false)
	h.mustDo(vmm.CreateVM{Config: validConfig(t)})
	h.mustDo(vmm.BootVM{})
	if v, err := h.do(vmm.ShutdownVMM{}); v != nil || err != nil {
		t.Fatalf("vmm.shutdown: %v %v", v, err)
	}
	if err := h.wait(); err != nil {
		t.Fatal(err)
	}
	if h.c.Reason() != vmm.StopVMMShutdown {
		t.Fatalf("reason %v", h.c.Reason())
	}
	got := h.eventsUntil("vmm shutdown")
	want := []string{"vm booting", "vm booted", "vm shutdown", "vm deleted", "vmm shutdown"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("events %q", got)
	}
	if _, err := h.do(vmm.Ping{}); !errors.Is(err, vmm.ErrStopped) {
		t.Fatalf("ping after stop: %v", err)
	}
}

func TestSignalShutsDown(t *testing.T) {
	h := start(t, false)
	h.mustDo(vmm.CreateVM{Config: validConfig(t)})
	h.mustDo(vmm.BootVM{})
	h.sigs <- syscall.SIGTERM
	if err := h.wait(); err != nil {
		t.Fatal(err)
	}
	if h.c.Reason() != vmm.StopSignal {
		t.Fatalf("reason %v", h.c.Reason())
	}
	if calls := h.f.Last().Calls(); calls[len(calls)-1] != "Shutdown" {
		t.Fatalf("machine not shut down: %v", calls)
	}
	if got := h.eventsUntil("vmm shutdown"); got[len(got)-2] != "vm deleted" {
		t.Fatalf("events %q", got)
	}
}

func TestRealSignal(t *testing.T) {
	c := vmm.New(vmm.Options{})
	done := make(chan error, 1)
	go func() { done <- c.Run(context.Background()) }()
	// The loop has subscribed once it answers a request.
	if _, err := c.Do(context.Background(), vmm.Ping{}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil || c.Reason() != vmm.StopSignal {
		t.Fatalf("Run: %v, reason %v", err, c.Reason())
	}
}

func boot(t *testing.T, noShutdown bool) (*harness, *vmmtest.Machine) {
	h := start(t, noShutdown)
	h.mustDo(vmm.CreateVM{Config: validConfig(t)})
	h.mustDo(vmm.BootVM{})
	h.eventsUntil("vm booted")
	return h, h.f.Last()
}

func TestGuestPoweroff(t *testing.T) {
	h, m := boot(t, false)
	m.Exit(vmm.MachineExit{Reason: vmm.ExitPoweroff})
	if err := h.wait(); err != nil {
		t.Fatal(err)
	}
	if h.c.Reason() != vmm.StopGuestPoweroff {
		t.Fatalf("reason %v", h.c.Reason())
	}
	if got := h.eventsUntil("vmm shutdown"); !reflect.DeepEqual(got, []string{"vm shutdown", "vm deleted", "vmm shutdown"}) {
		t.Fatalf("events %q", got)
	}
}

func TestGuestPoweroffNoShutdown(t *testing.T) {
	h, m := boot(t, true)
	m.Exit(vmm.MachineExit{Reason: vmm.ExitPoweroff})
	h.eventsUntil("vm shutdown")
	if s := info(h).State; s != vmm.StateCreated {
		t.Fatalf("state %s", s)
	}
	h.mustDo(vmm.BootVM{}) // the VMM lives on and boots again
}

func TestGuestReset(t *testing.T) {
	h, m := boot(t, false)
	m.Exit(vmm.MachineExit{Reason: vmm.ExitReset})
	if got := h.eventsUntil("vm rebooted"); !reflect.DeepEqual(got, []string{"vm rebooting", "vm rebooted"}) {
		t.Fatalf("events %q", got)
	}
	if len(h.f.Machines()) != 2 || info(h).State != vmm.StateRunning {
		t.Fatal("not rebooted")
	}
	if calls := m.Calls(); calls[len(calls)-1] != "Shutdown" {
		t.Fatalf("old machine: %v", calls)
	}
}

func TestGuestFatal(t *testing.T) {
	h, m := boot(t, true) // fatal stops the VMM even with NoShutdown
	fault := errors.New("triple fault: rip=0xfff0")
	m.Exit(vmm.MachineExit{Reason: vmm.ExitFatal, Err: fault})
	err := h.wait()
	if !errors.Is(err, vmm.ErrGuestFatal) || !errors.Is(err, fault) {
		t.Fatalf("Run: %v", err)
	}
	if h.c.Reason() != vmm.StopGuestFatal {
		t.Fatalf("reason %v", h.c.Reason())
	}
	if calls := m.Calls(); calls[len(calls)-1] != "Shutdown" {
		t.Fatalf("machine: %v", calls)
	}
}

func TestContextCancel(t *testing.T) {
	h, m := boot(t, false)
	h.cancel()
	if err := h.wait(); !errors.Is(err, context.Canceled) {
		t.Fatalf("Run: %v", err)
	}
	if calls := m.Calls(); calls[len(calls)-1] != "Shutdown" {
		t.Fatalf("machine left running: %v", calls)
	}
}

func TestEventBytes(t *testing.T) {
	var buf strings.Builder
	var mu sync.Mutex
	w := writerFunc(func(p []byte) (int, error) { mu.Lock(); defer mu.Unlock(); return buf.Write(p) })
	t0 := time.Unix(0, 0)
	mon := events.New(w, events.WithClock(func() time.Time { return t0 }))
	f := &vmmtest.Factory{}
	c := vmm.New(vmm.Options{Factory: f.New, Events: mon, Signals: make(chan os.Signal)})
	done := make(chan error, 1)
	go func() { done <- c.Run(context.Background()) }()
	ctx := context.Background()
	cfg := validConfig(t)
	for _, cmd := range []vmm.Command{vmm.CreateVM{Config: cfg}, vmm.BootVM{}, vmm.ShutdownVMM{}} {
		if _, err := c.Do(ctx, cmd); err != nil {
			t.Fatal(err)
		}
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	mon.Close()
	ev := func(src, name string) string {
		return "{\n  \"timestamp\": {\n    \"secs\": 0,\n    \"nanos\": 0\n  },\n  \"source\": \"" + src +
			"\",\n  \"event\": \"" + name + "\",\n  \"properties\": null\n}\n\n"
	}
	want := ev("vm", "booting") + ev("vm", "booted") + ev("vm", "shutdown") + ev("vm", "deleted") + ev("vmm", "shutdown")
	if got := buf.String(); got != want {
		t.Fatalf("got\n%s\nwant\n%s", got, want)
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// A booted VM whose devices keep no counters answers an empty object, so
// the API sends 200 {} (a nil map would become 204).
func TestCountersNeverNil(t *testing.T) {
	h := start(t, false)
	h.mustDo(vmm.CreateVM{Config: validConfig(t)})
	h.mustDo(vmm.BootVM{})
	got, ok := h.mustDo(vmm.GetCounters{}).(vmm.Counters)
	if !ok || got == nil || len(got) != 0 {
		t.Fatalf("counters %#v, want empty non-nil", got)
	}
}

// vm.restore checks the fd count against net_fds/vfio_fds/iommufd_fd
// before anything else, as upstream's VmRestore handler: a mismatch is a
// bad request, and the fds are closed.
func TestRestoreFdCount(t *testing.T) {
	h := start(t, false)
	one := int32(9)
	cfg := config.RestoreConfig{SourceURL: "file:///snap",
		NetFds:  []config.RestoredNetConfig{{ID: "net0", NumFds: 2}},
		VfioFds: []config.RestoredVfioConfig{{ID: "vfio0"}}, IommufdFd: &one}
	w, r := pipeFd(t)
	h.expectErr(vmm.Restore{Config: cfg, Fds: []*os.File{w}}, vmm.ErrBadConfig,
		"The VM could not be restored", "Number of FDs expected: 4, but received: 1")
	assertClosed(t, r, "restore fd")
	h.expectErr(vmm.Restore{Fds: []*os.File{pipeW(t)}}, vmm.ErrBadConfig,
		"The VM could not be restored", "Number of FDs expected: 0, but received: 1")
	// The right count gets past the check to the (unsupported) restore.
	fds := []*os.File{pipeW(t), pipeW(t), pipeW(t), pipeW(t)}
	if _, err := h.do(vmm.Restore{Config: cfg, Fds: fds}); !errors.Is(err, vmm.ErrUnsupported) {
		t.Fatalf("restore with 4 fds: %v", err)
	}
}

func pipeW(t *testing.T) *os.File {
	w, _ := pipeFd(t)
	return w
}

// TestCreateMakesTheConsoles: as upstream's vm_create
// (pre_create_console_devices), a Pty console exists from vm.create on and
// vm.info reports its path in config.console.file (libvirt reads it there
// right after create); the machine is built on those very backends; a
// shutdown closes them and the next boot gets new ones; delete closes them.
func TestCreateMakesTheConsoles(t *testing.T) {
	h := start(t, false)
	cfg := validConfig(t)
	serial := filepath.Join(t.TempDir(), "serial.log")
	cfg.Console = config.ConsoleConfig{Mode: config.ConsolePty}
	cfg.Serial = config.SerialConfig{Mode: config.ConsoleFile, File: serial}
	h.mustDo(vmm.CreateVM{Config: cfg})
	pty := info(h).Config.Console.File
	if !strings.HasPrefix(pty, "/dev/pts/") {
		t.Fatalf("config.console.file after create = %q, want the pty", pty)
	}
	if _, err := os.Stat(pty); err != nil {
		t.Fatalf("the console pty after create: %v", err)
	}
	if _, err := os.Stat(serial); err != nil {
		t.Fatalf("the serial file after create: %v", err)
	}
	h.mustDo(vmm.BootVM{})
	m := h.f.Last()
	if m.Consoles == nil || m.Consoles.Console == nil || m.Consoles.Console.Path() != pty || m.Consoles.Serial == nil {
		t.Fatalf("the machine was not built on the consoles made at create: %+v", m.Consoles)
	}
	if got := info(h).Config.Console.File; got != pty {
		t.Fatalf("config.console.file after boot = %q, want %q", got, pty)
	}
	h.mustDo(vmm.ShutdownVM{})
	h.mustDo(vmm.BootVM{})
	if c := h.f.Last().Consoles; c == nil || c == m.Consoles || c.Console == nil {
		t.Fatalf("the second boot reused or lacks consoles: %+v", c)
	}
	h.mustDo(vmm.DeleteVM{})
	if h.f.Last().Consoles.Console != nil {
		t.Fatal("delete left the console backends open")
	}
}

// TestCreateRefusesASocketConsole: upstream fails vm.create for a virtio
// console in Socket mode (NoSocketOptionSupportForConsoleDevice), with the
// config stored all the same.
func TestCreateRefusesASocketConsole(t *testing.T) {
	h := start(t, false)
	cfg := validConfig(t)
	cfg.Console = config.ConsoleConfig{Mode: config.ConsoleSocket, Socket: filepath.Join(t.TempDir(), "c.sock")}
	h.expectErr(vmm.CreateVM{Config: cfg}, vmm.ErrCreateConsoleDevices, "The VM could not be created",
		"Error creating console devices", "No socket option support for console device")
	h.expectErr(vmm.CreateVM{Config: validConfig(t)}, vmm.ErrAlreadyCreated, "The VM could not be created", "VM is already created")
}

// rebootingMachine is a vmmtest machine with something to hand over.
type rebootingMachine struct {
	*vmmtest.Machine
	ho        *fakeHandover
	forReboot atomic.Int32 // ShutdownForReboot calls
}

func (m *rebootingMachine) ShutdownForReboot() (vmm.Handover, error) {
	m.forReboot.Add(1)
	m.Machine.Shutdown()
	return m.ho, nil
}

type fakeHandover struct{ closed atomic.Int32 }

func (h *fakeHandover) Close() error { h.closed.Add(1); return nil }

// TestRebootHandsOver: at a reboot (vm.reboot, or the guest's own reset)
// what the old machine hands over reaches the factory building the new
// one and is closed after it; a boot passes nothing; a shutdown hands
// nothing over.
func TestRebootHandsOver(t *testing.T) {
	f := &vmmtest.Factory{}
	var mu sync.Mutex
	var prevs []vmm.Handover
	var hos []*fakeHandover
	var machines []*rebootingMachine
	factory := func(cfg *config.VmConfig, cons *console.Devices, prev vmm.Handover, exits chan<- vmm.MachineExit) (vmm.Machine, error) {
		m, err := f.New(cfg, cons, nil, exits)
		if err != nil {
			return nil, err
		}
		mu.Lock()
		defer mu.Unlock()
		if prev != nil && prev.(*fakeHandover).closed.Load() != 0 {
			t.Error("the hand-over was closed before the new machine was built")
		}
		prevs = append(prevs, prev)
		ho := &fakeHandover{}
		hos = append(hos, ho)
		rm := &rebootingMachine{Machine: m.(*vmmtest.Machine), ho: ho}
		machines = append(machines, rm)
		return rm, nil
	}
	mon := events.New(nil)
	defer mon.Close()
	c := vmm.New(vmm.Options{Factory: factory, Events: mon, Signals: make(chan os.Signal)})
	done := make(chan error, 1)
	go func() { done <- c.Run(context.Background()) }()
	ctx := context.Background()
	for _, cmd := range []vmm.Command{vmm.CreateVM{Config: validConfig(t)}, vmm.BootVM{}, vmm.RebootVM{}, vmm.ShutdownVMM{}} {
		if _, err := c.Do(ctx, cmd); err != nil {
			t.Fatal(err)
		}
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(prevs) != 2 || prevs[0] != nil || prevs[1] != vmm.Handover(hos[0]) {
		t.Fatalf("factory got %v; want nil at boot, then the first machine's hand-over", prevs)
	}
	if n := hos[0].closed.Load(); n != 1 {
		t.Errorf("the reboot's hand-over closed %d times, want once", n)
	}
	if a, b := machines[0].forReboot.Load(), machines[1].forReboot.Load(); a != 1 || b != 0 {
		t.Errorf("ShutdownForReboot called %d times on the rebooted machine (want 1), %d on the one shut down (want 0)", a, b)
	}
	if n := hos[1].closed.Load(); n != 0 {
		t.Errorf("a shutdown made a hand-over and closed it %d times", n)
	}
}
