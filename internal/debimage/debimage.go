// Package debimage builds the Debian disk that the distribution tests and
// `make demo-debian` boot: debootstrap's minbase with systemd, udev and
// iproute2 in an ext4 file system (no partition table: root=/dev/vda), with
// the Debian kernel the sandbox uses and a small initramfs that loads the
// virtio and ext4 drivers, mounts root= and hands over to systemd. The image
// is kept as a zlib-compressed qcow2 (a 2 GiB disk in about 60 MiB), built
// once per recipe into the build cache, and also as a GPT disk with an EFI
// system partition where the image's own grub-install put GRUB, for UEFI
// firmware.
package debimage

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/nimbus-vmm/nimbus/internal/cachedir"
	"github.com/nimbus-vmm/nimbus/internal/guestimage"
)

// ErrImage is the category of every error building the image.
var ErrImage = errors.New("debian image")

// What the image is, for tests and the README.
const (
	Hostname     = "nimbus-debian"
	RootPassword = "nimbus" // root's password on the consoles
	Label        = "nimbus-root"
	DiskSize     = 2 << 30 // the ext4 file system's size; the qcow2 stores what is used

	// File names in Image.Dir.
	QCOW2File  = "debian.qcow2"
	UEFIFile   = "debian-uefi.qcow2"
	KernelFile = "vmlinuz"
	InitrdFile = "initrd.img"
)

// GrubDefault is the image's /etc/default/grub, from which the
// distribution's update-grub writes /boot/grub/grub.cfg: the menu shows
// for a second on the firmware's text console (the serial port: GRUB's
// graphical terminal finds no video mode there), and the kernel logs to
// ttyS0 without quiet, as Debian's cloud images do.
const GrubDefault = `GRUB_DEFAULT=0
GRUB_TIMEOUT=1
GRUB_TIMEOUT_STYLE=menu
GRUB_DISTRIBUTOR=Debian
GRUB_CMDLINE_LINUX_DEFAULT=""
GRUB_CMDLINE_LINUX="console=ttyS0"
GRUB_TERMINAL=console
GRUB_DISABLE_OS_PROBER=true
`

// ESPLabel is the FAT label of the UEFI disk's EFI system partition.
const ESPLabel = "EFI"

// ESPSize is the size of an EFI system partition made for the firmware
// (the UEFI disk's, and the sandbox's test ESP).
const ESPSize = 32 << 20

// Packages are installed beside debootstrap's minbase: an init system, a
// device manager, network tools, and kmod for the modules udev loads.
var Packages = []string{"systemd", "systemd-sysv", "udev", "dbus", "kmod", "iproute2"}

// AptPackages are installed by apt-get in the chroot after debootstrap
// (whose --include could not order python3-cryptography's configuration):
// cloud-init, and ifupdown, which renders cloud-init's network
// configuration (/etc/network/interfaces.d/50-cloud-init); GRUB for UEFI,
// which the UEFI disk boots through (its own grub-install and update-grub
// put it there), and efibootmgr for the firmware's boot variables.
var AptPackages = []string{"cloud-init", "ifupdown", "grub-efi-amd64", "efibootmgr"}

// imageModules are in the root file system beside the test guests' own:
// iso9660 for cloud-init's NoCloud seed (cloud-localds makes an ISO).
var imageModules = []string{"isofs"}

// CloudConfig is /etc/cloud/cloud.cfg.d/90-nimbus.cfg: cloud-init looks
// only for data sources on local disks, NoCloud (a disk labelled cidata)
// and ConfigDrive (config-2), so that without one ds-identify turns it
// off at boot instead of probing cloud metadata services (two, because
// ds-identify takes a lone entry as found without looking, and then
// cloud-init ran its four stages on every boot); and the locale is
// glibc's built-in C.UTF-8, since the image generates none (cloud-init's
// default, en_US.UTF-8, failed its locale module).
const CloudConfig = "datasource_list: [ NoCloud, ConfigDrive ]\nlocale: C.UTF-8\n"

// InitrdModules are loaded by the initramfs before root is mounted: the
// test guests' drivers (so that console=hvc0 has its device before
// systemd starts) and ext4. The same modules are in the root file system
// for udev.
var InitrdModules = slices.Concat(guestimage.DefaultModules, []string{"ext4", "crc32c_generic"})

