// Package cli parses the nimbus command line, which mirrors the
// cloud-hypervisor binary's (cloud-hypervisor/src/main.rs, clap 4), into a
// VmConfig plus the VMM process options.
package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/nimbus-vmm/nimbus/internal/config"
	"github.com/nimbus-vmm/nimbus/internal/optparse"
)

// Version is the Cloud Hypervisor release whose interface Nimbus
// implements (API, CLI, events), reported where upstream reports its own
// version: --version ("<program> v53.0"), nimbus-remote --version and
// vmm.ping. Clients gate features on it: libvirt's ch driver reads
// "cloud-hypervisor v<major>.<minor>" from --version (src/ch/ch_conf.c) and
// enables multi-fd vm.add-net from a version up; Kata parses vmm.ping's
// build_version. So it must be a Cloud Hypervisor version number, not
// Nimbus's own.
var Version = "v53.0"

// NimbusVersion is Nimbus's own release, printed by --version on a line
// after upstream's two.
var NimbusVersion = "0.1.0"

// MigrationProtocolVersions is upstream's second --version line (v53.0
// prints "Migration Protocol Versions: 0").
const MigrationProtocolVersions = "0"

// ProgramName starts the --version line. It defaults to the executable's
// base name, so a nimbus installed as cloud-hypervisor prints
// "cloud-hypervisor v53.0", the prefix libvirt requires.
var ProgramName = filepath.Base(os.Args[0])

// VersionText is what --version prints.
func VersionText() string {
	return fmt.Sprintf("%s %s\nMigration Protocol Versions: %s\nNimbus %s\n",
		ProgramName, Version, MigrationProtocolVersions, NimbusVersion)
}

// ErrUsage classifies command-line errors (unknown flag, missing value,
// option without payload, ...). Option parse and validation errors wrap
// config.ErrParse / config.ErrInvalid instead.
var ErrUsage = errors.New("usage error")

// Options is the parsed command line.
type Options struct {
	// VM is the VM to create and boot; nil when no payload option is given.
	VM *config.VmConfig

	APISocketPath    string
	APISocketFD      *int
	EventMonitorPath string
	EventMonitorFD   *int
	Restore          *config.RestoreConfig
	NoShutdown       bool
	Verbosity        int    // number of -v
	LogFile          string // empty: stderr
	LogFormat        string
	Seccomp          string // true|false|log|errno
	GdbSocket        string
	DryRun           bool
	Help             bool
	Version          bool
}

type kind int

const (
	single   kind = iota // one value
	multi                // one or more values, repeatable
	flag                 // no value
	optional             // zero or one value (--rtc)
)

type flagSpec struct {
	name   string
	kind   kind
	vm     bool   // a vm-config option: needs a payload option
	syntax string // help text
}

