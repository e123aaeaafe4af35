package sandbox

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"debug/elf"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nimbus-vmm/nimbus/internal/guestimage"
)

// Mode selects where Run executes the command.
type Mode int

const (
	// Auto runs on the host when /dev/kvm is usable, otherwise under QEMU.
	Auto Mode = iota
	// QEMU always boots the TCG sandbox guest.
	QEMU
	// Host runs the command directly on this machine.
	Host
)

func (m Mode) String() string {
	switch m {
	case QEMU:
		return "qemu"
	case Host:
		return "host"
	default:
		return "auto"
	}
}

// envOr is the host's $key, or def when it is unset or empty.
func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// sandboxGOMAXPROCS is GOMAXPROCS for every process in the QEMU sandbox
// (see initScript).
const sandboxGOMAXPROCS = 1

// cpuList is a CPU list as taskset -c takes it.
var cpuList = regexp.MustCompile(`^[0-9]+(-[0-9]+)?(,[0-9]+(-[0-9]+)?)*$`)

// KVMModules are the modules the sandbox guest loads to get /dev/kvm;
// their dependencies (irqbypass, kvm, ccp) are added. TCG emulates AMD SVM
// only, so it is kvm-amd, not kvm-intel.
var KVMModules = []string{"kvm_amd"}

// NetModules are the networking modules the sandbox guest loads besides
// KVMModules when Config.Modules is nil, so that tests can create taps
// (/dev/net/tun), veth pairs and bridges; network namespaces are built in.
var NetModules = []string{"tun", "veth", "bridge"}

// ScratchModules let the sandbox guest mount an ext4 scratch file system
// (EnvDirectDir: a loop device over a tmpfs file) for disks opened with
// O_DIRECT, which the sandbox kernel's tmpfs refuses (tmpfs has it from
// Linux 6.6). ext4 needs a crc32c (a soft dependency, not in modules.dep).
var ScratchModules = []string{"loop", "crc32c_generic", "ext4"}

// DefaultModules are what the sandbox guest loads when Config.Modules is nil.
func DefaultModules() []string {
	return slices.Concat(KVMModules, NetModules, ScratchModules)
}

// File maps a host file or directory to a path in the sandbox.
type File struct {
	Host  string
	Guest string // absolute
}

// Config describes one sandbox run.
type Config struct {
	Args  []string // command and arguments (required)
	Files []File
	Env   []string // KEY=VALUE, added to the command's environment
	Dir   string   // working directory (a guest path); default "/"

	// Stdout receives the command's output (stdout and stderr merged, as
	// on the guest console), line by line as it is printed. Nil discards.
	Stdout io.Writer
	// Log receives the sandbox's own messages: figures and boot errors.
	Log io.Writer

	// Timeout bounds the sandbox itself (default 10 minutes), not the
	// build of the nimbus binaries before it.
	Timeout time.Duration
	// Stall kills the sandbox (ErrStalled) when its console prints nothing
	// for this long (QEMU mode; 0: never). The init prints a heartbeat
	// every HeartbeatEvery, so silence means the L1 guest itself stopped.
	Stall time.Duration
	// Check, when set, is called every second while the command runs
	// (QEMU mode); an error stops the sandbox as stalled.
	Check    func() error
	Mode     Mode
	MemoryMB int // guest memory, default 4096
	CPUs     int // guest vCPUs, default 2

	CacheDir string  // kernel cache; default DefaultCacheDir()
	Kernel   *Kernel // default EnsureKernel(CacheDir)
	QEMU     string  // default qemu-system-x86_64 from PATH
	Busybox  string  // default /bin/busybox (Debian busybox-static)
	// Modules overrides DefaultModules (tests use an empty, non-nil slice).
	Modules []string
	// NimbusBin is a host directory with the nimbus binaries, shipped at
	// /nimbus/bin unless Files already ship that path; empty: build them
	// from the module (go build ./cmd/nimbus ./cmd/nimbus-remote).
	NimbusBin string

	// WithQEMU makes a QEMU available to the command as $NIMBUS_QEMU
	// (shipped into the QEMU sandbox), for reference guest boots.
	WithQEMU bool

	// modeSaid: Mode is already resolved and logged (RunTests).
	modeSaid bool
	// affinity is the taskset CPU list the command runs on in the QEMU
	// sandbox (EnvQEMUAffinity; empty: every CPU).
	affinity string
}

