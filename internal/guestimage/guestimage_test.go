package guestimage

import (
	"bytes"
	"debug/elf"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/u-root/u-root/pkg/cpio"
	"github.com/ulikunitz/xz"
)

func content(t *testing.T, r cpio.Record) string {
	t.Helper()
	b, err := io.ReadAll(io.NewSectionReader(r.ReaderAt, 0, int64(r.FileSize)))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestBuilderArchiveContents(t *testing.T) {
	dir := t.TempDir()
	host := filepath.Join(dir, "tool")
	if err := os.WriteFile(host, []byte("#!/bin/sh\necho hi\n"), 0o750); err != nil {
		t.Fatal(err)
	}
	b := NewBuilder()
	if err := b.AddHostFile(host, "/opt/x/tool"); err != nil {
		t.Fatal(err)
	}
	if err := b.AddFile("/etc/motd", []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := b.AddSymlink("/bin/sh", "busybox"); err != nil {
		t.Fatal(err)
	}
	if err := b.AddFile("relative", nil, 0o644); err == nil {
		t.Fatal("relative guest path accepted")
	}
	for _, c := range []Compression{None, Gzip} {
		data, err := b.Bytes(c)
		if err != nil {
			t.Fatal(err)
		}
		if gz := data[0] == 0x1f && data[1] == 0x8b; gz != (c == Gzip) {
			t.Fatalf("compression %d: gzip magic = %v", c, gz)
		}
		if c == None && string(data[:6]) != "070701" {
			t.Fatalf("newc magic = %q, wanted 070701", data[:6])
		}
		recs, err := ReadArchive(data)
		if err != nil {
			t.Fatal(err)
		}
		want := []string{"/dev", "/dev/console", "/opt", "/opt/x", "/opt/x/tool", "/etc", "/etc/motd", "/bin", "/bin/sh"}
		if got := b.Names(); !reflect.DeepEqual(got, want) {
			t.Fatalf("Names() = %v, wanted %v", got, want)
		}
		if len(recs) != len(want) {
			t.Fatalf("archive has %d records %v, wanted %d", len(recs), sortedKeys(recs), len(want))
		}
		if r := recs["/opt/x/tool"]; r.Mode != cpio.S_IFREG|0o750 || content(t, r) != "#!/bin/sh\necho hi\n" {
			t.Fatalf("tool: mode %o content %q", r.Mode, content(t, r))
		}
		if r := recs["/bin/sh"]; r.Mode != cpio.S_IFLNK|0o777 || content(t, r) != "busybox" {
			t.Fatalf("symlink: mode %o target %q", r.Mode, content(t, r))
		}
		if r := recs["/dev/console"]; r.Mode != cpio.S_IFCHR|0o600 || r.Rmajor != 5 || r.Rminor != 1 {
			t.Fatalf("console: %+v", r.Info)
		}
		if r := recs["/opt/x"]; r.Mode&cpio.S_IFMT != cpio.S_IFDIR {
			t.Fatalf("/opt/x mode %o, wanted a directory", r.Mode)
		}
		inos := map[uint64]string{}
		for n, r := range recs {
			if o, dup := inos[r.Ino]; dup {
				t.Fatalf("%s and %s share inode %d (would unpack as hard links)", n, o, r.Ino)
			}
			inos[r.Ino] = n
		}
	}
}

func TestBuilderAddHostDirAndReplace(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "a", "b"), 0o755)
	os.WriteFile(filepath.Join(dir, "a", "b", "f"), []byte("F"), 0o644)
	b := NewBuilder()
	if err := b.AddHostFile(filepath.Join(dir, "a"), "/t"); err != nil {
		t.Fatal(err)
	}
	if err := b.AddFile("/t/b/f", []byte("G"), 0o600); err != nil {
		t.Fatal(err)
	}
	data, err := b.Bytes(None)
	if err != nil {
		t.Fatal(err)
	}
	recs, _ := ReadArchive(data)
	if got := content(t, recs["/t/b/f"]); got != "G" {
		t.Fatalf("replaced file = %q, wanted G", got)
	}
	if err := b.AddHostFile(filepath.Join(dir, "missing"), "/m"); !errors.Is(err, ErrImage) || !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing host file: err = %v", err)
	}
}

