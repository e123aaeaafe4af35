#!/usr/bin/env bash
# Installs the Debian packages Nimbus's tests and demo need (idempotent; run
# as root or with sudo):
#   qemu-system-x86  the KVM sandbox (QEMU TCG, -cpu max emulates AMD SVM)
#                    and the QEMU/KVM reference guest boots. Taken from the
#                    release's backports suite (QEMU 10 on bookworm): 7.2's
#                    TCG does not intercept XSETBV for SVM guests and has
#                    many more TCG SVM bugs; nested boots run about twice as
#                    fast under 10. Falls back to the release's QEMU, with a
#                    warning, where no backports suite answers.
#   busybox-static   the userland of the sandbox and of test guest images
#   curl             scripts/api-smoke.sh (curl --unix-socket)
#   e2fsprogs        ext4 images for the virtio-pmem test (mkfs.ext4, debugfs)
#   qemu-utils       qemu-storage-daemon, the vhost-user-blk back end of the
#                    tests (from backports with QEMU, so their libraries agree)
#   dpdk-dev, librte-net-vhost*, librte-mempool-ring*
#                    dpdk-testpmd with DPDK's vhost-user driver: the
#                    vhost-user-net back end of the tests (no hugepages)
#   grub-common, grub-efi-amd64-bin, dosfstools, mtools, fdisk
#                    the firmware tests' disks: a standalone GRUB
#                    (grub-mkstandalone) on a GPT EFI system partition
#                    (sfdisk, mkfs.vfat, mcopy); nothing is installed to a
#                    boot loader
#   debootstrap      the Debian disk image with systemd that the
#                    distribution tests boot (internal/debimage builds it
#                    once into build/cache, from the archive the machine's
#                    apt sources name)
#   cloud-image-utils, genisoimage
#                    cloud-localds, which makes the cloud-init NoCloud seed
#                    (an ISO 9660 disk labelled cidata) of those tests
# Debian's virtiofsd is fetched, not installed: internal/sandbox.EnsureVirtiofsd.
# The guest/sandbox kernel is NOT installed: internal/sandbox.EnsureKernel
# fetches the package linux-image-amd64 depends on with `apt-get download`
# and unpacks it under build/cache. That needs fresh apt lists, hence the
# unconditional `apt-get update`.
set -euo pipefail
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
# Wait for other apt/dpkg runs instead of failing on their lock.
APT=(-o DPkg::Lock::Timeout=600 -o Acquire::Retries=3)
export DEBIAN_FRONTEND=noninteractive
pkgs=(busybox-static curl e2fsprogs grub-common grub-efi-amd64-bin dosfstools mtools fdisk dpdk-dev debootstrap
  cloud-image-utils genisoimage)

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

# The backports suite of this release, on the archive the machine's own
# Debian sources already name (deb822 .sources files or one-line lists):
# nothing but the suite name is added.
. /etc/os-release
codename=${VERSION_CODENAME:-}
bp_list=/etc/apt/sources.list.d/nimbus-backports.sources
archive_uri() {
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    # Each stanza: print its first URI when its Suites name the release.
    awk -v want="$codename" '
      function flush() { if (uri != "" && ok && !done) { print uri; done = 1 } uri = ""; ok = 0 }
      /^[[:space:]]*$/ { flush(); next }
      tolower($1) == "uris:" { uri = $2 }
      tolower($1) == "suites:" { for (i = 2; i <= NF; i++) if ($i == want) ok = 1 }
      END { flush() }' "$f"
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    awk -v want="$codename" '$1 == "deb" { i = 2; if ($2 ~ /^\[/) while ($i !~ /\]$/) i++; if ($2 ~ /^\[/) i++; if ($(i+1) == want) print $i }' "$f"
  done
}
if [ -n "$codename" ] && [ ! -f "$bp_list" ]; then
  uri=$(archive_uri | grep -v -- '-security' | head -1 || true)
  if [ -n "$uri" ]; then
    keyring=/usr/share/keyrings/debian-archive-keyring.gpg
    {
      echo "# Added by Nimbus scripts/install-deps.sh: QEMU for the KVM sandbox."
      echo "Types: deb"
      echo "URIs: $uri"
      echo "Suites: $codename-backports"
      echo "Components: main"
      [ -f "$keyring" ] && echo "Signed-By: $keyring"
    } | $SUDO tee "$bp_list" >/dev/null
  fi
fi

