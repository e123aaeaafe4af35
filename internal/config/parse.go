package config

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"

	"github.com/nimbus-vmm/nimbus/internal/optparse"
)

// ErrParse classifies a malformed CLI option value.
var ErrParse = errors.New("error parsing option")

// ParseError says which CLI option failed and why, e.g.
// "error parsing --cpus: invalid value "x" for boot".
type ParseError struct {
	Option string // the flag, e.g. "--cpus"
	Err    error
}

func (e *ParseError) Error() string { return "error parsing " + e.Option + ": " + e.Err.Error() }

// Unwrap exposes the cause (an optparse error or a *ValidationError).
func (e *ParseError) Unwrap() []error { return []error{ErrParse, e.Err} }

// reader reads typed values from a parsed option string, remembering the
// first failure so the parsers read as a flat list of fields.
type reader struct {
	p   *optparse.Parser
	err error
}

func newReader(opt, input string, keys []string, valueless ...string) (*reader, error) {
	p := optparse.New().Add(keys...).AddValueless(valueless...)
	if err := p.Parse(input); err != nil {
		return nil, &ParseError{Option: opt, Err: err}
	}
	return &reader{p: p}, nil
}

func conv[T any](r *reader, key string, f func(string) (T, error), def T) T {
	if r.err != nil {
		return def
	}
	v, err := optparse.ConvertOr(r.p, key, f, def)
	if err != nil {
		r.err = err
	}
	return v
}

func convPtr[T any](r *reader, key string, f func(string) (T, error)) *T {
	if r.err != nil {
		return nil
	}
	v, ok, err := optparse.Convert(r.p, key, f)
	if err != nil {
		r.err = err
		return nil
	}
	if !ok {
		return nil
	}
	return &v
}

func (r *reader) str(key string) string { v, _ := r.p.Get(key); return v }
func (r *reader) toggle(key string, def bool) bool {
	return conv(r, key, optparse.Toggle, def)
}
func (r *reader) bytes(key string, def uint64) uint64 {
	return conv(r, key, optparse.ByteSized, def)
}
func (r *reader) u16(key string, def uint16) uint16 { return conv(r, key, optparse.Uint16, def) }
func (r *reader) u32(key string, def uint32) uint32 { return conv(r, key, optparse.Uint32, def) }
func (r *reader) u64(key string, def uint64) uint64 { return conv(r, key, optparse.Uint64, def) }
func (r *reader) uint(key string, def uint) uint {
	return uint(conv(r, key, optparse.Uint(strconv.IntSize), uint64(def)))
}

func (r *reader) done(opt string) error {
	if r.err != nil {
		return &ParseError{Option: opt, Err: r.err}
	}
	return nil
}

func missing(opt, what string) error {
	return &ParseError{Option: opt, Err: fmt.Errorf("%s missing", what)}
}

func enumConv[T ~string](m map[string]T) func(string) (T, error) {
	return func(s string) (T, error) {
		if v, ok := m[strings.ToLower(s)]; ok {
			return v, nil
		}
		return "", errors.New("unknown variant")
	}
}

var pciKeys = []string{"id", "iommu", "pci_segment", "pci_device_id"}

func (r *reader) pci() PciCommon {
	return PciCommon{
		ID:          r.str("id"),
		IOMMU:       r.toggle("iommu", false),
		PciSegment:  r.u16("pci_segment", 0),
		PciDeviceID: convPtr(r, "pci_device_id", optparse.Uint8),
	}
}

func keys(lists ...[]string) []string {
	var out []string
	for _, l := range lists {
		out = append(out, l...)
	}
	return out
}

var rateKeys = []string{"bw_size", "bw_one_time_burst", "bw_refill_time", "ops_size", "ops_one_time_burst", "ops_refill_time"}

// rateLimiter builds upstream's buckets: one exists only when its size and
// refill time are both non-zero; the CLI writes one_time_burst as 0 when
// not given.
func (r *reader) rateLimiter() RateLimiterConfig {
	bucket := func(prefix string) *TokenBucketConfig {
		size, burst, refill := r.u64(prefix+"_size", 0), r.u64(prefix+"_one_time_burst", 0), r.u64(prefix+"_refill_time", 0)
		if size == 0 || refill == 0 {
			return nil
		}
		return &TokenBucketConfig{Size: size, OneTimeBurst: &burst, RefillTime: refill}
	}
	return RateLimiterConfig{Bandwidth: bucket("bw"), Ops: bucket("ops")}
}