// recipe changes the cache key when the way the image is made changes.
const recipe = "debimage 4"

// Kernel is the kernel the image carries in /boot and beside itself.
type Kernel struct {
	Image   string                  // bzImage
	Version string                  // uname -r
	Modules *guestimage.ModuleIndex // its modules
}

// Options say where the image is built and from what.
type Options struct {
	CacheDir string // the image goes to CacheDir/debian/<key>
	Kernel   Kernel
	Busybox  string // static busybox for the initramfs
	Suite    string // Debian suite (required: the host's, for its kernel and mirror)
	Mirror   string // archive URI; default the one the host's apt sources name for Suite
	Log      io.Writer
}

// Image is a built image.
type Image struct {
	Dir    string // holds the files below
	QCOW2  string // the root file system as a compressed qcow2
	UEFI   string // a GPT disk, the ESP then the root file system, as a compressed qcow2
	Kernel string // the kernel, also /boot/vmlinuz-<version> in the image
	Initrd string // the initramfs, also /boot/initrd.img-<version> in the image
}

func (o *Options) key() string {
	h := sha256.New()
	fmt.Fprintln(h, recipe, o.Suite, o.Kernel.Version, strings.Join(Packages, ","), strings.Join(AptPackages, ","), strings.Join(InitrdModules, ","))
	io.WriteString(h, initScript(nil))
	io.WriteString(h, CloudConfig)
	io.WriteString(h, GrubDefault)
	io.WriteString(h, installGrubScript)
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// Ensure returns the cached image for opts, building it first if needed
// (debootstrap, chroot, mkfs.ext4 and qemu-img, as root; about a minute
// on the dev box; loop devices for the UEFI disk's GRUB). Concurrent
// callers wait for one build.
func Ensure(ctx context.Context, opts Options) (*Image, error) {
	if opts.Log == nil {
		opts.Log = io.Discard
	}
	if opts.Suite == "" {
		return nil, fmt.Errorf("%w: no suite given", ErrImage)
	}
	dir := filepath.Join(opts.CacheDir, "debian")
	unlock, err := cachedir.Lock(dir)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrImage, err)
	}
	defer unlock()

	final := filepath.Join(dir, opts.key())
	img := &Image{Dir: final, QCOW2: filepath.Join(final, QCOW2File), UEFI: filepath.Join(final, UEFIFile),
		Kernel: filepath.Join(final, KernelFile), Initrd: filepath.Join(final, InitrdFile)}
	if _, err := os.Stat(img.QCOW2); err == nil {
		return img, nil
	}
	if opts.Mirror == "" {
		m, err := AptMirror(opts.Suite)
		if err != nil {
			return nil, err
		}
		opts.Mirror = m
	}
	tmp, err := os.MkdirTemp(dir, "build-")
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrImage, err)
	}
	defer os.RemoveAll(tmp)
	if err := build(ctx, &opts, tmp); err != nil {
		return nil, err
	}
	if err := os.Rename(tmp, final); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrImage, err)
	}
	// Images of older recipes or kernels are not used again.
	old, _ := filepath.Glob(filepath.Join(dir, "*"))
	for _, p := range old {
		if p != final && !strings.HasPrefix(filepath.Base(p), ".") {
			os.RemoveAll(p)
		}
	}
	return img, nil
}

