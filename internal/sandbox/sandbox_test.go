package sandbox

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nimbus-vmm/nimbus/internal/guestimage"

	"github.com/nimbus-vmm/nimbus/internal/hostkvm"
)

// lockedBuffer records each Write separately, to show output is streamed
// line by line.
type lockedBuffer struct {
	mu     sync.Mutex
	writes []string
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.writes = append(b.writes, string(p))
	return len(p), nil
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.Join(b.writes, "")
}

func TestMissingQEMUIsAClearError(t *testing.T) {
	_, err := Run(context.Background(), Config{Args: []string{"true"}, Mode: QEMU, QEMU: "nimbus-no-such-qemu"})
	if !errors.Is(err, ErrMissingTool) || !strings.Contains(err.Error(), "qemu-system-x86") {
		t.Fatalf("err = %v, wanted ErrMissingTool naming the qemu-system-x86 package", err)
	}
	bb := filepath.Join(t.TempDir(), "busybox")
	os.WriteFile(bb, []byte("not elf"), 0o755)
	_, err = Run(context.Background(), Config{Args: []string{"true"}, Mode: QEMU, QEMU: "sh", Busybox: bb})
	if !errors.Is(err, ErrMissingTool) || !strings.Contains(err.Error(), "busybox-static") {
		t.Fatalf("err = %v, wanted ErrMissingTool naming busybox-static", err)
	}
}

// fakeQEMU is a stand-in for qemu-system-x86_64 that checks the initramfs
// it is given and prints what a sandbox guest would print.
const fakeQEMU = `#!/bin/sh
while [ $# -gt 0 ]; do case "$1" in -initrd) initrd=$2; shift;; esac; shift; done
nonce=$(grep -ao 'NIMBUS-SANDBOX-START [0-9a-f]*' "$initrd" | head -n1 | cut -d' ' -f2)
grep -q 'shipped-content' "$initrd" || { echo "file not shipped" >&2; exit 1; }
grep -q "export FOO='a b'" "$initrd" || { echo "env not set" >&2; exit 1; }
case "$FAKE" in
hang) exec sleep 60 ;;
silent|alive)
	printf 'NIMBUS-SANDBOX-INIT %s\r\nNIMBUS-SANDBOX-START %s\r\nworking\r\n' "$nonce" "$nonce"
	while :; do
		[ "$FAKE" = alive ] && printf 'NIMBUS-SANDBOX-ALIVE %s 0.50 0.40 0.30 MemAvailable: 123 kB\r\n' "$nonce"
		sleep 0.2
	done ;;
panic) printf 'Kernel panic - not syncing: boom\r\n'; exit 0 ;;
esac
printf '[    0.000000] Linux version noise\r\n'
printf 'NIMBUS-SANDBOX-INIT %s\r\n' "$nonce"
printf 'nimbus-sandbox: insmod x failed\r\n'
printf 'NIMBUS-SANDBOX-START %s\r\n' "$nonce"
printf 'hello\r\n'
printf 'NIMBUS-SANDBOX-EXIT fakenonce 0\r\n'
printf 'partialNIMBUS-SANDBOX-EXIT %s 3\r\n' "$nonce"
printf 'reboot: Power down\r\n'
`

func fakeSetup(t *testing.T) Config {
	dir := t.TempDir()
	q := filepath.Join(dir, "qemu")
	os.WriteFile(q, []byte(fakeQEMU), 0o755)
	msg := filepath.Join(dir, "msg")
	os.WriteFile(msg, []byte("shipped-content\n"), 0o644)
	img := filepath.Join(dir, "vmlinuz")
	os.WriteFile(img, []byte("kernel"), 0o644)
	bb, err := exec.LookPath("busybox")
	if err != nil {
		// Any static ELF passes the busybox check; the fake never runs it.
		t.Skip("no static busybox on this host (Debian package busybox-static)")
	}
	return Config{
		Args: []string{"sh", "-c", "echo hi"}, Files: []File{{Host: msg, Guest: "/data/msg"}},
		Env: []string{"FOO=a b"}, Mode: QEMU, QEMU: q, Busybox: bb, Modules: []string{},
		Kernel: &Kernel{Image: img, ModulesDir: dir, Version: "fake"}, Timeout: time.Minute,
	}
}

