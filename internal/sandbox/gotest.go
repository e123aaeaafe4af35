package sandbox

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nimbus-vmm/nimbus/internal/guestimage"
)

// TestConfig describes a run of Go test packages in one sandbox boot.
type TestConfig struct {
	Packages []string // go package patterns, relative to ModuleRoot
	Run      string   // -test.run regexp
	// Timeout bounds the whole run, fresh boots after a dead sandbox
	// included (default 20 minutes).
	Timeout time.Duration
	// PkgTimeout is each test binary's -test.timeout (default 10 minutes):
	// a hung package panics with every goroutine's stack and the next one
	// runs. A package still running a minute after it is treated as a
	// stalled sandbox.
	PkgTimeout time.Duration
	// Rerun runs failed tests again in a fresh boot, up to MaxReruns times (whole
	// packages after a panic or timeout); see RunTests.
	Rerun bool
	// Stall is Config.Stall for the sandbox (default 4 minutes; negative:
	// never).
	Stall    time.Duration
	Stdout   io.Writer // go-test-style output
	Log      io.Writer // build steps and figures
	Mode     Mode
	WithQEMU bool   // ship the host's QEMU so tests can run reference guests (EnvQEMU)
	Root     string // module root; default ModuleRoot()
	// Env adds K=V variables for the test binaries (e.g. a test's own
	// knobs such as NIMBUS_LIFECYCLE_CYCLES=20).
	Env      []string
	CacheDir string // default DefaultCacheDir()
}

// TestSummary counts test packages.
type TestSummary struct {
	Passed, Failed, NoTests int
	// PassedOnRerun counts the passed packages that failed first (Rerun).
	PassedOnRerun int
}

// testPkg is one package to run.
type testPkg struct {
	ImportPath, Dir, Bin string
	HasTestdata          bool
}

