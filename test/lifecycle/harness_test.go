package lifecycle

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nimbus-vmm/nimbus/internal/guestimage"
	"github.com/nimbus-vmm/nimbus/internal/guestimage/guesttest"
	"github.com/nimbus-vmm/nimbus/pkg/client"
)

// Bounds for waiting on a nested guest (boots take about 10 s under the
// QEMU 10 sandbox). They are deadlines for progress, not timing assertions.
const (
	bootTimeout = 3 * time.Minute
	// upTimeout bounds a guest's boot to user space. Nested guests now and
	// then stay silent from their first instruction; giving up on them
	// sooner keeps the package inside its time budget for the rerun.
	upTimeout   = 90 * time.Second
	apiTimeout  = 30 * time.Second
	exitTimeout = time.Minute
	pollEvery   = 100 * time.Millisecond
)

// guest describes the image and command line every test boots.
type guest struct {
	assets    *guesttest.Assets
	initramfs string
}

// inputModules are the ACPI power button's path to user space: the button
// driver turns Notify(PWRB, 0x80) into KEY_POWER, evdev exposes it.
var inputModules = []string{"button", "evdev"}

// newGuest skips without KVM or without the nimbus binary, and builds the
// guest image from the default modules plus extra.
func newGuest(t *testing.T, extra ...string) *guest {
	t.Helper()
	a := guestAssets(t)
	mods := append(append([]string{}, guestimage.DefaultModules...), extra...)
	return &guest{assets: a, initramfs: a.ImageFile(t, guestimage.Options{ModuleNames: mods})}
}

// newGuestWith is newGuest with test/guestbin programs as /bin/<name>;
// it skips when they were not built.
func newGuestWith(t *testing.T, progs ...string) *guest {
	t.Helper()
	a := guestAssets(t)
	var files []guestimage.File
	for _, name := range progs {
		prog := filepath.Join(a.BinDir, name)
		if _, err := os.Stat(prog); err != nil {
			t.Skipf("no guest program (go build -o bin/ ./test/guestbin/...): %v", err)
		}
		files = append(files, guestimage.File{Host: prog, Guest: "/bin/" + name})
	}
	return &guest{assets: a, initramfs: a.ImageFile(t, guestimage.Options{ModuleNames: guestimage.DefaultModules, Files: files})}
}

// guestAssets skips without KVM or without the nimbus binary.
func guestAssets(t *testing.T) *guesttest.Assets {
	t.Helper()
	a := guesttest.Require(t)
	if a.BinDir == "" {
		t.Skip("no nimbus binary: set NIMBUS_BIN_DIR or run `make build`")
	}
	if _, err := os.Stat(filepath.Join(a.BinDir, "nimbus")); err != nil {
		t.Skipf("no nimbus binary in %s: %v", a.BinDir, err)
	}
	return a
}

// haveModules reports whether the guest modules directory holds names.
func haveModules(t *testing.T, names ...string) bool {
	t.Helper()
	a := guesttest.Require(t)
	ix, err := guestimage.LoadModuleIndex(a.ModulesDir)
	if err != nil {
		t.Fatal(err)
	}
	_, err = ix.Resolve(names...)
	return err == nil
}

// gedCount is the guest's latest "GED=<n>" report: the count of its
// ACPI:Ged interrupt in /proc/interrupts, or -1.
func gedCount(out string) int {
	n := -1
	for _, f := range strings.Fields(out) {
		if v, ok := strings.CutPrefix(f, "GED="); ok {
			if i, err := strconv.Atoi(v); err == nil {
				n = i
			}
		}
	}
	return n
}

// cmdline is the kernel command line running scripts in order, staying up
// after them when stay is set.
func cmdline(stay bool, scripts ...string) string {
	parts := []string{"console=ttyS0", "quiet", "loglevel=3"}
	for _, s := range scripts {
		parts = append(parts, guestimage.RunParam(s))
	}
	if stay {
		parts = append(parts, guestimage.ParamStay+"=1")
	}
	return strings.Join(parts, " ")
}

// ticker prints "TICK <n> NMI=<count>" every 0.2 s from a background
// loop, so a test can see whether the guest is running and how many NMIs
// it has taken (vCPU 0's count in /proc/interrupts).
const ticker = `(i=0; while :; do echo "TICK $i NMI=$(awk '/^ *NMI:/{print $2}' /proc/interrupts)"; i=$((i+1)); sleep 0.2 2>/dev/null || usleep 200000; done) &
`