func TestRunParsesConsoleAndReturnsStatus(t *testing.T) {
	cfg := fakeSetup(t)
	var out lockedBuffer
	var log bytes.Buffer
	cfg.Stdout, cfg.Log = &out, &log
	res, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if res.ExitStatus != 3 {
		t.Fatalf("exit status %d, wanted 3", res.ExitStatus)
	}
	want := []string{"hello\n", "NIMBUS-SANDBOX-EXIT fakenonce 0\n", "partial\n"}
	if strings.Join(out.writes, "|") != strings.Join(want, "|") {
		t.Fatalf("stdout writes %q, wanted %q", out.writes, want)
	}
	if !strings.Contains(log.String(), "nimbus-sandbox: insmod x failed") || !strings.Contains(log.String(), "L1 boot") {
		t.Fatalf("log lacks the init error or the figures:\n%s", log.String())
	}
}

func TestRunReportsBootFailureAndTimeout(t *testing.T) {
	cfg := fakeSetup(t)
	t.Setenv("FAKE", "panic")
	_, err := Run(context.Background(), cfg)
	if !errors.Is(err, ErrBoot) || !strings.Contains(err.Error(), "Kernel panic") {
		t.Fatalf("panic: err = %v, wanted ErrBoot with the console tail", err)
	}
	t.Setenv("FAKE", "hang")
	cfg.Timeout = 500 * time.Millisecond
	_, err = Run(context.Background(), cfg)
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("hang: err = %v, wanted ErrTimeout", err)
	}
}

// TestRunStopsAStalledSandbox: a console silent for Stall, or a failing
// Check, kills QEMU with ErrStalled and the last heartbeat in the error;
// heartbeats keep a quiet command alive and never reach its output.
func TestRunStopsAStalledSandbox(t *testing.T) {
	cfg := fakeSetup(t)
	var log bytes.Buffer
	cfg.Log = &log
	t.Setenv("FAKE", "silent")
	cfg.Stall = 1500 * time.Millisecond
	start := time.Now()
	_, err := Run(context.Background(), cfg)
	if !errors.Is(err, ErrStalled) || !strings.Contains(err.Error(), "silent for") || !strings.Contains(err.Error(), "working") {
		t.Fatalf("silent: err = %v, wanted ErrStalled naming the silence, with the console tail", err)
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Fatalf("the stalled sandbox took %v to stop", d)
	}
	if !strings.Contains(log.String(), "QEMU monitor") {
		t.Fatalf("log does not report the monitor attempt:\n%s", log.String())
	}

	t.Setenv("FAKE", "alive")
	var out lockedBuffer
	cfg.Stdout = &out
	checks := 0
	cfg.Check = func() error {
		if checks++; checks == 3 {
			return errors.New("gave up")
		}
		return nil
	}
	_, err = Run(context.Background(), cfg)
	if !errors.Is(err, ErrStalled) || !strings.Contains(err.Error(), "gave up") {
		t.Fatalf("alive: err = %v, wanted ErrStalled from Check (the heartbeat keeps Stall quiet)", err)
	}
	if got := out.String(); got != "working\n" {
		t.Fatalf("command output %q: heartbeats must not reach it", got)
	}
}