// Result is the outcome of a run that got as far as running the command.
type Result struct {
	ExitStatus  int
	Mode        Mode          // QEMU or Host
	BootTime    time.Duration // QEMU start to init running (QEMU mode)
	CommandTime time.Duration
	// ImageBytes is the size of the sandbox initramfs (QEMU mode).
	ImageBytes int64
}

// Run executes cfg.Args in the sandbox and returns its exit status. An
// error means the command's status is unknown (boot failure, timeout,
// missing tools).
//
// In QEMU mode the files are packed with busybox and the KVM modules into
// an initramfs; the guest init loads the modules, runs the command with
// /dev/kvm, stdin /dev/null and NIMBUS_IN_SANDBOX=1, prints an exit marker
// and powers off.
//
// In host mode the command runs in a private mount namespace in which the
// files are bind-mounted at their guest paths over the host's own tree
// (see runHost), so the same command and paths work in both modes.
//
// In both modes the nimbus binaries are on the command's PATH at
// /nimbus/bin: the shipped directory of that name, or else the binaries
// from NimbusBin (built from the module when empty).
func Run(ctx context.Context, cfg Config) (*Result, error) {
	if len(cfg.Args) == 0 {
		return nil, fmt.Errorf("%w: no command", ErrBoot)
	}
	for _, f := range cfg.Files {
		if !path.IsAbs(f.Guest) {
			return nil, fmt.Errorf("%w: guest path %q is not absolute", ErrBoot, f.Guest)
		}
	}
	for _, e := range cfg.Env {
		if k, _, ok := strings.Cut(e, "="); !ok || !validEnvName(k) {
			return nil, fmt.Errorf("%w: bad environment entry %q", ErrBoot, e)
		}
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Minute
	}
	if cfg.Stdout == nil {
		cfg.Stdout = io.Discard
	}
	if cfg.Log == nil {
		cfg.Log = io.Discard
	}
	if cfg.Dir == "" {
		cfg.Dir = "/"
	}
	mode := cfg.Mode
	if !cfg.modeSaid {
		mode = ResolveMode(cfg.Mode, cfg.Log)
	}
	if cfg.WithQEMU {
		var err error
		if cfg.Files, cfg.Env, err = addQEMU(mode, cfg.Files, cfg.Env); err != nil {
			return nil, err
		}
	}
	// Building the binaries is not the sandbox's time: Timeout starts after.
	cleanup, err := shipNimbus(ctx, &cfg)
	if err != nil {
		return nil, err
	}
	defer cleanup()
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	if mode == Host {
		return runHost(ctx, cfg)
	}
	return runQEMU(ctx, cfg)
}