var flagSpecs = []flagSpec{
	{"api-socket", single, false, `HTTP API socket (UNIX domain socket): path=</path/to/a/file>|fd=<fd>|</path/to/a/file>`},
	{"balloon", single, true, config.BalloonSyntax},
	{"cmdline", single, true, `Kernel command line`},
	{"console", single, true, `Control (virtio) console: "off|null|pty|tty|file=</path/to/a/file>,iommu=on|off,id=<device_id>,pci_segment=<segment_id>,pci_device_id=<pci_slot>"`},
	{"cpus", single, true, `boot=<boot_vcpus>,max=<max_vcpus>,topology=<threads_per_core>:<cores_per_die>:<dies_per_package>:<packages>,kvm_hyperv=on|off,max_phys_bits=<maximum_number_of_physical_bits>,affinity=<list_of_vcpus_with_their_associated_cpuset>,features=<list_of_features_to_enable>,nested=on|off,core_scheduling=vm|vcpu|off`},
	{"debug-console", single, true, `Debug console: "off|pty|tty|file=</path/to/a/file>,iobase=<port in hex>"`},
	{"device", multi, true, config.DeviceSyntax},
	{"disk", multi, true, config.DiskSyntax},
	{"dry-run", flag, false, `Validate the configuration, print it as vm.info's "config" JSON and exit (nimbus addition)`},
	{"event-monitor", single, false, `File to report events on: path=</path/to/a/file>|fd=<fd>`},
	{"firmware", single, true, `Path to firmware that is loaded in an architectural specific way`},
	{"fs", multi, true, config.FsSyntax},
	{"gdb", single, false, `GDB socket (UNIX domain socket): path=</path/to/a/file>`},
	{"generic-vhost-user", multi, true, config.GenericVhostUserSyntax},
	{"help", flag, false, `Print help`},
	{"host-data", single, true, `Host specific data to SEV SNP guest (64 hex characters)`},
	{"igvm", single, true, `Path to IGVM file to load`},
	{"initramfs", single, true, `Path to initramfs image`},
	{"kernel", single, true, `Path to kernel or firmware that supports a PVH entry point or architecture equivalent`},
	{"landlock", flag, true, `Enable Landlock sandboxing`},
	{"landlock-rules", multi, true, config.LandlockRulesSyntax},
	{"log-file", single, false, `Log file. Standard error is used if not specified`},
	{"log-format", single, false, `Log format`},
	{"memory", single, true, `Memory parameters "size=<guest_memory_size>,mergeable=on|off,shared=on|off,hugepages=on|off,hugepage_size=<hugepage_size>,hotplug_method=acpi|virtio-mem,hotplug_size=<hotpluggable_memory_size>,hotplugged_size=<hotplugged_memory_size>,prefault=on|off,reserve=on|off,thp=on|off"`},
	{"memory-zone", multi, true, `User defined memory zone parameters "size=<guest_memory_region_size>,file=<backing_file>,shared=on|off,hugepages=on|off,hugepage_size=<hugepage_size>,host_numa_node=<node_id>,id=<zone_identifier>,hotplug_size=<hotpluggable_memory_size>,hotplugged_size=<hotplugged_memory_size>,prefault=on|off,reserve=on|off,mergeable=on|off"`},
	{"net", multi, true, config.NetSyntax},
	{"no-shutdown", flag, false, `Do not exit the VMM when the guest shuts down`},
	{"numa", multi, true, config.NumaSyntax},
	{"pci-segment", multi, true, config.PciSegmentSyntax},
	{"platform", single, true, `num_pci_segments=<num_pci_segments>,iommu_segments=<list_of_segments>,iommu_address_width=<bits>,iommufd=on|off,iommufd_fd=<fd>,vfio_p2p_dma=on|off,serial_number=<dmi_device_serial_number>,uuid=<dmi_device_uuid>,oem_strings=<list_of_strings>,system_manufacturer=<string>,system_product_name=<string>,system_version=<string>,system_family=<string>,system_sku_number=<string>,chassis_asset_tag=<string>`},
	{"pmem", multi, true, config.PmemSyntax},
	{"pvpanic", flag, true, `Enable pvpanic device`},
	{"rate-limit-group", multi, true, config.RateLimitGroupSyntax},
	{"restore", single, false, config.RestoreSyntax},
	{"rng", single, true, `Random number generator parameters "src=<entropy_source_path>,iommu=on|off,id=<device_id>,pci_segment=<segment_id>,pci_device_id=<pci_slot>"`},
	{"rtc", optional, true, `virtio-rtc device "iommu=on|off,id=<device_id>,pci_segment=<segment_id>,pci_device_id=<pci_slot>"`},
	{"seccomp", single, false, `Enable seccomp filtering: true|false|log|errno`},
	{"serial", single, true, `Control serial port: "off|null|pty|tty|file=</path/to/a/file>|socket=</path/to/a/file>"`},
	{"tpm", single, true, config.TpmSyntax},
	{"user-device", multi, true, config.UserDeviceSyntax},
	{"v", flag, false, `Sets the level of debugging output (repeatable: -v, -vv, -vvv)`},
	{"vdpa", multi, true, config.VdpaSyntax},
	{"version", flag, false, `Print version: "<program> v<Cloud Hypervisor release implemented>" and "Migration Protocol Versions: <n>" as upstream (libvirt parses the first line), then "Nimbus <own version>"`},
	{"vsock", single, true, config.VsockSyntax},
	{"watchdog", flag, true, `Enable virtio-watchdog`},
}

var payloadFlags = []string{"kernel", "firmware", "igvm"}

func lookup(name string) (flagSpec, bool) {
	for _, f := range flagSpecs {
		if f.name == name {
			return f, true
		}
	}
	return flagSpec{}, false
}

