package landlock

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	ll "github.com/landlock-lsm/go-landlock/landlock/syscall"

	"github.com/nimbus-vmm/nimbus/internal/config"
)

const childEnv = "NIMBUS_LANDLOCK_CHILD"

func TestMain(m *testing.M) {
	if dir := os.Getenv(childEnv); dir != "" {
		os.Exit(child(dir))
	}
	os.Exit(m.Run())
}

// testConfig names a disk (rw), a kernel (r), a vsock socket that does
// not exist yet and an extra rule for a directory (rw) under dir.
func testConfig(dir string) *config.VmConfig {
	return &config.VmConfig{
		Payload:       &config.PayloadConfig{Kernel: filepath.Join(dir, "kernel")},
		Disks:         []config.DiskConfig{{Path: filepath.Join(dir, "disk.img")}},
		Rng:           config.RngConfig{Src: "/dev/urandom"},
		Serial:        config.SerialConfig{Mode: config.ConsoleOutputMode("Null")},
		Console:       config.ConsoleConfig{Mode: config.ConsolePty},
		Vsock:         &config.VsockConfig{Cid: 3, Socket: filepath.Join(dir, "vsock", "sock")},
		LandlockRules: []config.LandlockConfig{{Path: filepath.Join(dir, "hotplug"), Access: "rw"}},
	}
}

// child applies testConfig(dir) and reports what it may still do, one
// "name: error" line each.
func child(dir string) int {
	abi, err := Apply(testConfig(dir))
	if err != nil {
		fmt.Println("apply:", err)
		return 3
	}
	fmt.Println("abi:", abi)
	try := func(name string, err error) { fmt.Printf("%s: %v\n", name, err) }
	open := func(path string, flag int) error {
		f, err := os.OpenFile(path, flag, 0o600)
		if err == nil {
			f.Close()
		}
		return err
	}
	try("disk rw", open(filepath.Join(dir, "disk.img"), os.O_RDWR))
	try("kernel r", open(filepath.Join(dir, "kernel"), os.O_RDONLY))
	try("kernel w", open(filepath.Join(dir, "kernel"), os.O_WRONLY))
	try("hotplug create", open(filepath.Join(dir, "hotplug", "new.img"), os.O_RDWR|os.O_CREATE))
	try("outside r", open(filepath.Join(dir, "outside"), os.O_RDONLY))
	try("outside create", open(filepath.Join(dir, "new"), os.O_RDWR|os.O_CREATE))
	l, err := net.Listen("unix", filepath.Join(dir, "vsock", "sock"))
	if err == nil {
		l.Close()
	}
	try("vsock bind", err)
	try("kvm", open("/dev/kvm", os.O_RDWR))
	try("ptmx", open("/dev/ptmx", os.O_RDWR))
	return 0
}

func TestApplyConfinesTheProcess(t *testing.T) {
	if abi, err := ll.LandlockGetABIVersion(); err != nil || abi < 1 {
		t.Skipf("the kernel has no Landlock (%d, %v)", abi, err)
	}
	dir := t.TempDir()
	for _, f := range []string{"disk.img", "kernel", "outside"} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []string{"hotplug", "vsock"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+dir)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	got := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		k, v, _ := strings.Cut(line, ": ")
		got[k] = v
	}
	denied := "permission denied"
	want := map[string]string{
		"disk rw": "<nil>", "kernel r": "<nil>", "hotplug create": "<nil>", "vsock bind": "<nil>",
		"kernel w": denied, "outside r": denied, "outside create": denied,
	}
	if _, err := os.Stat("/dev/kvm"); err == nil {
		want["kvm"] = "<nil>"
	}
	for k, v := range want {
		if !strings.HasSuffix(got[k], v) {
			t.Errorf("%s: %q, want %q\n%s", k, got[k], v, out)
		}
	}
	if strings.HasSuffix(got["ptmx"], denied) {
		t.Errorf("a Pty console could not open /dev/ptmx:\n%s", out)
	}
}

func TestRules(t *testing.T) {
	got := Rules(testConfig("/d"))
	want := []Rule{
		{Path: "/d/disk.img", Access: "rw"},
		{Path: "/dev/urandom", Access: "r"},
		{Path: "/dev/pts", Access: "rw"}, {Path: "/dev/ptmx", Access: "rw"},
		{Path: "/d/vsock", Access: "w"}, {Path: "/d/vsock/sock", Access: "rw", Optional: true},
		{Path: "/d/kernel", Access: "r"},
		{Path: "/dev/kvm", Access: "rw"}, {Path: "/proc/self/pagemap", Access: "r"},
		{Path: "/d/hotplug", Access: "rw"},
	}
	if !slices.Equal(got, want) {
		g, _ := json.Marshal(got)
		w, _ := json.Marshal(want)
		t.Fatalf("rules\n got %s\nwant %s", g, w)
	}
}

func TestAccess(t *testing.T) {
	r, err := access("r")
	if err != nil || r != read {
		t.Fatalf("r: %v %v", r, err)
	}
	rw, err := access("rw")
	if err != nil || rw != read|write {
		t.Fatalf("rw: %v %v", rw, err)
	}
	for _, bad := range []string{"", "x", "rx"} {
		if _, err := access(bad); err == nil {
			t.Errorf("access(%q) accepted", bad)
		}
	}
}

func TestMissingPathRefused(t *testing.T) {
	cfg := &config.VmConfig{Disks: []config.DiskConfig{{Path: "/nonexistent/disk.img"}}}
	// Refused before anything is restricted, so the test process is not.
	if _, err := Apply(cfg); !errors.Is(err, os.ErrNotExist) && !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Apply with a missing disk: %v", err)
	}
}