func affinity[K any](r *reader, key string, keyConv func(string) (K, error)) []optparse.Pair[[]uint64] {
	pairs := convPtr(r, key, optparse.TupleList(optparse.IntegerList))
	if pairs == nil {
		return nil
	}
	for _, p := range *pairs {
		if _, err := keyConv(p.Key); err != nil && r.err == nil {
			r.err = &optparse.Error{Kind: optparse.ErrInvalidValue, Option: key, Value: p.Key}
		}
	}
	return *pairs
}

// ParseCpus parses --cpus boot=,max=,topology=T:C:D:P,kvm_hyperv=,
// max_phys_bits=,affinity=[v@[cpus]],features=[amx],nested=,core_scheduling=.
func ParseCpus(s string) (*CpusConfig, error) {
	const opt = "--cpus"
	r, err := newReader(opt, s, []string{"boot", "max", "topology", "kvm_hyperv", "max_phys_bits", "affinity", "features", "nested", "core_scheduling", "profile"})
	if err != nil {
		return nil, err
	}
	c := DefaultCpusConfig()
	c.BootVcpus = r.u32("boot", DefaultVcpus)
	c.MaxVcpus = r.u32("max", c.BootVcpus)
	c.Topology = convPtr(r, "topology", parseTopology)
	c.KvmHyperv = r.toggle("kvm_hyperv", false)
	c.MaxPhysBits = conv(r, "max_phys_bits", optparse.Uint8, uint8(DefaultMaxPhysBits))
	for _, p := range affinity(r, "affinity", optparse.Uint32) {
		v, _ := optparse.Uint32(p.Key)
		c.Affinity = append(c.Affinity, CpuAffinity{Vcpu: v, HostCpus: p.Value})
	}
	for _, f := range conv(r, "features", optparse.StringList, nil) {
		if f != "amx" {
			if r.err == nil {
				r.err = &optparse.Error{Kind: optparse.ErrInvalidValue, Option: "features", Value: f}
			}
			continue
		}
		c.Features.AMX = true
	}
	c.Nested = r.toggle("nested", true)
	c.CoreScheduling = conv(r, "core_scheduling", enumConv(map[string]CoreScheduling{"vm": CoreSchedulingVM, "vcpu": CoreSchedulingVcpu, "off": CoreSchedulingOff}), CoreSchedulingVM)
	c.Profile = conv(r, "profile", enumConv(map[string]CpuProfile{"host": CpuProfileHost}), CpuProfileHost)
	return &c, r.done(opt)
}

func parseTopology(s string) (CpuTopology, error) {
	parts := strings.Split(s, ":")
	if len(parts) != 4 {
		return CpuTopology{}, errors.New("topology needs 4 parts")
	}
	var v [4]uint16
	for i, p := range parts {
		n, err := optparse.Uint16(p)
		if err != nil {
			return CpuTopology{}, err
		}
		v[i] = n
	}
	return CpuTopology{ThreadsPerCore: v[0], CoresPerDie: v[1], DiesPerPackage: v[2], Packages: v[3]}, nil
}

var hotplugMethods = enumConv(map[string]HotplugMethod{"acpi": HotplugACPI, "virtio-mem": HotplugVirtioMem})

// ParseMemory parses --memory (default size=512M); file= is accepted and
// ignored as upstream does.
func ParseMemory(s string) (*MemoryConfig, error) {
	const opt = "--memory"
	r, err := newReader(opt, s, []string{"size", "file", "mergeable", "hotplug_method", "hotplug_size", "hotplugged_size", "shared", "hugepages", "hugepage_size", "prefault", "reserve", "thp"})
	if err != nil {
		return nil, err
	}
	c := MemoryConfig{
		Size:           r.bytes("size", DefaultMemorySize),
		Mergeable:      r.toggle("mergeable", false),
		HotplugMethod:  conv(r, "hotplug_method", hotplugMethods, HotplugACPI),
		HotplugSize:    convPtr(r, "hotplug_size", optparse.ByteSized),
		HotpluggedSize: convPtr(r, "hotplugged_size", optparse.ByteSized),
		Shared:         r.toggle("shared", false),
		Hugepages:      r.toggle("hugepages", false),
		HugepageSize:   convPtr(r, "hugepage_size", optparse.ByteSized),
		Prefault:       r.toggle("prefault", false),
		Reserve:        r.toggle("reserve", false),
		Thp:            r.toggle("thp", true),
	}
	return &c, r.done(opt)
}

// ParseMemoryZone parses one --memory-zone; mergeable defaults to
// mergeableDefault (upstream inherits --memory's mergeable).
func ParseMemoryZone(s string) (*MemoryZoneConfig, error) {
	return ParseMemoryZoneWith(s, false)
}