// RunTests builds each package's test binary (CGO_ENABLED=0), the
// ./cmd/... binaries, and the guest assets, then runs every test binary
// with -test.v, NIMBUS_REQUIRE_KVM=1 and the Env* variables set, inside ONE
// sandbox (QEMU boot or, with /dev/kvm, the host). It prints each binary's
// output followed by "ok"/"FAIL" lines as `go test` does, and finally
// "N passed, N failed". A package that fails to build counts as failed.
func RunTests(ctx context.Context, tc TestConfig) (TestSummary, error) {
	var sum TestSummary
	if tc.Stdout == nil {
		tc.Stdout = io.Discard
	}
	if tc.Log == nil {
		tc.Log = io.Discard
	}
	if tc.Timeout <= 0 {
		tc.Timeout = 20 * time.Minute
	}
	if tc.PkgTimeout <= 0 {
		tc.PkgTimeout = 10 * time.Minute
	}
	if tc.Stall == 0 {
		tc.Stall = 4 * time.Minute
	}
	ctx, cancel := context.WithTimeout(ctx, tc.Timeout)
	defer cancel()
	var err error
	if tc.Root == "" {
		if tc.Root, err = ModuleRoot(); err != nil {
			return sum, err
		}
	}
	if tc.CacheDir == "" {
		if tc.CacheDir, err = DefaultCacheDir(); err != nil {
			return sum, err
		}
	}
	mode := ResolveMode(tc.Mode, tc.Log)
	// A directory per run: several engineers may run the KVM tier in one
	// tree at the same time.
	parent, err := filepath.Abs(filepath.Join(tc.CacheDir, "..", "sandbox"))
	if err != nil {
		return sum, err
	}
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return sum, err
	}
	work, err := os.MkdirTemp(parent, "run-")
	if err != nil {
		return sum, err
	}
	defer os.RemoveAll(work)
	for _, d := range []string{"tests", "bin"} {
		if err := os.MkdirAll(filepath.Join(work, d), 0o755); err != nil {
			return sum, err
		}
	}

	// 1. Test binaries.
	pkgs, err := listPackages(ctx, tc.Root, tc.Packages)
	if err != nil {
		return sum, err
	}
	var run []testPkg
	for _, p := range pkgs {
		if p.Bin == "" {
			fmt.Fprintf(tc.Stdout, "?   \t%s\t[no test files]\n", p.ImportPath)
			sum.NoTests++
			continue
		}
		p.Bin = filepath.Join(work, "tests", strings.ReplaceAll(p.ImportPath, "/", "_")+".test")
		t0 := time.Now()
		if out, err := goCmd(ctx, tc.Root, "test", "-c", "-o", p.Bin, p.ImportPath); err != nil {
			fmt.Fprintf(tc.Stdout, "%s\nFAIL\t%s [build failed]\n", strings.TrimSpace(out), p.ImportPath)
			sum.Failed++
			continue
		}
		fmt.Fprintf(tc.Log, "nimbus-sandbox: built %s test binary in %.1fs\n", p.ImportPath, time.Since(t0).Seconds())
		run = append(run, p)
	}
	if len(run) == 0 {
		fmt.Fprintf(tc.Stdout, "%d passed, %d failed\n", sum.Passed, sum.Failed)
		return sum, nil
	}

	// 2. Binaries and guest assets for end-to-end tests.
	// The guest-side test programs (test/guestbin) go beside nimbus: the
	// end-to-end tests put them in their guest images.
	if out, err := goCmd(ctx, tc.Root, "build", "-o", filepath.Join(work, "bin")+"/", "./cmd/...", "./test/guestbin/..."); err != nil {
		return sum, fmt.Errorf("%w: building ./cmd/... and ./test/guestbin/... failed:\n%s", ErrBoot, out)
	}
	k, err := EnsureKernel(ctx, tc.CacheDir)
	if err != nil {
		return sum, err
	}
	ix, err := guestimage.LoadModuleIndex(k.ModulesDir)
	if err != nil {
		return sum, fmt.Errorf("%w: %w", ErrKernel, err)
	}
	guestMods := filepath.Join(work, "guest-modules")
	if err := ix.ExportModules(guestMods, slices.Concat(guestimage.DefaultModules, guestimage.OptionalModules)...); err != nil {
		return sum, fmt.Errorf("%w: %w", ErrKernel, err)
	}
	const busybox = "/bin/busybox"

	// 3. Where things are for the command: the same guest paths in both
	// modes.
	var files []File
	loc := func(host, guest string) string {
		files = append(files, File{Host: host, Guest: guest})
		return guest
	}
	binDir := loc(filepath.Join(work, "bin"), "/nimbus/bin")
	holder := "" // host mode: no TCG, nothing to work around
	if mode != Host {
		holder = binDir + "/nimbus-sandbox"
	}
	env := []string{
		EnvRequireKVM + "=1",
		EnvBinDir + "=" + binDir,
		EnvGuestKernel + "=" + loc(k.Image, "/nimbus/guest/vmlinuz"),
		EnvGuestModules + "=" + loc(guestMods, "/nimbus/guest/modules"),
		EnvBusybox + "=" + loc(busybox, "/nimbus/guest/busybox"),
		"TMPDIR=/tmp",
	}
	env = append(env, tc.Env...)
	if tc.WithQEMU {
		if files, env, err = addQEMU(mode, files, env); err != nil {
			return sum, err
		}
	}
	if mode != Host {
		tools, err := HostToolFiles(slices.Concat(TestTools, TestLibraries)...)
		if err != nil {
			return sum, err
		}
		files = append(files, tools...)
	}
	// An EFI system partition with GRUB for the firmware tests' disks.
	esp := filepath.Join(work, "esp.img")
	if err := BuildESP(ctx, esp); err != nil {
		fmt.Fprintf(tc.Log, "nimbus-sandbox: %v\n", err)
	} else {
		env = append(env, EnvUEFIESP+"="+loc(esp, "/nimbus/guest/esp.img"))
	}
	// CLOUDHV.fd, where scripts/install-deps.sh fetched it.
	if fw := filepath.Join(tc.Root, "build", "firmware", "CLOUDHV.fd"); fileExists(fw) {
		env = append(env, EnvFirmware+"="+loc(fw, "/nimbus/guest/CLOUDHV.fd"))
	}
	// Without virtiofsd only the virtio-fs tests fail (they name the
	// variable); the log says why.
	if vfsd, err := virtiofsdFiles(ctx, tc.CacheDir, mode); err != nil {
		fmt.Fprintf(tc.Log, "nimbus-sandbox: %v\n", err)
	} else {
		files = append(files, vfsd...)
		env = append(env, EnvVirtiofsd+"="+guestVirtiofsd)
	}
	// Ship every binary, testdata and the script once; each attempt below
	// only rewrites the script.
	runs := make([]testRun, len(run))
	for i, p := range run {
		runs[i] = testRun{bin: loc(p.Bin, "/nimbus/tests/"+filepath.Base(p.Bin)), dir: "/nimbus/src/" + p.ImportPath}
		if p.HasTestdata {
			loc(filepath.Join(p.Dir, "testdata"), runs[i].dir+"/testdata")
		}
	}
	scriptPath := filepath.Join(work, "run-tests.sh")
	if err := os.WriteFile(scriptPath, nil, 0o755); err != nil {
		return sum, err
	}
	runScript := loc(scriptPath, "/nimbus/run-tests.sh")
	rep := &testReporter{out: tc.Stdout, pkgs: run, status: make([]int, len(run)), cur: -1}
	for i := range rep.status {
		rep.status[i] = -1
	}
	// One sandbox boot runs every package. Nested KVM under TCG is not
	// bullet-proof: the L1 kernel has been seen to panic, and to lock up
	// with both vCPUs spinning in the scheduler, in the middle of a run.
	// When the sandbox dies (ErrBoot: no exit marker) or stalls, the
	// packages that did not finish get a fresh boot, at most four times, within
	// Timeout, and the log says so.
	unfinished := func() []int {
		var todo []int
		for i, st := range rep.status {
			if st < 0 {
				todo = append(todo, i)
			}
		}
		return todo
	}
	runUnfinished := func(maxDeaths int) (res *Result, err error) {
		for deaths := 0; ; deaths++ {
			res, err = runTestScript(ctx, tc, rep, unfinished(), runs, scriptPath, runScript, holder, files, env, mode, k)
			if err == nil || !sandboxDied(err) || deaths == maxDeaths || ctx.Err() != nil || len(unfinished()) == 0 {
				return res, err
			}
			// The tests that passed before it died stand: a death late in
			// a package of forty guest boots would cost them all again.
			for _, i := range unfinished() {
				runs[i].skip = rep.skipPattern(i)
			}
			fmt.Fprintf(tc.Log, "nimbus-sandbox: the sandbox died: %v\nnimbus-sandbox: running the %d unfinished package(s) again in a fresh boot, without the tests that passed\n", err, len(unfinished()))
		}
	}
	res, err := runUnfinished(4)
	// Nested guests also fail now and then on their own: silent from their
	// first instruction, or reset early in boot, with the L1 kernel alive.
	// With Rerun, a failed package's failed tests (the whole package after
	// a panic or timeout) get a fresh boot, up to MaxReruns times; the package counts
	// as passed only if they pass there, and the summary says how many did.
	// Packages a dying sandbox left unfinished go into the next round too:
	// the L1 panics come in runs (a CI run lost two boots in a row).
	var rerun []int
	for round := 1; round <= MaxReruns && tc.Rerun && ctx.Err() == nil; round++ {
		if err != nil && !sandboxDied(err) || err == nil && res.ExitStatus != 0 {
			break
		}
		var again []string
		for i, st := range rep.status {
			if st == 0 {
				continue
			}
			if !slices.Contains(rerun, i) {
				rerun = append(rerun, i)
			}
			if st > 0 {
				runs[i].run = rep.rerunPattern(i)
			}
			what := "all tests"
			if runs[i].run != "" {
				what = runs[i].run
			}
			again = append(again, run[i].ImportPath+" ("+what+")")
			rep.status[i] = -1
		}
		if len(again) == 0 {
			break
		}
		fmt.Fprintf(tc.Log, "nimbus-sandbox: rerun %d in a fresh boot: %s\n", round, strings.Join(again, ", "))
		res, err = runUnfinished(2)
	}
	for i, p := range run {
		switch st := rep.status[i]; {
		case st == 0:
			sum.Passed++
			// Failures before a sandbox death were run again with what
			// the death left unfinished: they count as reruns too.
			if slices.Contains(rerun, i) || rep.hadFailures(i) {
				sum.PassedOnRerun++
			}
		case st < 0:
			fmt.Fprintf(tc.Stdout, "FAIL\t%s [did not run to completion]\n", p.ImportPath)
			sum.Failed++
		default:
			sum.Failed++
		}
	}
	if sum.PassedOnRerun > 0 {
		fmt.Fprintf(tc.Stdout, "%d passed (%d only on a rerun after failing), %d failed\n", sum.Passed, sum.PassedOnRerun, sum.Failed)
	} else {
		fmt.Fprintf(tc.Stdout, "%d passed, %d failed\n", sum.Passed, sum.Failed)
	}
	if err != nil {
		return sum, err
	}
	if res.ExitStatus != 0 {
		return sum, fmt.Errorf("%w: test script exited %d", ErrBoot, res.ExitStatus)
	}
	return sum, nil
}