// TestReporterTries: each failed try is counted against the test that
// failed, or after a panic, timeout or death against the test that was
// running; the next boot skips what passed; a test that failed
// MaxReruns+1 times is given up (skipped, the package fails); a package
// with no test to blame is finished after as many tries.
func TestReporterTries(t *testing.T) {
	var out bytes.Buffer
	r := newTestReporter(&out, []testPkg{{ImportPath: "x/a"}, {ImportPath: "x/b"}, {ImportPath: "x/c"}})
	r.setNonce("n")
	r.Write([]byte("NIMBUS-TEST-BEGIN n 0\n=== RUN   TestA\n--- PASS: TestA (1.00s)\n=== RUN   TestB\n=== RUN   TestB/sub\n" +
		"    --- FAIL: TestB/sub (0.50s)\n--- FAIL: TestB (1.00s)\nFAIL\nNIMBUS-TEST-END n 0 1\n"))
	r.Write([]byte("NIMBUS-TEST-BEGIN n 1\n=== RUN   TestC\n--- SKIP: TestC (0.00s)\n=== RUN   TestD\npanic: test timed out\nNIMBUS-TEST-END n 1 2\n"))
	r.Write([]byte("NIMBUS-TEST-BEGIN n 2\n=== RUN   TestE\n[ 9.9] Kernel panic\n"))
	r.flush()
	r.died()
	if got := r.todo(true); !slices.Equal(got, []int{0, 1, 2}) {
		t.Fatalf("todo %v", got)
	}
	for i, want := range []string{`^(TestA)$`, `^(TestC)$`, ""} {
		if got := r.skipPattern(i); got != want {
			t.Errorf("package %d: skip %q, want %q", i, got, want)
		}
	}
	if got, want := r.triesNote(0), " (1 passed before; TestB try 2 of 4)"; got != want {
		t.Errorf("note %q, want %q", got, want)
	}
	if got := r.fails[1]["TestD"] + r.fails[2]["TestE"]; got != 2 {
		t.Errorf("a timeout and a death count against the running test: %v %v", r.fails[1], r.fails[2])
	}
	for try := 2; try <= MaxReruns+1; try++ {
		r.Write([]byte("NIMBUS-TEST-BEGIN n 0\n=== RUN   TestB\n--- FAIL: TestB (1.00s)\nNIMBUS-TEST-END n 0 1\n"))
		r.Write([]byte("NIMBUS-TEST-BEGIN n 1\nFAIL\nNIMBUS-TEST-END n 1 1\n")) // nothing to blame
		r.Write([]byte("NIMBUS-TEST-BEGIN n 2\n=== RUN   TestE\n--- PASS: TestE (1.00s)\nNIMBUS-TEST-END n 2 0\n"))
		if try == MaxReruns+1 {
			break
		}
		if got := r.todo(true); !slices.Equal(got, []int{0, 1}) {
			t.Fatalf("try %d: todo %v", try, got)
		}
	}
	if got := r.skipPattern(0); got != `^(TestA|TestB)$` {
		t.Fatalf("given up TestB is skipped with what passed: %q", got)
	}
	if got := r.todo(true); !slices.Equal(got, []int{0, 1}) {
		t.Fatalf("after the last try: todo %v (x/a goes on without TestB, x/b once more)", got)
	}
	r.Write([]byte("NIMBUS-TEST-BEGIN n 0\nNIMBUS-TEST-END n 0 0\n"))
	r.Write([]byte("NIMBUS-TEST-BEGIN n 1\nFAIL\nNIMBUS-TEST-END n 1 1\n"))
	if got := r.todo(true); len(got) != 0 {
		t.Fatalf("todo %v: x/b's package failure has had its tries", got)
	}
	if g := r.gaveUp(0); !slices.Equal(g, []string{"TestB"}) || r.status[0] != 0 || !r.hadFailures(2) || len(r.gaveUp(2)) != 0 {
		t.Fatalf("gave up %v, status %v", g, r.status)
	}
	if got, want := r.triesNote(2), " (1 passed before)"; got != want {
		t.Errorf("TestE passed on its second try: note %q, want %q", got, want)
	}
	// Without rerun a package that ended is finished; one a death cut
	// short is not.
	r = newTestReporter(&out, []testPkg{{ImportPath: "x/a"}, {ImportPath: "x/b"}})
	r.setNonce("n")
	r.Write([]byte("NIMBUS-TEST-BEGIN n 0\n--- FAIL: TestA (1.00s)\nNIMBUS-TEST-END n 0 1\nNIMBUS-TEST-BEGIN n 1\n"))
	r.died()
	if got := r.todo(false); !slices.Equal(got, []int{1}) {
		t.Fatalf("without rerun: todo %v", got)
	}
}

// TestReporterSkipPattern: the tests that passed before the sandbox died
// (no end marker) are skipped in the next boot; subtests do not count.
func TestReporterSkipPattern(t *testing.T) {
	var out bytes.Buffer
	r := newTestReporter(&out, []testPkg{{ImportPath: "x/a"}})
	r.setNonce("n")
	r.Write([]byte("NIMBUS-TEST-BEGIN n 0\n--- PASS: TestA (1.00s)\n    --- PASS: TestB/sub (0.50s)\n--- PASS: TestB.x (0.1s)\n--- FAIL: TestC (2.00s)\n=== RUN   TestD\n[ 9.9] Kernel panic\n"))
	if r.status[0] != -1 {
		t.Fatalf("status %d: the package has not ended", r.status[0])
	}
	if got, want := r.skipPattern(0), `^(TestA|TestB\.x)$`; got != want {
		t.Errorf("skip %q, want %q", got, want)
	}
}

