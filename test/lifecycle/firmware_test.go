package lifecycle

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nimbus-vmm/nimbus/internal/guestimage"
	"github.com/nimbus-vmm/nimbus/internal/sandbox"
)

// firmwareAssets are Debian's CLOUDHV.fd and the sandbox's EFI system
// partition with GRUB; the test fails without them where the sandbox
// promised them.
func firmwareAssets(t *testing.T) (fw, esp string) {
	t.Helper()
	fw, esp = os.Getenv(sandbox.EnvFirmware), os.Getenv(sandbox.EnvUEFIESP)
	if fw == "" || esp == "" {
		msg := fmt.Sprintf("%s=%q, %s=%q: scripts/install-deps.sh fetches CLOUDHV.fd and installs GRUB's EFI build",
			sandbox.EnvFirmware, fw, sandbox.EnvUEFIESP, esp)
		if sandbox.RequireKVM() {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return fw, esp
}

// uefiDisk makes a GPT disk laid out as a cloud image's: the EFI system
// partition (GRUB at the removable-media path), then an ext4 boot
// partition with the kernel, the initramfs and the GRUB menu that boots
// them with cmdline.
func uefiDisk(t *testing.T, dir, esp, kernel, initramfs, cmdline string) string {
	t.Helper()
	boot := filepath.Join(dir, "boot")
	os.MkdirAll(boot, 0o755)
	for src, dst := range map[string]string{kernel: "vmlinuz", initramfs: "initramfs"} {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(boot, dst), b, 0o644)
	}
	os.WriteFile(filepath.Join(boot, "nimbus.cfg"), []byte(fmt.Sprintf(`set timeout=0
menuentry "Nimbus test guest" {
  echo "GRUB: booting Linux"
  linux /vmlinuz %s
  initrd /initramfs
}
`, cmdline)), 0o644)
	const bootSize = 128 << 20
	bootImg := filepath.Join(dir, "boot.img")
	os.WriteFile(bootImg, nil, 0o644)
	os.Truncate(bootImg, bootSize)
	if out, err := exec.Command(hostTool(t, "mkfs.ext4", "e2fsprogs"), "-q", "-F", "-d", boot, bootImg).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v\n%s", err, out)
	}
	espData, err := os.ReadFile(esp)
	if err != nil {
		t.Fatal(err)
	}
	bootData, err := os.ReadFile(bootImg)
	if err != nil {
		t.Fatal(err)
	}
	// 1 MiB for the GPT, the ESP, the boot partition, 1 MiB for the backup GPT.
	img := make([]byte, 1<<20+len(espData)+bootSize+1<<20)
	copy(img[1<<20:], espData)
	copy(img[1<<20+len(espData):], bootData)
	disk := filepath.Join(dir, "disk.img")
	if err := os.WriteFile(disk, img, 0o644); err != nil {
		t.Fatal(err)
	}
	sf := exec.Command(hostTool(t, "sfdisk", "fdisk"), "-q", disk)
	sf.Stdin = strings.NewReader(fmt.Sprintf("label: gpt\nstart=2048, size=%d, type=uefi, name=\"EFI system\"\nsize=%d, type=linux, name=\"boot\"\n",
		len(espData)/512, bootSize/512))
	if out, err := sf.CombinedOutput(); err != nil {
		t.Fatalf("sfdisk: %v\n%s", err, out)
	}
	return disk
}

// TestUEFIFirmware: Debian's CLOUDHV.fd, given as --kernel (the upstream
// quick start) and as --firmware, finds the GPT disk's EFI system
// partition, starts \EFI\BOOT\BOOTX64.EFI (GRUB), GRUB boots the Debian
// kernel from the ext4 boot partition, which sees EFI, runs the guest and
// powers off: exit status 0.
// A QEMU flash image is refused at once, saying what boots.
func TestUEFIFirmware(t *testing.T) {
	fw, esp := firmwareAssets(t)
	a := guestAssets(t)
	initramfs := a.ImageFile(t, guestimage.Options{ModuleNames: guestimage.DefaultModules})
	cmdline := cmdline(false, `echo "EFI-RUNTIME=$(ls -d /sys/firmware/efi 2>/dev/null)"`)
	cmdline = strings.Replace(cmdline, " quiet loglevel=3", "", 1) // keep the kernel's efi: lines
	for _, opt := range []string{"--kernel", "--firmware"} {
		t.Run(strings.TrimPrefix(opt, "--"), func(t *testing.T) {
			dir, err := os.MkdirTemp("", "nimbus-fw")
			if err != nil {
				t.Fatal(err)
			}
			defer os.RemoveAll(dir)
			disk := uefiDisk(t, dir, esp, a.Kernel, initramfs, cmdline)
			p := startVMM(t, dir, filepath.Join(a.BinDir, "nimbus"), opt, fw, "--disk", "path="+disk,
				"--serial", "file="+filepath.Join(dir, "serial.log"), "--console", "off", "--memory", "size=512M")
			if code := p.waitExit(bootTimeout); code != 0 {
				t.Fatalf("exit status %d", code)
			}
			out := p.output()
			for _, want := range []string{
				`BdsDxe: starting Boot`, // the firmware's boot manager took the disk
				"Welcome to GRUB!", "GRUB: booting Linux",
				"efi: EFI v2.70 by Debian distribution of EDK II", // the kernel booted through UEFI
				"EFI-RUNTIME=/sys/firmware/efi", guestimage.MarkerUp,
			} {
				if !strings.Contains(out, want) {
					t.Fatalf("serial output lacks %q:\n%s", want, out)
				}
			}
		})
	}
	t.Run("flash image refused", func(t *testing.T) {
		flash := filepath.Join(t.TempDir(), "OVMF.fd")
		img := make([]byte, 2<<20)
		copy(img[40:], "_FVH") // a firmware volume header, as QEMU's flash images start
		os.WriteFile(flash, img, 0o644)
		out, err := exec.Command(filepath.Join(a.BinDir, "nimbus"), "--kernel", flash, "--console", "off", "--serial", "off").CombinedOutput()
		if err == nil || !strings.Contains(string(out), "neither a PVH ELF nor a bzImage") {
			t.Fatalf("a flash image: %v\n%s", err, out)
		}
	})
}
