#!/usr/bin/env bash
# promtool for tests/test_monitoring.py (`promtool check rules` and `promtool test rules` on
# deploy/prometheus/, docs/monitoring.md). Idempotent: installs Debian's prometheus package
# (which carries /usr/bin/promtool) only when promtool is missing.
set -euo pipefail
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
if ! command -v promtool >/dev/null 2>&1; then
  echo "prometheus-tools: installing prometheus (for promtool)"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends \
    prometheus >/dev/null
  # Only promtool is wanted here: do not leave a Prometheus server running where systemd
  # started one with the package.
  if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    as_root systemctl disable --now prometheus >/dev/null 2>&1 || true
  fi
fi
echo "prometheus-tools: $(promtool --version 2>&1 | head -1)"
