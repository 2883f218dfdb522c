#!/usr/bin/env bash
# Build a flashable device image: GPT disk with a FAT boot partition (UEFI ESP with
# systemd-boot, the kernel and the operator's provision.env) and an ext4 Debian bookworm
# root holding the agent's virtualenv, its models, its systemd units and first-boot
# provisioning. No loop devices or mounts: mkfs.ext4 -d, mkfs.vfat + mtools, sfdisk, dd.
#
#   firmware_images/build.sh [amd64|arm64]     -> build/firmware/edge-<arch>.img
#
# Heavy intermediates (wheelhouse, debootstrapped root) are cached under $CACHE_DIR keyed
# by their inputs, so a rebuild after an agent change takes well under a minute.
set -euo pipefail

ARCH=${1:-amd64}
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
CACHE_DIR=${CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/audience-edge/firmware}
OUT_DIR=${OUT_DIR:-$REPO/build/firmware}
PYTHON=${PYTHON:-$REPO/.venv/bin/python}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm
# Partition layout: fixed GUIDs so the kernel command line can name the root by PARTUUID
# (the kernel resolves it without udev; LABELs need the initramfs).
DISK_GUID=6e1d1c5a-3f0e-4c8e-9a51-0d6a7e1a0001
ESP_GUID=6e1d1c5a-3f0e-4c8e-9a51-0d6a7e1a0002
ROOT_GUID=6e1d1c5a-3f0e-4c8e-9a51-0d6a7e1a0003
ROOT_FS_UUID=6e1d1c5a-3f0e-4c8e-9a51-0d6a7e1a0004
ESP_MIB=256
FAT_LABEL=EDGEBOOT

log() { printf 'image: %s\n' "$*" >&2; }
die() { printf 'image: error: %s\n' "$*" >&2; exit 1; }

case "$ARCH" in
  amd64) KERNEL=linux-image-amd64; EFI_NAME=BOOTX64.EFI; SDBOOT=systemd-bootx64.efi
         PIP_ARCH=x86_64; CONSOLE="console=tty0 console=ttyS0,115200"
         ROOT_TYPE=4f68bce3-e8cd-4db1-96e7-fbcaf984b709 ;;
  arm64) KERNEL=linux-image-arm64; EFI_NAME=BOOTAA64.EFI; SDBOOT=systemd-bootaa64.efi
         PIP_ARCH=aarch64; CONSOLE="console=tty0 console=ttyAMA0,115200"
         ROOT_TYPE=b921b045-1df0-41c3-af44-4c6f280d3fae ;;
  *) die "unknown architecture '$ARCH' (amd64 or arm64)" ;;
esac

for tool in mmdebstrap sfdisk mkfs.ext4 mkfs.vfat mcopy mmd; do
  command -v "$tool" >/dev/null || die "$tool is missing: run .ci/image-tools.sh (Debian packages)"
done
[ -x "$PYTHON" ] || die "$PYTHON missing: run 'make setup' first"
[ -f "$REPO/models/dist/manifest.json" ] || die "models/dist missing: run 'make setup' (python models/build.py)"
if [ "$ARCH" != "$(dpkg --print-architecture)" ] && ! arch-test "$ARCH" >/dev/null 2>&1; then
  die "cannot run $ARCH binaries here: install qemu-user-static and binfmt-support"
fi
mkdir -p "$CACHE_DIR" "$OUT_DIR"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/edge-image.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
start=$(date +%s)

# 1. Wheelhouse: the project wheel (from the tracked files) + its `edge` extra for the
#    target's CPU, binary wheels only, so the device installs offline.
mkdir -p "$WORK/src" "$WORK/wheels"
git -C "$REPO" ls-files -z | (cd "$REPO" && tar --null -T - -cf -) | tar -x -C "$WORK/src"
"$PYTHON" -m pip wheel --quiet --no-deps -w "$WORK/wheels" "$WORK/src" 2>/dev/null \
  || "$PYTHON" -m pip wheel --no-deps -w "$WORK/wheels" "$WORK/src"
project_wheel=$(ls "$WORK"/wheels/audience_edge-*.whl)
platforms=()
for v in 36 35 34 31 28 27 24 17; do platforms+=(--platform "manylinux_2_${v}_${PIP_ARCH}"); done
platforms+=(--platform "manylinux2014_${PIP_ARCH}")
"$PYTHON" -m pip download --quiet --only-binary=:all: "${platforms[@]}" \
  --python-version 3.11 --implementation cp --abi cp311 -d "$WORK/wheels" "${project_wheel}[edge]"
