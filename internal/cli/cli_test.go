package cli

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/nimbus-vmm/nimbus/internal/config"
)

func run(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := Main(args, &out, &errb, nil)
	return code, out.String(), errb.String()
}

func TestDryRunPrintsConfig(t *testing.T) {
	code, out, stderr := run("--dry-run", "--kernel", "K", "--cpus", "boot=2,max=4", "--memory", "size=1G",
		"--disk", "path=/a", "path=/b,readonly=on", "--net", "tap=t0,mac=12:34:56:78:90:01")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	c, err := config.Decode([]byte(out))
	if err != nil {
		t.Fatal(err)
	}
	if c.Cpus.BootVcpus != 2 || c.Cpus.MaxVcpus != 4 || c.Memory.Size != 1<<30 || c.Payload.Kernel != "K" {
		t.Errorf("got %+v", c)
	}
	if len(c.Disks) != 2 || c.Disks[0].ID != "_disk0" || c.Disks[1].ID != "_disk1" || !c.Disks[1].Readonly || c.Disks[0].Readonly {
		t.Errorf("disks %+v", c.Disks)
	}
	if len(c.Net) != 1 || c.Net[0].ID != "_net2" || c.Net[0].MAC != "12:34:56:78:90:01" || c.Net[0].Tap != "t0" {
		t.Errorf("net %+v", c.Net)
	}
	if !strings.Contains(out, "\n  \"memory\": {") {
		t.Error("output is not indented JSON")
	}
}

func TestErrorsExitOneWithOneLine(t *testing.T) {
	cases := map[string][]string{
		`nimbus: error parsing --cpus: invalid value "x" for boot`:                 {"--kernel", "K", "--cpus", "boot=x"},
		`nimbus: error parsing --memory: invalid value "12Q" for size`:             {"--kernel", "K", "--memory", "size=12Q"},
		`nimbus: error parsing --disk: unknown option "bogus"`:                     {"--kernel", "K", "--disk", "path=/a,bogus=1"},
		`nimbus: error validating --cpus: Max CPUs lower than boot CPUs`:           {"--kernel", "K", "--cpus", "boot=4,max=2"},
		`nimbus: error parsing --event-monitor: path or fd required`:               {"--event-monitor", "/x"},
		`nimbus: error parsing --gdb: the GDB stub is not supported by this build`: {"--gdb", "path=/tmp/gdb.sock"},
	}
	for want, args := range cases {
		code, out, stderr := run(args...)
		if code != 1 || out != "" || !strings.Contains(stderr, want) || strings.Count(stderr, "\n") != 1 {
			t.Errorf("%v: exit %d stdout %q stderr %q, want one line containing %q", args, code, out, stderr, want)
		}
	}
}

// clap's own usage errors exit 2, unlike the value errors above (1).
func TestUsageErrorsExitTwo(t *testing.T) {
	cases := map[string][]string{
		"--cpus requires a payload option":                    {"--cpus", "boot=2"},
		"cannot be used multiple times":                       {"--kernel", "K", "--cpus", "boot=1", "--cpus", "boot=2"},
		"unexpected argument '--bogus'":                       {"--bogus"},
		"unexpected argument 'stray'":                         {"--kernel", "K", "--pvpanic", "stray"},
		"a value is required for '--api-socket <api-socket>'": {"--api-socket"},
		"unexpected value 'x' for '--watchdog'":               {"--kernel", "K", "--watchdog=x"},
		"invalid value 'maybe' for '--seccomp":                {"--seccomp", "maybe"},
	}
	for want, args := range cases {
		code, out, stderr := run(args...)
		if code != 2 || out != "" || !strings.Contains(stderr, want) || strings.Count(stderr, "\n") != 1 {
			t.Errorf("%v: exit %d stdout %q stderr %q, want status 2 and one line containing %q", args, code, out, stderr, want)
		}
	}
}

func TestParseVMMOptions(t *testing.T) {
	o, err := Parse([]string{"--api-socket", "fd=3", "--event-monitor=path=/ev", "-vv", "-v", "--no-shutdown",
		"--restore", "source_url=file:///s", "--seccomp", "log", "--log-file", "/l"})
	if err != nil {
		t.Fatal(err)
	}
	if o.APISocketFD == nil || *o.APISocketFD != 3 || o.EventMonitorPath != "/ev" || o.Verbosity != 3 || !o.NoShutdown ||
		o.Restore == nil || o.Restore.SourceURL != "file:///s" || o.Seccomp != "log" || o.LogFile != "/l" || o.VM != nil {
		t.Errorf("got %+v", o)
	}
	o, err = Parse([]string{"--api-socket", "/tmp/api.sock"})
	if err != nil || o.APISocketPath != "/tmp/api.sock" {
		t.Errorf("bare api socket: %+v %v", o, err)
	}
}

