package sandbox

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
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
	// Rerun ends a boot at the first failed test and goes on in a fresh
	// one: that test again (MaxReruns more tries), then what had not run;
	// see RunTests.
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
	// Tries is how many tries a failing test gets with Rerun, each in a
	// fresh boot (default MaxReruns+1).
	Tries int
	// Debian ships the Debian disk image (EnsureDebian, built on first
	// use) as EnvDebian.
	Debian bool
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
	if tc.Debian {
		img, err := EnsureDebian(ctx, tc.CacheDir, tc.Log)
		if err != nil {
			return sum, err
		}
		// The GPT disk only for TestDebianUEFI, which runs only when
		// named: 90 MiB less in every other boot's initramfs.
		const guestDir = "/nimbus/guest/debian"
		for _, f := range []string{img.QCOW2, img.Kernel, img.Initrd, img.UEFI} {
			if f != img.UEFI || strings.Contains(tc.Run, "UEFI") {
				loc(f, guestDir+"/"+filepath.Base(f))
			}
		}
		env = append(env, EnvDebian+"="+guestDir)
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
	rep := newTestReporter(tc.Stdout, run)
	if tc.Tries > 0 {
		rep.reruns = tc.Tries - 1
	}
	// One sandbox boot runs every package. Nested KVM under QEMU's TCG is
	// not bullet-proof: guests go silent or triple-fault, the L1 kernel
	// panics or locks up, and once it starts the rest of that boot tends to
	// follow (CI runs lost five tests in a row, then had them all pass in a
	// fresh boot). So with Rerun each package runs -test.failfast and the
	// script stops at the first failure; the next boot goes on from there:
	// the failed test again, then everything not yet run, without what
	// passed. A test gets Tries (MaxReruns+1) tries, each after the first in a
	// fresh boot; a test still failing then is given up (the package
	// fails) and the rest goes on. A sandbox death (ErrBoot: no exit
	// marker) or stall counts as a failed try of the test it was running;
	// at most maxDeaths of them (more when tests get more tries), within Timeout. Without Rerun a package
	// runs once, and only what a death left unfinished gets a fresh boot.
	maxDeaths := max(8, 2*(rep.reruns+1))
	var res *Result
	for boot, deaths := 1, 0; ctx.Err() == nil; boot++ {
		todo := rep.todo(tc.Rerun)
		if len(todo) == 0 {
			break
		}
		if boot > 1 {
			var what []string
			for _, i := range todo {
				runs[i].skip = rep.skipPattern(i)
				what = append(what, run[i].ImportPath+rep.triesNote(i))
			}
			fmt.Fprintf(tc.Log, "nimbus-sandbox: boot %d: %s\n", boot, strings.Join(what, ", "))
		}
		res, err = runTestScript(ctx, tc, rep, todo, runs, scriptPath, runScript, holder, files, env, mode, k)
		if err != nil {
			if !sandboxDied(err) {
				break
			}
			rep.died()
			if deaths++; deaths > maxDeaths {
				break
			}
			fmt.Fprintf(tc.Log, "nimbus-sandbox: the sandbox died: %v\n", err)
			err = nil
			continue
		}
		if res.ExitStatus != 0 {
			break
		}
	}
	for i, p := range run {
		gaveUp := rep.gaveUp(i)
		switch st := rep.status[i]; {
		case st == 0 && len(gaveUp) == 0:
			sum.Passed++
			if rep.hadFailures(i) {
				sum.PassedOnRerun++
			}
		case st < 0:
			fmt.Fprintf(tc.Stdout, "FAIL\t%s [did not run to completion]\n", p.ImportPath)
			sum.Failed++
		default:
			if len(gaveUp) > 0 {
				fmt.Fprintf(tc.Stdout, "FAIL\t%s [failed every try: %s]\n", p.ImportPath, strings.Join(gaveUp, ", "))
			}
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
	if res != nil && res.ExitStatus != 0 {
		return sum, fmt.Errorf("%w: test script exited %d", ErrBoot, res.ExitStatus)
	}
	return sum, ctx.Err()
}

// sandboxDied says whether err is the sandbox dying (no exit marker) or
// stalling, after which a fresh boot can go on.
func sandboxDied(err error) bool { return errors.Is(err, ErrBoot) || errors.Is(err, ErrStalled) }

// testRun is where one package's test binary runs: guest paths, already
// shipped through loc.
type testRun struct {
	bin, dir string
	skip     string // -test.skip: what passed in earlier boots, and what was given up
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
		if tc.Rerun {
			args = append(args, "-test.failfast")
		}
		if tc.Run != "" {
			args = append(args, "-test.run", tc.Run)
		}
		if runs[i].skip != "" {
			args = append(args, "-test.skip", runs[i].skip)
		}
		for j := range args {
			args[j] = quote(args[j])
		}
		dir := runs[i].dir
		fmt.Fprintf(&script, "mkdir -p %s; cd %s\necho %s %s %d\n%s 2>&1\nst=$?; echo %s %s %d $st\n",
			quote(dir), quote(dir), markTestBegin, nonce, i, strings.Join(args, " "), markTestEnd, nonce, i)
		if tc.Rerun {
			// The rest goes on in a fresh boot (RunTests).
			script.WriteString("[ $st -eq 0 ] || exit 0\n")
		}
	}
	// A comment of random length moves everything after the script in the
	// sandbox's initramfs, so a retry is not a byte-identical boot: QEMU's
	// TCG abort ("tcg_handle_interrupt: assertion failed: (bql_locked())")
	// was seen to follow the L1 image's layout: the firmware tier aborted
	// in every boot (over a dozen) of builds whose runner differed from a
	// passing one by a few bytes, and its first boot passed once 3 KB more
	// went into this script.
	fmt.Fprintf(&script, "# layout: %s\n", strings.Repeat("-", rand.IntN(8192)))
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

// testReporter turns the test script's output into go-test-style output
// and keeps, per package, what RunTests needs to go on in a fresh boot.
type testReporter struct {
	mu     sync.Mutex
	out    io.Writer
	nonce  string
	pkgs   []testPkg
	status []int // -1 until the package's end marker
	start  time.Time
	cur    int // the package running (-1: none)
	buf    []byte
	// passed lists each package's top-level tests that passed or skipped
	// ("--- PASS: X", "--- SKIP: X"); failedNow those that failed in its
	// current run ("--- FAIL: X"); running the last top-level test started
	// ("=== RUN   X"); fails counts each test's failed tries ("" for a
	// failure no test is named for).
	passed    map[int][]string
	failedNow map[int][]string
	running   map[int]string
	fails     map[int]map[string]int
	reruns    int // tries after the first
}

func newTestReporter(out io.Writer, pkgs []testPkg) *testReporter {
	r := &testReporter{out: out, pkgs: pkgs, status: make([]int, len(pkgs)), cur: -1, reruns: MaxReruns,
		passed: map[int][]string{}, failedNow: map[int][]string{}, running: map[int]string{}, fails: map[int]map[string]int{}}
	for i := range r.status {
		r.status[i] = -1
	}
	return r
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
				delete(r.failedNow, i)
				delete(r.running, i)
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
			if st != 0 {
				r.countFailure(i, false)
			}
			word := "ok  "
			if st != 0 {
				word = "FAIL"
			}
			fmt.Fprintf(r.out, "%s\t%s\t%.3fs\n", word, r.pkgs[i].ImportPath, time.Since(r.start).Seconds())
			return
		}
	}
	if i := r.cur; i >= 0 {
		// Subtests' lines are indented or name "Parent/sub": only
		// top-level tests count.
		if name, ok := strings.CutPrefix(l, "--- FAIL: "); ok {
			r.failedNow[i] = addTestName(r.failedNow[i], name)
		} else if name, ok := strings.CutPrefix(l, "--- PASS: "); ok {
			r.passed[i] = addTestName(r.passed[i], name)
		} else if name, ok := strings.CutPrefix(l, "--- SKIP: "); ok {
			r.passed[i] = addTestName(r.passed[i], name)
		} else if name, ok := strings.CutPrefix(l, "=== RUN   "); ok && !strings.Contains(name, "/") {
			r.running[i] = strings.TrimSpace(name)
		}
	}
	fmt.Fprintln(r.out, l)
}