// build makes Image's four files in out (and removes its scratch root).
func build(ctx context.Context, o *Options, out string) error {
	root := filepath.Join(out, "root")
	fmt.Fprintf(o.Log, "debimage: debootstrap %s from %s (minbase + %s)\n", o.Suite, o.Mirror, strings.Join(Packages, " "))
	if err := run(ctx, out, nil, "debootstrap", "--variant=minbase", "--include="+strings.Join(Packages, ","),
		o.Suite, root, o.Mirror); err != nil {
		return err
	}
	fmt.Fprintf(o.Log, "debimage: apt-get install %s\n", strings.Join(AptPackages, " "))
	if err := run(ctx, out, nil, "chroot", slices.Concat([]string{root, "sh", "-c",
		`apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" && apt-get clean`,
		"sh"}, AptPackages)...); err != nil {
		return err
	}
	initrd, err := Initramfs(o.Busybox, o.Kernel.Modules)
	if err != nil {
		return err
	}
	kernel, err := os.ReadFile(o.Kernel.Image)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrImage, err)
	}
	if err := configure(ctx, root, o.Kernel, kernel, initrd); err != nil {
		return err
	}
	raw := filepath.Join(out, "root.img")
	if err := os.WriteFile(raw, nil, 0o644); err != nil {
		return fmt.Errorf("%w: %w", ErrImage, err)
	}
	if err := os.Truncate(raw, DiskSize); err != nil {
		return fmt.Errorf("%w: %w", ErrImage, err)
	}
	fmt.Fprintf(o.Log, "debimage: mkfs.ext4 -d and qemu-img convert -c\n")
	if err := run(ctx, out, nil, "mkfs.ext4", "-q", "-F", "-L", Label, "-d", root, raw); err != nil {
		return err
	}
	if err := os.RemoveAll(root); err != nil {
		return fmt.Errorf("%w: %w", ErrImage, err)
	}
	if err := run(ctx, out, nil, "qemu-img", "convert", "-c", "-f", "raw", "-O", "qcow2", raw, QCOW2File); err != nil {
		return err
	}
	uefi, esp := filepath.Join(out, "uefi.img"), filepath.Join(out, "esp.img")
	if err := run(ctx, out, nil, "mkfs.vfat", "-C", "-n", ESPLabel, esp, fmt.Sprint(ESPSize>>10)); err != nil {
		return err
	}
	if err := WriteGPTDisk(ctx, uefi, esp, raw, "root"); err != nil {
		return err
	}
	fmt.Fprintf(o.Log, "debimage: grub-install and update-grub on the UEFI disk\n")
	if err := run(ctx, out, nil, "unshare", "--mount", "--propagation", "private", "sh", "-c", installGrubScript, "install-grub", uefi); err != nil {
		return err
	}
	if err := run(ctx, out, nil, "qemu-img", "convert", "-c", "-f", "raw", "-O", "qcow2", uefi, UEFIFile); err != nil {
		return err
	}
	for _, f := range []string{raw, uefi, esp} {
		if err := os.Remove(f); err != nil {
			return fmt.Errorf("%w: %w", ErrImage, err)
		}
	}
	for name, data := range map[string][]byte{KernelFile: kernel, InitrdFile: initrd} {
		if err := os.WriteFile(filepath.Join(out, name), data, 0o644); err != nil {
			return fmt.Errorf("%w: %w", ErrImage, err)
		}
	}
	return nil
}

// configure makes the debootstrapped tree a machine: a host name, root's
// password, the root file system in fstab, GRUB's defaults, the kernel's modules for udev,
// the kernel and initramfs in /boot; and it drops what a test disk does
// not need (documentation, translations, apt's lists and caches, apt's
// daily timers).
func configure(ctx context.Context, root string, k Kernel, kernel, initrd []byte) error {
	files := map[string]string{
		"etc/hostname":                        Hostname + "\n",
		"etc/hosts":                           "127.0.0.1 localhost\n127.0.1.1 " + Hostname + "\n::1 localhost ip6-localhost ip6-loopback\n",
		"etc/fstab":                           "LABEL=" + Label + " / ext4 rw,errors=remount-ro 0 1\n",
		"etc/machine-id":                      "", // made at first boot, so no two guests share one
		"etc/cloud/cloud.cfg.d/90-nimbus.cfg": CloudConfig,
		"etc/default/grub":                    GrubDefault,
	}
	for name, text := range files {
		if err := os.WriteFile(filepath.Join(root, name), []byte(text), 0o644); err != nil {
			return fmt.Errorf("%w: %w", ErrImage, err)
		}
	}
	// Named as Debian's kernel packages name them, for update-grub.
	for name, data := range map[string][]byte{"boot/vmlinuz-" + k.Version: kernel, "boot/initrd.img-" + k.Version: initrd} {
		if err := os.WriteFile(filepath.Join(root, name), data, 0o644); err != nil {
			return fmt.Errorf("%w: %w", ErrImage, err)
		}
	}
	if err := run(ctx, root, strings.NewReader("root:"+RootPassword+"\n"), "chroot", root, "chpasswd"); err != nil {
		return err
	}
	mods := filepath.Join(root, "lib", "modules", k.Version)
	if err := k.Modules.ExportModules(mods, slices.Concat(guestimage.DefaultModules, guestimage.OptionalModules, imageModules)...); err != nil {
		return fmt.Errorf("%w: %w", ErrImage, err)
	}
	if err := run(ctx, root, nil, "chroot", root, "depmod", "-a", k.Version); err != nil {
		return err
	}
	var drop []string
	for _, g := range []string{"usr/share/doc/*", "usr/share/man/*", "usr/share/info/*", "usr/share/locale/*",
		"var/cache/apt/*.bin", "var/cache/apt/archives/*.deb", "var/lib/apt/lists/*_*",
		"etc/systemd/system/timers.target.wants/apt-daily*.timer",
		"var/lib/dbus/machine-id"} { // dbus falls back to /etc/machine-id
		m, _ := filepath.Glob(filepath.Join(root, g))
		drop = append(drop, m...)
	}
	for _, p := range drop {
		if err := os.RemoveAll(p); err != nil {
			return fmt.Errorf("%w: %w", ErrImage, err)
		}
	}
	return nil
}

