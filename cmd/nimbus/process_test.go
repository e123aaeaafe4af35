package main

// Process-level tests: the real nimbus and nimbus-remote binaries, built
// once in TestMain, driven over their API socket, signals and fds. No KVM
// is needed; where /dev/kvm is missing, vm.boot must say so.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var binDir string

func TestMain(m *testing.M) {
	os.Exit(func() int {
		dir, err := os.MkdirTemp("", "nimbus-bin-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		cmd := exec.Command("go", "build", "-o", dir+"/", "github.com/nimbus-vmm/nimbus/cmd/nimbus", "github.com/nimbus-vmm/nimbus/cmd/nimbus-remote")
		// Static, as `make build` and the sandbox build them: the
		// start-up benchmarks measure what ships.
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "building the binaries:", err)
			return 1
		}
		binDir = dir
		return m.Run()
	}())
}

func hasKVM() bool { _, err := os.Stat("/dev/kvm"); return err == nil }

// shortDir is a temp dir short enough for a Unix socket path.
func shortDir(t testing.TB) string {
	t.Helper()
	d, err := os.MkdirTemp("/tmp", "nb")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// proc is one running nimbus.
type proc struct {
	t      testing.TB
	cmd    *exec.Cmd
	stderr bytes.Buffer
	done   chan struct{}
	err    error // Wait's result once done is closed
}

func startNimbus(t testing.TB, extra []*os.File, args ...string) *proc {
	t.Helper()
	return startBinary(t, filepath.Join(binDir, "nimbus"), extra, args...)
}

// startBinary runs bin (a nimbus build, not necessarily this tree's: the
// benchmarks compare against a baseline binary).
func startBinary(t testing.TB, bin string, extra []*os.File, args ...string) *proc {
	t.Helper()
	p := &proc{t: t, done: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Stderr = &p.stderr
	p.cmd.ExtraFiles = extra
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			p.cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

// wait returns the exit status; the test fails if nimbus does not exit.
func (p *proc) wait() int {
	p.t.Helper()
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		p.t.Fatalf("nimbus did not exit; stderr:\n%s", p.stderr.String())
	}
	if ee, ok := p.err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	if p.err != nil {
		p.t.Fatal(p.err)
	}
	return 0
}

// waitSocket polls until path accepts connections.
func waitSocket(t testing.TB, p *proc, path string) {
	t.Helper()
	for i := 0; i < 1000; i++ {
		if c, err := net.Dial("unix", path); err == nil {
			c.Close()
			return
		}
		select {
		case <-p.done:
			t.Fatalf("nimbus exited before listening: %v\n%s", p.err, p.stderr.String())
		case <-time.After(5 * time.Millisecond):
		}
	}
	t.Fatalf("no API socket at %s", path)
}

func httpClient(path string) *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
	}}
}

type reply struct {
	status int
	body   string
}

func call(t testing.TB, c *http.Client, method, route, body string) reply {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, "http://localhost/api/v1/"+route, rd)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, route, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", method, route, err)
	}
	return reply{resp.StatusCode, string(b)}
}

func expect(t testing.TB, r reply, status int, body string) {
	t.Helper()
	if r.status != status || !strings.Contains(r.body, body) {
		t.Errorf("got %d %s; want %d containing %s", r.status, r.body, status, body)
	}
}

func assertGone(t testing.TB, paths ...string) {
	t.Helper()
	for _, p := range paths {
		if _, err := os.Lstat(p); err == nil {
			t.Errorf("%s still exists", p)
		}
	}
}

const testVM = `{"cpus":{"boot_vcpus":1,"max_vcpus":1},"memory":{"size":268435456},"payload":{"kernel":"/nonexistent/vmlinux"}}`