func usagef(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrUsage, fmt.Sprintf(format, args...))
}

// parsed is the raw command line: values per flag in order, and counts.
type parsed struct {
	values map[string][]string
	counts map[string]int
	order  []string // first-appearance order of VM options, for messages
}

func scan(args []string) (*parsed, error) {
	p := &parsed{values: map[string][]string{}, counts: map[string]int{}}
	for i := 0; i < len(args); i++ {
		a := args[i]
		var name, inline string
		hasInline := false
		switch {
		case a == "-h":
			name = "help"
		case a == "-V":
			name = "version"
		case len(a) > 1 && a[0] == '-' && a[1] != '-' && strings.Trim(a[1:], "v") == "":
			p.counts["v"] += len(a) - 1
			continue
		case strings.HasPrefix(a, "--") && len(a) > 2:
			name, inline, hasInline = strings.Cut(a[2:], "=")
		default:
			return nil, usagef("unexpected argument '%s' found", a)
		}
		spec, ok := lookup(name)
		if !ok || name == "v" {
			return nil, usagef("unexpected argument '--%s' found", name)
		}
		if p.counts[name] > 0 && spec.kind != multi && spec.kind != flag {
			return nil, usagef("the argument '--%s' cannot be used multiple times", name)
		}
		p.counts[name]++
		if spec.vm && p.counts[name] == 1 {
			p.order = append(p.order, name)
		}
		switch spec.kind {
		case flag:
			if hasInline {
				return nil, usagef("unexpected value '%s' for '--%s' found; no more were expected", inline, name)
			}
		case single:
			if hasInline {
				p.values[name] = append(p.values[name], inline)
			} else if i+1 < len(args) && !isFlag(args[i+1]) {
				i++
				p.values[name] = append(p.values[name], args[i])
			} else {
				return nil, usagef("a value is required for '--%s <%s>' but none was supplied", name, name)
			}
		case optional:
			if hasInline {
				p.values[name] = append(p.values[name], inline)
			} else if i+1 < len(args) && !isFlag(args[i+1]) {
				i++
				p.values[name] = append(p.values[name], args[i])
			}
		case multi:
			n := 0
			if hasInline {
				p.values[name] = append(p.values[name], inline)
				n++
			} else {
				for i+1 < len(args) && !isFlag(args[i+1]) {
					i++
					p.values[name] = append(p.values[name], args[i])
					n++
				}
			}
			if n == 0 {
				return nil, usagef("a value is required for '--%s <%s>' but none was supplied", name, name)
			}
		}
	}
	return p, nil
}

// isFlag is clap's view: a token starting with '-' (other than "-" alone)
// begins a new argument.
func isFlag(s string) bool { return len(s) > 1 && s[0] == '-' }

func (p *parsed) one(name string) (string, bool) {
	v := p.values[name]
	if len(v) == 0 {
		return "", false
	}
	return v[0], true
}

// Parse parses the arguments after the program name.
func Parse(args []string) (*Options, error) {
	p, err := scan(args)
	if err != nil {
		return nil, err
	}
	o := &Options{
		Verbosity:  p.counts["v"],
		Help:       p.counts["help"] > 0,
		Version:    p.counts["version"] > 0,
		DryRun:     p.counts["dry-run"] > 0,
		NoShutdown: p.counts["no-shutdown"] > 0,
		Seccomp:    "true",
	}
	if o.Help || o.Version {
		return o, nil
	}
	if v, ok := p.one("api-socket"); ok {
		if err := parseAPISocket(v, o); err != nil {
			return nil, err
		}
	}
	if v, ok := p.one("event-monitor"); ok {
		if err := parseEventMonitor(v, o); err != nil {
			return nil, err
		}
	}
	if v, ok := p.one("restore"); ok {
		if o.Restore, err = config.ParseRestore(v); err != nil {
			return nil, err
		}
	}
	if v, ok := p.one("seccomp"); ok {
		switch v {
		case "true", "false", "log", "errno":
			o.Seccomp = v
		default:
			return nil, usagef("invalid value '%s' for '--seccomp <seccomp>' [possible values: true, false, log, errno]", v)
		}
	}
	o.LogFile, _ = p.one("log-file")
	o.LogFormat, _ = p.one("log-format")
	if v, ok := p.one("gdb"); ok {
		gp := optparse.New().Add("path")
		if err := gp.Parse(v); err != nil {
			return nil, &config.ParseError{Option: "--gdb", Err: err}
		}
		if o.GdbSocket, ok = gp.Get("path"); !ok {
			return nil, &config.ParseError{Option: "--gdb", Err: errors.New("path missing")}
		}
		// Upstream builds --gdb only with its guest_debug feature; say no
		// at once rather than start a VM nobody can debug.
		return nil, &config.ParseError{Option: "--gdb", Err: errors.New("the GDB stub is not supported by this build")}
	}

	hasPayload := false
	for _, f := range payloadFlags {
		hasPayload = hasPayload || p.counts[f] > 0
	}
	if !hasPayload {
		for _, name := range p.order {
			return nil, usagef("the following required arguments were not provided: --kernel <kernel> (--%s requires a payload option: --kernel, --firmware or --igvm)", name)
		}
		return o, nil
	}
	if o.VM, err = buildVM(p); err != nil {
		return nil, err
	}
	return o, nil
}

