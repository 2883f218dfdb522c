#!/usr/bin/env bash
# Debian tools tests/fleet needs on the host (docs/fleet-rollout.md, "Tests"): debootstrap
# for the targets' root, systemd-nspawn to boot them, ssh to reach them, iproute2 for
# their network namespaces. Idempotent: installs
# only what is missing, so a second run changes nothing.
set -euo pipefail
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
need=()
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/sbin/$1" ]; }
have debootstrap || need+=(debootstrap)
have systemd-nspawn || need+=(systemd-container)
have ssh || need+=(openssh-client)
have ssh-keygen || need+=(openssh-client)
have ip || need+=(iproute2)
if [ ${#need[@]} -gt 0 ]; then
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${need[@]}" >/dev/null
fi
echo "fleet-tools: debootstrap, systemd-nspawn, ssh, ip present"