// TestAPIWalkthrough is issue 3's curl script, in Go.
func TestAPIWalkthrough(t *testing.T) {
	sock := filepath.Join(shortDir(t), "api.sock")
	p := startNimbus(t, nil, "--api-socket", "path="+sock)
	waitSocket(t, p, sock)
	if fi, err := os.Stat(sock); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode: %v %v", fi.Mode(), err)
	}
	c := httpClient(sock)

	expect(t, call(t, c, "GET", "vmm.ping", ""), 200, fmt.Sprintf(`"pid":%d`, p.cmd.Process.Pid))
	expect(t, call(t, c, "GET", "vm.info", ""), 404, `["Error from API","The VM info is not available","VM is not created"]`)
	expect(t, call(t, c, "PUT", "vm.create", testVM), 204, "")
	expect(t, call(t, c, "PUT", "vm.create", testVM), 500, `["Error from API","The VM could not be created","VM is already created"]`)
	expect(t, call(t, c, "GET", "vm.nonsense", ""), 404, `["Not Found"]`)
	expect(t, call(t, c, "GET", "vm.boot", ""), 400, "")
	expect(t, call(t, c, "PUT", "vm.add-disk", `{"path":`), 400, `"Failed to deserialize JSON"`)
	expect(t, call(t, c, "PUT", "vm.create", strings.Repeat(" ", 5<<20)), 400, `larger than the limit of 4194304`)
	expect(t, call(t, c, "PUT", "vm.add-disk", `{"path":"/tmp/a.img"}`), 204, "")
	var info struct {
		Config struct {
			Disks []map[string]any `json:"disks"`
		} `json:"config"`
		State string `json:"state"`
	}
	r := call(t, c, "GET", "vm.info", "")
	if err := json.Unmarshal([]byte(r.body), &info); err != nil || r.status != 200 {
		t.Fatalf("info: %d %s %v", r.status, r.body, err)
	}
	if d := info.Config.Disks; len(d) != 1 || d[0]["path"] != "/tmp/a.img" || d[0]["id"] != nil || info.State != "Created" {
		t.Errorf("info after cold add-disk: %s", r.body)
	}
	expect(t, call(t, c, "PUT", "vm.add-disk", `{"path":"/tmp/b.img","id":"mydisk"}`), 204, "")
	expect(t, call(t, c, "PUT", "vm.remove-device", `{"id":"mydisk"}`), 204, "")
	r = call(t, c, "PUT", "vm.boot", "")
	if !hasKVM() {
		expect(t, r, 500, `["Error from API","The VM could not boot","KVM is not available","open /dev/kvm","no such file or directory"]`)
	} else {
		t.Logf("boot with /dev/kvm: %d %s", r.status, r.body)
	}
	expect(t, call(t, c, "PUT", "vm.delete", ""), 204, "")
	expect(t, call(t, c, "PUT", "vm.delete", ""), 204, "")
	expect(t, call(t, c, "PUT", "vmm.shutdown", ""), 200, "")
	if code := p.wait(); code != 0 {
		t.Fatalf("exit %d; stderr:\n%s", code, p.stderr.String())
	}
	assertGone(t, sock)
}

// TestAPISmokeScript runs scripts/api-smoke.sh (curl) against the binary.
func TestAPISmokeScript(t *testing.T) {
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("curl not installed (scripts/install-deps.sh)")
	}
	out, err := exec.Command("bash", "../../scripts/api-smoke.sh", filepath.Join(binDir, "nimbus")).CombinedOutput()
	t.Logf("\n%s", out)
	if err != nil {
		t.Fatalf("api-smoke.sh: %v", err)
	}
	if !bytes.Contains(out, []byte("api-smoke: PASS")) {
		t.Fatal("no PASS line")
	}
}

// A second instance on the same path fails clearly and leaves the first
// one serving.
func TestSecondInstanceRefused(t *testing.T) {
	sock := filepath.Join(shortDir(t), "api.sock")
	p := startNimbus(t, nil, "--api-socket", sock)
	waitSocket(t, p, sock)
	q := startNimbus(t, nil, "--api-socket", "path="+sock)
	if code := q.wait(); code != 1 {
		t.Fatalf("second instance exit %d", code)
	}
	want := "Error: Nimbus exited with the following chain of errors:\n  0: Failed to start the VMM thread\n" +
		"  1: API socket \"" + sock + "\" is already in use by another running instance\n"
	if got := q.stderr.String(); got != want {
		t.Errorf("stderr:\n%s\nwant:\n%s", got, want)
	}
	expect(t, call(t, httpClient(sock), "GET", "vmm.ping", ""), 200, `"version"`)
	p.cmd.Process.Signal(syscall.SIGTERM)
	if code := p.wait(); code != 0 {
		t.Fatalf("first instance exit %d", code)
	}
	assertGone(t, sock)
}