// vmmProc is one nimbus process with its API client and serial log.
type vmmProc struct {
	t      *testing.T
	cmd    *exec.Cmd
	dir    string
	sock   string
	serial string
	api    *client.Client
	// eventFile is the --event-monitor file.
	eventFile string

	logMu sync.Mutex
	log   bytes.Buffer // the process's stdout and stderr

	done    chan struct{}
	waitErr error

	// serial output of earlier files and the current one (see output)
	outMu           sync.Mutex
	outPrev, outCur string
	stopWatch       chan struct{}
	watchDone       chan struct{}
}

func (p *vmmProc) Write(b []byte) (int, error) {
	p.logMu.Lock()
	defer p.logMu.Unlock()
	return p.log.Write(b)
}

func (p *vmmProc) processLog() string {
	p.logMu.Lock()
	defer p.logMu.Unlock()
	return p.log.String()
}

// start runs nimbus with the guest's kernel and initramfs, the given
// command line, 1 vCPU (unless extra has --cpus), 256 MiB (unless extra
// has --memory) and the serial
// port in a file, plus extra options; it returns once the API socket
// answers.
func (g *guest) start(t *testing.T, cmdline string, extra ...string) *vmmProc {
	t.Helper()
	dir, err := os.MkdirTemp("", "nimbus-lc") // sun_path is 108 bytes; t.TempDir can be longer
	if err != nil {
		t.Fatal(err)
	}
	serial := filepath.Join(dir, "serial.log")
	args := []string{
		"--kernel", g.assets.Kernel,
		"--initramfs", g.initramfs,
		"--cmdline", cmdline,
		"--serial", "file=" + serial,
		"--console", "off",
	}
	if !slices.Contains(extra, "--memory") {
		args = append(args, "--memory", "size=256M")
	}
	if !slices.Contains(extra, "--cpus") {
		args = append(args, "--cpus", "boot=1")
	}
	args = append(args, extra...)
	return startVMM(t, dir, filepath.Join(g.assets.BinDir, "nimbus"), args...)
}

// startVMM runs bin with an API socket, an event file and -v in dir (which
// it owns from then on: stop removes it), plus args, and returns once the
// API socket answers.
func startVMM(t *testing.T, dir, bin string, args ...string) *vmmProc {
	t.Helper()
	return startVMMSerial(t, dir, filepath.Join(dir, "serial.log"), bin, args...)
}

// startVMMSerial is startVMM for a VM whose serial file is elsewhere (an
// incoming migration's config names the source's).
func startVMMSerial(t *testing.T, dir, serial, bin string, args ...string) *vmmProc {
	t.Helper()
	p := &vmmProc{t: t, dir: dir, sock: filepath.Join(dir, "api.sock"), serial: serial,
		eventFile: filepath.Join(dir, "events.json"), done: make(chan struct{})}
	args = append([]string{
		"--api-socket", "path=" + p.sock,
		"--event-monitor", "path=" + p.eventFile,
		"-v", // info: the machine's own account of a failure ends up in processLog
	}, args...)
	p.cmd = exec.Command(bin, args...)
	p.cmd.Stdout, p.cmd.Stderr = p, p
	if err := p.cmd.Start(); err != nil {
		os.RemoveAll(dir)
		t.Fatal(err)
	}
	go func() {
		p.waitErr = p.cmd.Wait()
		close(p.done)
	}()
	p.stopWatch, p.watchDone = make(chan struct{}), make(chan struct{})
	go p.watchSerial(p.stopWatch, p.watchDone)
	t.Cleanup(p.stop)
	p.api = client.New(p.sock)
	p.waitFor("the API socket", apiTimeout, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := p.api.Ping(ctx)
		return err == nil
	})
	return p
}

