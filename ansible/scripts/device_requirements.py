"""Requirements the devices' Python needs that a wheelhouse lacks.

``pip download`` evaluates environment markers on the controller's interpreter, even with
``--python-version``: a controller on Python 3.11.7 skips ``async-timeout; python_full_version
< "3.11.3"`` (redis), which Debian bookworm's 3.11.2 needs. This reads every wheel's
metadata, evaluates its markers for the devices' version, and prints what is missing.

    python device_requirements.py WHEELHOUSE DEVICE_PYTHON EXTRAS
"""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename


def missing(wheelhouse: Path, python: str, extras: list[str]) -> set[str]:
    """Requirement strings for the device that no wheel in ``wheelhouse`` provides."""
    env = {"python_full_version": python, "python_version": ".".join(python.split(".")[:2])}
    wheels = {parse_wheel_filename(w.name)[0]: w for w in wheelhouse.glob("*.whl")}
    needed: set[str] = set()
    for name, wheel in wheels.items():
        wanted = ["", *extras] if name == "audience-edge" else [""]
        with zipfile.ZipFile(wheel) as archive:
            meta = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
            lines = archive.read(meta).decode("utf-8").splitlines()
        for line in lines:
            if not line.startswith("Requires-Dist:"):
                continue
            req = Requirement(line.split(":", 1)[1].strip())
            applies = req.marker is None or any(
                req.marker.evaluate(env | {"extra": extra}) for extra in wanted
            )
            if applies and canonicalize_name(req.name) not in wheels:
                needed.add(f"{req.name}{req.specifier}")
    return needed


if __name__ == "__main__":
    print("\n".join(sorted(missing(Path(sys.argv[1]), sys.argv[2], sys.argv[3].split(",")))))