func TestReporterOverrun(t *testing.T) {
	var out bytes.Buffer
	r := newTestReporter(&out, []testPkg{{ImportPath: "x/a"}})
	r.setNonce("n1")
	if err := r.overrun(0); err != nil {
		t.Fatalf("no package running: %v", err)
	}
	r.Write([]byte("NIMBUS-TEST-BEGIN n1 0\n"))
	time.Sleep(time.Millisecond)
	if err := r.overrun(0); err == nil || !strings.Contains(err.Error(), "x/a has run for") {
		t.Fatalf("running package past its limit: %v", err)
	}
	if err := r.overrun(time.Hour); err != nil {
		t.Fatalf("within its limit: %v", err)
	}
	r.Write([]byte("NIMBUS-TEST-END n1 0 0\n"))
	if err := r.overrun(0); err != nil {
		t.Fatalf("after the end marker: %v", err)
	}
}

// TestHostModeShipsAtGuestPaths: on the host the command sees each shipped
// file and directory at its guest path (also from inside a shell string),
// the host's own tree beside them, nimbus on its PATH; the host's / gains
// nothing.
func TestHostModeShipsAtGuestPaths(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("host mode needs root")
	}
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "msg"), []byte("from-host\n"), 0o644)
	os.Mkdir(filepath.Join(dir, "d"), 0o755)
	os.WriteFile(filepath.Join(dir, "d", "f"), []byte("in-dir\n"), 0o644)
	bin := t.TempDir()
	os.WriteFile(filepath.Join(bin, "nimbus"), []byte("#!/bin/sh\necho fake-nimbus \"$@\"\n"), 0o755)
	var out, log bytes.Buffer
	res, err := Run(context.Background(), Config{
		Mode: Host,
		Files: []File{
			{Host: filepath.Join(dir, "msg"), Guest: "/data/msg"},
			{Host: filepath.Join(dir, "d"), Guest: "/nimbus/guest"},
			{Host: filepath.Join(dir, "msg"), Guest: "/nimbus/guest/f"}, // over a file of a shipped dir
			{Host: filepath.Join(dir, "msg"), Guest: "/vmlinuz-nimbus-test"},
		},
		Env:       []string{"MSG=/data/msg"},
		Dir:       "/nimbus/guest",
		NimbusBin: bin,
		Args: []string{"sh", "-c", `cat /data/msg "$MSG" f /vmlinuz-nimbus-test; pwd; nimbus --version; ` +
			`test -r /etc/os-release && echo host-tree; touch /nimbus/new && echo tmpfs-writable; exit 3`},
		Stdout: &out, Log: &log,
	})
	if err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	want := "from-host\nfrom-host\nfrom-host\nfrom-host\n/nimbus/guest\nfake-nimbus --version\nhost-tree\ntmpfs-writable\n"
	if res.ExitStatus != 3 || out.String() != want {
		t.Fatalf("status %d output %q, wanted 3 and %q", res.ExitStatus, out.String(), want)
	}
	if !strings.HasPrefix(log.String(), "nimbus-sandbox: ") || !strings.Contains(log.String(), "running on the host (-mode host)") {
		t.Errorf("log does not say where the command ran:\n%s", log.String())
	}
	for _, p := range []string{"/data", "/nimbus", "/vmlinuz-nimbus-test"} {
		if _, err := os.Lstat(p); err == nil {
			t.Errorf("%s exists on the host after the run", p)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "d", "f")); string(b) != "in-dir\n" {
		t.Errorf("the bind over a shipped dir's file changed the host file: %q", b)
	}
}

// TestHostModeRefusesPathsInHostDirs: a guest path that would need a new
// mount point inside a host directory is refused before anything runs.
func TestHostModeRefusesPathsInHostDirs(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("host mode needs root")
	}
	f := filepath.Join(t.TempDir(), "f")
	os.WriteFile(f, nil, 0o644)
	_, err := Run(context.Background(), Config{Mode: Host, NimbusBin: t.TempDir(),
		Files: []File{{Host: f, Guest: "/usr/nimbus-sandbox-test/f"}}, Args: []string{"true"}})
	if !errors.Is(err, ErrBoot) || !strings.Contains(err.Error(), "/usr/nimbus-sandbox-test/f lies in host directory /usr/nimbus-sandbox-test") {
		t.Fatalf("err = %v", err)
	}
	if _, err := os.Stat("/usr/nimbus-sandbox-test"); err == nil {
		t.Fatal("the refused mount point was created on the host")
	}
}