// Initramfs is the image's initramfs: busybox, InitrdModules and an /init
// that mounts root= (a device, LABEL= or UUID=; read-only unless rw) and
// switches to its init= (default /sbin/init).
func Initramfs(busybox string, ix *guestimage.ModuleIndex) ([]byte, error) {
	b := guestimage.NewBuilder()
	if err := b.AddBusybox(busybox); err != nil {
		return nil, err
	}
	mods, err := b.AddModules(ix, InitrdModules...)
	if err != nil {
		return nil, err
	}
	if err := b.AddFile("/init", []byte(initScript(mods)), 0o755); err != nil {
		return nil, err
	}
	return b.Bytes(guestimage.Gzip)
}

// initScript is the initramfs's /init. A root that does not come gives up
// after 10 s with a message and powers off rather than hang the boot.
func initScript(modules []string) string {
	var s strings.Builder
	s.WriteString(`#!/bin/sh
# Nimbus Debian image initramfs (internal/debimage).
/bin/busybox --install -s
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
`)
	for _, m := range modules {
		fmt.Fprintf(&s, "insmod %s || echo \"initramfs: insmod %s failed\"\n", m, m)
	}
	s.WriteString(`root=LABEL=` + Label + ` mode=ro init=/sbin/init
for a in $(cat /proc/cmdline); do
  case "$a" in
    root=*) root=${a#root=} ;;
    rw) mode=rw ;;
    ro) mode=ro ;;
    init=*) init=${a#init=} ;;
  esac
done
fail() { echo "initramfs: $*"; sleep 1; poweroff -f; }
i=0
while :; do
  case "$root" in
    LABEL=*|UUID=*) dev=$(findfs "$root" 2>/dev/null) ;;
    *) dev=$root ;;
  esac
  [ -n "$dev" ] && [ -b "$dev" ] && break
  i=$((i + 1))
  [ $i -ge 100 ] && fail "root device $root did not appear"
  sleep 0.1
done
mkdir -p /newroot
mount -t ext4 -o "$mode" "$dev" /newroot || fail "cannot mount $dev"
[ -x "/newroot$init" ] || [ -L "/newroot$init" ] || fail "no $init on $dev"
umount /sys /proc
mount --move /dev /newroot/dev
exec switch_root /newroot "$init"
`)
	return s.String()
}

// run runs a build step, its output kept for the error.
func run(ctx context.Context, dir string, stdin io.Reader, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir, cmd.Stdin = dir, stdin
	// On cancellation, SIGTERM first: the GRUB step's shell then detaches
	// its loop device; SIGKILL only if it is still there later.
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 30 * time.Second
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		tail := out.String()
		if len(tail) > 4000 {
			tail = "..." + tail[len(tail)-4000:]
		}
		if errors.Is(err, exec.ErrNotFound) {
			return fmt.Errorf("%w: %s not found (scripts/install-deps.sh installs debootstrap, e2fsprogs, qemu-utils, dosfstools, mtools): %w", ErrImage, name, err)
		}
		return fmt.Errorf("%w: %s %s: %w\n%s", ErrImage, name, strings.Join(args, " "), err, strings.TrimSpace(tail))
	}
	return nil
}