// fakeKo returns a minimal ELF64 relocatable file whose .modinfo section
// holds the given key=value pairs, as a kernel module's does.
func fakeKo(t *testing.T, kv ...string) []byte {
	t.Helper()
	modinfo := []byte(strings.Join(kv, "\x00") + "\x00")
	shstr := []byte("\x00.modinfo\x00.shstrtab\x00")
	off := uint64(64)
	shoff := off + uint64(len(modinfo)+len(shstr))
	var buf bytes.Buffer
	h := elf.Header64{Type: uint16(elf.ET_REL), Machine: uint16(elf.EM_X86_64), Version: 1,
		Shoff: shoff, Ehsize: 64, Shentsize: 64, Shnum: 3, Shstrndx: 2}
	copy(h.Ident[:], []byte{0x7f, 'E', 'L', 'F', 2, 1, 1})
	binary.Write(&buf, binary.LittleEndian, h)
	buf.Write(modinfo)
	buf.Write(shstr)
	secs := []elf.Section64{
		{},
		{Name: 1, Type: uint32(elf.SHT_PROGBITS), Off: off, Size: uint64(len(modinfo)), Addralign: 1},
		{Name: 10, Type: uint32(elf.SHT_STRTAB), Off: off + uint64(len(modinfo)), Size: uint64(len(shstr)), Addralign: 1},
	}
	binary.Write(&buf, binary.LittleEndian, secs)
	return buf.Bytes()
}

func xzBytes(t *testing.T, b []byte) []byte {
	var buf bytes.Buffer
	w, err := xz.NewWriter(&buf)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(b)
	w.Close()
	return buf.Bytes()
}

// fakeModules lays out a modules directory like Debian's linux-image package
// (no modules.dep): kvm-amd needs kvm and ccp, kvm needs irqbypass.
func fakeModules(t *testing.T) string {
	dir := t.TempDir()
	files := map[string][]byte{
		"kernel/virt/lib/irqbypass.ko":      fakeKo(t, "name=irqbypass", "depends="),
		"kernel/arch/x86/kvm/kvm.ko":        fakeKo(t, "name=kvm", "depends=irqbypass"),
		"kernel/arch/x86/kvm/kvm-amd.ko.xz": xzBytes(t, fakeKo(t, "license=GPL", "depends=kvm,ccp", "name=kvm_amd")),
		"kernel/drivers/crypto/ccp/ccp.ko":  fakeKo(t, "name=ccp", "depends="),
		"kernel/drivers/virtio/virtio.ko":   fakeKo(t, "name=virtio", "depends="),
	}
	for p, b := range files {
		full := filepath.Join(dir, filepath.FromSlash(p))
		os.MkdirAll(filepath.Dir(full), 0o755)
		if err := os.WriteFile(full, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	os.WriteFile(filepath.Join(dir, "modules.builtin"), []byte("kernel/drivers/block/virtio_blk.ko\n"), 0o644)
	return dir
}

func names(ms []*Module) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.Name)
	}
	return out
}

