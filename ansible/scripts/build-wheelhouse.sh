#!/usr/bin/env bash
# Build the wheelhouse the roles copy to devices (they install with
# `pip install --no-index --find-links`, never from an index): the project's wheel plus
# binary wheels of every dependency of the chosen extras, from the controller's pip
# cache or its index.
#
#   ansible/scripts/build-wheelhouse.sh [OUT] [pip download options]
#   OUT      default: dist/wheelhouse (what the roles' *_wheelhouse default to)
#   EXTRAS   edge (default; the agent) or hub, or edge,hub for both
#   PYTHON   the interpreter whose pip builds (default .venv/bin/python)
# Devices of another architecture or Python: pass pip download's target options, e.g.
#   ansible/scripts/build-wheelhouse.sh dist/wheelhouse-arm64 \
#     --platform manylinux2014_aarch64 --platform manylinux_2_28_aarch64 --python-version 3.11
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
out=${1:-$repo/dist/wheelhouse}
[ $# -gt 0 ] && shift
python=${PYTHON:-$repo/.venv/bin/python}
extras=${EXTRAS:-edge}
mkdir -p "$out"
"$python" -m pip wheel --quiet --no-deps --wheel-dir "$out" "$repo"
version=$("$python" -c 'import tomllib,sys; print(tomllib.load(open(sys.argv[1],"rb"))["project"]["version"])' "$repo/pyproject.toml")
wheel=$(ls "$out"/audience_edge-"$version"-*.whl)
"$python" -m pip download --quiet --only-binary=:all: --dest "$out" "$@" "$wheel[$extras]"
echo "wheelhouse: $out ($(ls "$out" | wc -l) wheels, audience-edge $version)"
