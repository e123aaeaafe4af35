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