// parseAPISocket follows upstream's parse_api_socket: the value is read
// with the option parser, but a parse failure is ignored (keys read before
// the failing one still count, as option_parser sets them as it goes);
// fd= wins over path=, and when neither was read the raw string is the
// path. Only an fd that is not a number fails.
func parseAPISocket(v string, o *Options) error {
	ap := optparse.New().Add("path", "fd")
	_ = ap.Parse(v)
	if _, hasFD := ap.Get("fd"); hasFD {
		fd, _, err := optparse.Convert(ap, "fd", optparse.Uint(31))
		if err != nil {
			return &config.ParseError{Option: "--api-socket", Err: err}
		}
		n := int(fd)
		o.APISocketFD = &n
		return nil
	}
	if path, ok := ap.Get("path"); ok {
		o.APISocketPath = path
		return nil
	}
	o.APISocketPath = v
	return nil
}

func parseEventMonitor(v string, o *Options) error {
	ep := optparse.New().Add("path", "fd")
	if err := ep.Parse(v); err != nil {
		return &config.ParseError{Option: "--event-monitor", Err: errors.New("path or fd required")}
	}
	path, hasPath := ep.Get("path")
	fd, hasFD, err := optparse.Convert(ep, "fd", optparse.Uint(31))
	switch {
	case err != nil:
		return &config.ParseError{Option: "--event-monitor", Err: err}
	case hasFD:
		n := int(fd)
		o.EventMonitorFD = &n
	case hasPath:
		o.EventMonitorPath = path
	default:
		return &config.ParseError{Option: "--event-monitor", Err: errors.New("path or fd required")}
	}
	return nil
}

