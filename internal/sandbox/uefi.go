package sandbox

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/nimbus-vmm/nimbus/internal/debimage"
)

// EnvUEFIESP is an EFI system partition image (FAT) holding a standalone
// GRUB at the removable-media path \EFI\BOOT\BOOTX64.EFI, for the firmware
// tests' disks (BuildESP).
const EnvUEFIESP = "NIMBUS_UEFI_ESP"

// ESPSize is the size of BuildESP's image.
const ESPSize = debimage.ESPSize

// GrubEmbeddedConfig is the configuration built into the standalone GRUB:
// it finds the partition holding /nimbus.cfg (a test's ext4 boot
// partition, beside the ESP, as a cloud image's /boot) and runs it.
const GrubEmbeddedConfig = `search --no-floppy --file /nimbus.cfg --set=root
configfile /nimbus.cfg
echo "GRUB: no /nimbus.cfg on any disk"
`

// BuildESP writes out: a FAT EFI system partition with a standalone GRUB
// (GrubEmbeddedConfig built in) as \EFI\BOOT\BOOTX64.EFI, made with the
// host's grub-mkstandalone, mkfs.vfat and mtools (Debian packages
// grub-common, grub-efi-amd64-bin, dosfstools, mtools: installed by
// scripts/install-deps.sh). Built outside the sandbox: mtools needs the
// host's character set converters.
func BuildESP(ctx context.Context, out string) error {
	out, err := filepath.Abs(out) // the tools run in a scratch directory
	if err != nil {
		return err
	}
	for _, tool := range []string{"grub-mkstandalone", "mkfs.vfat", "mmd", "mcopy"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%w: %s (Debian packages grub-common, grub-efi-amd64-bin, dosfstools, mtools): %w", ErrMissingTool, tool, err)
		}
	}
	dir, err := os.MkdirTemp(filepath.Dir(out), "esp-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	cfg, grub := filepath.Join(dir, "grub.cfg"), filepath.Join(dir, "BOOTX64.EFI")
	if err := os.WriteFile(cfg, []byte(GrubEmbeddedConfig), 0o644); err != nil {
		return err
	}
	os.Remove(out)
	steps := [][]string{
		{"grub-mkstandalone", "-O", "x86_64-efi",
			"--modules=part_gpt part_msdos fat ext2 linux normal search search_fs_file configfile echo",
			"--locales=", "--themes=", "--fonts=", "-o", grub, "boot/grub/grub.cfg=" + cfg},
		{"mkfs.vfat", "-C", "-n", "NIMBUSESP", out, fmt.Sprint(ESPSize >> 10)},
		{"mmd", "-i", out, "::/EFI", "::/EFI/BOOT"},
		{"mcopy", "-i", out, grub, "::/EFI/BOOT/BOOTX64.EFI"},
	}
	for _, s := range steps {
		if err := run(ctx, dir, s[0], s[1:]...); err != nil {
			return fmt.Errorf("building the EFI system partition: %s: %w", s[0], err)
		}
	}
	return nil
}

// GrubMenu is BuildUEFIDisk's GRUB menu (a format for the kernel command
// line): before Linux, GRUB lists the PCI functions with their BARs as
// the firmware left them (lspci -i), between two markers, so a test can
// hold them against vm.info's device tree.
const GrubMenu = `set timeout=0
menuentry "Nimbus guest" {
  insmod lspci
  echo "GRUB: PCI functions"
  lspci -i
  echo "GRUB: booting Linux"
  linux /vmlinuz %s
  initrd /initramfs
}
`

// BootPartitionSize is the size of BuildUEFIDisk's ext4 boot partition.
const BootPartitionSize = 128 << 20

// BuildUEFIDisk writes out: a GPT disk laid out as a cloud image's, the
// EFI system partition esp (BuildESP's) then an ext4 boot partition with
// kernel as /vmlinuz, initramfs as /initramfs and the GRUB menu
// (/nimbus.cfg) that boots them with cmdline. It needs mkfs.ext4
// (e2fsprogs) and sfdisk (fdisk) on PATH.
func BuildUEFIDisk(ctx context.Context, out, esp, kernel, initramfs, cmdline string) error {
	out, err := filepath.Abs(out) // the tools run in a scratch directory
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp(filepath.Dir(out), "uefi-disk-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	boot := filepath.Join(dir, "boot")
	if err := os.MkdirAll(boot, 0o755); err != nil {
		return err
	}
	for src, dst := range map[string]string{kernel: "vmlinuz", initramfs: "initramfs"} {
		b, err := os.ReadFile(src)
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(boot, dst), b, 0o644); err != nil {
			return err
		}
	}
	menu := fmt.Sprintf(GrubMenu, cmdline)
	if err := os.WriteFile(filepath.Join(boot, "nimbus.cfg"), []byte(menu), 0o644); err != nil {
		return err
	}
	bootImg := filepath.Join(dir, "boot.img")
	if err := os.WriteFile(bootImg, nil, 0o644); err != nil {
		return err
	}
	if err := os.Truncate(bootImg, BootPartitionSize); err != nil {
		return err
	}
	if err := run(ctx, dir, "mkfs.ext4", "-q", "-F", "-d", boot, bootImg); err != nil {
		return fmt.Errorf("boot partition: mkfs.ext4 (e2fsprogs): %w", err)
	}
	return debimage.WriteGPTDisk(ctx, out, esp, bootImg, "boot")
}
