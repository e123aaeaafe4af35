#!/usr/bin/env bash
# Installs the Debian packages Nimbus's tests and demo need (idempotent; run
# as root or with sudo):
#   qemu-system-x86  the KVM sandbox (QEMU TCG, -cpu max emulates AMD SVM)
#                    and the QEMU/KVM reference guest boots
#   busybox-static   the userland of the sandbox and of test guest images
#   curl             scripts/api-smoke.sh (curl --unix-socket)
# The guest/sandbox kernel is NOT installed: internal/sandbox.EnsureKernel
# fetches the package linux-image-amd64 depends on with `apt-get download`
# and unpacks it under build/cache. That needs fresh apt lists, hence the
# unconditional `apt-get update`.
set -euo pipefail
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
# Wait for other apt/dpkg runs instead of failing on their lock.
APT=(-o DPkg::Lock::Timeout=600 -o Acquire::Retries=3)
pkgs=(qemu-system-x86 busybox-static curl)

$SUDO apt-get "${APT[@]}" update -qq
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get "${APT[@]}" install -y -qq --no-install-recommends "${missing[@]}"
fi

# Check what the sandbox relies on, naming the package when something is off.
command -v qemu-system-x86_64 >/dev/null || { echo "install-deps: qemu-system-x86_64 missing (package qemu-system-x86)" >&2; exit 1; }
[ -x /bin/busybox ] || { echo "install-deps: /bin/busybox missing (package busybox-static)" >&2; exit 1; }
apt-cache depends linux-image-amd64 2>/dev/null | grep -q 'Depends: linux-image-' ||
  { echo "install-deps: apt does not know linux-image-amd64 (check the Debian sources)" >&2; exit 1; }
echo "install-deps: qemu-system-x86, busybox-static present; kernel package $(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-/{print $2; exit}') available"
