"""The two distributions as a user installs them: built, checked, and installed fresh.

A camera device installs ``audience-edge[edge]`` (the agent and the MQTT contract) and
must not carry the hub; a hub installs ``audience-hub``, which takes the contract from
``audience-edge`` and must not carry the vision stack. Both are built with
``python -m build`` (sdist, then the wheel from it) and pass ``twine check --strict``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path

import pytest

from tests.paths import REPO, WALK_AND_PAUSE

HUB_PROJECT = REPO / "hub-package"
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]


def _run(
    *args: str | Path, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a command (from ``cwd``: outside the checkout, so its packages are not on the
    path), failing with its output."""
    result = subprocess.run(
        [str(a) for a in args],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
        cwd=cwd,
        check=False,
    )
    assert result.returncode == 0, f"{args}: {result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Both sdists and wheels, as ``python -m build`` makes them (wheel from the sdist)."""
    out = tmp_path_factory.mktemp("dist")
    for project in (REPO, HUB_PROJECT):
        _run(sys.executable, "-m", "build", "--outdir", out, project)
    return out


def _venv(path: Path) -> Path:
    _run(sys.executable, "-m", "venv", path)
    return path / "bin"


def test_both_distributions_build_and_pass_twine_check(dists: Path) -> None:
    names = sorted(p.name for p in dists.iterdir())
    assert names == [
        f"audience_edge-{VERSION}-py3-none-any.whl",
        f"audience_edge-{VERSION}.tar.gz",
        f"audience_hub-{VERSION}-py3-none-any.whl",
        f"audience_hub-{VERSION}.tar.gz",
    ]
    _run(sys.executable, "-m", "twine", "check", "--strict", *sorted(dists.iterdir()))


def test_each_wheel_carries_only_its_side(dists: Path) -> None:
    with zipfile.ZipFile(dists / f"audience_edge-{VERSION}-py3-none-any.whl") as edge:
        edge_files = edge.namelist()
    with zipfile.ZipFile(dists / f"audience_hub-{VERSION}-py3-none-any.whl") as hub:
        hub_files = hub.namelist()
        metadata = hub.read(f"audience_hub-{VERSION}.dist-info/METADATA").decode()
    assert "edge_agent/contract/__init__.py" in edge_files
    assert not [f for f in edge_files if f.startswith("cloud_hub/")]
    assert not [f for f in hub_files if f.startswith("edge_agent/")]
    # The hub's package data: migrations and the dashboard's files.
    assert "cloud_hub/storage/sql/001_person_events.sql" in hub_files
    assert "cloud_hub/api/static/index.html" in hub_files
    # The hub takes the contract from the agent's distribution of the same release.
    assert f"Requires-Dist: audience-edge=={VERSION}" in metadata
    assert "License-Expression: Apache-2.0" in metadata


def test_sdist_is_the_whole_source(dists: Path) -> None:
    """Every tracked test, doc and tool is in the sdist, so a release can be rebuilt."""
    tracked = subprocess.run(
        ["git", "ls-files", "tests", "docs", "bench", "cloud_hub", "edge_agent", "ansible"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    with tarfile.open(dists / f"audience_edge-{VERSION}.tar.gz") as sdist:
        inside = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    missing = [path for path in tracked if path not in inside]
    assert not missing, f"{len(missing)} tracked files missing from the sdist: {missing[:10]}"


def test_versions_agree() -> None:
    """One release number: both projects, both packages, the hub's pin on the agent."""
    import cloud_hub
    import edge_agent

    hub = tomllib.loads((HUB_PROJECT / "pyproject.toml").read_text())["project"]
    assert hub["version"] == VERSION == edge_agent.__version__ == cloud_hub.__version__
    assert f"audience-edge=={VERSION}" in hub["dependencies"]


def test_device_install_runs_the_agent_without_the_hub(dists: Path, tmp_path: Path) -> None:
    """A fresh venv with only the device extra analyses a clip; cloud_hub is not there."""
    bin_dir = _venv(tmp_path / "device")
    wheel = dists / f"audience_edge-{VERSION}-py3-none-any.whl"
    _run(bin_dir / "pip", "install", "--quiet", f"{wheel}[edge]")
    assert not (bin_dir / "cloud-hub").exists()
    absent = subprocess.run(
        [bin_dir / "python", "-c", "import cloud_hub"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    assert absent.returncode == 1
    assert "No module named 'cloud_hub'" in absent.stderr
    env = {**os.environ, "EDGE_AGENT_MODELS": str(REPO / "models" / "dist")}
    result = _run(
        bin_dir / "edge-agent",
        "analyze",
        WALK_AND_PAUSE,
        "--fps",
        "5",
        "--quiet",
        env=env,
        cwd=tmp_path,
    )
    people = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    assert people, result.stderr[-2000:]
    assert all(person["camera_id"] and person["event_id"] for person in people)


def test_hub_install_carries_no_vision_stack(dists: Path, tmp_path: Path) -> None:
    """A fresh venv with the hub: ``cloud-hub`` works, OpenCV and the model runtimes are absent."""
    bin_dir = _venv(tmp_path / "hub")
    _run(bin_dir / "pip", "install", "--quiet", "--find-links", dists, "audience-hub")
    _run(bin_dir / "cloud-hub", "--help", cwd=tmp_path)
    _run(bin_dir / "python", "-c", "import cloud_hub.api.app, edge_agent.contract", cwd=tmp_path)
    for module in ("cv2", "numpy", "onnxruntime", "ai_edge_litert"):
        absent = subprocess.run(
            [bin_dir / "python", "-c", f"import {module}"],
            capture_output=True,
            cwd=tmp_path,
            check=False,
        )
        assert absent.returncode == 1, f"{module} is installed with the hub"
