package debimage

import (
	"os/exec"
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

// TestInstallGrubScript is a syntax and text check of the UEFI disk's
// GRUB installation (running it needs root, loop devices and the image:
// the distro tier's image build does that): the shell parses it, and the
// steps that make it an installer's (removable path, no firmware
// variables, update-grub naming root by UUID, the FAT partition filled
// without mounting it, the cleanup trap set before the loop device is
// taken) have not gone missing.
func TestInstallGrubScript(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh")
	}
	if out, err := exec.Command(sh, "-n", "-c", installGrubScript).CombinedOutput(); err != nil {
		t.Fatalf("sh -n: %v\n%s", err, out)
	}
	for _, want := range []string{
		"set -eu", `losetup -d "$dev"`, "trap 'exit 1' INT TERM HUP",
		`chroot "$mnt" grub-install --target=x86_64-efi --efi-directory=/boot/efi --removable --no-nvram`,
		`chroot "$mnt" update-grub`,
		`mount -t tmpfs "${dev}p1" "$mnt/boot/efi"`, // the source grub-install looks up
		`mcopy -s -i "${dev}p1" "$mnt/boot/efi/EFI" ::/`,
		`grep -q "root=UUID=$uuid " "$mnt/boot/grub/grub.cfg"`,
	} {
		if !strings.Contains(installGrubScript, want) {
			t.Errorf("the script lacks %q", want)
		}
	}
	if strings.Contains(installGrubScript, "--rbind /dev") {
		t.Error("the chroot shares the host's /dev: the UUID link would land there")
	}
	if t1, l := strings.Index(installGrubScript, "trap cleanup EXIT"), strings.Index(installGrubScript, "losetup --find"); t1 < 0 || t1 > l {
		t.Error("the cleanup trap is not set before the loop device is taken")
	}
	for _, want := range []string{"GRUB_TERMINAL=console", `GRUB_CMDLINE_LINUX="console=ttyS0"`, "GRUB_TIMEOUT=1"} {
		if !strings.Contains(GrubDefault, want) {
			t.Errorf("/etc/default/grub lacks %q", want)
		}
	}
}