// ParseMemoryZoneWith is ParseMemoryZone with --memory's mergeable value.
func ParseMemoryZoneWith(s string, mergeableDefault bool) (*MemoryZoneConfig, error) {
	const opt = "--memory-zone"
	r, err := newReader(opt, s, []string{"id", "size", "file", "shared", "hugepages", "hugepage_size", "host_numa_node", "hotplug_size", "hotplugged_size", "prefault", "reserve", "mergeable"})
	if err != nil {
		return nil, err
	}
	id := r.str("id")
	if id == "" {
		return nil, missing(opt, "id")
	}
	c := MemoryZoneConfig{
		ID:             id,
		Size:           r.bytes("size", DefaultMemorySize),
		File:           r.str("file"),
		Shared:         r.toggle("shared", false),
		Hugepages:      r.toggle("hugepages", false),
		HugepageSize:   convPtr(r, "hugepage_size", optparse.ByteSized),
		HostNumaNode:   convPtr(r, "host_numa_node", optparse.Uint32),
		HotplugSize:    convPtr(r, "hotplug_size", optparse.ByteSized),
		HotpluggedSize: convPtr(r, "hotplugged_size", optparse.ByteSized),
		Prefault:       r.toggle("prefault", false),
		Reserve:        r.toggle("reserve", false),
		Mergeable:      r.toggle("mergeable", mergeableDefault),
	}
	return &c, r.done(opt)
}

var imageTypes = enumConv(map[string]ImageType{"raw": ImageRaw, "qcow2": ImageQcow2, "vhd": ImageFixedVhd, "vhdx": ImageVhdx, "vmdk": ImageFlatVmdk})
var lockGranularities = enumConv(map[string]LockGranularity{"byte-range": LockByteRange, "full": LockFull})

// ParseDisk parses one --disk (or ch-remote add-disk) value.
func ParseDisk(s string) (*DiskConfig, error) {
	const opt = "--disk"
	r, err := newReader(opt, s, keys([]string{"path", "readonly", "direct", "queue_size", "num_queues", "vhost_user", "socket", "_disable_io_uring", "_disable_aio", "serial", "rate_limit_group", "queue_affinity", "backing_files", "sparse", "image_type", "lock_granularity"}, rateKeys, pciKeys))
	if err != nil {
		return nil, err
	}
	c := DefaultDiskConfig()
	c.Path = r.str("path")
	c.Readonly = r.toggle("readonly", false)
	c.Direct = r.toggle("direct", false)
	c.QueueSize = r.u16("queue_size", DefaultDiskQueueSize)
	c.NumQueues = r.uint("num_queues", DefaultDiskNumQueues)
	c.VhostUser = r.toggle("vhost_user", false)
	c.VhostSocket = r.str("socket")
	c.DisableIOUring = r.toggle("_disable_io_uring", false)
	c.DisableAIO = r.toggle("_disable_aio", false)
	c.Serial = r.str("serial")
	c.RateLimitGroup = r.str("rate_limit_group")
	for _, p := range affinity(r, "queue_affinity", optparse.Uint16) {
		q, _ := optparse.Uint16(p.Key)
		c.QueueAffinity = append(c.QueueAffinity, VirtQueueAffinity{QueueIndex: q, HostCpus: p.Value})
	}
	c.BackingFiles = r.toggle("backing_files", false)
	c.Sparse = r.toggle("sparse", true)
	c.ImageType = conv(r, "image_type", imageTypes, ImageUnknown)
	c.LockGranularity = conv(r, "lock_granularity", lockGranularities, LockByteRange)
	if rl := r.rateLimiter(); rl.Bandwidth != nil || rl.Ops != nil {
		c.RateLimiterConfig = &rl
	}
	c.PciCommon = r.pci()
	return &c, r.done(opt)
}

func ipConv(s string) (string, error) {
	ip := net.ParseIP(s)
	if ip == nil {
		return "", errors.New("bad IP")
	}
	return ip.String(), nil
}

func macConv(s string) (string, error) {
	hw, err := net.ParseMAC(s)
	if err != nil || len(hw) != 6 {
		return "", errors.New("bad MAC")
	}
	return hw.String(), nil
}

