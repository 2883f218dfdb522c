"""The image recipe's inputs agree with each other, without building anything: scripts
pass shellcheck, the model bundle matches its manifest, and the paths the units, the
default configuration and build.sh name are the same ones."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from edge_agent.config import AgentConfig
from firmware_images import provision, stage_models
from tests.paths import REPO

RECIPE = REPO / "firmware_images"
ROOTFS = RECIPE / "rootfs"
BUILD = (RECIPE / "build.sh").read_text()
UNITS = ROOTFS / "etc" / "systemd" / "system"
SCRIPTS = [*sorted(RECIPE.glob("*.sh")), REPO / ".ci" / "image-tools.sh"]


def test_scripts_pass_shellcheck() -> None:
    assert shutil.which("shellcheck"), "shellcheck is missing: run .ci/image-tools.sh"
    result = subprocess.run(["shellcheck", *map(str, SCRIPTS)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_scripts_are_strict_and_executable() -> None:
    for script in SCRIPTS:
        assert "set -euo pipefail" in script.read_text(), script
        assert script.stat().st_mode & 0o111, f"{script} is not executable"


def test_model_bundle_matches_its_manifest(tmp_path: Path) -> None:
    dist = REPO / "models" / "dist"
    assert (dist / "manifest.json").exists(), "models/dist is not built: run make setup"
    staged = stage_models.stage(dist, tmp_path / "models")
    manifest = json.loads((dist / "manifest.json").read_text())
    for model in manifest["models"].values():
        assert model["file"]["name"] in staged
        assert (tmp_path / "models" / model["file"]["name"]).is_file()
    # A changed byte is caught before it reaches an image.
    bad = tmp_path / "bad"
    shutil.copytree(dist, bad)
    victim = bad / next(iter(manifest["models"].values()))["file"]["name"]
    victim.write_bytes(victim.read_bytes()[:-1] + b"\0")
    with pytest.raises(stage_models.BundleError, match="sha256"):
        stage_models.verify(bad)


def test_default_config_is_valid_and_its_demo_clip_is_installed() -> None:
    data = tomllib.loads((ROOTFS / "etc" / "edge-agent" / "agent.default.toml").read_text())
    config = AgentConfig.model_validate(data)
    assert config.cameras[0].source == "/var/lib/edge-agent/demo/demo-clip.mp4"
    assert '"$ROOT/var/lib/edge-agent/demo/demo-clip.mp4"' in BUILD
    # The agent finds its models where build.sh stages them (its default search path).
    assert config.models_dir is None
    assert '"$ROOT/var/lib/edge-agent/models"' in BUILD


def test_units_run_what_the_image_installs() -> None:
    installed = {"/usr/local/lib/edge-agent/provision.py", "/opt/edge-agent/venv/bin/python"}
    assert '"$ROOT/usr/local/lib/edge-agent/provision.py"' in BUILD
    assert "python3.11 -m venv /opt/edge-agent/venv" in (RECIPE / "customize-base.sh").read_text()
    for unit in ("edge-provision.service", "edge-agent.service"):
        text = (UNITS / unit).read_text()
        assert unit in BUILD  # enabled by build.sh
        for line in re.findall(r"^Exec\w+=(.*)$", text, re.M):
            program = line.split()[0]
            assert program in installed | {"/opt/edge-agent/venv/bin/edge-agent"}, line
            if "provision.py" in line:
                assert line.split()[-1] == "apply"
    agent = (UNITS / "edge-agent.service").read_text()
    assert "--config /etc/edge-agent/agent.toml" in agent
    assert "Requires=edge-provision.service" in agent
    assert "/boot/firmware" in (UNITS / "edge-provision.service").read_text()
    fstab = (ROOTFS / "etc" / "fstab").read_text()
    assert re.search(r"^LABEL=EDGEBOOT\s+/boot/firmware\s+vfat\s+umask=0077", fstab, re.M)
    assert "FAT_LABEL=EDGEBOOT" in BUILD


def test_example_provision_file_documents_every_key() -> None:
    text = (RECIPE / "provision.env.example").read_text()
    parsed = provision.parse(text)
    assert parsed.password == provision.PLACEHOLDER
    for key in provision.KEYS:
        assert key in text, f"{key} is not documented in provision.env.example"
    docs = (REPO / "docs" / "firmware.md").read_text()
    for key in [*provision.KEYS, "CAMERA_"]:
        assert key in docs, f"{key} is not documented in docs/firmware.md"


def test_package_list_is_bookworm_python() -> None:
    packages = (RECIPE / "packages.txt").read_text()
    assert "python3.11" in packages.split()
    assert "SUITE=bookworm" in BUILD