// sandboxDied says whether err is the sandbox dying (no exit marker) or
// stalling, after which a fresh boot can go on.
func sandboxDied(err error) bool { return errors.Is(err, ErrBoot) || errors.Is(err, ErrStalled) }

// testRun is where one package's test binary runs: guest paths, already
// shipped through loc.
type testRun struct {
	bin, dir string
	run      string // -test.run for this package when rerunning its failures
	skip     string // -test.skip: what passed before the sandbox died under it
}

// runTestScript runs the packages todo (indexes into runs) in one sandbox,
// reporting through rep. The script is rewritten at scriptPath, which the
// sandbox ships as runScript.
func runTestScript(ctx context.Context, tc TestConfig, rep *testReporter, todo []int, runs []testRun,
	scriptPath, runScript, holder string, files []File, env []string, mode Mode, k *Kernel) (*Result, error) {
	nonce := newNonce()
	var script strings.Builder
	script.WriteString("#!/bin/sh\n")
	if holder != "" {
		script.WriteString(holdKVMScript(holder, "/tmp/hold-kvm.out"))
	}
	for _, i := range todo {
		args := []string{runs[i].bin, "-test.v", "-test.timeout", tc.PkgTimeout.String()}
		switch {
		case runs[i].run != "":
			args = append(args, "-test.run", runs[i].run)
		case tc.Run != "":
			args = append(args, "-test.run", tc.Run)
		}
		if runs[i].skip != "" {
			args = append(args, "-test.skip", runs[i].skip)
		}
		for j := range args {
			args[j] = quote(args[j])
		}
		dir := runs[i].dir
		fmt.Fprintf(&script, "mkdir -p %s; cd %s\necho %s %s %d\n%s 2>&1\necho %s %s %d $?\n",
			quote(dir), quote(dir), markTestBegin, nonce, i, strings.Join(args, " "), markTestEnd, nonce, i)
	}
	if err := os.WriteFile(scriptPath, []byte(script.String()), 0o755); err != nil {
		return nil, err
	}
	rep.setNonce(nonce)
	left := tc.Timeout
	if d, ok := ctx.Deadline(); ok {
		left = time.Until(d)
	}
	stall := tc.Stall
	if stall < 0 {
		stall = 0
	}
	res, err := Run(ctx, Config{
		Args: []string{"sh", runScript}, Files: files, Env: env, Mode: mode,
		Stdout: rep, Log: tc.Log, Timeout: left, CacheDir: tc.CacheDir, Kernel: k,
		Stall: stall, modeSaid: true, Check: func() error { return rep.overrun(tc.PkgTimeout + time.Minute) },
	})
	rep.flush()
	return res, err
}