func TestInitScriptQuoting(t *testing.T) {
	s := initScript("n", []string{"/lib/modules/kvm.ko"}, Config{Args: []string{"echo", "it's"}, Env: []string{"A=x'y"}, Dir: "/"})
	for _, want := range []string{`'echo' 'it'\''s' </dev/null`, `export A='x'\''y'`, "insmod /lib/modules/kvm.ko", "poweroff -f"} {
		if !strings.Contains(s, want) {
			t.Fatalf("init lacks %q:\n%s", want, s)
		}
	}
	if out, err := exec.Command("sh", "-n", "-c", s).CombinedOutput(); err != nil {
		t.Fatalf("sh -n: %v %s", err, out)
	}
	// The sandbox's GOMAXPROCS comes first, so that a caller's Env wins.
	s = initScript("n", nil, Config{Args: []string{"true"}, Env: []string{"GOMAXPROCS=2"}, Dir: "/"})
	if d, e := strings.Index(s, "export GOMAXPROCS=1\n"), strings.Index(s, "export GOMAXPROCS='2'"); d < 0 || e < d {
		t.Fatalf("init must export GOMAXPROCS=1 before the caller's env:\n%s", s)
	}
	s = initScript("n", nil, Config{Args: []string{"true"}, Dir: "/", affinity: "0"})
	if !strings.Contains(s, "\ntaskset -c 0 'true' </dev/null") {
		t.Fatalf("the command is not pinned to CPU 0:\n%s", s)
	}
	if _, err := Run(context.Background(), Config{Args: []string{"x"}, Env: []string{"1A=b"}}); err == nil {
		t.Fatal("bad env name accepted")
	}
}

func TestParseKernelDepends(t *testing.T) {
	out := "linux-image-amd64\n  Depends: linux-image-6.1.0-56-amd64\n  Recommends: firmware\n"
	if got := parseKernelDepends([]byte(out)); got != "linux-image-6.1.0-56-amd64" {
		t.Fatalf("got %q", got)
	}
	if got := parseKernelDepends([]byte("N: Unable to locate package\n")); got != "" {
		t.Fatalf("got %q from garbage", got)
	}
}

// TestBootRealSandbox boots the real QEMU TCG sandbox once: the command sees
// the shipped file, the environment and /dev/kvm, and its exit status 3
// comes back.
func TestBootRealSandbox(t *testing.T) {
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		t.Skip("qemu-system-x86_64 not installed (bash scripts/install-deps.sh); skipping the real boot")
	}
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "msg"), []byte("shipped\n"), 0o644)
	var out, log lockedBuffer
	res, err := Run(context.Background(), Config{
		Mode:   QEMU,
		Files:  []File{{Host: filepath.Join(dir, "msg"), Guest: "/data/msg"}},
		Env:    []string{"FOO=bar baz"},
		Args:   []string{"sh", "-c", `cat /data/msg; echo "FOO=$FOO"; ls -l /dev/kvm; grep Cpus_allowed_list /proc/self/status; exit 3`},
		Stdout: &out, Log: &log, Timeout: 5 * time.Minute,
	})
	if err != nil {
		t.Fatalf("%v\nlog:\n%s", err, log.String())
	}
	t.Logf("%s", log.String())
	if res.BootTime <= 0 || res.CommandTime <= 0 {
		t.Fatalf("boot time %v, command time %v: init markers not seen", res.BootTime, res.CommandTime)
	}
	got := out.String()
	if res.ExitStatus != 3 || !strings.HasPrefix(got, "shipped\nFOO=bar baz\ncrw") || !strings.Contains(got, "/dev/kvm") {
		t.Fatalf("status %d output:\n%s", res.ExitStatus, got)
	}
	if !strings.Contains(got, "Cpus_allowed_list:\t0-1\n") {
		t.Errorf("the command does not run on both sandbox CPUs:\n%s", got)
	}
	if len(out.writes) < 3 {
		t.Fatalf("output came in %d writes, wanted one per line", len(out.writes))
	}
}