// Upstream's parse_api_socket ignores option parse failures and then uses
// the raw string as the path unless path= or fd= was read.
func TestAPISocketFallsBackToRawString(t *testing.T) {
	cases := []struct {
		arg, path string
		fd        int // -1: none
	}{
		{"/tmp/api.sock", "/tmp/api.sock", -1},
		{"/tmp/a=b.sock", "/tmp/a=b.sock", -1},     // unknown key "/tmp/a"
		{"bogus=1,path=/p", "bogus=1,path=/p", -1}, // failed before path=
		{"path=/p,bogus=1", "/p", -1},              // path= read before the failure
		{"path=/p,fd=4", "", 4},                    // fd= wins
		{"path=[/p", "path=[/p", -1},               // unbalanced bracket
		{"path=/p", "/p", -1},
		{"fd=3", "", 3},
	}
	for _, tc := range cases {
		o, err := Parse([]string{"--api-socket", tc.arg})
		if err != nil {
			t.Errorf("%q: %v", tc.arg, err)
			continue
		}
		fd := -1
		if o.APISocketFD != nil {
			fd = *o.APISocketFD
		}
		if o.APISocketPath != tc.path || fd != tc.fd {
			t.Errorf("%q: path %q fd %d, want %q %d", tc.arg, o.APISocketPath, fd, tc.path, tc.fd)
		}
	}
	code, _, stderr := run("--api-socket", "fd=x")
	if code != 1 || !strings.Contains(stderr, "--api-socket") {
		t.Errorf("fd=x: exit %d %q", code, stderr)
	}
}

func TestFlagsAndOptionalValues(t *testing.T) {
	o, err := Parse([]string{"--kernel", "K", "--pvpanic", "--watchdog", "--rtc", "--landlock"})
	if err != nil {
		t.Fatal(err)
	}
	if !o.VM.Pvpanic || !o.VM.Watchdog || o.VM.Rtc == nil || !o.VM.LandlockEnable {
		t.Errorf("got %+v", o.VM)
	}
	o, err = Parse([]string{"--kernel", "K", "--rtc", "id=r0"})
	if err != nil || o.VM.Rtc.ID != "r0" {
		t.Errorf("rtc with value: %+v %v", o, err)
	}
}

// Ported from upstream main.rs test_valid_vm_config_*: CLI and JSON agree.
func TestCLIMatchesJSON(t *testing.T) {
	cases := []struct {
		args []string
		json string
	}{
		{[]string{"--memory", "size=1G,hotplug_method=virtio-mem,hotplug_size=1G"},
			`{"memory":{"size":1073741824,"hotplug_method":"VirtioMem","hotplug_size":1073741824}}`},
		{[]string{"--disk", "path=/d1,image_type=raw", "path=/d2"},
			`{"disks":[{"path":"/d1","image_type":"Raw"},{"path":"/d2","image_type":"Unknown"}]}`},
		{[]string{"--cpus", "boot=2,max=4"}, `{"cpus":{"boot_vcpus":2,"max_vcpus":4}}`},
		{[]string{"--net", "mac=12:34:56:78:90:ab,tap=tap0,ip=1.2.3.4,mask=5.6.7.8,num_queues=2"},
			`{"net":[{"mac":"12:34:56:78:90:ab","tap":"tap0","ip":"1.2.3.4","mask":"5.6.7.8"}]}`},
		{[]string{"--console", "off", "--serial", "tty"}, `{"console":{"mode":"Off"},"serial":{"mode":"Tty"}}`},
		{[]string{"--rng", "src=/path/to/entropy/source"}, `{"rng":{"src":"/path/to/entropy/source"}}`},
		{[]string{"--pmem", "file=/tmp/pmem,size=128M"}, `{"pmem":[{"file":"/tmp/pmem","size":134217728}]}`},
		{[]string{"--vsock", "cid=123,socket=/tmp/vsock"}, `{"vsock":{"cid":123,"socket":"/tmp/vsock"}}`},
	}
	for _, tc := range cases {
		o, err := Parse(append([]string{"--kernel", "/k"}, tc.args...))
		if err != nil {
			t.Errorf("%v: %v", tc.args, err)
			continue
		}
		want, err := config.Decode([]byte(strings.Replace(tc.json, "{", `{"payload":{"kernel":"/k"},`, 1)))
		if err != nil {
			t.Fatal(err)
		}
		if err := want.Validate(); err != nil {
			t.Fatal(err)
		}
		got, _ := json.Marshal(o.VM)
		w, _ := json.Marshal(want)
		if string(got) != string(w) {
			t.Errorf("%v:\n cli  %s\n json %s", tc.args, got, w)
		}
	}
}

func TestHelpListsEveryOption(t *testing.T) {
	code, out, _ := run("--help")
	if code != 0 {
		t.Fatal(code)
	}
	for _, f := range flagSpecs {
		if f.name != "v" && !strings.Contains(out, "--"+f.name) {
			t.Errorf("help lacks --%s", f.name)
		}
	}
	if !strings.Contains(out, "lock_granularity=byte-range|full") {
		t.Error("help lacks disk syntax")
	}
}

// --version prints upstream's two lines (libvirt's chExtractVersion skips
// "cloud-hypervisor v" and parses <major>.<minor>), then Nimbus's own.
func TestVersionLikeUpstream(t *testing.T) {
	defer func(p string) { ProgramName = p }(ProgramName)
	ProgramName = "cloud-hypervisor"
	for _, arg := range []string{"--version", "-V"} {
		code, out, _ := run(arg)
		want := "cloud-hypervisor v53.0\nMigration Protocol Versions: 0\nNimbus " + NimbusVersion + "\n"
		if code != 0 || out != want {
			t.Errorf("%s: %d %q, want %q", arg, code, out, want)
		}
	}
	ProgramName = "nimbus"
	if _, out, _ := run("-V"); !strings.HasPrefix(out, "nimbus v53.0\n") {
		t.Errorf("as nimbus: %q", out)
	}
}