func buildVM(p *parsed) (*config.VmConfig, error) {
	c := config.DefaultVmConfig()
	var err error
	get := func(name, def string) string {
		if v, ok := p.one(name); ok {
			return v
		}
		return def
	}
	cpus, err := config.ParseCpus(get("cpus", "boot=1"))
	if err != nil {
		return nil, err
	}
	c.Cpus = *cpus
	mem, err := config.ParseMemory(get("memory", "size=512M"))
	if err != nil {
		return nil, err
	}
	c.Memory = *mem
	for _, z := range p.values["memory-zone"] {
		zc, err := config.ParseMemoryZoneWith(z, mem.Mergeable)
		if err != nil {
			return nil, err
		}
		c.Memory.Zones = append(c.Memory.Zones, *zc)
	}
	c.Payload = &config.PayloadConfig{
		Kernel: get("kernel", ""), Firmware: get("firmware", ""), Igvm: get("igvm", ""),
		Cmdline: get("cmdline", ""), Initramfs: get("initramfs", ""), HostData: get("host-data", ""),
	}
	if err := appendAll(p, "rate-limit-group", config.ParseRateLimitGroup, &c.RateLimitGroups); err != nil {
		return nil, err
	}
	if err := appendAll(p, "disk", config.ParseDisk, &c.Disks); err != nil {
		return nil, err
	}
	if err := appendAll(p, "net", config.ParseNet, &c.Net); err != nil {
		return nil, err
	}
	rng, err := config.ParseRng(get("rng", "src=/dev/urandom"))
	if err != nil {
		return nil, err
	}
	c.Rng = *rng
	if v, ok := p.one("balloon"); ok {
		if c.Balloon, err = config.ParseBalloon(v); err != nil {
			return nil, err
		}
	}
	if err := appendAll(p, "generic-vhost-user", config.ParseGenericVhostUser, &c.GenericVhostUser); err != nil {
		return nil, err
	}
	if err := appendAll(p, "fs", config.ParseFs, &c.Fs); err != nil {
		return nil, err
	}
	if err := appendAll(p, "pmem", config.ParsePmem, &c.Pmem); err != nil {
		return nil, err
	}
	serial, err := config.ParseSerial(get("serial", "null"))
	if err != nil {
		return nil, err
	}
	c.Serial = *serial
	console, err := config.ParseConsole(get("console", "tty"))
	if err != nil {
		return nil, err
	}
	c.Console = *console
	dbg, err := config.ParseDebugConsole(get("debug-console", "off,iobase=0xe9"))
	if err != nil {
		return nil, err
	}
	c.DebugConsole = *dbg
	if err := appendAll(p, "device", config.ParseDevice, &c.Devices); err != nil {
		return nil, err
	}
	if err := appendAll(p, "user-device", config.ParseUserDevice, &c.UserDevices); err != nil {
		return nil, err
	}
	if err := appendAll(p, "vdpa", config.ParseVdpa, &c.Vdpa); err != nil {
		return nil, err
	}
	if v, ok := p.one("vsock"); ok {
		if c.Vsock, err = config.ParseVsock(v); err != nil {
			return nil, err
		}
	}
	c.Pvpanic = p.counts["pvpanic"] > 0
	if err := appendAll(p, "numa", config.ParseNuma, &c.Numa); err != nil {
		return nil, err
	}
	c.Watchdog = p.counts["watchdog"] > 0
	if p.counts["rtc"] > 0 {
		if c.Rtc, err = config.ParseRtc(get("rtc", "")); err != nil {
			return nil, err
		}
	}
	if err := appendAll(p, "pci-segment", config.ParsePciSegment, &c.PciSegments); err != nil {
		return nil, err
	}
	if v, ok := p.one("platform"); ok {
		if c.Platform, err = config.ParsePlatform(v); err != nil {
			return nil, err
		}
	}
	if v, ok := p.one("tpm"); ok {
		if c.Tpm, err = config.ParseTpm(v); err != nil {
			return nil, err
		}
	}
	c.LandlockEnable = p.counts["landlock"] > 0
	if err := appendAll(p, "landlock-rules", config.ParseLandlockRule, &c.LandlockRules); err != nil {
		return nil, err
	}
	if err := c.Validate(); err != nil {
		return nil, validationError(err)
	}
	return &c, nil
}

func appendAll[T any](p *parsed, name string, parse func(string) (*T, error), dst *[]T) error {
	for _, v := range p.values[name] {
		x, err := parse(v)
		if err != nil {
			return err
		}
		*dst = append(*dst, *x)
	}
	return nil
}

// fieldOption maps a ValidationError's JSON path to the CLI option.
var fieldOption = map[string]string{
	"cpus": "--cpus", "memory": "--memory", "payload": "--kernel", "rate_limit_groups": "--rate-limit-group",
	"disks": "--disk", "net": "--net", "rng": "--rng", "balloon": "--balloon", "generic_vhost_user": "--generic-vhost-user",
	"fs": "--fs", "pmem": "--pmem", "serial": "--serial", "console": "--console", "debug_console": "--debug-console",
	"devices": "--device", "user_devices": "--user-device", "vdpa": "--vdpa", "vsock": "--vsock", "numa": "--numa",
	"rtc": "--rtc", "pci_segments": "--pci-segment", "platform": "--platform", "tpm": "--tpm", "landlock_rules": "--landlock-rules",
}

// ValidationFailure is a VmConfig validation error found on the command
// line, attributed to the option that produced the field.
type ValidationFailure struct {
	Option string
	Err    error
}

func (e *ValidationFailure) Error() string {
	return "error validating " + e.Option + ": " + e.Err.Error()
}

// Unwrap returns the *config.ValidationError.
func (e *ValidationFailure) Unwrap() error { return e.Err }

