#!/usr/bin/env bash
# Build the wheelhouse the roles copy to devices (they install with
# `pip install --no-index --find-links`, never from an index): the project's wheel plus
# binary wheels of every dependency of the chosen extras, from the controller's pip
# cache or its index.
#
#   ansible/scripts/build-wheelhouse.sh [OUT] [pip download options]
#   OUT      default: dist/wheelhouse (what the roles' *_wheelhouse default to)
#   EXTRAS   edge (default; the agent) or hub (audience-hub, from hub-package/), or
#            edge,hub for both
#   PYTHON   the interpreter whose pip builds (default .venv/bin/python)
#   DEVICE_PYTHON  the devices' Python version (default 3.11.2, Debian bookworm's): pip
#            evaluates markers on the controller's Python, so device_requirements.py adds
#            what the devices' version needs besides (e.g. async-timeout below 3.11.3)
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
# audience-edge is always there (the agent, and the contract the hub imports); the hub's
# own distribution, audience-hub (hub-package/), only when the hub is asked for.
"$python" -m pip wheel --quiet --no-deps --wheel-dir "$out" "$repo"
version=$("$python" -c 'import tomllib,sys; print(tomllib.load(open(sys.argv[1],"rb"))["project"]["version"])' "$repo/pyproject.toml")
wheel=$(ls "$out"/audience_edge-"$version"-*.whl)
wanted=("$wheel")
case ",$extras," in *,edge,*) wanted=("$wheel[edge]") ;; esac
case ",$extras," in
  *,hub,*)
    "$python" -m pip wheel --quiet --no-deps --wheel-dir "$out" "$repo/hub-package"
    wanted+=("$(ls "$out"/audience_hub-"$version"-*.whl)")
    ;;
esac
"$python" -m pip download --quiet --only-binary=:all: --dest "$out" --find-links "$out" "$@" "${wanted[@]}"
for _ in 1 2 3; do
  mapfile -t more < <("$python" "$(dirname "$0")/device_requirements.py" "$out" "${DEVICE_PYTHON:-3.11.2}" "$extras")
  [ ${#more[@]} -eq 0 ] && break
  "$python" -m pip download --quiet --only-binary=:all: --dest "$out" "$@" "${more[@]}"
done
echo "wheelhouse: $out ($(ls "$out" | wc -l) wheels, audience-edge $version)"
