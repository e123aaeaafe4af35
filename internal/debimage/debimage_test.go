package debimage

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestMirrorIn(t *testing.T) {
	deb822 := `Types: deb
# a comment
URIs: http://security.example/debian-security
Suites: bookworm-security
Components: main

Types: deb
URIs: http://archive.example/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
`
	oneLine := "deb [signed-by=/k.gpg arch=amd64] http://one.example/debian trixie main\n" +
		"deb http://security.example/ trixie-security main\n"
	for _, c := range []struct{ suite, want string }{
		{"bookworm", "http://archive.example/debian"},
		{"trixie", "http://one.example/debian"},
		{"sid", ""},
	} {
		if got := mirrorIn(c.suite, deb822, oneLine); got != c.want {
			t.Errorf("mirrorIn(%q) = %q, want %q", c.suite, got, c.want)
		}
	}
	if got := mirrorIn("bookworm-security", deb822); got != "" {
		t.Errorf("a security archive was taken: %q", got)
	}
}

// TestInitScript runs the initramfs's /init through the shell's parser
// and checks what it is given to mount: root=, rw and init= from the
// command line, and the label when there is no root=.
func TestInitScript(t *testing.T) {
	s := initScript([]string{"/lib/modules/virtio_blk.ko"})
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh")
	}
	if out, err := exec.Command(sh, "-n", "-c", s).CombinedOutput(); err != nil {
		t.Fatalf("sh -n: %v\n%s", err, out)
	}
	for _, want := range []string{"insmod /lib/modules/virtio_blk.ko", "root=LABEL=" + Label, "switch_root /newroot \"$init\"", "mount --move /dev /newroot/dev"} {
		if !strings.Contains(s, want) {
			t.Errorf("init lacks %q", want)
		}
	}
	// The command-line parsing part, run for real with a fake /proc/cmdline.
	parse := s[strings.Index(s, "root=LABEL="):strings.Index(s, "fail()")]
	for _, c := range []struct{ cmdline, want string }{
		{"console=ttyS0 root=/dev/vda rw", "/dev/vda rw /sbin/init"},
		{"quiet", "LABEL=" + Label + " ro /sbin/init"},
		{"root=UUID=1234 ro init=/bin/sh", "UUID=1234 ro /bin/sh"},
	} {
		script := strings.ReplaceAll(parse, "$(cat /proc/cmdline)", c.cmdline) + `echo "$root $mode $init"`
		out, err := exec.Command(sh, "-c", script).Output()
		if err != nil || strings.TrimSpace(string(out)) != c.want {
			t.Errorf("cmdline %q: got %q (%v), want %q", c.cmdline, out, err, c.want)
		}
	}
}

// TestInstallGrubScript: the UEFI disk's GRUB installation parses, and
// when a step fails (here: the partitions never appear, with stand-ins for
// losetup, partx, mount and umount on PATH) it says why, exits non-zero
// and still unmounts, removes its mount point and detaches the loop
// device. Installing GRUB for real needs root, loop devices and the
// image: the distro tier's image build does that.
func TestInstallGrubScript(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh")
	}
	if out, err := exec.Command(sh, "-n", "-c", installGrubScript).CombinedOutput(); err != nil {
		t.Fatalf("sh -n: %v\n%s", err, out)
	}
	if t1, l := strings.Index(installGrubScript, "trap cleanup EXIT"), strings.Index(installGrubScript, "losetup --find"); t1 < 0 || t1 > l {
		t.Error("the cleanup trap is not set before the loop device is taken")
	}
	bin, tmp := t.TempDir(), t.TempDir()
	calls := filepath.Join(tmp, "calls")
	stub := "#!/bin/sh\necho \"$(basename \"$0\") $*\" >> " + calls + "\n"
	for name, body := range map[string]string{
		"losetup": stub + `[ "$1" = --find ] && echo /dev/nimbus-test-loop` + "\nexit 0\n",
		"partx":   stub, "mount": stub, "umount": stub,
	} {
		if err := os.WriteFile(filepath.Join(bin, name), []byte(body), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(sh, "-c", installGrubScript, "install-grub", filepath.Join(tmp, "disk.img"))
	cmd.Env = append(os.Environ(), "PATH="+bin+":"+os.Getenv("PATH"), "TMPDIR="+tmp)
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "install-grub: no partition /dev/nimbus-test-loopp2 after 10 s") {
		t.Fatalf("a disk whose partitions never appear: %v\n%s", err, out)
	}
	log, _ := os.ReadFile(calls)
	for _, want := range []string{"losetup --find --show --partscan", "umount -R " + tmp + "/tmp.", "losetup -d /dev/nimbus-test-loop"} {
		if !strings.Contains(string(log), want) {
			t.Errorf("no %q in the calls:\n%s", want, log)
		}
	}
	if left, _ := filepath.Glob(filepath.Join(tmp, "tmp.*")); len(left) > 0 {
		t.Errorf("mount point left behind: %v", left)
	}
}