// stop ends the process if the test left it running (vmm.shutdown, then
// SIGKILL), reports its log on failure and removes its directory.
func (p *vmmProc) stop() {
	if !p.exited() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_ = p.api.ShutdownVMM(ctx)
		cancel()
		select {
		case <-p.done:
		case <-time.After(20 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	}
	close(p.stopWatch)
	<-p.watchDone
	if p.t.Failed() {
		p.t.Logf("events: %v", p.events())
		p.t.Logf("nimbus log:\n%s", p.processLog())
		p.t.Logf("serial output:\n%s", p.output())
	}
	os.RemoveAll(p.dir)
}

func (p *vmmProc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// output is everything the guest wrote to the serial port so far, over
// every boot: each new machine (reboot, boot after shutdown) truncates the
// serial file, as upstream's File::create does, so earlier boots' output
// is kept here. watchSerial polls often enough that a truncation is seen
// before the new boot has written as much as the old one had. The file
// is read under outMu: a read taken before another caller's newer one but
// compared after it looked like a truncation, and the boot's output then
// appeared twice (TestHostileGuest counted six devices of four).
func (p *vmmProc) output() string {
	p.outMu.Lock()
	defer p.outMu.Unlock()
	b, _ := os.ReadFile(p.serial)
	cur := strings.ReplaceAll(string(b), "\r", "")
	if !strings.HasPrefix(cur, p.outCur) {
		p.outPrev += p.outCur
	}
	p.outCur = cur
	return p.outPrev + p.outCur
}

// watchSerial calls output every 20 ms until stop is closed.
func (p *vmmProc) watchSerial(stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			p.output()
		}
	}
}

// waitFor polls cond until it holds, failing the test after timeout or if
// the process exits first.
func (p *vmmProc) waitFor(what string, timeout time.Duration, cond func() bool) {
	p.t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if p.exited() {
			if cond() {
				return
			}
			p.t.Fatalf("nimbus exited (%v) while waiting for %s", p.waitErr, what)
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("no %s within %v", what, timeout)
		}
		time.Sleep(pollEvery)
	}
}

// boots counts the guest init's "up" markers: one per boot.
func boots(out string) int { return strings.Count(out, guestimage.MarkerUp+" ") }

// waitBoots waits until the guest has come up n times in all.
func (p *vmmProc) waitBoots(n int) {
	p.t.Helper()
	p.waitFor(fmt.Sprintf("guest boot #%d", n), upTimeout, func() bool { return boots(p.output()) >= n })
}

// waitLine waits for a serial line containing s after the first skip bytes.
func (p *vmmProc) waitOutput(what string, skip int, timeout time.Duration, s string) {
	p.t.Helper()
	p.waitFor(what, timeout, func() bool {
		out := p.output()
		return len(out) > skip && strings.Contains(out[skip:], s)
	})
}

// lastTick is the highest "TICK n" in out, or -1.
func lastTick(out string) int {
	n := -1
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "TICK" {
			if i, err := strconv.Atoi(f[1]); err == nil && i > n {
				n = i
			}
		}
	}
	return n
}

func (p *vmmProc) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), apiTimeout)
}

// state is vm.info's state; "" with the error text when the call fails.
func (p *vmmProc) state() (string, error) {
	ctx, cancel := p.ctx()
	defer cancel()
	info, err := p.api.Info(ctx)
	if err != nil {
		return "", err
	}
	return info.State, nil
}

func (p *vmmProc) wantState(want string) {
	p.t.Helper()
	got, err := p.state()
	if err != nil || got != want {
		p.t.Fatalf("vm.info state = %q (%v), want %q", got, err, want)
	}
}

// waitState waits for a state the guest reaches on its own (poweroff, reset).
func (p *vmmProc) waitState(want string, timeout time.Duration) {
	p.t.Helper()
	p.waitFor("state "+want, timeout, func() bool { s, _ := p.state(); return s == want })
}

// do runs one API action and fails the test on error.
func (p *vmmProc) do(what string, f func(context.Context) error) {
	p.t.Helper()
	ctx, cancel := p.ctx()
	defer cancel()
	if err := f(ctx); err != nil {
		p.t.Fatalf("%s: %v", what, err)
	}
}

// wantFail runs one API action that must be refused (upstream answers an
// invalid state transition with 500).
func (p *vmmProc) wantFail(what string, f func(context.Context) error) {
	p.t.Helper()
	ctx, cancel := p.ctx()
	defer cancel()
	err := f(ctx)
	var ae *client.APIError
	if !errors.As(err, &ae) || ae.StatusCode != 500 {
		p.t.Fatalf("%s: err = %v, want a 500 reply", what, err)
	}
}

// waitExit waits for the process to exit and returns its exit status.
func (p *vmmProc) waitExit(timeout time.Duration) int {
	p.t.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		p.t.Fatalf("nimbus still running after %v", timeout)
	}
	var ee *exec.ExitError
	switch {
	case p.waitErr == nil:
		return 0
	case errors.As(p.waitErr, &ee):
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			p.t.Fatalf("nimbus killed by %v", ws.Signal())
		}
		return ee.ExitCode()
	}
	p.t.Fatalf("waiting for nimbus: %v", p.waitErr)
	return -1
}

// usage is what /proc says about the process's resources.
type usage struct {
	threads, fds int
	rssKB        int
}