// ParseNet parses one --net (or ch-remote add-net) value. A missing MAC
// is generated (random, locally administered), as upstream does.
func ParseNet(s string) (*NetConfig, error) {
	const opt = "--net"
	r, err := newReader(opt, s, keys([]string{"tap", "ip", "mask", "mac", "host_mac", "offload_tso", "offload_ufo", "offload_csum", "mtu", "queue_size", "num_queues", "vhost_user", "socket", "vhost_mode", "fd"}, rateKeys, pciKeys))
	if err != nil {
		return nil, err
	}
	c := DefaultNetConfig()
	c.Tap = r.str("tap")
	c.IP = conv(r, "ip", ipConv, "")
	c.Mask = conv(r, "mask", ipConv, "")
	c.MAC = conv(r, "mac", macConv, "")
	c.HostMAC = conv(r, "host_mac", macConv, "")
	c.OffloadTSO = r.toggle("offload_tso", true)
	c.OffloadUFO = r.toggle("offload_ufo", true)
	c.OffloadCsum = r.toggle("offload_csum", true)
	c.MTU = convPtr(r, "mtu", optparse.Uint16)
	c.QueueSize = r.u16("queue_size", DefaultNetQueueSize)
	c.NumQueues = r.uint("num_queues", DefaultNetNumQueues)
	c.VhostUser = r.toggle("vhost_user", false)
	c.VhostSocket = r.str("socket")
	c.VhostMode = conv(r, "vhost_mode", enumConv(map[string]VhostMode{"client": VhostClient, "server": VhostServer}), VhostClient)
	for _, fd := range conv(r, "fd", optparse.IntegerListBits(31), nil) {
		c.Fds = append(c.Fds, int32(fd))
	}
	if rl := r.rateLimiter(); rl.Bandwidth != nil || rl.Ops != nil {
		c.RateLimiterConfig = &rl
	}
	c.PciCommon = r.pci()
	if err := r.done(opt); err != nil {
		return nil, err
	}
	if c.MAC == "" {
		if c.MAC, err = RandomMAC(); err != nil {
			return nil, err
		}
	}
	return &c, nil
}

// ParseRng parses --rng (default src=/dev/urandom).
func ParseRng(s string) (*RngConfig, error) {
	const opt = "--rng"
	r, err := newReader(opt, s, keys([]string{"src"}, pciKeys))
	if err != nil {
		return nil, err
	}
	c := DefaultRngConfig()
	if src := r.str("src"); src != "" {
		c.Src = src
	}
	c.PciCommon = r.pci()
	return &c, r.done(opt)
}

// ParseBalloon parses --balloon (size defaults to 0).
func ParseBalloon(s string) (*BalloonConfig, error) {
	const opt = "--balloon"
	r, err := newReader(opt, s, keys([]string{"size", "deflate_on_oom", "free_page_reporting"}, pciKeys))
	if err != nil {
		return nil, err
	}
	c := BalloonConfig{
		Size:              r.bytes("size", 0),
		DeflateOnOOM:      r.toggle("deflate_on_oom", false),
		FreePageReporting: r.toggle("free_page_reporting", false),
	}
	c.PciCommon = r.pci()
	return &c, r.done(opt)
}

// ParseFs parses one --fs; tag (at most 36 bytes) and socket are required.
func ParseFs(s string) (*FsConfig, error) {
	const opt = "--fs"
	r, err := newReader(opt, s, keys([]string{"tag", "socket", "num_queues", "queue_size"}, pciKeys))
	if err != nil {
		return nil, err
	}
	c := FsConfig{Tag: r.str("tag"), Socket: r.str("socket")}
	if c.Tag == "" {
		return nil, missing(opt, "tag")
	}
	if len(c.Tag) > MaxFsTagLen {
		return nil, &ParseError{Option: opt, Err: fmt.Errorf("tag %q is longer than %d bytes", c.Tag, MaxFsTagLen)}
	}
	if c.Socket == "" {
		return nil, missing(opt, "socket")
	}
	c.NumQueues = r.uint("num_queues", DefaultFsNumQueues)
	c.QueueSize = r.u16("queue_size", DefaultFsQueueSize)
	c.PciCommon = r.pci()
	return &c, r.done(opt)
}

// ParsePmem parses one --pmem; file is required.
func ParsePmem(s string) (*PmemConfig, error) {
	const opt = "--pmem"
	r, err := newReader(opt, s, keys([]string{"file", "size", "discard_writes"}, pciKeys))
	if err != nil {
		return nil, err
	}
	c := PmemConfig{File: r.str("file")}
	if c.File == "" {
		return nil, missing(opt, "file")
	}
	c.Size = convPtr(r, "size", optparse.ByteSized)
	c.DiscardWrites = r.toggle("discard_writes", false)
	c.PciCommon = r.pci()
	return &c, r.done(opt)
}

