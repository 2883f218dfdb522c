#!/usr/bin/env bash
# A real TimescaleDB for the tests and benchmarks: TimescaleDB 2.28.3 built from the
# vendored source (../shared/vendor), installed into Debian's PostgreSQL 15, serving a
# second cluster "tsdb" on 127.0.0.1:5433 (trust auth, shared_preload_libraries =
# 'timescaledb', so its background job scheduler runs).
#
#   .ci/timescaledb.sh               build if needed, install, start the cluster; waits
#   .ci/timescaledb.sh --background  the same, detached (niced), so the build overlaps
#                                    the rest of CI; a later plain run (the tests'
#                                    fixture) waits for it on a lock
#
# The build (1.5 to 8 minutes on 2 cores) is cached per machine in
# ~/.cache/audience/timescaledb/<sha256 of tarball + patch>/, so a warm machine only
# installs it. .ci/timescaledb-job-portal.patch fixes the background jobs on PG 15.20.
# Progress and failures go to ~/.cache/audience/timescaledb/status and build.log.
set -Eeuo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARBALL=${TIMESCALEDB_TARBALL:-$ROOT/../shared/vendor/timescaledb-2.28.3.tar.gz}
PATCH=$ROOT/.ci/timescaledb-job-portal.patch
VERSION=2.28.3
PG=15
PORT=${TSDB_PORT:-5433}
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/audience/timescaledb
STATUS=$CACHE/status
LOG=$CACHE/build.log

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
answers() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
say() { echo "timescaledb: $*"; echo "$*" > "$STATUS"; }

mkdir -p "$CACHE"
# The build's identity: the source tarball and our patch (a change to either rebuilds).
key() { cat "$TARBALL" "$PATCH" | sha256sum | cut -d' ' -f1; }
MARKER=/usr/share/postgresql/$PG/extension/timescaledb.audience-build
installed() {
  [ -f "/usr/lib/postgresql/$PG/lib/timescaledb-$VERSION.so" ] &&
    [ "$(cat "$MARKER" 2>/dev/null)" = "$(key)" ]
}
cached() { [ -f "$TARBALL" ] && [ -f "$CACHE/$(key)/complete" ]; }

build_deps() {  # in the foreground: apt takes a lock other CI steps need too
  local need=()
  for pkg in "postgresql-server-dev-$PG" cmake gcc make patch libssl-dev libkrb5-dev; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
  done
  if [ ${#need[@]} -gt 0 ]; then
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${need[@]}" >/dev/null
  fi
}

if [ "${1:-}" = "--background" ]; then
  if answers "$PORT" && installed; then
    say "ready on 127.0.0.1:$PORT"
    exit 0
  fi
  installed || cached || build_deps
  say "starting (log: $LOG)"
  nohup nice -n 19 "$0" > "$LOG" 2>&1 < /dev/null &
  echo "timescaledb: building/starting in the background (log: $LOG)"
  exit 0
fi

trap 'say "failed (see $LOG)"' ERR
# One run at a time: a second (the tests' fixture, while the background one builds)
# waits here, then finds everything done.
exec 9>"$CACHE/lock"
flock 9

if ! installed; then
  [ -f "$TARBALL" ] || { say "failed: no source tarball at $TARBALL"; exit 1; }
  sha=$(key)
  stage=$CACHE/$sha
  if [ ! -f "$stage/complete" ]; then
    say "building $VERSION from $(basename "$TARBALL") + $(basename "$PATCH") (key ${sha:0:12})"
    build_deps
    work=$(mktemp -d)
    tar -xzf "$TARBALL" -C "$work"
    src=$(find "$work" -mindepth 1 -maxdepth 1 -type d | head -1)
    (
      cd "$src"
      patch -p1 --quiet < "$PATCH"
      ./bootstrap -DREGRESS_CHECKS=OFF -DTAP_CHECKS=OFF -DWARNINGS_AS_ERRORS=OFF \
        -DLINTER=OFF -DSEND_TELEMETRY_DEFAULT=OFF -DCMAKE_BUILD_TYPE=Release \
        -DPG_CONFIG="/usr/lib/postgresql/$PG/bin/pg_config" >/dev/null
      make -C build -j"$(nproc)" >/dev/null
      rm -rf "$stage"
      make -C build install DESTDIR="$stage" >/dev/null
    )
    rm -rf "$work"
    touch "$stage/complete"
  fi
  say "installing $VERSION from the cache"
  as_root cp -a "$stage/usr/." /usr/
  echo "$sha" | as_root tee "$MARKER" >/dev/null
  # A server that loaded the old library keeps it until it restarts.
  if answers "$PORT"; then
    as_root pg_ctlcluster "$PG" tsdb stop -m fast
    for _ in $(seq 1 100); do
      [ -e "/var/run/postgresql/.s.PGSQL.$PORT.lock" ] || break
      sleep 0.1
    done
  fi
fi

if ! pg_lsclusters -h | awk '{print $1"/"$2}' | grep -qx "$PG/tsdb"; then
  say "creating cluster $PG/tsdb on port $PORT"
  as_root pg_createcluster "$PG" tsdb -p "$PORT" -- --auth-host=trust --auth-local=trust \
    >/dev/null
  # Debian's postgresql.conf reads conf.d/ last.
  as_root tee "/etc/postgresql/$PG/tsdb/conf.d/timescaledb.conf" >/dev/null <<'CONF'
listen_addresses = '127.0.0.1'
shared_preload_libraries = 'timescaledb'
timescaledb.telemetry_level = 'off'
timescaledb.max_background_workers = 8
max_worker_processes = 16
max_connections = 200
CONF
fi
if ! answers "$PORT"; then
  as_root pg_ctlcluster "$PG" tsdb start
  for _ in $(seq 1 100); do answers "$PORT" && break; sleep 0.1; done
fi
version=$(psql -h 127.0.0.1 -p "$PORT" -U postgres -d postgres -Atc \
  "SELECT default_version FROM pg_available_extensions WHERE name = 'timescaledb'")
[ "$version" = "$VERSION" ] || { say "failed: extension version is '$version', not $VERSION"; exit 1; }
say "ready on 127.0.0.1:$PORT (TimescaleDB $version, PostgreSQL $PG)"