func TestModuleScanResolveAndExport(t *testing.T) {
	dir := fakeModules(t)
	ix, err := LoadModuleIndex(dir)
	if err != nil {
		t.Fatal(err)
	}
	mods, err := ix.Resolve("kvm-amd", "virtio_blk", "kvm")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := names(mods), []string{"irqbypass", "kvm", "ccp", "kvm_amd"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("Resolve = %v, wanted %v", got, want)
	}
	if _, err := ix.Resolve("nosuch"); !errors.Is(err, ErrModuleNotFound) || !strings.Contains(err.Error(), "nosuch") {
		t.Fatalf("Resolve(nosuch): err = %v", err)
	}

	out := t.TempDir()
	if err := ix.ExportModules(out, "kvm_amd"); err != nil {
		t.Fatal(err)
	}
	dep, _ := os.ReadFile(filepath.Join(out, "modules.dep"))
	wantDep := "kernel/virt/lib/irqbypass.ko:\n" +
		"kernel/arch/x86/kvm/kvm.ko: kernel/virt/lib/irqbypass.ko\n" +
		"kernel/drivers/crypto/ccp/ccp.ko:\n" +
		"kernel/arch/x86/kvm/kvm-amd.ko: kernel/drivers/crypto/ccp/ccp.ko kernel/arch/x86/kvm/kvm.ko kernel/virt/lib/irqbypass.ko\n"
	if string(dep) != wantDep {
		t.Fatalf("modules.dep =\n%s\nwanted\n%s", dep, wantDep)
	}
	// The exported tree resolves the same way from its modules.dep, and the
	// xz module was decompressed.
	ix2, err := LoadModuleIndex(out)
	if err != nil {
		t.Fatal(err)
	}
	mods2, err := ix2.Resolve("kvm_amd", "virtio_blk")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := names(mods2), []string{"irqbypass", "kvm", "ccp", "kvm_amd"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("exported Resolve = %v, wanted %v", got, want)
	}
	ko, err := os.ReadFile(filepath.Join(out, "kernel/arch/x86/kvm/kvm-amd.ko"))
	if err != nil || !bytes.HasPrefix(ko, []byte("\x7fELF")) {
		t.Fatalf("exported kvm-amd.ko: err %v, prefix %q", err, ko[:min(4, len(ko))])
	}
	if _, err := os.Stat(filepath.Join(out, "kernel/drivers/virtio/virtio.ko")); !os.IsNotExist(err) {
		t.Fatalf("unrequested module exported (stat err %v)", err)
	}

	var all bytes.Buffer
	if err := ix.WriteAllModulesDep(&all); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(all.String(), "kernel/arch/x86/kvm/kvm-amd.ko.xz: kernel/drivers/crypto/ccp/ccp.ko kernel/arch/x86/kvm/kvm.ko kernel/virt/lib/irqbypass.ko\n") {
		t.Fatalf("full modules.dep lacks kvm-amd line:\n%s", all.String())
	}
}

func TestParseModulesDepCycle(t *testing.T) {
	ix, err := ParseModulesDep("/x", strings.NewReader("a.ko: b.ko\nb.ko: a.ko\n"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ix.Resolve("a"); err == nil || !strings.Contains(err.Error(), "cycle") {
		t.Fatalf("cycle: err = %v", err)
	}
	if _, err := ParseModulesDep("/x", strings.NewReader("garbage\n")); !errors.Is(err, ErrImage) {
		t.Fatalf("garbage: err = %v", err)
	}
}

func TestBuildGuestImage(t *testing.T) {
	dir := fakeModules(t)
	ix, err := LoadModuleIndex(dir)
	if err != nil {
		t.Fatal(err)
	}
	bb := filepath.Join(t.TempDir(), "busybox")
	os.WriteFile(bb, []byte("BUSYBOX"), 0o755)
	data, err := Build(Options{Busybox: bb, Modules: ix, ModuleNames: []string{"kvm_amd"},
		Script: "echo embedded", Compression: Gzip})
	if err != nil {
		t.Fatal(err)
	}
	recs, err := ReadArchive(data)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"/bin/busybox", "/bin/sh", "/init", "/nimbus/run.sh", "/proc", "/sys", "/tmp",
		"/lib/modules/irqbypass.ko", "/lib/modules/kvm.ko", "/lib/modules/ccp.ko", "/lib/modules/kvm_amd.ko"} {
		if _, ok := recs[p]; !ok {
			t.Errorf("image lacks %s (has %v)", p, sortedKeys(recs))
		}
	}
	if got := content(t, recs["/bin/busybox"]); got != "BUSYBOX" {
		t.Fatalf("busybox content %q", got)
	}
	if !bytes.HasPrefix([]byte(content(t, recs["/lib/modules/kvm_amd.ko"])), []byte("\x7fELF")) {
		t.Fatal("kvm_amd.ko in the image is not a decompressed ELF")
	}
	init := content(t, recs["/init"])
	if recs["/init"].Mode != cpio.S_IFREG|0o755 {
		t.Fatalf("/init mode %o", recs["/init"].Mode)
	}
	// Modules load in dependency order.
	last := -1
	for _, m := range []string{"irqbypass", "kvm.ko", "ccp", "kvm_amd"} {
		i := strings.Index(init, "insmod /lib/modules/"+m)
		if i < 0 || i < last {
			t.Fatalf("insmod of %s missing or out of order in:\n%s", m, init)
		}
		last = i
	}
	for _, want := range []string{"poweroff -f", MarkerUp, "nimbus.run=*", "sh /nimbus/run.sh"} {
		if !strings.Contains(init, want) {
			t.Fatalf("init lacks %q:\n%s", want, init)
		}
	}
	if _, err := Build(Options{}); !errors.Is(err, ErrImage) {
		t.Fatalf("Build without busybox: err = %v", err)
	}
	if _, err := Build(Options{Busybox: bb, Modules: ix, ModuleNames: []string{"nosuch"}}); !errors.Is(err, ErrModuleNotFound) {
		t.Fatalf("Build with unknown module: err = %v", err)
	}
}

func TestInitScriptIsValidShell(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh on this host")
	}
	for _, stay := range []bool{false, true} {
		script := InitScript([]string{"/lib/modules/a.ko"}, stay)
		out, err := exec.Command(sh, "-n", "-c", script).CombinedOutput()
		if err != nil {
			t.Fatalf("sh -n: %v\n%s", err, out)
		}
		if got := strings.Contains(script, "stay=1\n"); got != stay {
			t.Fatalf("stayUp=%v but script sets stay=1: %v", stay, got)
		}
	}
}

