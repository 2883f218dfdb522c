#!/usr/bin/env bash
# Make sure PostgreSQL (5432, trust auth for local TCP), Redis (6379) and Mosquitto (1883)
# answer on 127.0.0.1. Uses what is running; starts what is installed; installs from
# Debian's packages what is missing. Idempotent: a second run changes nothing.
set -euo pipefail

answers() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
apt_install() {
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@" >/dev/null
}
wait_for() {  # port, name
  for _ in $(seq 1 50); do answers "$1" && return 0; sleep 0.2; done
  echo "services: $2 does not answer on 127.0.0.1:$1" >&2; return 1
}

if ! answers 5432; then
  command -v pg_ctlcluster >/dev/null || apt_install postgresql
  version=$(ls /etc/postgresql | sort -V | tail -1)
  hba=/etc/postgresql/$version/main/pg_hba.conf
  # Tests connect as postgres over TCP without a password, as on the development machines.
  if ! grep -q "^host all all 127.0.0.1/32 trust" "$hba"; then
    as_root sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
  fi
  as_root pg_ctlcluster "$version" main start || as_root pg_ctlcluster "$version" main restart
  wait_for 5432 PostgreSQL
fi
if ! answers 6379; then
  command -v redis-server >/dev/null || apt_install redis-server
  as_root redis-server --bind 127.0.0.1 --port 6379 --save "" --daemonize yes >/dev/null
  wait_for 6379 Redis
fi
if ! answers 1883; then
  command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || apt_install mosquitto
  printf 'listener 1883 127.0.0.1\nallow_anonymous true\n' > /tmp/ci-mosquitto.conf
  as_root "$(command -v mosquitto || echo /usr/sbin/mosquitto)" -d -c /tmp/ci-mosquitto.conf
  wait_for 1883 Mosquitto
fi
echo "services: PostgreSQL, Redis and Mosquitto answer on 127.0.0.1"
# TimescaleDB 2.28.3 on 127.0.0.1:5433 for the storage tests: built from the vendored
# source once per machine (cached), in the background; the tests wait for it.
"$(dirname "$0")/timescaledb.sh" --background
# The dashboard's browser test (tests/hub/test_dashboard.py) drives Debian's Chromium
# headless through Playwright (no browser download).
command -v chromium >/dev/null || apt_install chromium
echo "services: $(chromium --version 2>/dev/null || echo 'chromium missing')"
# Debian tools the fleet tests need (debootstrap targets, sshd, qemu ...): each area keeps
# its own list in .ci/<area>-tools.sh, idempotent like this file.
for tools in "$(dirname "$0")"/*-tools.sh; do
  [ -e "$tools" ] && bash "$tools"
done
