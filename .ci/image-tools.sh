#!/usr/bin/env bash
# Debian tools for the device image (firmware_images/, docs/firmware.md). Idempotent:
# installs only what is missing.
#   .ci/image-tools.sh          what `make test` needs: shellcheck (seconds; CI runs this)
#   .ci/image-tools.sh --all    also what `make image` / `make image-test` need: mmdebstrap,
#                               filesystem and partition tools, qemu with UEFI firmware,
#                               qemu-user for building arm64 on an amd64 machine and
#                               qemu-system-aarch64 + AAVMF for booting it
set -euo pipefail

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
# package:command-or-file that proves it is installed
wanted=(shellcheck:shellcheck)
if [ "${1:-}" = "--all" ]; then
  wanted+=(
    mmdebstrap:mmdebstrap arch-test:arch-test e2fsprogs:mkfs.ext4 dosfstools:mkfs.vfat
    mtools:mcopy fdisk:sfdisk qemu-system-x86:qemu-system-x86_64
    ovmf:/usr/share/OVMF/OVMF_CODE_4M.fd qemu-user-static:qemu-aarch64-static
    binfmt-support:update-binfmts mosquitto:/usr/sbin/mosquitto
    qemu-system-arm:qemu-system-aarch64 qemu-efi-aarch64:/usr/share/AAVMF/AAVMF_CODE.fd
  )
fi
missing=()
for entry in "${wanted[@]}"; do
  package=${entry%%:*} probe=${entry#*:}
  if [[ $probe == /* ]]; then [ -e "$probe" ] && continue
  else command -v "$probe" >/dev/null 2>&1 && continue
  fi
  missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "image-tools: installing ${missing[*]}"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
fi
# arm64 builds run the target's binaries through qemu-user: make sure binfmt is on.
if [ "${1:-}" = "--all" ] && ! arch-test arm64 >/dev/null 2>&1; then
  as_root update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true
  arch-test arm64 >/dev/null 2>&1 || echo "image-tools: arm64 binaries do not run here (no binfmt): amd64 only"
fi
echo "image-tools: ok${1:+ ($1)}"