// TestRealSandboxStallReport stops a real sandbox as stalled and checks
// the report: QEMU's monitor names the vCPUs' registers and local APICs
// and the L1 kernel answers the SysRq keys on the console before QEMU is
// killed.
func TestRealSandboxStallReport(t *testing.T) {
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		t.Skip("qemu-system-x86_64 not installed (bash scripts/install-deps.sh); skipping the real boot")
	}
	if testing.Short() {
		t.Skip("boots QEMU; skipped with -short")
	}
	var out, log lockedBuffer
	_, err := Run(context.Background(), Config{
		Mode: QEMU, Args: []string{"sh", "-c", "echo ready; sleep 600"}, Modules: []string{},
		Stdout: &out, Log: &log, Timeout: 5 * time.Minute,
		Check: func() error {
			if strings.Contains(out.String(), "ready") {
				return errors.New("test gives up")
			}
			return nil
		},
	})
	if !errors.Is(err, ErrStalled) {
		t.Fatalf("err = %v, wanted ErrStalled\nlog:\n%s", err, log.String())
	}
	if !strings.Contains(log.String(), "nimbus-sandbox: qemu: RIP=") {
		t.Errorf("no vCPU registers from the monitor in the log:\n%s", log.String())
	}
	for _, want := range []string{"nimbus-sandbox: qemu: dumping local APIC state for CPU 1", "nimbus-sandbox: qemu: APR ", "nimbus-sandbox: qemu: IRR"} {
		if !strings.Contains(log.String(), want) {
			t.Errorf("no %q from the local APICs in the log:\n%s", want, log.String())
		}
	}
	// The backtraces show only if SysRq 8 raised the quiet kernel's
	// console log level first.
	for _, want := range []string{"sysrq: Show Blocked State", "NMI backtrace for cpu", "Show clockevent devices"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("the L1 kernel's console has no %q:\n%s", want, out.String())
		}
	}
}

func TestParseLdd(t *testing.T) {
	out := "\tlinux-vdso.so.1 (0x00007ffc)\n\tlibz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x00007f)\n\t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n"
	libs, err := parseLdd([]byte(out))
	if err != nil || strings.Join(libs, ",") != "/lib/x86_64-linux-gnu/libz.so.1,/lib64/ld-linux-x86-64.so.2" {
		t.Fatalf("libs %v err %v", libs, err)
	}
	if _, err := parseLdd([]byte("\tlibfoo.so.1 => not found\n")); !errors.Is(err, ErrMissingTool) {
		t.Fatalf("missing lib: err = %v", err)
	}
}