func validEnvName(k string) bool {
	if k == "" {
		return false
	}
	for i, c := range k {
		if !(c == '_' || c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || i > 0 && c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// quote makes s one shell word.
func quote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// checkTools verifies QEMU and busybox before anything slow happens.
func checkTools(cfg *Config) error {
	if cfg.QEMU == "" {
		cfg.QEMU = "qemu-system-x86_64"
	}
	q, err := exec.LookPath(cfg.QEMU)
	if err != nil {
		return fmt.Errorf("%w: %s not found: install Debian package qemu-system-x86 (bash scripts/install-deps.sh): %w", ErrMissingTool, cfg.QEMU, err)
	}
	cfg.QEMU = q
	if cfg.Busybox == "" {
		cfg.Busybox = "/bin/busybox"
	}
	f, err := elf.Open(cfg.Busybox)
	if err != nil {
		return fmt.Errorf("%w: static busybox at %s: install Debian package busybox-static (bash scripts/install-deps.sh): %w", ErrMissingTool, cfg.Busybox, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("%w: %s is dynamically linked: install Debian package busybox-static", ErrMissingTool, cfg.Busybox)
		}
	}
	return nil
}

func newNonce() string {
	b := make([]byte, 8)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// Console markers printed by the sandbox init, each followed by the run's
// nonce so that command output cannot fake them.
const (
	markInit  = "NIMBUS-SANDBOX-INIT"
	markStart = "NIMBUS-SANDBOX-START"
	markExit  = "NIMBUS-SANDBOX-EXIT"
	markAlive = "NIMBUS-SANDBOX-ALIVE"
	// scratchDir is where the sandbox guest mounts its ext4 scratch.
	scratchDir = "/var/tmp/nimbus-direct"
	// errPrefix starts the init's own error lines, shown to the caller.
	errPrefix = "nimbus-sandbox:"
)

// HeartbeatEvery is how often the sandbox init prints its heartbeat.
const HeartbeatEvery = 30 * time.Second

// initScript is the sandbox guest's /init.
func initScript(nonce string, modules []string, cfg Config) string {
	var s strings.Builder
	fmt.Fprintf(&s, `#!/bin/sh
/bin/busybox --install -s
export PATH=%s:/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /dev/pts && mount -t devpts -o ptmxmode=0666 devpts /dev/pts
[ -e /dev/ptmx ] || ln -s pts/ptmx /dev/ptmx
mount -t tmpfs tmpfs /tmp
chmod 0755 /
echo %s %s
`, guestBinDir, markInit, nonce)
	for _, m := range modules {
		fmt.Fprintf(&s, "insmod %s || echo %s insmod %s failed\n", m, errPrefix, m)
	}
	fmt.Fprintf(&s, "[ -c /dev/kvm ] || echo %s /dev/kvm is missing after loading the KVM modules\n", errPrefix)
	// Loopback up and /run/netns present, as on a normal host: tests bind
	// to 127.0.0.1 and name network namespaces (ip netns, vishvananda/netns).
	fmt.Fprintf(&s, "ip link set lo up\nmkdir -p /run/netns /var/run\n[ -e /var/run/netns ] || ln -s /run/netns /var/run/netns\n")
	fmt.Fprintf(&s, "export %s=1 HOME=/root\n", EnvInSandbox)
	// Sparse: the scratch takes L1 memory only for what tests write.
	fmt.Fprintf(&s, `if grep -qw ext4 /proc/filesystems; then
  mkdir -p %[1]s && truncate -s 4G /tmp/.scratch.ext4 && mke2fs -F -b 4096 -m 0 /tmp/.scratch.ext4 >/dev/null &&
  mount -t ext4 -o loop /tmp/.scratch.ext4 %[1]s && chmod 1777 %[1]s && export %[2]s=%[1]s ||
  echo %[3]s no ext4 scratch file system at %[1]s
fi
`, scratchDir, EnvDirectDir, errPrefix)
	// One P per Go process (nimbus and the test binaries alike), before
	// cfg.Env so a caller can say otherwise. Under this TCG, nested guests
	// of a Go VMM with a P per L1 CPU broke in 10 of 29 boots (L2 page
	// tables suddenly holding L1 physical addresses: KVM then loops on one
	// nested page fault, or the guest oopses; now and then the L1 kernel
	// overflows its stack in the VMM's vcpu thread), against 0 of 15 for
	// QEMU/KVM guests in the same sandbox and 1 of 14 with GOMAXPROCS=1:
	// the second L1 CPU running the VMM's other threads while the first
	// runs the guest is what sets it off (a busy loop there breaks
	// QEMU/KVM guests too). scripts/nested-boots.sh counts it.
	fmt.Fprintf(&s, "export GOMAXPROCS=%d\n", sandboxGOMAXPROCS)
	for _, e := range cfg.Env {
		k, v, _ := strings.Cut(e, "=")
		fmt.Fprintf(&s, "export %s=%s\n", k, quote(v))
	}
	fmt.Fprintf(&s, "cd %s || echo %s cannot cd to %s\n", quote(cfg.Dir), errPrefix, quote(cfg.Dir))
	// The heartbeat tells a silent command from a dead L1 guest; it
	// carries the load and free memory for the stall report.
	fmt.Fprintf(&s, "(while sleep %d; do echo %s %s $(cut -d' ' -f1-3 /proc/loadavg) $(grep MemAvailable /proc/meminfo | tr -s ' '); done) &\nhb=$!\n",
		int(HeartbeatEvery/time.Second), markAlive, nonce)
	fmt.Fprintf(&s, "echo %s %s\n", markStart, nonce)
	words := make([]string, len(cfg.Args))
	for i, a := range cfg.Args {
		words[i] = quote(a)
	}
	// With EnvQEMUAffinity, every process of the command on those sandbox
	// CPUs only (an experiment knob: see guesttest.PinToOneCPU for why).
	if cfg.affinity != "" {
		words = append([]string{"taskset", "-c", cfg.affinity}, words...)
	}
	fmt.Fprintf(&s, "%s </dev/null 2>&1\nrc=$?\n", strings.Join(words, " "))
	fmt.Fprintf(&s, "kill $hb\necho %s %s $rc\nsync\npoweroff -f\n", markExit, nonce)
	return s.String()
}

func runQEMU(ctx context.Context, cfg Config) (*Result, error) {
	if err := checkTools(&cfg); err != nil {
		return nil, err
	}
	if cfg.MemoryMB <= 0 {
		cfg.MemoryMB = 4096
	}
	if cfg.CPUs <= 0 {
		n, err := strconv.Atoi(envOr(EnvQEMUSMP, "2"))
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("%w: %s=%q is not a positive vCPU count", ErrBoot, EnvQEMUSMP, os.Getenv(EnvQEMUSMP))
		}
		cfg.CPUs = n
	}
	switch a := os.Getenv(EnvQEMUAffinity); {
	case a == "", a == "all":
	case cpuList.MatchString(a):
		cfg.affinity = a
	default:
		return nil, fmt.Errorf("%w: %s=%q is neither a CPU list nor \"all\"", ErrBoot, EnvQEMUAffinity, a)
	}
	if cfg.Kernel == nil {
		if cfg.CacheDir == "" {
			d, err := DefaultCacheDir()
			if err != nil {
				return nil, fmt.Errorf("%w: %w", ErrKernel, err)
			}
			cfg.CacheDir = d
		}
		k, err := EnsureKernel(ctx, cfg.CacheDir)
		if err != nil {
			return nil, err
		}
		cfg.Kernel = k
	}
	modules := cfg.Modules
	if modules == nil {
		modules = DefaultModules()
	}

	nonce := newNonce()
	b := guestimage.NewBuilder()
	if err := b.AddBusybox(cfg.Busybox); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBoot, err)
	}
	var modPaths []string
	if len(modules) > 0 {
		ix, err := guestimage.LoadModuleIndex(cfg.Kernel.ModulesDir)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrKernel, err)
		}
		if modPaths, err = b.AddModules(ix, modules...); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrKernel, err)
		}
	}
	for _, f := range cfg.Files {
		if err := b.AddHostFile(f.Host, f.Guest); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrBoot, err)
		}
	}
	if err := b.AddFile("/init", []byte(initScript(nonce, modPaths, cfg)), 0o755); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBoot, err)
	}
	tmp, err := os.MkdirTemp("", "nimbus-sandbox-")
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBoot, err)
	}
	defer os.RemoveAll(tmp)
	initrd := filepath.Join(tmp, "initrd.cpio")
	f, err := os.Create(initrd)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBoot, err)
	}
	// Uncompressed: the kernel unpacks it at TCG speed.
	bw := bufio.NewWriterSize(f, 1<<20)
	werr := b.Encode(bw, guestimage.None)
	if werr == nil {
		werr = bw.Flush()
	}
	// A failed close can lose buffered data (e.g. ENOSPC on tmpfs).
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		return nil, fmt.Errorf("%w: writing initramfs: %w", ErrBoot, werr)
	}
	res := &Result{Mode: QEMU}
	if fi, err := os.Stat(initrd); err == nil {
		res.ImageBytes = fi.Size()
	}

	// The monitor socket lets a stall report ask QEMU and the L1 kernel
	// (magic SysRq) where they are before QEMU is killed. No transparent
	// huge pages in L1: with them, 20 guest boot/shutdown cycles panicked
	// the L1 kernel three times in 26 cycles (kernel stack overflow in
	// the vcpu thread's page-fault path); without them, none in 16.
	// Little evidence, and no slower.
	monitor := filepath.Join(tmp, "monitor.sock")
	args := []string{"-accel", envOr(EnvQEMUAccel, "tcg"), "-cpu", envOr(EnvQEMUCPU, "max"), "-m", strconv.Itoa(cfg.MemoryMB), "-smp", strconv.Itoa(cfg.CPUs),
		"-nographic", "-no-reboot", "-nic", "none", "-monitor", "unix:" + monitor + ",server=on,wait=off",
		"-kernel", cfg.Kernel.Image, "-initrd", initrd,
		"-append", "console=ttyS0 quiet rdinit=/init panic=-1 softlockup_panic=1 sysrq_always_enabled=1 transparent_hugepage=never mitigations=off"}
	qctx, kill := context.WithCancel(ctx)
	defer kill()
	cmd := exec.CommandContext(qctx, cfg.QEMU, args...)
	cmd.WaitDelay = 5 * time.Second
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBoot, err)
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("%w: starting %s: %w", ErrBoot, cfg.QEMU, err)
	}
	con := newConsole(nonce, cfg.Stdout, cfg.Log, start)
	stalled := make(chan error, 1)
	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		if err := con.watch(qctx, cfg.Stall, cfg.Check); err != nil {
			fmt.Fprintf(cfg.Log, "nimbus-sandbox: %v; asking QEMU and the L1 kernel where they are, then killing QEMU\n", err)
			diagnose(qctx, monitor, cfg.CPUs, cfg.Log)
			stalled <- err
			kill()
		}
	}()
	con.scan(out)
	werr = cmd.Wait()
	kill()
	<-watchDone

	res.BootTime, res.CommandTime = con.bootTime, con.cmdTime
	select {
	case err := <-stalled:
		return nil, fmt.Errorf("%w: %w (QEMU killed)\n%s", ErrStalled, err, con.tail())
	default:
	}
	if ctx.Err() != nil && !con.exited {
		return nil, fmt.Errorf("%w after %v (QEMU killed): %w\n%s", ErrTimeout, cfg.Timeout, ctx.Err(), con.tail())
	}
	if !con.exited {
		return nil, fmt.Errorf("%w: guest ended without the exit marker (qemu: %v %s); console:\n%s",
			ErrBoot, werr, strings.TrimSpace(stderr.String()), con.tail())
	}
	res.ExitStatus = con.status
	fmt.Fprintf(cfg.Log, "nimbus-sandbox: qemu tcg: initramfs %.1f MiB, L1 boot %.2fs (QEMU start to init), command %.2fs, exit status %d\n",
		float64(res.ImageBytes)/(1<<20), res.BootTime.Seconds(), res.CommandTime.Seconds(), res.ExitStatus)
	return res, nil
}

