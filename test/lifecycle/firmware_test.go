package lifecycle

import (
	"context"
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
			hostTool(t, "mkfs.ext4", "e2fsprogs")
			hostTool(t, "sfdisk", "fdisk")
			disk := filepath.Join(dir, "disk.img")
			if err := sandbox.BuildUEFIDisk(context.Background(), disk, esp, a.Kernel, initramfs, cmdline); err != nil {
				t.Fatal(err)
			}
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