func TestRunParam(t *testing.T) {
	p := RunParam("echo hi; exit 3")
	enc, ok := strings.CutPrefix(p, "nimbus.run=")
	if !ok || strings.ContainsAny(enc, " \t\n") {
		t.Fatalf("RunParam = %q", p)
	}
	dec, _ := base64.StdEncoding.DecodeString(enc)
	if string(dec) != "echo hi; exit 3" {
		t.Fatalf("decoded %q", dec)
	}
}

func TestParseConsole(t *testing.T) {
	out := "[    0.1] kernel noise\r\n" +
		"[    6.227284] ------------[ cut here ]------------\r\n" +
		"[    6.227284] XSAVE consistency problem: size 2696 != kernel_size 576\r\n" +
		"[    6.227284] WARNING: CPU: 0 PID: 0 at arch/x86/kernel/fpu/xstate.c:606\r\n" +
		"NIMBUS-GUEST-UP 6.1.0-56-amd64 cpus=2 mem=245000\r\n" +
		"NIMBUS-GUEST-ERROR insmod /lib/modules/x.ko failed\r\n" +
		"hello\r\nworld\r\n" +
		"NIMBUS-GUEST-RESULT embedded 0\r\n" +
		"boom\r\n" +
		"NIMBUS-GUEST-RESULT cmdline1 3\r\n" +
		"NIMBUS-GUEST-POWEROFF\r\n"
	got := ParseConsole(out)
	want := Console{Up: true, Kernel: "6.1.0-56-amd64", CPUs: 2, MemKB: 245000,
		Results:  []Result{{Name: "embedded", Status: 0, Output: "hello\nworld"}, {Name: "cmdline1", Status: 3, Output: "boom"}},
		Errors:   []string{"insmod /lib/modules/x.ko failed"},
		Warnings: []string{"XSAVE consistency problem: size 2696 != kernel_size 576"}, Poweroff: true}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("ParseConsole =\n%+v\nwanted\n%+v", got, want)
	}
	if c := ParseConsole("Kernel panic\n"); c.Up || c.Poweroff {
		t.Fatalf("no markers parsed as %+v", c)
	}
}

// BenchmarkEncode measures writing a sandbox-sized archive (64 MiB of file
// contents) uncompressed and gzip'd.
func BenchmarkEncode(b *testing.B) {
	data := bytes.Repeat([]byte("nimbus guest image "), 64<<20/19)
	bl := NewBuilder()
	for i := 0; i < 8; i++ {
		bl.AddFile("/nimbus/tests/t"+string(rune('0'+i))+".test", data[:len(data)/8], 0o755)
	}
	for _, c := range []struct {
		name string
		c    Compression
	}{{"none", None}, {"gzip", Gzip}} {
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(bl.Size())
			for b.Loop() {
				if err := bl.Encode(io.Discard, c.c); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
