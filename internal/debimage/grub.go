package debimage

// installGrubScript runs the image's own GRUB installation on the UEFI
// disk (its argument), as a distribution's installer does: the disk on a
// loop device, its root partition mounted with the EFI system partition
// at /boot/efi, then grub-install to the removable-media path
// (\EFI\BOOT\BOOTX64.EFI, which firmware without boot variables starts)
// and update-grub, which writes /boot/grub/grub.cfg for the kernel in
// /boot and the root file system's UUID. grub-install and grub-probe find
// the partitions through /dev and /proc, so it needs real block devices:
// a directory tree will not do. The kernels that build it need not mount
// FAT (these machines' has no vfat), so the EFI system partition is not
// mounted: /boot/efi is a tmpfs whose source is the partition's device,
// which is what grub-install looks up (in /proc/self/mountinfo) and probes
// with GRUB's own FAT reader, and what it wrote there is copied into the
// partition with mtools. Run in a private mount namespace (unshare), so
// nothing stays mounted if it is killed; it detaches the loop device when
// it ends, fails or gets SIGTERM (run sends that on cancellation; a
// SIGKILL would leave the loop device attached).
const installGrubScript = `set -eu
disk=$1
dev= mnt=
cleanup() {
  [ -z "$mnt" ] || { umount -R "$mnt" 2>/dev/null || true; rmdir "$mnt" 2>/dev/null || true; }
  [ -z "$dev" ] || losetup -d "$dev" || true
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP
fail() { echo "install-grub: $*"; exit 1; }
dev=$(losetup --find --show --partscan "$disk")
mnt=$(mktemp -d)
# The loop driver's own partition scan has been seen to find nothing on a
# table written just before; partx reads it again.
partx --add "$dev" 2>/dev/null || true
i=0
while [ ! -b "${dev}p2" ]; do
  i=$((i + 1))
  [ $i -lt 100 ] || fail "no partition ${dev}p2 after 10 s"
  sleep 0.1
done
mount "${dev}p2" "$mnt"
mkdir -p "$mnt/boot/efi"
mount -t tmpfs "${dev}p1" "$mnt/boot/efi"
# A /dev of its own with the disk's nodes, and the link by UUID that udev
# would make, so that update-grub names root by its UUID (root=UUID=) as
# on an installed system, not by the loop device.
mount -t tmpfs dev "$mnt/dev"
cp -a /dev/null /dev/zero /dev/full /dev/random /dev/urandom "$dev" "${dev}p1" "${dev}p2" "$mnt/dev/"
uuid=$(blkid -p -s UUID -o value "${dev}p2")
[ -n "$uuid" ] || fail "no file system UUID on ${dev}p2"
mkdir -p "$mnt/dev/disk/by-uuid"
ln -s "../../${dev#/dev/}p2" "$mnt/dev/disk/by-uuid/$uuid"
mount -t proc proc "$mnt/proc"
mount -t sysfs sysfs "$mnt/sys"
chroot "$mnt" grub-install --target=x86_64-efi --efi-directory=/boot/efi --removable --no-nvram
chroot "$mnt" update-grub
test -s "$mnt/boot/efi/EFI/BOOT/BOOTX64.EFI" || fail "grub-install wrote no EFI/BOOT/BOOTX64.EFI"
mcopy -s -i "${dev}p1" "$mnt/boot/efi/EFI" ::/
grep -q "^menuentry 'Debian GNU/Linux'" "$mnt/boot/grub/grub.cfg" || fail "update-grub wrote no Debian menu entry"
grep -q "root=UUID=$uuid " "$mnt/boot/grub/grub.cfg" || fail "grub.cfg does not name root=UUID=$uuid"
`
