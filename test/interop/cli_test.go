package interop

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/nimbus-vmm/nimbus/internal/cli"
	"github.com/nimbus-vmm/nimbus/internal/config"
)

// flintlockCmdline is a kernel command line as Flintlock's
// DefaultKernelCmdLine renders it (space-separated key=value pairs).
const flintlockCmdline = "console=hvc0 reboot=k panic=1 i8042.noaux i8042.nomux i8042.nopnp i8042.dumbkbd root=/dev/vda rw ds=nocloud-net;s=http://169.254.169.254/latest/"

// flintlockArgs is buildArgs (infrastructure/microvm/cloudhypervisor/create.go)
// for a 2-vCPU, 512 MiB microVM with the given --fs and --net values.
func flintlockArgs(fs, netArg string) []string {
	const st = "/var/lib/flintlock/vm/ns/vm1/01J"
	return []string{
		"--api-socket", st + "/cloudhypervisor.sock",
		"--log-file", st + "/cloudhypervisor.log",
		"-v",
		"--cmdline", flintlockCmdline,
		"--kernel", "/var/lib/flintlock/kernel/vmlinux",
		"--cpus", "boot=2",
		"--memory", "size=512M,shared=on",
		"--disk", "path=/var/lib/flintlock/vol/root.img", "path=" + st + "/cloud-init.img,readonly=on",
		"--fs", fs,
		"--net", netArg,
	}
}

const flintlockFsSock = "/var/lib/flintlock/vm/ns/vm1/01J/virtiofs.sock"

// TestFlintlockAnnounceSubmounts: current Flintlock appends
// announce_submounts (a virtiofsd option) to --fs. Upstream's
// option_parser (option_parser/src/lib.rs, parse) answers an unknown key
// with OptionParserError::UnknownOption, and FsConfig::parse registers only
// tag, queue_size, num_queues, socket, id, pci_segment, so Cloud Hypervisor
// refuses this line; Nimbus keeps that behaviour and names the key.
func TestFlintlockAnnounceSubmounts(t *testing.T) {
	args := flintlockArgs("tag=user,socket="+flintlockFsSock+",num_queues=1,queue_size=1024,announce_submounts", "tap=fltap0,mac=02:00:00:00:00:01")
	_, err := cli.Parse(args)
	if err == nil || !errors.Is(err, config.ErrParse) || !strings.Contains(err.Error(), "announce_submounts") || !strings.Contains(err.Error(), "--fs") {
		t.Fatalf("Parse = %v, want an --fs parse error naming announce_submounts", err)
	}
	var out, stderr bytes.Buffer
	if code := cli.Main(append([]string{"--dry-run"}, args...), &out, &stderr, nil); code != 1 || out.Len() != 0 ||
		!strings.Contains(stderr.String(), "announce_submounts") {
		t.Errorf("Main: exit %d, stdout %q, stderr %q", code, out.String(), stderr.String())
	}
}

// TestFlintlockTap is the same line without the virtiofsd option, as
// Flintlock sent it before adding it: every value must land in the config.
func TestFlintlockTap(t *testing.T) {
	o, err := cli.Parse(flintlockArgs("tag=user,socket="+flintlockFsSock+",num_queues=1,queue_size=1024", "tap=fltap0,mac=02:00:00:00:00:01"))
	if err != nil {
		t.Fatal(err)
	}
	if o.APISocketPath != "/var/lib/flintlock/vm/ns/vm1/01J/cloudhypervisor.sock" || o.LogFile != "/var/lib/flintlock/vm/ns/vm1/01J/cloudhypervisor.log" || o.Verbosity != 1 {
		t.Errorf("process options %+v", o)
	}
	vm := o.VM
	if vm.Payload.Cmdline != flintlockCmdline || vm.Payload.Kernel != "/var/lib/flintlock/kernel/vmlinux" {
		t.Errorf("payload %+v", vm.Payload)
	}
	if vm.Cpus.BootVcpus != 2 || vm.Cpus.MaxVcpus != 2 || vm.Memory.Size != 512<<20 || !vm.Memory.Shared {
		t.Errorf("cpus %+v memory %+v", vm.Cpus, vm.Memory)
	}
	if len(vm.Disks) != 2 || vm.Disks[0].Path != "/var/lib/flintlock/vol/root.img" || vm.Disks[0].Readonly ||
		!strings.HasSuffix(vm.Disks[1].Path, "/cloud-init.img") || !vm.Disks[1].Readonly {
		t.Errorf("disks %+v", vm.Disks)
	}
	if len(vm.Fs) != 1 || vm.Fs[0].Tag != "user" || vm.Fs[0].Socket != flintlockFsSock || vm.Fs[0].NumQueues != 1 || vm.Fs[0].QueueSize != 1024 {
		t.Errorf("fs %+v", vm.Fs)
	}
	if len(vm.Net) != 1 || vm.Net[0].Tap != "fltap0" || vm.Net[0].MAC != "02:00:00:00:00:01" {
		t.Errorf("net %+v", vm.Net)
	}
}