const (
	markTestBegin = "NIMBUS-TEST-BEGIN"
	markTestEnd   = "NIMBUS-TEST-END"
)

// testReporter turns the test script's output into go-test-style output.
type testReporter struct {
	mu     sync.Mutex
	out    io.Writer
	nonce  string
	pkgs   []testPkg
	status []int // -1 until the package's end marker
	start  time.Time
	cur    int // the package running (-1: none)
	buf    []byte
	// failed lists each package's failed top-level tests ("--- FAIL: X"),
	// passed those that passed ("--- PASS: X").
	failed map[int][]string
	passed map[int][]string
}

// overrun fails when the running package has run longer than limit: its
// own -test.timeout should have ended it, so the sandbox is stuck.
func (r *testReporter) overrun(limit time.Duration) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cur < 0 {
		return nil
	}
	if d := time.Since(r.start); d > limit {
		return fmt.Errorf("%s has run for %v, past its test timeout", r.pkgs[r.cur].ImportPath, d.Round(time.Second))
	}
	return nil
}

func (r *testReporter) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.buf = append(r.buf, p...)
	for {
		i := bytes.IndexByte(r.buf, '\n')
		if i < 0 {
			return len(p), nil
		}
		r.line(string(r.buf[:i]))
		r.buf = r.buf[i+1:]
	}
}

// setNonce starts a new sandbox run's markers.
func (r *testReporter) setNonce(n string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.nonce, r.buf, r.cur = n, nil, -1
}

func (r *testReporter) flush() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.buf) > 0 {
		r.line(string(r.buf))
		r.buf = nil
	}
}