// consoleMode reads upstream's console syntax off|null|pty|tty|file=|socket=.
func consoleMode(opt string, r *reader, allowSocket bool) (mode ConsoleOutputMode, file, socket string, err error) {
	switch {
	case r.p.IsSet("off"):
		return ConsoleOff, "", "", nil
	case r.p.IsSet("pty"):
		return ConsolePty, "", "", nil
	case r.p.IsSet("tty"):
		return ConsoleTty, "", "", nil
	case r.p.IsSet("null"):
		return ConsoleNull, "", "", nil
	case r.p.IsSet("file"):
		if file = r.str("file"); file == "" {
			return "", "", "", &ParseError{Option: opt, Err: invalidf("file", "Path missing when using file console mode")}
		}
		return ConsoleFile, file, "", nil
	case allowSocket && r.p.IsSet("socket"):
		if socket = r.str("socket"); socket == "" {
			return "", "", "", &ParseError{Option: opt, Err: invalidf("socket", "Path missing when using socket console mode")}
		}
		return ConsoleSocket, "", socket, nil
	}
	return "", "", "", &ParseError{Option: opt, Err: errors.New("invalid console mode given")}
}

var consoleFlags = []string{"off", "pty", "tty", "null"}

// ParseSerial parses --serial off|null|pty|tty|file=<p>|socket=<p>.
func ParseSerial(s string) (*SerialConfig, error) {
	const opt = "--serial"
	r, err := newReader(opt, s, []string{"file", "socket"}, consoleFlags...)
	if err != nil {
		return nil, err
	}
	mode, file, socket, err := consoleMode(opt, r, true)
	if err != nil {
		return nil, err
	}
	return &SerialConfig{Mode: mode, File: file, Socket: socket}, nil
}

// ParseConsole parses --console off|null|pty|tty|file=<p>[,iommu=,id=,...].
func ParseConsole(s string) (*ConsoleConfig, error) {
	const opt = "--console"
	r, err := newReader(opt, s, keys([]string{"file", "socket"}, pciKeys), consoleFlags...)
	if err != nil {
		return nil, err
	}
	mode, file, socket, err := consoleMode(opt, r, true)
	if err != nil {
		return nil, err
	}
	c := ConsoleConfig{Mode: mode, File: file, Socket: socket, PciCommon: r.pci()}
	return &c, r.done(opt)
}

// ParseDebugConsole parses --debug-console off|pty|tty|null|file=<p>,
// iobase=0xNN (the iobase must be hex with a 0x prefix).
func ParseDebugConsole(s string) (*DebugConsoleConfig, error) {
	const opt = "--debug-console"
	r, err := newReader(opt, s, []string{"file", "iobase"}, consoleFlags...)
	if err != nil {
		return nil, err
	}
	mode, file, _, err := consoleMode(opt, r, false)
	if err != nil {
		return nil, err
	}
	c := DebugConsoleConfig{Mode: mode, File: file}
	if v := r.str("iobase"); v != "" {
		n, perr := strconv.ParseUint(strings.TrimPrefix(v, "0x"), 16, 16)
		if !strings.HasPrefix(v, "0x") || perr != nil {
			return nil, &ParseError{Option: opt, Err: invalidf("iobase", "The IO port was not properly provided in hex or a `0x` prefix is missing: %s", v)}
		}
		port := uint16(n)
		c.IOBase = &port
	}
	return &c, nil
}

// ParseDevice parses one --device (VFIO): path=<sysfs> or fd=<n>.
func ParseDevice(s string) (*DeviceConfig, error) {
	const opt = "--device"
	r, err := newReader(opt, s, keys([]string{"path", "fd", "x_nv_gpudirect_clique", "x_exclude_mmap_bars"}, pciKeys))
	if err != nil {
		return nil, err
	}
	c := DeviceConfig{Path: r.str("path"), XExcludeMmapBars: []uint64{}}
	c.Fd = convPtr(r, "fd", func(s string) (int32, error) { v, err := optparse.Uint(31)(s); return int32(v), err })
	if c.Path == "" && c.Fd == nil {
		return nil, missing(opt, "path")
	}
	c.XNvGpudirectClique = convPtr(r, "x_nv_gpudirect_clique", optparse.Uint8)
	if bars := conv(r, "x_exclude_mmap_bars", optparse.IntegerList, nil); bars != nil {
		c.XExcludeMmapBars = bars
	}
	c.PciCommon = r.pci()
	return &c, r.done(opt)
}

// ParseUserDevice parses one --user-device; socket is required.
func ParseUserDevice(s string) (*UserDeviceConfig, error) {
	const opt = "--user-device"
	r, err := newReader(opt, s, keys([]string{"socket"}, pciKeys))
	if err != nil {
		return nil, err
	}
	c := UserDeviceConfig{Socket: r.str("socket")}
	if c.Socket == "" {
		return nil, missing(opt, "socket")
	}
	c.PciCommon = r.pci()
	return &c, r.done(opt)
}

// ParseVdpa parses one --vdpa; path is required.
func ParseVdpa(s string) (*VdpaConfig, error) {
	const opt = "--vdpa"
	r, err := newReader(opt, s, keys([]string{"path", "num_queues"}, pciKeys))
	if err != nil {
		return nil, err
	}
	c := VdpaConfig{Path: r.str("path")}
	if c.Path == "" {
		return nil, missing(opt, "path")
	}
	c.NumQueues = r.uint("num_queues", DefaultVdpaNumQueues)
	c.PciCommon = r.pci()
	return &c, r.done(opt)
}