(cd "$WORK/wheels" && sha256sum ./*.whl | sed 's#\./##' | sort -k2) > "$WORK/wheelhouse.sha256"
log "wheelhouse: $(wc -l < "$WORK/wheelhouse.sha256") wheels, $(du -sh "$WORK/wheels" | cut -f1)"

# 2. The Debian root with the packages and the virtualenv; cached by the package list,
#    the dependency wheels (not the project wheel: it is reinstalled in step 3) and this
#    script's base recipe.
packages=$(grep -v '^#' "$HERE/packages.txt" | tr -s ' \n' ' ')
deps_key=$(grep -v audience_edge "$WORK/wheelhouse.sha256" | sha256sum | cut -c1-16)
# The kernel's postinst and initramfs-tools' trigger would each build the initramfs
# (~12 min apiece under qemu-user for arm64): a no-op stands in for update-initramfs
# while packages install, and customize-base.sh builds it once at the end.
# shellcheck disable=SC2016  # expanded by mmdebstrap's hook shell
essential_hook='chroot "$1" dpkg-divert --quiet --local --rename --add /usr/sbin/update-initramfs && ln -s /bin/true "$1/usr/sbin/update-initramfs"'
base_key=$(printf '%s|%s|%s|%s|%s|%s|%s' "$ARCH" "$SUITE" "$MIRROR" "$packages $KERNEL" "$deps_key" \
  "$(sha256sum "$HERE/customize-base.sh" | cut -c1-16)" "$essential_hook" | sha256sum | cut -c1-16)
base_tar="$CACHE_DIR/base-$ARCH-$base_key.tar"
if [ ! -f "$base_tar" ]; then
  log "debootstrapping $SUITE/$ARCH (cache miss: $base_tar)"
  mkdir -p "$WORK/deps"
  grep -v audience_edge "$WORK/wheelhouse.sha256" | awk '{print $2}' \
    | while read -r w; do cp "$WORK/wheels/$w" "$WORK/deps/"; done
  # shellcheck disable=SC2086  # the package list is meant to split into words
  mmdebstrap --mode=root --variant=apt --arch="$ARCH" \
    --include="$(echo $packages $KERNEL | tr ' ' ',')" \
    --essential-hook="$essential_hook" \
    --customize-hook="mkdir -p \"\$1/tmp/wheels\" && cp $WORK/deps/*.whl \"\$1/tmp/wheels/\"" \
    --customize-hook="$HERE/customize-base.sh \"\$1\"" \
    "$SUITE" "$WORK/base.tar" "$MIRROR" >&2
  mv "$WORK/base.tar" "$base_tar"
fi

# 3. The device root: the cached base, the project wheel, the overlay, models, demo clip.
ROOT="$WORK/root"
mkdir -p "$ROOT"
tar -xpf "$base_tar" -C "$ROOT" --numeric-owner
cp "$project_wheel" "$ROOT/tmp/"
chroot "$ROOT" /opt/edge-agent/venv/bin/pip install --quiet --no-index --no-deps --force-reinstall \
  "/tmp/$(basename "$project_wheel")"
rm -f "$ROOT/tmp/$(basename "$project_wheel")"
chroot "$ROOT" /opt/edge-agent/venv/bin/python -c \
  'import cv2, onnxruntime, ai_edge_litert.interpreter, edge_agent.cli' \
  || die "the agent does not import inside the $ARCH root"
cp -a "$HERE/rootfs/." "$ROOT/"
install -d -m 0755 "$ROOT/boot/firmware"  # the boot partition's mount point
install -D -m 0755 "$HERE/provision.py" "$ROOT/usr/local/lib/edge-agent/provision.py"
install -D -m 0644 "$HERE/provision.env.example" "$ROOT/usr/local/share/edge-agent/provision.env.example"
install -d -m 0755 "$ROOT/usr/local/share/edge-agent"
cp "$WORK/wheelhouse.sha256" "$ROOT/usr/local/share/edge-agent/wheelhouse.sha256"
"$PYTHON" "$HERE/stage_models.py" "$REPO/models/dist" "$ROOT/var/lib/edge-agent/models"
demo_clip="$CACHE_DIR/demo-clip.mp4"
[ -f "$demo_clip" ] || "$REPO/.venv/bin/edge-agent" demo-clip "$demo_clip" >/dev/null
install -D -m 0644 "$demo_clip" "$ROOT/var/lib/edge-agent/demo/demo-clip.mp4"
uid=$(awk -F: '$1=="edge-agent"{print $3}' "$ROOT/etc/passwd")
gid=$(awk -F: '$1=="edge-agent"{print $4}' "$ROOT/etc/passwd")
chown -R "$uid:$gid" "$ROOT/var/lib/edge-agent"
chown "root:$gid" "$ROOT/etc/edge-agent" && chmod 0750 "$ROOT/etc/edge-agent"
chmod 0644 "$ROOT/etc/edge-agent/agent.default.toml"
systemctl --root="$ROOT" enable edge-provision.service edge-agent.service \
  systemd-networkd.service systemd-resolved.service systemd-timesyncd.service >/dev/null 2>&1
ln -sf ../run/systemd/resolve/stub-resolv.conf "$ROOT/etc/resolv.conf"
# Each device makes its own machine id (and so its own DHCP client id) on first boot.
: > "$ROOT/etc/machine-id"
printf 'edge-device\n' > "$ROOT/etc/hostname"
printf 'edge-image %s %s built %s from %s\n' "$ARCH" "$SUITE" "$(date -u +%FT%TZ)" \
  "$(git -C "$REPO" describe --always --dirty)" > "$ROOT/etc/edge-image-release"

# 4. The boot partition: systemd-boot as the removable-media loader, the kernel and
#    initrd beside it, and the operator's example provisioning file.
kver=$(find "$ROOT/lib/modules" -mindepth 1 -maxdepth 1 -printf "%f\n" | sort -V | tail -1)
mkdir -p "$WORK/esp/EFI/BOOT" "$WORK/esp/loader/entries" "$WORK/esp/edge"
cp "$ROOT/usr/lib/systemd/boot/efi/$SDBOOT" "$WORK/esp/EFI/BOOT/$EFI_NAME"
cp "$ROOT/boot/vmlinuz-$kver" "$WORK/esp/edge/vmlinuz"
cp "$ROOT/boot/initrd.img-$kver" "$WORK/esp/edge/initrd.img"
printf 'default edge.conf\ntimeout 0\nconsole-mode keep\n' > "$WORK/esp/loader/loader.conf"
cat > "$WORK/esp/loader/entries/edge.conf" <<ENTRY
title   Audience edge device ($ARCH, kernel $kver)
linux   /edge/vmlinuz
initrd  /edge/initrd.img
options root=PARTUUID=$ROOT_GUID rw rootwait $CONSOLE
ENTRY
cp "$HERE/provision.env.example" "$WORK/esp/provision.env.example"
rm -f "$ROOT"/boot/vmlinuz-* "$ROOT"/boot/initrd.img-*  # they live on the ESP

# 5. Filesystems and the GPT disk, without loop devices.
root_mib=$(( $(du -sm "$ROOT" | cut -f1) * 115 / 100 + 384 ))
esp_img="$WORK/esp.img"; root_img="$WORK/root.img"
truncate -s "${ESP_MIB}M" "$esp_img"
mkfs.vfat -F 32 -n "$FAT_LABEL" -i 0e5b0070 "$esp_img" >/dev/null
(cd "$WORK/esp" && mcopy -s -i "$esp_img" ./* ::/)
truncate -s "${root_mib}M" "$root_img"
mkfs.ext4 -q -L edge-root -U "$ROOT_FS_UUID" -d "$ROOT" "$root_img"
img="$OUT_DIR/edge-$ARCH.img"
rm -f "$img.tmp"
truncate -s $(( 1 + ESP_MIB + root_mib + 1 ))M "$img.tmp"
sfdisk --quiet "$img.tmp" <<TABLE
label: gpt
label-id: $DISK_GUID
start=1MiB, size=${ESP_MIB}MiB, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, uuid=$ESP_GUID, name=EDGEBOOT
start=$(( 1 + ESP_MIB ))MiB, size=${root_mib}MiB, type=$ROOT_TYPE, uuid=$ROOT_GUID, name=edge-root
TABLE
dd if="$esp_img" of="$img.tmp" bs=1M seek=1 conv=notrunc,sparse status=none
dd if="$root_img" of="$img.tmp" bs=1M seek=$(( 1 + ESP_MIB )) conv=notrunc,sparse status=none
mv "$img.tmp" "$img"
printf 'ESP_OFFSET=%s\nROOT_OFFSET=%s\nARCH=%s\n' $(( 1024 * 1024 )) \
  $(( (1 + ESP_MIB) * 1024 * 1024 )) "$ARCH" > "$img.layout"
log "built $img ($(du -h --apparent-size "$img" | cut -f1) apparent, $(du -h "$img" | cut -f1) on disk) in $(( $(date +%s) - start )) s"