func validationError(err error) error {
	var ve *config.ValidationError
	if !errors.As(err, &ve) {
		return err
	}
	top := ve.Field
	if i := strings.IndexAny(top, ".["); i >= 0 {
		top = top[:i]
	}
	if strings.HasPrefix(ve.Field, "memory.zones") {
		return &ValidationFailure{Option: "--memory-zone", Err: err}
	}
	opt, ok := fieldOption[top]
	if !ok {
		opt = "--" + top
	}
	return &ValidationFailure{Option: opt, Err: err}
}

// Help returns the help text: every option with upstream's syntax strings.
func Help() string {
	var b strings.Builder
	b.WriteString("nimbus: a Cloud Hypervisor compatible VMM\n\nUsage: nimbus [OPTIONS]\n\nOptions:\n")
	for _, f := range flagSpecs {
		switch {
		case f.name == "v":
			fmt.Fprintf(&b, "  -v...\n          %s\n", f.syntax)
		case f.name == "help":
			fmt.Fprintf(&b, "  -h, --help\n          %s\n", f.syntax)
		case f.name == "version":
			fmt.Fprintf(&b, "  -V, --version\n          %s\n", f.syntax)
		case f.kind == flag:
			fmt.Fprintf(&b, "      --%s\n          %s\n", f.name, f.syntax)
		case f.kind == multi:
			fmt.Fprintf(&b, "      --%s <%s>...\n          %s\n", f.name, f.name, f.syntax)
		case f.kind == optional:
			fmt.Fprintf(&b, "      --%s [<%s>]\n          %s\n", f.name, f.name, f.syntax)
		default:
			fmt.Fprintf(&b, "      --%s <%s>\n          %s\n", f.name, f.name, f.syntax)
		}
	}
	return b.String()
}

// Runner starts the VMM for parsed options and returns when it has
// stopped: nil for a clean exit (status 0), otherwise the error, which
// Main prints as an error chain (status 1).
type Runner func(*Options) error

// Main is the nimbus entry point: it handles --help, --version and
// --dry-run itself and hands everything else to run. It returns the exit
// status. Command-line errors are one line on stderr naming the option,
// status 2 for usage errors (ErrUsage, as clap) and 1 for bad values;
// a failure of run is printed as upstream's error chain (PrintErrorChain).
func Main(args []string, stdout, stderr io.Writer, run Runner) int {
	if len(args) == 0 {
		// clap's arg_required_else_help.
		fmt.Fprint(stderr, Help())
		return 2
	}
	o, err := Parse(args)
	if err != nil {
		fmt.Fprintf(stderr, "nimbus: %s\n", oneLine(err))
		return exitStatus(err)
	}
	switch {
	case o.Help:
		fmt.Fprint(stdout, Help())
		return 0
	case o.Version:
		io.WriteString(stdout, VersionText())
		return 0
	case o.DryRun:
		if o.VM == nil {
			fmt.Fprintln(stderr, "nimbus: --dry-run needs a payload option (--kernel, --firmware or --igvm)")
			return 1
		}
		o.VM.AssignDeviceIDs()
		if err := o.VM.FillMACs(); err != nil {
			fmt.Fprintf(stderr, "nimbus: %s\n", oneLine(err))
			return 1
		}
		out, err := json.MarshalIndent(o.VM, "", "  ")
		if err != nil {
			fmt.Fprintf(stderr, "nimbus: %s\n", oneLine(err))
			return 1
		}
		fmt.Fprintf(stdout, "%s\n", out)
		return 0
	}
	if run == nil {
		fmt.Fprintln(stderr, "nimbus: the VMM is not available in this build")
		return 1
	}
	if err := run(o); err != nil {
		PrintErrorChain(stderr, DisplayName, err)
		return 1
	}
	return 0
}

// exitStatus is the status of a command line Parse refused. clap exits 2
// for its own usage errors (an unexpected argument, a repeated single
// option, a missing value, a value outside --seccomp's list, a VM option
// without a payload); an option value that fails parsing or validation is
// upstream's config error after clap, status 1.
func exitStatus(err error) int {
	if errors.Is(err, ErrUsage) {
		return 2
	}
	return 1
}

func oneLine(err error) string {
	msg := strings.TrimPrefix(err.Error(), ErrUsage.Error()+": ")
	return strings.ReplaceAll(msg, "\n", " ")
}