func (r *testReporter) line(l string) {
	f := strings.Fields(l)
	if len(f) >= 3 && f[1] == r.nonce {
		switch f[0] {
		case markTestBegin:
			r.start, r.cur = time.Now(), -1
			if i, err := strconv.Atoi(f[2]); err == nil && i >= 0 && i < len(r.pkgs) {
				r.cur = i
			}
			return
		case markTestEnd:
			if len(f) != 4 {
				break
			}
			i, err1 := strconv.Atoi(f[2])
			st, err2 := strconv.Atoi(f[3])
			if err1 != nil || err2 != nil || i < 0 || i >= len(r.pkgs) {
				break
			}
			r.status[i], r.cur = st, -1
			word := "ok  "
			if st != 0 {
				word = "FAIL"
			}
			fmt.Fprintf(r.out, "%s\t%s\t%.3fs\n", word, r.pkgs[i].ImportPath, time.Since(r.start).Seconds())
			return
		}
	}
	if r.cur >= 0 {
		if name, ok := strings.CutPrefix(l, "--- FAIL: "); ok {
			r.failed = addTestName(r.failed, r.cur, name)
		} else if name, ok := strings.CutPrefix(l, "--- PASS: "); ok {
			r.passed = addTestName(r.passed, r.cur, name)
		}
	}
	fmt.Fprintln(r.out, l)
}

// addTestName adds the test named at the start of rest ("X (1.2s)") to
// m[i] once.
func addTestName(m map[int][]string, i int, rest string) map[int][]string {
	name, _, ok := strings.Cut(rest, " ")
	if !ok || slices.Contains(m[i], name) {
		return m
	}
	if m == nil {
		m = map[int][]string{}
	}
	m[i] = append(m[i], name)
	return m
}

// hadFailures reports whether package i has failed tests not yet taken
// by rerunPattern.
func (r *testReporter) hadFailures(i int) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.failed[i]) > 0
}

// skipPattern is the -test.skip pattern for package i's tests that have
// passed, or "".
func (r *testReporter) skipPattern(i int) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return namesPattern(r.passed[i])
}

// namesPattern matches exactly the tests named, or is "" for none.
func namesPattern(names []string) string {
	if len(names) == 0 {
		return ""
	}
	q := make([]string, len(names))
	for j, n := range names {
		q[j] = regexp.QuoteMeta(n)
	}
	return "^(" + strings.Join(q, "|") + ")$"
}

// MaxReruns is how many fresh boots -rerun-failed gives a failed
// package's failed tests. Three since the lifecycle, hotplug and vsock
// tests landed: a final run lost TestBootGuest to the nested flakes three
// times in a row (a hang mid-printk, an early triple fault, a hang after
// PCI enumeration), twice as the first guest of a fresh sandbox.
const MaxReruns = 3

// rerunPattern is the -test.run pattern that reruns package i's failed
// tests, or "" to rerun the whole package: when it exited other than 1
// (a panic or a timeout ends the binary before its remaining tests ran)
// or named no failed test. It forgets the failures.
func (r *testReporter) rerunPattern(i int) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	names := r.failed[i]
	delete(r.failed, i)
	if r.status[i] != 1 {
		return ""
	}
	return namesPattern(names)
}

// listPackages expands patterns with go list.
func listPackages(ctx context.Context, root string, patterns []string) ([]testPkg, error) {
	args := append([]string{"list", "-f", "{{.ImportPath}}\t{{.Dir}}\t{{len .TestGoFiles}}\t{{len .XTestGoFiles}}"}, patterns...)
	out, err := goCmd(ctx, root, args...)
	if err != nil {
		return nil, fmt.Errorf("%w: go list %v:\n%s", ErrBoot, patterns, out)
	}
	var pkgs []testPkg
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Split(l, "\t")
		if len(f) != 4 {
			continue
		}
		p := testPkg{ImportPath: f[0], Dir: f[1]}
		if f[2] != "0" || f[3] != "0" {
			p.Bin = "yes"
		}
		if fi, err := os.Stat(filepath.Join(p.Dir, "testdata")); err == nil && fi.IsDir() {
			p.HasTestdata = true
		}
		pkgs = append(pkgs, p)
	}
	return pkgs, nil
}

// goCmd runs the go tool in dir with cgo disabled (the sandbox has no C
// libraries) and returns its combined output.
func goCmd(ctx context.Context, dir string, args ...string) (string, error) {
	gobin := "go"
	if g := os.Getenv("GO"); g != "" {
		gobin = g
	} else if _, err := exec.LookPath("go"); err != nil {
		if _, err := os.Stat("/usr/local/go/bin/go"); err == nil {
			gobin = "/usr/local/go/bin/go"
		}
	}
	cmd := exec.CommandContext(ctx, gobin, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	out, err := cmd.CombinedOutput()
	return string(out), err
}