// addTestName adds the test named at the start of rest ("X (1.2s)") to
// names once.
func addTestName(names []string, rest string) []string {
	name, _, ok := strings.Cut(rest, " ")
	if !ok || slices.Contains(names, name) {
		return names
	}
	return append(names, name)
}

// countFailure counts a failed try of package i's failed tests: those
// that said "--- FAIL", else (a panic, a timeout, a death) the test that
// was running, else the package itself (""). died also counts the
// running test beside failed ones: the death cut it short.
func (r *testReporter) countFailure(i int, died bool) {
	names := slices.Clone(r.failedNow[i])
	if run := r.running[i]; run != "" && !slices.Contains(r.passed[i], run) && !slices.Contains(names, run) &&
		(died || len(names) == 0) {
		names = append(names, run)
	}
	if len(names) == 0 {
		names = []string{""}
	}
	if r.fails[i] == nil {
		r.fails[i] = map[string]int{}
	}
	for _, n := range names {
		r.fails[i][n]++
	}
	delete(r.failedNow, i)
	delete(r.running, i)
}

// died counts the sandbox's death as a failed try of what was running.
func (r *testReporter) died() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cur >= 0 {
		r.countFailure(r.cur, true)
		r.cur = -1
	}
}

// todo lists the packages the next boot runs, and forgets their status:
// those a death left unfinished and, with rerun, those that failed. A
// package is finished when it passed (with what was given up skipped),
// when the package itself (no test named) failed r.reruns+1 times, and,
// without rerun, when it ran to its end at all.
func (r *testReporter) todo(rerun bool) []int {
	r.mu.Lock()
	defer r.mu.Unlock()
	var todo []int
	for i, st := range r.status {
		if st < 0 || st > 0 && rerun && r.fails[i][""] <= r.reruns {
			todo = append(todo, i)
			r.status[i] = -1
		}
	}
	return todo
}