// ParseVsock parses --vsock; cid and socket are required.
func ParseVsock(s string) (*VsockConfig, error) {
	const opt = "--vsock"
	r, err := newReader(opt, s, keys([]string{"cid", "socket"}, pciKeys))
	if err != nil {
		return nil, err
	}
	c := VsockConfig{Socket: r.str("socket")}
	if c.Socket == "" {
		return nil, missing(opt, "socket")
	}
	cid := convPtr(r, "cid", optparse.Uint32)
	if r.err == nil && cid == nil {
		return nil, missing(opt, "cid")
	}
	if cid != nil {
		c.Cid = *cid
	}
	c.PciCommon = r.pci()
	return &c, r.done(opt)
}

// ParseNuma parses one --numa.
func ParseNuma(s string) (*NumaConfig, error) {
	const opt = "--numa"
	r, err := newReader(opt, s, []string{"guest_numa_id", "cpus", "distances", "memory_zones", "pci_segments", "device_id"})
	if err != nil {
		return nil, err
	}
	c := NumaConfig{GuestNumaID: r.u32("guest_numa_id", 0), DeviceID: r.str("device_id")}
	for _, v := range conv(r, "cpus", optparse.IntegerListBits(32), nil) {
		c.Cpus = append(c.Cpus, uint32(v))
	}
	if d := convPtr(r, "distances", optparse.TupleList(optparse.Uint8)); d != nil {
		for _, p := range *d {
			dest, err := optparse.Uint32(p.Key)
			if err != nil {
				r.err = &optparse.Error{Kind: optparse.ErrInvalidValue, Option: "distances", Value: p.Key}
				break
			}
			c.Distances = append(c.Distances, NumaDistance{Destination: dest, Distance: p.Value})
		}
	}
	c.MemoryZones = conv(r, "memory_zones", optparse.StringList, nil)
	for _, v := range conv(r, "pci_segments", optparse.IntegerListBits(16), nil) {
		c.PciSegments = append(c.PciSegments, uint16(v))
	}
	return &c, r.done(opt)
}

// ParsePciSegment parses one --pci-segment.
func ParsePciSegment(s string) (*PciSegmentConfig, error) {
	const opt = "--pci-segment"
	r, err := newReader(opt, s, []string{"pci_segment", "mmio32_aperture_weight", "mmio64_aperture_weight"})
	if err != nil {
		return nil, err
	}
	c := PciSegmentConfig{
		PciSegment:           r.u16("pci_segment", 0),
		Mmio32ApertureWeight: r.u32("mmio32_aperture_weight", DefaultApertureWeight),
		Mmio64ApertureWeight: r.u32("mmio64_aperture_weight", DefaultApertureWeight),
	}
	return &c, r.done(opt)
}

// ParsePlatform parses --platform.
func ParsePlatform(s string) (*PlatformConfig, error) {
	const opt = "--platform"
	r, err := newReader(opt, s, []string{"num_pci_segments", "iommu_segments", "iommu_address_width", "iommufd", "iommufd_fd", "vfio_p2p_dma",
		"serial_number", "uuid", "system_serial_number", "system_uuid", "oem_strings", "system_manufacturer", "system_product_name",
		"system_version", "system_family", "system_sku_number", "chassis_asset_tag", "tdx", "sev_snp"})
	if err != nil {
		return nil, err
	}
	c := DefaultPlatformConfig()
	c.NumPciSegments = r.u16("num_pci_segments", DefaultNumPciSegments)
	for _, v := range conv(r, "iommu_segments", optparse.IntegerListBits(16), nil) {
		c.IommuSegments = append(c.IommuSegments, uint16(v))
	}
	c.IommuAddressWidthBits = conv(r, "iommu_address_width", optparse.Uint8, uint8(DefaultIommuAddressWidth))
	c.IommufdFd = convPtr(r, "iommufd_fd", func(s string) (int32, error) { v, err := optparse.Uint(31)(s); return int32(v), err })
	c.Iommufd = r.toggle("iommufd", c.IommufdFd != nil)
	c.VfioP2PDma = r.toggle("vfio_p2p_dma", true)
	c.SystemSerialNumber = r.str("system_serial_number")
	if c.SystemSerialNumber == "" {
		c.SystemSerialNumber = r.str("serial_number")
	}
	c.SystemUUID = r.str("system_uuid")
	if c.SystemUUID == "" {
		c.SystemUUID = r.str("uuid")
	}
	c.OemStrings = conv(r, "oem_strings", optparse.StringList, nil)
	c.SystemManufacturer = r.str("system_manufacturer")
	c.SystemProductName = r.str("system_product_name")
	c.SystemVersion = r.str("system_version")
	c.SystemFamily = r.str("system_family")
	c.SystemSkuNumber = r.str("system_sku_number")
	c.ChassisAssetTag = r.str("chassis_asset_tag")
	c.Tdx = r.toggle("tdx", false)
	c.SevSnp = r.toggle("sev_snp", false)
	return &c, r.done(opt)
}