// TestScriptToolFiles: a script tool ships with its interpreter and the
// interpreter's libraries; a binary, with its own.
func TestScriptToolFiles(t *testing.T) {
	dir := t.TempDir()
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip(err)
	}
	sh, _ = filepath.EvalSymlinks(sh)
	script := filepath.Join(dir, "tool")
	if err := os.WriteFile(script, []byte("#!"+sh+" -e\necho hi\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	files, err := HostToolFiles(script)
	if err != nil {
		t.Fatal(err)
	}
	hosts := map[string]bool{}
	for _, f := range files {
		hosts[f.Host] = true
	}
	if !hosts[script] || !hosts[sh] || len(files) < 3 {
		t.Fatalf("files %+v: want the script, %s and its libraries", files, sh)
	}
	if _, ok := scriptInterpreter(sh); ok {
		t.Fatalf("%s taken for a script", sh)
	}
}

func TestTestReporterPrintsGoTestLines(t *testing.T) {
	var out bytes.Buffer
	r := newTestReporter(&out, []testPkg{{ImportPath: "x/a"}, {ImportPath: "x/b"}})
	r.setNonce("n1")
	r.Write([]byte("NIMBUS-TEST-BEGIN n1 0\n=== RUN   TestA\n--- PASS: TestA (0.00s)\nPASS\nNIMBUS-TEST-END n1 0 0\n"))
	r.Write([]byte("NIMBUS-TEST-BEGIN n1 1\n--- FAIL: TestB (0.00s)\nNIMBUS-TEST-END n2 1 0\nFAIL\nNIMBUS-TEST-END n1 1 1\npartial"))
	r.flush()
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	want := []string{"=== RUN   TestA", "--- PASS: TestA (0.00s)", "PASS", "ok  \tx/a\t", "--- FAIL: TestB (0.00s)",
		"NIMBUS-TEST-END n2 1 0", "FAIL", "FAIL\tx/b\t", "partial"}
	if len(lines) != len(want) {
		t.Fatalf("output:\n%s", out.String())
	}
	for i, w := range want {
		if !strings.HasPrefix(lines[i], w) {
			t.Fatalf("line %d = %q, wanted prefix %q\n%s", i, lines[i], w, out.String())
		}
	}
	if r.status[0] != 0 || r.status[1] != 1 {
		t.Fatalf("status %v, wanted [0 1]", r.status)
	}
}

// TestRunTestsOnHost drives the whole `nimbus-sandbox test` pipeline (go
// list, go test -c, go build ./cmd/..., kernel and guest assets, the test
// script, the reporter) in host mode, with a passing and a failing selection.
func TestRunTestsOnHost(t *testing.T) {
	if testing.Short() {
		t.Skip("builds test binaries; skipped with -short")
	}
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("no go tool on PATH")
	}
	run := func(sel string) (TestSummary, string, error) {
		var out bytes.Buffer
		sum, err := RunTests(context.Background(), TestConfig{
			Packages: []string{"./internal/guestimage", "./internal/testnet"},
			Run:      sel, Mode: Host, Stdout: &out, Timeout: 5 * time.Minute,
		})
		return sum, out.String(), err
	}
	sum, out, err := run("^TestRunParam$")
	if err != nil || sum != (TestSummary{Passed: 1, NoTests: 1}) {
		t.Fatalf("passing run: %+v err %v\n%s", sum, err, out)
	}
	for _, want := range []string{"--- PASS: TestRunParam", "ok  \tgithub.com/nimbus-vmm/nimbus/internal/guestimage\t",
		"?   \tgithub.com/nimbus-vmm/nimbus/internal/testnet\t[no test files]", "\n1 passed, 0 failed\n"} {
		if !strings.Contains(out, want) {
			t.Fatalf("passing run output lacks %q:\n%s", want, out)
		}
	}
	if hostkvm.Host().BootsStockGuests() {
		return // the failing selection below relies on guests not booting here
	}
	// NIMBUS_REQUIRE_KVM=1 where stock guests do not boot makes the boot
	// test fail.
	sum, out, _ = run("^TestBootUnderQEMUKVM$")
	if sum.Failed != 1 || sum.Passed != 0 || !strings.Contains(out, "FAIL\tgithub.com/nimbus-vmm/nimbus/internal/guestimage\t") ||
		!strings.Contains(out, "\n0 passed, 1 failed\n") {
		t.Fatalf("failing run: %+v\n%s", sum, out)
	}

	// With Rerun, a package that fails once and then passes counts as
	// passed, and the summary says so.
	var log bytes.Buffer
	var rout bytes.Buffer
	sum, err = RunTests(context.Background(), TestConfig{
		Packages: []string{"./internal/sandbox"}, Run: "^TestFailsOnce$", Mode: Host, Rerun: true,
		Env:    []string{envFailOnce + "=" + filepath.Join(t.TempDir(), "failed-once")},
		Stdout: &rout, Log: &log, Timeout: 5 * time.Minute,
	})
	if err != nil || sum != (TestSummary{Passed: 1, PassedOnRerun: 1}) ||
		!strings.Contains(log.String(), "boot 2: github.com/nimbus-vmm/nimbus/internal/sandbox (0 passed before; TestFailsOnce try 2 of 4)") ||
		!strings.Contains(rout.String(), "\n1 passed (1 only on a rerun after failing), 0 failed\n") {
		t.Fatalf("rerun: %+v err %v\nlog:\n%s\noutput:\n%s", sum, err, log.String(), rout.String())
	}
}

// envFailOnce names the flag file TestFailsOnce keeps between runs.
const envFailOnce = "NIMBUS_SANDBOX_TEST_FAIL_ONCE"