// diagnose asks QEMU's monitor for the vCPUs' state and their local
// APICs (a wedged L1 with every CPU halted is one whose timer interrupts
// stopped: the APIC says whether one is stuck in service or the timer is
// disarmed) and has the L1 kernel print every CPU's backtrace, its blocked
// tasks and its timers (SysRq l, w and q, after SysRq 8 so that the
// "quiet" kernel prints them) on the console, which is still being read;
// it then gives the kernel a moment to print. Failures are logged: this
// is a report, not a recovery.
func diagnose(ctx context.Context, monitor string, cpus int, log io.Writer) {
	var d net.Dialer
	dctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	conn, err := d.DialContext(dctx, "unix", monitor)
	cancel()
	if err != nil {
		fmt.Fprintf(log, "nimbus-sandbox: QEMU monitor: %v\n", err)
		return
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprint(conn, "info status\ninfo registers -a\n")
	for i := range cpus {
		fmt.Fprintf(conn, "cpu %d\ninfo lapic\n", i)
	}
	fmt.Fprint(conn, "sendkey alt-sysrq-8\nsendkey alt-sysrq-l\nsendkey alt-sysrq-w\nsendkey alt-sysrq-q\n")
	// Keep the lines that say where each vCPU is and what its APIC holds
	// ("APR ... TPR ... PPR" is the priorities' line); the rest is noise.
	keep := []string{"VM status", "CPU#", "RIP=", "CS =", "CR0=", "dumping local APIC", "LVTT", "Timer", "ISR", "IRR", "APR"}
	sc := bufio.NewScanner(conn)
	for sc.Scan() {
		l := strings.TrimSpace(strings.TrimPrefix(sc.Text(), "(qemu)"))
		for _, k := range keep {
			if strings.HasPrefix(l, k) {
				fmt.Fprintf(log, "nimbus-sandbox: qemu: %s\n", l)
				break
			}
		}
	}
	select {
	case <-ctx.Done():
	case <-time.After(15 * time.Second):
	}
}

// console follows the sandbox guest's serial output.
type console struct {
	nonce     string
	stdout    io.Writer
	log       io.Writer
	start     time.Time
	running   bool
	exited    bool
	status    int
	bootTime  time.Duration
	cmdStart  time.Time
	cmdTime   time.Duration
	lastLines []string // the console's last lines, for error reports

	mu        sync.Mutex // the fields below: scan writes, watch reads
	lastSeen  time.Time  // the last console output
	heartbeat string     // the last heartbeat's figures
}

func newConsole(nonce string, stdout, log io.Writer, start time.Time) *console {
	return &console{nonce: nonce, stdout: stdout, log: log, start: start, lastSeen: start}
}

// watch returns an error once the console has been silent for stall
// (0: never) or check fails while the command runs; nil when ctx ends.
func (c *console) watch(ctx context.Context, stall time.Duration, check func() error) error {
	if stall <= 0 && check == nil {
		return nil
	}
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		c.mu.Lock()
		silent, hb := time.Since(c.lastSeen), c.heartbeat
		c.mu.Unlock()
		if stall > 0 && silent >= stall {
			if hb == "" {
				hb = "none yet"
			}
			return fmt.Errorf("the sandbox console has been silent for %v (last heartbeat: %s)", silent.Round(time.Second), hb)
		}
		if check != nil {
			if err := check(); err != nil {
				return err
			}
		}
	}
}