// ParseTpm parses --tpm socket=<path>.
func ParseTpm(s string) (*TpmConfig, error) {
	const opt = "--tpm"
	r, err := newReader(opt, s, []string{"socket"})
	if err != nil {
		return nil, err
	}
	c := TpmConfig{Socket: r.str("socket")}
	if c.Socket == "" {
		return nil, missing(opt, "path")
	}
	return &c, nil
}

// ParseRateLimitGroup parses one --rate-limit-group.
func ParseRateLimitGroup(s string) (*RateLimiterGroupConfig, error) {
	const opt = "--rate-limit-group"
	r, err := newReader(opt, s, keys([]string{"id"}, rateKeys))
	if err != nil {
		return nil, err
	}
	c := RateLimiterGroupConfig{ID: r.str("id"), RateLimiterConfig: r.rateLimiter()}
	return &c, r.done(opt)
}

// ParseLandlockRule parses one --landlock-rules path=<p>,access=[rw].
func ParseLandlockRule(s string) (*LandlockConfig, error) {
	const opt = "--landlock-rules"
	r, err := newReader(opt, s, []string{"path", "access"})
	if err != nil {
		return nil, err
	}
	c := LandlockConfig{Path: r.str("path"), Access: r.str("access")}
	if c.Path == "" || c.Access == "" {
		return nil, missing(opt, "path/access field")
	}
	if len([]rune(c.Access)) > 2 {
		return nil, &ParseError{Option: opt, Err: &optparse.Error{Kind: optparse.ErrInvalidValue, Option: "access", Value: c.Access}}
	}
	return &c, nil
}

// VhostUserDeviceTypes maps --generic-vhost-user device_type names to
// virtio device ids.
var VhostUserDeviceTypes = map[string]uint32{
	"net": 1, "block": 2, "console": 3, "rng": 4, "balloon": 5, "scsi": 8,
	"9p": 9, "gpu": 16, "input": 18, "vsock": 19, "crypto": 20, "iommu": 23,
	"mem": 24, "sound": 25, "fs": 26, "pmem": 27, "i2c": 34, "scmi": 32, "gpio": 41,
}

// ParseGenericVhostUser parses one --generic-vhost-user; device_type is a
// name or a number (virtio_id is a deprecated alias).
func ParseGenericVhostUser(s string) (*GenericVhostUserConfig, error) {
	const opt = "--generic-vhost-user"
	r, err := newReader(opt, s, keys([]string{"socket", "queue_sizes", "device_type", "virtio_id"}, pciKeys))
	if err != nil {
		return nil, err
	}
	c := GenericVhostUserConfig{Socket: r.str("socket")}
	if c.Socket == "" {
		return nil, missing(opt, "socket")
	}
	dt := r.str("device_type")
	if dt == "" {
		dt = r.str("virtio_id")
	}
	if dt == "" {
		return nil, missing(opt, "device_type")
	}
	if v, ok := VhostUserDeviceTypes[strings.ToLower(dt)]; ok {
		c.DeviceType = v
	} else if n, err := optparse.Uint32(dt); err == nil {
		c.DeviceType = n
	} else {
		return nil, &ParseError{Option: opt, Err: &optparse.Error{Kind: optparse.ErrInvalidValue, Option: "device_type", Value: dt}}
	}
	for _, q := range conv(r, "queue_sizes", optparse.IntegerListBits(16), nil) {
		c.QueueSizes = append(c.QueueSizes, uint16(q))
	}
	if c.QueueSizes == nil && r.err == nil {
		return nil, missing(opt, "queue_sizes")
	}
	c.PciCommon = r.pci()
	return &c, r.done(opt)
}

// ParseRtc parses --rtc [iommu=,id=,pci_segment=,pci_device_id=].
func ParseRtc(s string) (*RtcConfig, error) {
	const opt = "--rtc"
	r, err := newReader(opt, s, pciKeys)
	if err != nil {
		return nil, err
	}
	c := RtcConfig{PciCommon: r.pci()}
	return &c, r.done(opt)
}

func fdConv(s string) (int32, error) { v, err := optparse.Uint(31)(s); return int32(v), err }