// gaveUpLocked lists package i's tests that failed every try.
func (r *testReporter) gaveUpLocked(i int) []string {
	var out []string
	for n, c := range r.fails[i] {
		if n != "" && c > r.reruns {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out
}

// gaveUp lists package i's tests that failed every try.
func (r *testReporter) gaveUp(i int) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.gaveUpLocked(i)
}

// hadFailures reports whether package i had a failed try.
func (r *testReporter) hadFailures(i int) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.fails[i]) > 0
}

// triesNote says, for the log, what package i's next run skips and
// retries.
func (r *testReporter) triesNote(i int) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var retry []string
	for n, c := range r.fails[i] {
		if c <= r.reruns && !slices.Contains(r.passed[i], n) {
			if n == "" {
				n = "the package"
			}
			retry = append(retry, fmt.Sprintf("%s try %d of %d", n, c+1, r.reruns+1))
		}
	}
	slices.Sort(retry)
	note := fmt.Sprintf(" (%d passed before", len(r.passed[i]))
	if len(retry) > 0 {
		note += "; " + strings.Join(retry, ", ")
	}
	if g := r.gaveUpLocked(i); len(g) > 0 {
		note += "; given up: " + strings.Join(g, ", ")
	}
	return note + ")"
}

// skipPattern is the -test.skip pattern for package i's tests that have
// passed or been given up, or "".
func (r *testReporter) skipPattern(i int) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return namesPattern(slices.Concat(r.passed[i], r.gaveUpLocked(i)))
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

// MaxReruns is how many more tries, each in a fresh boot, a failing test
// gets with -rerun-failed. Three since the lifecycle, hotplug and vsock
// tests landed: a final run lost TestBootGuest to the nested flakes three
// times in a row (a hang mid-printk, an early triple fault, a hang after
// PCI enumeration), twice as the first guest of a fresh sandbox.
const MaxReruns = 3

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
