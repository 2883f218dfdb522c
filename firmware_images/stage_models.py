"""Copy the agent's model bundle into the image, verified against its manifest.

Every model file and notice that ``models/dist/manifest.json`` lists must exist with its
sha256 (``python models/build.py`` made them); the manifest and NOTICE.md travel along so
the device's bundle can be checked again. Nothing unlisted is copied.

    python firmware_images/stage_models.py models/dist ROOT/var/lib/edge-agent/models
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

from edge_agent.vision.model_files import sha256_file


class BundleError(Exception):
    """A listed file is missing or differs from its manifest hash."""


def bundle_files(dist: Path) -> dict[str, str]:
    """Relative path -> sha256 for every file the manifest lists."""
    manifest: dict[str, Any] = json.loads((dist / "manifest.json").read_text())
    files = {m["file"]["name"]: m["file"]["sha256"] for m in manifest["models"].values()}
    for notice in manifest.get("notices", []):
        files[f"notices/{notice['name']}"] = notice["sha256"]
    return files


def verify(dist: Path) -> dict[str, str]:
    """Check every listed file's hash; raise BundleError naming the first bad one."""
    files = bundle_files(dist)
    for name, expected in files.items():
        path = dist / name
        if not path.is_file():
            raise BundleError(f"{path} is missing: run python models/build.py")
        if (actual := sha256_file(path)) != expected:
            raise BundleError(f"{path}: sha256 {actual} != manifest {expected}")
    return files


def stage(dist: Path, target: Path) -> list[str]:
    """Verify, then copy the listed files plus manifest.json and NOTICE.md."""
    names = [*verify(dist), "manifest.json", "NOTICE.md"]
    for name in names:
        if (dist / name).exists():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(dist / name, target / name)
    return names


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: stage_models.py DIST TARGET", file=sys.stderr)
        return 2
    try:
        names = stage(Path(argv[0]), Path(argv[1]))
    except BundleError as exc:
        print(f"image: error: {exc}", file=sys.stderr)
        return 1
    print(f"image: models: {len(names)} files verified and staged in {argv[1]}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