func (p *vmmProc) usage() usage {
	p.t.Helper()
	proc := fmt.Sprintf("/proc/%d", p.cmd.Process.Pid)
	tasks, err := os.ReadDir(proc + "/task")
	if err != nil {
		p.t.Fatal(err)
	}
	fds, err := os.ReadDir(proc + "/fd")
	if err != nil {
		p.t.Fatal(err)
	}
	status, err := os.ReadFile(proc + "/status")
	if err != nil {
		p.t.Fatal(err)
	}
	u := usage{threads: len(tasks), fds: len(fds)}
	for _, l := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			u.rssKB, _ = strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
		}
	}
	return u
}

// events are the event monitor file's events as "source event", in order.
// Upstream writes each as pretty JSON followed by a blank line.
func (p *vmmProc) events() []string {
	b, _ := os.ReadFile(p.eventFile)
	var out []string
	for _, chunk := range strings.Split(string(b), "\n\n") {
		if strings.TrimSpace(chunk) == "" {
			continue
		}
		var e client.Event
		if err := json.Unmarshal([]byte(chunk), &e); err != nil {
			out = append(out, fmt.Sprintf("<bad event %q: %v>", chunk, err))
			continue
		}
		out = append(out, e.Source+" "+e.Event)
	}
	return out
}

// vmEvents keeps the "vm ..." and "vmm ..." lifecycle events of evs.
func vmEvents(evs []string) []string {
	var out []string
	for _, e := range evs {
		if strings.HasPrefix(e, "vm ") || strings.HasPrefix(e, "vmm ") {
			out = append(out, e)
		}
	}
	return out
}

// wantEvents fails unless the lifecycle events in the event file are
// exactly want. The monitor writes asynchronously: it waits (bounded) for
// the file to catch up.
func (p *vmmProc) wantEvents(want ...string) {
	p.t.Helper()
	deadline := time.Now().Add(apiTimeout)
	for {
		got := vmEvents(p.events())
		if slices.Equal(got, want) {
			return
		}
		if len(got) > len(want) || time.Now().After(deadline) {
			p.t.Fatalf("event monitor:\n got %q\nwant %q", got, want)
		}
		time.Sleep(pollEvery)
	}
}

// streamEvents subscribes to the API event stream and collects the
// lifecycle events it delivers; stop ends the subscription and returns
// them.
func (p *vmmProc) streamEvents() (stop func() []string) {
	p.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ch, err := p.api.Events(ctx)
	if err != nil {
		cancel()
		p.t.Fatalf("event stream: %v", err)
	}
	var (
		mu  sync.Mutex
		got []string
	)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for e := range ch {
			mu.Lock()
			got = append(got, e.Source+" "+e.Event)
			mu.Unlock()
		}
	}()
	// The stream carries only what came after the subscription, and may
	// lag the event file a little: wait (bounded) until it has caught up
	// with what the file gained since then, ending on the same event.
	before := len(vmEvents(p.events()))
	return func() []string {
		deadline := time.Now().Add(apiTimeout)
		for {
			mu.Lock()
			s := vmEvents(got)
			mu.Unlock()
			f := vmEvents(p.events())
			caught := len(s) >= len(f)-before && (len(s) == 0 && len(f) == before || len(s) > 0 && len(f) > 0 && s[len(s)-1] == f[len(f)-1])
			if caught || time.Now().After(deadline) {
				break
			}
			time.Sleep(pollEvery)
		}
		cancel()
		<-done
		mu.Lock()
		defer mu.Unlock()
		return vmEvents(got)
	}
}

// nmiCount is the guest's latest "NMI=<n>" report (its /proc/interrupts
// NMI count), or -1.
func nmiCount(out string) int {
	n := -1
	for _, f := range strings.Fields(out) {
		if v, ok := strings.CutPrefix(f, "NMI="); ok {
			if i, err := strconv.Atoi(v); err == nil {
				n = i
			}
		}
	}
	return n
}

// infoConfig reads vm.info and decodes its config into cfg (a struct with
// the fields the test checks).
func (p *vmmProc) infoConfig(cfg any) *client.VmInfo {
	p.t.Helper()
	ctx, cancel := p.ctx()
	defer cancel()
	vi, err := p.api.Info(ctx)
	if err != nil {
		p.t.Fatal(err)
	}
	if err := json.Unmarshal(vi.Config, cfg); err != nil {
		p.t.Fatalf("vm.info config: %v", err)
	}
	return vi
}