func (c *console) scan(r io.Reader) {
	br := bufio.NewReaderSize(r, 64*1024)
	for {
		line, err := br.ReadString('\n')
		if line != "" {
			c.line(strings.TrimRight(line, "\r\n"))
		}
		if err != nil {
			return
		}
	}
}

func (c *console) line(l string) {
	c.mu.Lock()
	c.lastSeen = time.Now()
	if i := strings.Index(l, markAlive+" "+c.nonce); i >= 0 {
		c.heartbeat = strings.TrimSpace(l[i+len(markAlive)+len(c.nonce)+1:])
		l = l[:i]
	}
	c.mu.Unlock()
	if l == "" {
		return
	}
	if len(c.lastLines) >= 60 {
		c.lastLines = c.lastLines[1:]
	}
	c.lastLines = append(c.lastLines, l)
	switch {
	case c.exited:
	case c.running:
		if i := strings.Index(l, markExit+" "+c.nonce+" "); i >= 0 {
			if i > 0 { // the command's last line had no newline
				fmt.Fprintln(c.stdout, l[:i])
			}
			st, err := strconv.Atoi(strings.TrimSpace(l[i+len(markExit)+len(c.nonce)+2:]))
			if err != nil {
				return
			}
			c.exited, c.status, c.running = true, st, false
			c.cmdTime = time.Since(c.cmdStart)
			return
		}
		fmt.Fprintln(c.stdout, l)
	// Kernel messages may share a line with init's output, so match the
	// markers anywhere in a line.
	case strings.Contains(l, markInit+" "+c.nonce):
		c.bootTime = time.Since(c.start)
	case strings.Contains(l, markStart+" "+c.nonce):
		c.running, c.cmdStart = true, time.Now()
	case strings.HasPrefix(l, errPrefix):
		fmt.Fprintln(c.log, l)
	}
}

func (c *console) tail() string {
	return strings.Join(c.lastLines, "\n")
}