$SUDO apt-get "${APT[@]}" update -qq
# DPDK's drivers carry the ABI in their names (librte-net-vhost23 on
# Debian 12): take the ones this release's dpdk recommends.
pkgs+=($(apt-cache depends dpdk 2>/dev/null | awk '/Recommends: librte-(net-vhost|mempool-ring)[0-9]/{print $2}'))
missing=()
for p in "${pkgs[@]}"; do installed "$p" || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  $SUDO apt-get "${APT[@]}" install -y -qq --no-install-recommends "${missing[@]}"
fi

# QEMU: the backports build when the suite has one, else the release's.
qemu_version() { dpkg-query -W -f='${Version}' qemu-system-x86 2>/dev/null || true; }
bp_version=$(apt-cache madison qemu-system-x86 2>/dev/null | awk -v s="$codename-backports" '$0 ~ s {print $3; exit}')
if [ -n "$bp_version" ]; then
  if [ "$(qemu_version)" != "$bp_version" ]; then
    $SUDO apt-get "${APT[@]}" install -y -qq --no-install-recommends -t "$codename-backports" qemu-system-x86 qemu-utils
  fi
  installed qemu-utils || $SUDO apt-get "${APT[@]}" install -y -qq --no-install-recommends -t "$codename-backports" qemu-utils
else
  echo "install-deps: WARNING: no qemu-system-x86 in ${codename:-?}-backports; using the release's QEMU, whose TCG runs nested guests slower and less reliably" >&2
  installed qemu-system-x86 || $SUDO apt-get "${APT[@]}" install -y -qq --no-install-recommends qemu-system-x86
  installed qemu-utils || $SUDO apt-get "${APT[@]}" install -y -qq --no-install-recommends qemu-utils
fi

# Cloud Hypervisor's UEFI firmware, CLOUDHV.fd (Debian package
# cloudhv-efi-x86-64, only in unstable today), for the firmware tests:
# `apt-get download` from the unstable suite of the archive the machine's
# own sources name, with a private apt state under build/cache (its own
# sources list, lists and cache), so the machine's apt configuration is not
# changed; unpacked to build/firmware. Not installed, and not fatal: only
# the firmware tests need it, and they say so.
root=$(cd "$(dirname "$0")/.." && pwd)
fw=$root/build/firmware/CLOUDHV.fd
if [ ! -f "$fw" ]; then
  uri=$(archive_uri | grep -v -- '-security' | head -1 || true)
  state=$root/build/cache/apt-unstable
  keyring=/usr/share/keyrings/debian-archive-keyring.gpg
  if [ -n "$uri" ] && [ -f "$keyring" ]; then
    rm -rf "$state" && mkdir -p "$state/lists/partial" "$state/cache/archives/partial" "$state/deb"
    echo "deb [signed-by=$keyring] $uri unstable main" > "$state/sources.list"
    opts=(-o Dir::Etc::SourceList="$state/sources.list" -o Dir::Etc::SourceParts=/dev/null
          -o Dir::State::Lists="$state/lists" -o Dir::Cache="$state/cache" -o Dir::State::Status=/dev/null
          -o Debug::NoLocking=1 -o Acquire::Retries=3)
    if apt-get "${opts[@]}" update -qq &&
       (cd "$state/deb" && apt-get "${opts[@]}" download -q cloudhv-efi-x86-64) &&
       dpkg-deb -x "$state"/deb/cloudhv-efi-x86-64_*.deb "$state/root" &&
       mkdir -p "$(dirname "$fw")" &&
       cp "$state/root/usr/share/cloudhv-efi-x86-64/CLOUDHV.fd" "$fw"; then
      echo "install-deps: $fw from $(basename "$state"/deb/*.deb)"
    else
      echo "install-deps: WARNING: could not fetch cloudhv-efi-x86-64 from $uri unstable; the firmware tests will fail" >&2
    fi
    rm -rf "$state"
  else
    echo "install-deps: WARNING: no Debian archive in the apt sources; CLOUDHV.fd not fetched" >&2
  fi
fi

# Check what the sandbox relies on, naming the package when something is off.
command -v qemu-system-x86_64 >/dev/null || { echo "install-deps: qemu-system-x86_64 missing (package qemu-system-x86)" >&2; exit 1; }
[ -x /bin/busybox ] || { echo "install-deps: /bin/busybox missing (package busybox-static)" >&2; exit 1; }
apt-cache depends linux-image-amd64 2>/dev/null | grep -q 'Depends: linux-image-' ||
  { echo "install-deps: apt does not know linux-image-amd64 (check the Debian sources)" >&2; exit 1; }
echo "install-deps: $(qemu-system-x86_64 --version | head -1), busybox-static present; kernel package $(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-/{print $2; exit}') available"
