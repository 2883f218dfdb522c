#!/usr/bin/env bash
# mmdebstrap customize hook for the cached base root ($1): the agent's user and its
# virtualenv installed offline from the dependency wheels in $1/tmp/wheels. Runs the
# target's binaries through chroot (qemu-user via binfmt for a foreign architecture).
set -euo pipefail
root=$1
# The initramfs, once, now that every package is in (build.sh diverted update-initramfs).
rm -f "$root/usr/sbin/update-initramfs"
chroot "$root" dpkg-divert --quiet --local --rename --remove /usr/sbin/update-initramfs
chroot "$root" update-initramfs -c -k all
chroot "$root" useradd --system --user-group --home-dir /var/lib/edge-agent \
  --shell /usr/sbin/nologin --groups video,plugdev edge-agent
install -d -m 0750 "$root/var/lib/edge-agent"
chroot "$root" python3.11 -m venv /opt/edge-agent/venv
# shellcheck disable=SC2016  # expanded inside the chroot's shell
chroot "$root" /bin/sh -c '/opt/edge-agent/venv/bin/pip install --quiet --no-index \
  --disable-pip-version-check /tmp/wheels/*.whl'
rm -rf "$root/tmp/wheels"