// TestFailsOnce fails when its flag file is missing (creating it) and
// passes when it exists: TestRunTestsOnHost's flaky package. It skips
// unless that test runs it.
func TestFailsOnce(t *testing.T) {
	flag := os.Getenv(envFailOnce)
	if flag == "" {
		t.Skip("run by TestRunTestsOnHost")
	}
	if _, err := os.Stat(flag); err == nil {
		return
	}
	if err := os.WriteFile(flag, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Fatal("failing once, as asked")
}

// TestDefaultModulesIncludeNetworking: the sandbox guest loads the KVM and
// networking modules by default, they resolve (with bridge's stp and llc)
// in the cached Debian kernel, and init brings loopback up.
func TestDefaultModulesIncludeNetworking(t *testing.T) {
	mods := DefaultModules()
	for _, want := range []string{"kvm_amd", "tun", "veth", "bridge"} {
		if !slices.Contains(mods, want) {
			t.Errorf("DefaultModules() = %v lacks %s", mods, want)
		}
	}
	mods[0] = "changed"
	if DefaultModules()[0] != KVMModules[0] {
		t.Fatal("DefaultModules returned a slice aliasing KVMModules")
	}
	s := initScript("n", nil, Config{Args: []string{"true"}, Dir: "/"})
	if !strings.Contains(s, "ip link set lo up") || !strings.Contains(s, "mkdir -p /run/netns") {
		t.Fatalf("init does not set up loopback and /run/netns:\n%s", s)
	}

	dir, err := DefaultCacheDir()
	if err != nil {
		t.Skip(err)
	}
	cur, err := os.ReadFile(filepath.Join(dir, "kernel", "current"))
	if err != nil {
		t.Skip("no cached kernel (make kernel)")
	}
	k, err := findKernel(filepath.Join(dir, "kernel", strings.TrimSpace(string(cur))))
	if err != nil {
		t.Skip(err)
	}
	ix, err := guestimage.LoadModuleIndex(k.ModulesDir)
	if err != nil {
		t.Fatal(err)
	}
	res, err := ix.Resolve(DefaultModules()...)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, m := range res {
		names = append(names, m.Name)
	}
	for _, want := range []string{"kvm", "kvm_amd", "tun", "veth", "stp", "llc", "bridge"} {
		if !slices.Contains(names, want) {
			t.Errorf("resolved %v lacks %s", names, want)
		}
	}
}

// TestHoldKVMScript runs the preamble with a stand-in holder: it waits for
// "ready", and names a holder that never gets there.
func TestHoldKVMScript(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good")
	os.WriteFile(good, []byte("#!/bin/sh\n[ \"$1\" = hold-kvm ] && sleep 0.3 && echo ready && exec sleep 30\n"), 0o755)
	out, err := exec.Command("sh", "-c", holdKVMScript(good, filepath.Join(dir, "out1"))+"echo after; kill $hold").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "after" {
		t.Fatalf("good holder: %v %q", err, out)
	}
	bad := filepath.Join(dir, "it's bad")
	os.WriteFile(bad, []byte("#!/bin/sh\necho no /dev/kvm\n"), 0o755)
	out, err = exec.Command("sh", "-c", holdKVMScript(bad, filepath.Join(dir, "out2"))).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "nimbus-sandbox: hold-kvm did not start: no /dev/kvm") {
		t.Fatalf("bad holder: %v %q", err, out)
	}
}

// TestQEMUKnobs: a NIMBUS_SANDBOX_SMP that is not a positive count, or a
// NIMBUS_SANDBOX_AFFINITY that is neither a CPU list nor "all", is
// refused before QEMU starts, naming the variable, not silently ignored.
func TestQEMUKnobs(t *testing.T) {
	bad := map[string][]string{EnvQEMUSMP: {"two", "0", "-1"}, EnvQEMUAffinity: {"one", "0;reboot", "1-", "0,,1"}}
	for env, values := range bad {
		for _, v := range values {
			t.Run(env+"="+v, func(t *testing.T) {
				t.Setenv(env, v)
				_, err := runQEMU(context.Background(), Config{Args: []string{"true"}})
				if errors.Is(err, ErrMissingTool) {
					t.Skip(err)
				}
				if err == nil || !strings.Contains(err.Error(), env+"=\""+v+"\"") {
					t.Fatalf("got %v", err)
				}
			})
		}
	}
	for _, good := range []string{"0", "0-1", "0,1", "1,3-5"} {
		if !cpuList.MatchString(good) {
			t.Errorf("CPU list %q refused", good)
		}
	}
}

// TestReporterCustomTries: with six tries a test failing five times is
// still retried, and given up after the sixth.
func TestReporterCustomTries(t *testing.T) {
	var out bytes.Buffer
	r := newTestReporter(&out, []testPkg{{ImportPath: "x/a"}})
	r.reruns = 5
	r.setNonce("n")
	for try := 1; try <= 6; try++ {
		r.Write([]byte("NIMBUS-TEST-BEGIN n 0\n=== RUN   TestB\n--- FAIL: TestB (1.00s)\nNIMBUS-TEST-END n 0 1\n"))
		todo := r.todo(true)
		if try < 6 {
			if want := fmt.Sprintf(" (0 passed before; TestB try %d of 6)", try+1); !slices.Equal(todo, []int{0}) || r.triesNote(0) != want {
				t.Fatalf("after try %d: todo %v, note %q, want %q", try, todo, r.triesNote(0), want)
			}
		} else if g := r.gaveUp(0); !slices.Equal(g, []string{"TestB"}) {
			t.Fatalf("after six tries: gave up %v", g)
		}
	}
}