// TestFlintlockMacvtap: --net fd=<n>,mac=<mac> for an inherited macvtap
// fd; createMacvtapArg writes "mac=" with nothing after it when the
// interface has no guest MAC, which upstream's OptionParser::get treats as
// absent (a random MAC is generated).
func TestFlintlockMacvtap(t *testing.T) {
	fs := "tag=user,socket=" + flintlockFsSock + ",num_queues=1,queue_size=1024"
	o, err := cli.Parse(flintlockArgs(fs, "fd=3,mac=02:00:00:00:00:07"))
	if err != nil {
		t.Fatal(err)
	}
	if n := o.VM.Net; len(n) != 1 || len(n[0].Fds) != 1 || n[0].Fds[0] != 3 || n[0].MAC != "02:00:00:00:00:07" || n[0].Tap != "" {
		t.Errorf("net %+v", n)
	}

	var out, stderr bytes.Buffer
	if code := cli.Main(append([]string{"--dry-run"}, flintlockArgs(fs, "fd=3,mac=")...), &out, &stderr, nil); code != 0 {
		t.Fatalf("--net fd=3,mac= : exit %d: %s", code, stderr.String())
	}
	vm, err := config.Decode(out.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	// Serialized fds read -1, as upstream's serialize_netconfig_fds writes them.
	if len(vm.Net) != 1 || len(vm.Net[0].Fds) != 1 || len(vm.Net[0].MAC) != 17 {
		t.Errorf("net with an empty mac= %+v", vm.Net)
	}
}

// conchArgs is how Conch (internal/vmm/driver/clh) starts the VMM.
var conchArgs = []string{
	"--api-socket", "fd=3",
	"--event-monitor", "fd=4",
	"--kernel", "/usr/share/conch/vmlinux",
	"--cmdline", "console=hvc0 root=/dev/pmem0p1 rw",
	"--cpus", "boot=2",
	"--memory", "size=0",
	"--memory-zone", "id=mem0,size=1G,file=/dev/shm/conch-vm1,shared=on",
	"--console", "null",
	"--platform", "num_pci_segments=2",
	"--pmem", "file=/var/lib/conch/rootfs.img,discard_writes=on,pci_segment=1",
	"--seccomp", "false",
}

func TestConch(t *testing.T) {
	o, err := cli.Parse(conchArgs)
	if err != nil {
		t.Fatal(err)
	}
	if o.APISocketFD == nil || *o.APISocketFD != 3 || o.APISocketPath != "" || o.EventMonitorFD == nil || *o.EventMonitorFD != 4 || o.Seccomp != "false" {
		t.Errorf("process options: api fd %v path %q, event fd %v, seccomp %q", o.APISocketFD, o.APISocketPath, o.EventMonitorFD, o.Seccomp)
	}
	vm := o.VM
	if vm.Memory.Size != 0 || len(vm.Memory.Zones) != 1 {
		t.Fatalf("memory %+v", vm.Memory)
	}
	if z := vm.Memory.Zones[0]; z.ID != "mem0" || z.Size != 1<<30 || z.File != "/dev/shm/conch-vm1" || !z.Shared {
		t.Errorf("zone %+v", z)
	}
	if vm.Console.Mode != config.ConsoleNull {
		t.Errorf("console %+v", vm.Console)
	}
	if vm.Platform == nil || vm.Platform.NumPciSegments != 2 {
		t.Errorf("platform %+v", vm.Platform)
	}
	if len(vm.Pmem) != 1 || vm.Pmem[0].File != "/var/lib/conch/rootfs.img" || !vm.Pmem[0].DiscardWrites || vm.Pmem[0].PciSegment != 1 {
		t.Errorf("pmem %+v", vm.Pmem)
	}

	// --dry-run prints the config the VMM would create, and it validates.
	var out, stderr bytes.Buffer
	if code := cli.Main(append([]string{"--dry-run"}, conchArgs...), &out, &stderr, nil); code != 0 {
		t.Fatalf("--dry-run: exit %d: %s", code, stderr.String())
	}
	var m map[string]any
	if err := json.Unmarshal(out.Bytes(), &m); err != nil {
		t.Fatalf("dry-run output: %v", err)
	}
	dry, err := config.Decode(out.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if err := dry.Validate(); err != nil {
		t.Errorf("Conch's config does not validate: %v", err)
	}
	if len(dry.Pmem) != 1 || dry.Pmem[0].ID == "" {
		t.Errorf("dry-run pmem %+v", dry.Pmem)
	}
}

// TestConchPmemSegmentNeedsPlatform: pci_segment=1 is only valid with
// num_pci_segments > 1, so dropping --platform must fail validation as
// upstream does, not silently.
func TestConchPmemSegmentNeedsPlatform(t *testing.T) {
	var args []string
	for i := 0; i < len(conchArgs); i += 2 {
		if conchArgs[i] != "--platform" {
			args = append(args, conchArgs[i], conchArgs[i+1])
		}
	}
	var out, stderr bytes.Buffer
	if code := cli.Main(append([]string{"--dry-run"}, args...), &out, &stderr, nil); code == 0 {
		t.Errorf("pmem on segment 1 of 1 accepted: %s", out.String())
	}
}