// SIGTERM and SIGINT shut the VMM down: exit 0, socket and lock removed,
// "vmm shutdown" in the event file.
func TestSignalsExitCleanly(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			dir := shortDir(t)
			sock, evf := filepath.Join(dir, "api.sock"), filepath.Join(dir, "events")
			p := startNimbus(t, nil, "--api-socket", "path="+sock, "--event-monitor", "path="+evf)
			waitSocket(t, p, sock)
			expect(t, call(t, httpClient(sock), "PUT", "vm.create", testVM), 204, "")
			p.cmd.Process.Signal(sig)
			if code := p.wait(); code != 0 {
				t.Fatalf("exit %d; stderr:\n%s", code, p.stderr.String())
			}
			assertGone(t, sock)
			got := eventNames(t, readFile(t, evf))
			want := []string{"vmm starting", "vm deleted", "vmm shutdown"}
			if strings.Join(got, ",") != strings.Join(want, ",") {
				t.Errorf("events %q, want %q", got, want)
			}
		})
	}
}

func readFile(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// eventNames parses upstream's event file format: pretty JSON objects
// separated by "\n\n".
func eventNames(t testing.TB, b []byte) []string {
	t.Helper()
	var out []string
	for _, chunk := range strings.Split(string(b), "\n\n") {
		if strings.TrimSpace(chunk) == "" {
			continue
		}
		var ev struct{ Source, Event string }
		if err := json.Unmarshal([]byte(chunk), &ev); err != nil {
			t.Fatalf("event %q: %v", chunk, err)
		}
		out = append(out, ev.Source+" "+ev.Event)
	}
	return out
}

// Without --api-socket there is no API socket at all, as upstream.
func TestNoAPISocketWithoutOption(t *testing.T) {
	dir := shortDir(t)
	evf := filepath.Join(dir, "events")
	p := startNimbus(t, nil, "--event-monitor", "path="+evf)
	waitEvent(t, evf, "vmm starting")
	fds := procFds(t, p.cmd.Process.Pid)
	for _, target := range fds {
		if strings.HasPrefix(target, "socket:") {
			t.Errorf("nimbus holds a socket without --api-socket: %v", fds)
		}
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	if code := p.wait(); code != 0 {
		t.Fatalf("exit %d", code)
	}
	if fi, err := os.Stat(evf); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("event file mode (umask 077): %v %v", fi.Mode(), err)
	}
}

func waitEvent(t testing.TB, path, name string) {
	t.Helper()
	for i := 0; i < 1000; i++ {
		if b, err := os.ReadFile(path); err == nil && strings.Contains(string(b), "\n\n") {
			for _, n := range eventNames(t, b) {
				if n == name {
					return
				}
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("no %q event in %s", name, path)
}

// procFds lists /proc/<pid>/fd: fd -> link target.
func procFds(t testing.TB, pid int) map[string]string {
	t.Helper()
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, e := range ents {
		if target, err := os.Readlink(filepath.Join(dir, e.Name())); err == nil {
			out[e.Name()] = target
		}
	}
	return out
}

// Conch's way: a pre-bound listening socket as --api-socket fd=N and a
// socketpair as --event-monitor fd=N.
func TestInheritedFds(t *testing.T) {
	sock := filepath.Join(shortDir(t), "conch.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	lf, err := ln.File()
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false) // the child serves this path now
	ln.Close()
	defer lf.Close()
	pair, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	mine, theirs := os.NewFile(uintptr(pair[0]), "events-mine"), os.NewFile(uintptr(pair[1]), "events-theirs")
	defer mine.Close()

	// ExtraFiles[i] becomes fd 3+i in the child.
	p := startNimbus(t, []*os.File{lf, theirs}, "--api-socket", "fd=3", "--event-monitor", "fd=4")
	theirs.Close()
	lf.Close()

	rd := bufio.NewReader(mine)
	first := readEvent(t, rd)
	if first.Source != "vmm" || first.Event != "starting" {
		t.Fatalf("first event %+v", first)
	}
	c := httpClient(sock)
	expect(t, call(t, c, "GET", "vmm.ping", ""), 200, `"features":["kvm"]`)
	expect(t, call(t, c, "PUT", "vm.create", testVM), 204, "")
	call(t, c, "PUT", "vm.boot", "")
	if ev := readEvent(t, rd); ev.Source != "vm" || ev.Event != "booting" {
		t.Fatalf("event after boot %+v", ev)
	}
	expect(t, call(t, c, "PUT", "vmm.shutdown", ""), 200, "")
	if code := p.wait(); code != 0 {
		t.Fatalf("exit %d; stderr:\n%s", code, p.stderr.String())
	}
	var names []string
	for {
		ev, err := tryReadEvent(rd)
		if err != nil {
			break
		}
		names = append(names, ev.Source+" "+ev.Event)
	}
	if strings.Join(names, ",") != "vm deleted,vmm shutdown" {
		t.Errorf("events at exit %q", names)
	}
}

type event struct {
	Source, Event string
}

func readEvent(t testing.TB, rd *bufio.Reader) event {
	t.Helper()
	ev, err := tryReadEvent(rd)
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

// tryReadEvent reads one "\n\n"-terminated pretty JSON event.
func tryReadEvent(rd *bufio.Reader) (event, error) {
	var buf bytes.Buffer
	for !bytes.HasSuffix(buf.Bytes(), []byte("}\n\n")) {
		line, err := rd.ReadBytes('\n')
		buf.Write(line)
		if err != nil {
			return event{}, fmt.Errorf("reading event (%q so far): %w", buf.String(), err)
		}
	}
	var ev event
	err := json.Unmarshal(buf.Bytes(), &ev)
	return ev, err
}

// A payload on the command line is create + boot; without KVM the boot
// fails with upstream's chain and exit status 1, and nothing is left.
func TestCLIBootFailure(t *testing.T) {
	if hasKVM() {
		t.Skip("/dev/kvm exists: the boot outcome depends on the machine")
	}
	dir := shortDir(t)
	sock := filepath.Join(dir, "api.sock")
	evf := filepath.Join(dir, "ev")
	p := startNimbus(t, nil, "--kernel", "/nonexistent/vmlinux", "--api-socket", sock, "--event-monitor", "path="+evf)
	if code := p.wait(); code != 1 {
		t.Fatalf("exit %d", code)
	}
	want := "Error: Nimbus exited with the following chain of errors:\n" +
		"  0: Error booting VM\n  1: The VM could not boot\n  2: KVM is not available\n" +
		"  3: open /dev/kvm\n  4: no such file or directory\n"
	if got := p.stderr.String(); !strings.HasSuffix(got, want) {
		t.Errorf("stderr:\n%s\nwant suffix:\n%s", got, want)
	}
	assertGone(t, sock)
	got := strings.Join(eventNames(t, readFile(t, evf)), ",")
	if got != "vmm starting,vm booting,vm deleted,vmm shutdown" {
		t.Errorf("events %s", got)
	}
}

// Installed as cloud-hypervisor, the chain names Cloud Hypervisor.
func TestDisplayNameAsCloudHypervisor(t *testing.T) {
	dir := shortDir(t)
	ch := filepath.Join(dir, "cloud-hypervisor")
	if err := os.Symlink(filepath.Join(binDir, "nimbus"), ch); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "s")
	p := startNimbus(t, nil, "--api-socket", sock)
	waitSocket(t, p, sock)
	out, err := exec.Command(ch, "--api-socket", sock).CombinedOutput()
	if err == nil || !strings.HasPrefix(string(out), "Error: Cloud Hypervisor exited with the following chain of errors:\n") {
		t.Errorf("%v: %s", err, out)
	}
}

func TestVersion(t *testing.T) {
	out, err := exec.Command(filepath.Join(binDir, "nimbus"), "-V").Output()
	if err != nil || !strings.HasPrefix(string(out), "nimbus v") {
		t.Fatalf("%v: %q", err, out)
	}
}

// loadDuration is how long the concurrent-client test hammers the API:
// a few seconds by default, NIMBUS_LOAD_SECONDS=10 for the long run.
func loadDuration() time.Duration {
	if s, err := strconv.Atoi(os.Getenv("NIMBUS_LOAD_SECONDS")); err == nil && s > 0 {
		return time.Duration(s) * time.Second
	}
	return 2 * time.Second
}

// 64 clients hammer ping and info; every reply must be right, and the
// process must not gain fds.
func TestConcurrentClients(t *testing.T) {
	sock := filepath.Join(shortDir(t), "api.sock")
	p := startNimbus(t, nil, "--api-socket", sock)
	waitSocket(t, p, sock)
	setup := httpClient(sock)
	expect(t, call(t, setup, "PUT", "vm.create", testVM), 204, "")
	setup.CloseIdleConnections()
	before := len(procFds(t, p.cmd.Process.Pid))

	deadline := time.Now().Add(loadDuration())
	var wg sync.WaitGroup
	var mu sync.Mutex
	total, bad := 0, 0
	var firstBad string
	for i := 0; i < 64; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			c := httpClient(sock)
			defer c.CloseIdleConnections()
			n, nbad, msg := 0, 0, ""
			for time.Now().Before(deadline) {
				route, want := "vmm.ping", `"version":"`
				if (n+i)%2 == 1 {
					route, want = "vm.info", `"state":"Created"`
				}
				resp, err := c.Get("http://localhost/api/v1/" + route)
				n++
				if err != nil {
					nbad, msg = nbad+1, err.Error()
					continue
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 || !bytes.Contains(b, []byte(want)) {
					nbad, msg = nbad+1, fmt.Sprintf("%s: %d %s", route, resp.StatusCode, b)
				}
			}
			mu.Lock()
			total += n
			bad += nbad
			if msg != "" && firstBad == "" {
				firstBad = msg
			}
			mu.Unlock()
		}(i)
	}
	wg.Wait()
	t.Logf("%d requests in %v from 64 clients (%.0f/s)", total, loadDuration(), float64(total)/loadDuration().Seconds())
	if bad != 0 {
		t.Errorf("%d of %d replies wrong; first: %s", bad, total, firstBad)
	}
	// The clients have closed their connections; the server notices
	// each close on its next read, so allow it a moment.
	var after int
	for i := 0; i < 200; i++ {
		if after = len(procFds(t, p.cmd.Process.Pid)); after <= before {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if after > before {
		t.Errorf("fds grew from %d to %d: %v", before, after, procFds(t, p.cmd.Process.Pid))
	}
	expect(t, call(t, setup, "PUT", "vmm.shutdown", ""), 200, "")
	if code := p.wait(); code != 0 {
		t.Fatalf("exit %d", code)
	}
}

// nimbus-remote drives the same steps against the real process and prints
// ch-remote's outputs and error chains.
func TestNimbusRemote(t *testing.T) {
	dir := shortDir(t)
	sock := filepath.Join(dir, "api.sock")
	p := startNimbus(t, nil, "--api-socket", sock)
	waitSocket(t, p, sock)
	remote := func(stdin string, args ...string) (string, string, int) {
		t.Helper()
		cmd := exec.Command(filepath.Join(binDir, "nimbus-remote"), append([]string{"--api-socket", sock}, args...)...)
		cmd.Stdin = strings.NewReader(stdin)
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return out.String(), errb.String(), code
	}
	mustOK := func(stdin string, args ...string) string {
		t.Helper()
		out, errs, code := remote(stdin, args...)
		if code != 0 {
			t.Fatalf("nimbus-remote %v: exit %d\n%s", args, code, errs)
		}
		return out
	}
	if out := mustOK("", "ping"); !strings.Contains(out, fmt.Sprintf(`"pid":%d`, p.cmd.Process.Pid)) {
		t.Errorf("ping: %s", out)
	}
	_, errs, code := remote("", "info")
	wantInfo := "Error: nimbus-remote exited with the following chain of errors:\n  0: http client error\n" +
		"  1: Server responded with NotFound\n  2: Error from API\n  3: The VM info is not available\n  4: VM is not created\n"
	if code != 1 || errs != wantInfo {
		t.Errorf("info before create: exit %d\n%s\nwant\n%s", code, errs, wantInfo)
	}
	mustOK(testVM, "create", "-")
	mustOK("", "add-disk", "path=/tmp/r.img")
	mustOK("", "add-disk", "path=/tmp/s.img,id=rdisk")
	mustOK("", "remove-device", "rdisk")
	if out := mustOK("", "info"); !strings.Contains(out, `"path":"/tmp/r.img"`) || strings.Contains(out, "rdisk") {
		t.Errorf("info: %s", out)
	}
	_, errs, code = remote("", "boot")
	if !hasKVM() {
		wantBoot := "Error: nimbus-remote exited with the following chain of errors:\n  0: http client error\n" +
			"  1: Server responded with InternalServerError\n  2: Error from API\n  3: The VM could not boot\n" +
			"  4: KVM is not available\n  5: open /dev/kvm\n  6: no such file or directory\n"
		if code != 1 || errs != wantBoot {
			t.Errorf("boot: exit %d\n%s\nwant\n%s", code, errs, wantBoot)
		}
	}
	mustOK("", "delete")
	mustOK("", "delete")
	mustOK("", "shutdown-vmm")
	if code := p.wait(); code != 0 {
		t.Fatalf("exit %d", code)
	}
	assertGone(t, sock)
}