func zoneUpdates(r *reader) []ZoneUpdate {
	out := []ZoneUpdate{}
	if z := convPtr(r, "zone_updates", optparse.TupleList(optparse.Uint32)); z != nil {
		for _, p := range *z {
			out = append(out, ZoneUpdate{ID: p.Key, HostNumaNode: p.Value})
		}
	}
	return out
}

func vfioFds(r *reader) []RestoredVfioConfig {
	v := convPtr(r, "vfio_fds", optparse.TupleList(fdConv))
	if v == nil {
		return nil
	}
	var out []RestoredVfioConfig
	for _, p := range *v {
		fd := p.Value
		out = append(out, RestoredVfioConfig{ID: p.Key, Fd: &fd})
	}
	return out
}

// ParseRestore parses --restore (and ch-remote restore).
func ParseRestore(s string) (*RestoreConfig, error) {
	const opt = "--restore"
	r, err := newReader(opt, s, []string{"source_url", "prefault", "memory_restore_mode", "net_fds", "vfio_fds", "iommufd_fd", "resume", "zone_updates"})
	if err != nil {
		return nil, err
	}
	c := RestoreConfig{SourceURL: r.str("source_url")}
	if c.SourceURL == "" {
		return nil, missing(opt, "source_url")
	}
	c.Prefault = r.toggle("prefault", false)
	c.MemoryRestoreMode = conv(r, "memory_restore_mode", enumConv(map[string]MemoryRestoreMode{"copy": MemoryRestoreCopy, "ondemand": MemoryRestoreOnDemand}), MemoryRestoreCopy)
	if n := convPtr(r, "net_fds", optparse.TupleList(optparse.IntegerListBits(31))); n != nil {
		for _, p := range *n {
			rn := RestoredNetConfig{ID: p.Key, NumFds: uint(len(p.Value))}
			for _, fd := range p.Value {
				rn.Fds = append(rn.Fds, int32(fd))
			}
			c.NetFds = append(c.NetFds, rn)
		}
	}
	c.VfioFds = vfioFds(r)
	c.IommufdFd = convPtr(r, "iommufd_fd", fdConv)
	c.Resume = r.toggle("resume", false)
	c.ZoneUpdates = zoneUpdates(r)
	return &c, r.done(opt)
}

var memoryModes = enumConv(map[string]MemoryMigrationMode{"precopy": MigrationPrecopy, "postcopy": MigrationPostcopy})

// ParseSendMigration parses ch-remote send-migration's argument.
func ParseSendMigration(s string) (*SendMigrationData, error) {
	const opt = "send-migration"
	r, err := newReader(opt, s, []string{"destination_url", "local", "preserve_source", "downtime_ms", "timeout_s", "timeout_strategy", "connections", "tls_dir", "memory_mode"})
	if err != nil {
		return nil, err
	}
	c := DefaultSendMigrationData()
	if c.DestinationURL = r.str("destination_url"); c.DestinationURL == "" {
		return nil, missing(opt, "destination_url")
	}
	c.Local = r.toggle("local", false)
	c.PreserveSource = r.toggle("preserve_source", false)
	c.DowntimeMs = r.u64("downtime_ms", DefaultDowntimeMs)
	c.TimeoutS = r.u64("timeout_s", DefaultMigrationTimeoutS)
	c.TimeoutStrategy = conv(r, "timeout_strategy", enumConv(map[string]TimeoutStrategy{"cancel": TimeoutCancel, "ignore": TimeoutIgnore}), TimeoutCancel)
	c.Connections = r.u32("connections", DefaultMigrationConnection)
	c.TLSDir = r.str("tls_dir")
	c.MemoryMode = conv(r, "memory_mode", memoryModes, MigrationPrecopy)
	return &c, r.done(opt)
}

// ParseReceiveMigration parses ch-remote receive-migration's argument.
func ParseReceiveMigration(s string) (*ReceiveMigrationData, error) {
	const opt = "receive-migration"
	r, err := newReader(opt, s, []string{"receiver_url", "tls_dir", "memory_mode", "vfio_fds", "iommufd_fd", "zone_updates"})
	if err != nil {
		return nil, err
	}
	c := ReceiveMigrationData{ReceiverURL: r.str("receiver_url")}
	if c.ReceiverURL == "" {
		return nil, missing(opt, "receiver_url")
	}
	c.TLSDir = r.str("tls_dir")
	c.MemoryMode = conv(r, "memory_mode", memoryModes, MigrationPrecopy)
	c.VfioFds = vfioFds(r)
	c.IommufdFd = convPtr(r, "iommufd_fd", fdConv)
	c.ZoneUpdates = zoneUpdates(r)
	return &c, r.done(opt)
}
