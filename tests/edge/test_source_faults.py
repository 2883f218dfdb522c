"""File cameras that are not there yet or are broken (issue 12): a file that appears later
is picked up by the retry with backoff; a truncated or undecodable file is reported
``down`` with its reason and counted in ``edge_agent_source_errors_total``, never shown
``live`` with nothing coming out of it."""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from edge_agent.config import AgentConfig
from edge_agent.contract import CameraState, PersonEvent
from edge_agent.delivery.outbox import Outbox
from edge_agent.device.live_config import LiveSettings
from edge_agent.device.metrics import AgentMetrics
from edge_agent.device.status_board import StatusBoard
from edge_agent.device.telemetry import CameraMeter
from edge_agent.runner import run_cameras
from tests.conftest import wait_until
from tests.paths import WALK_AND_PAUSE

CLIP_PEOPLE = 3  # people in the walk-and-pause clip (tests/edge/test_cli.py)


def truncated_copy(path: Path, share: float = 0.3) -> Path:
    """The first ``share`` of the real clip's bytes: its header is intact (the clip keeps
    its index at the front), its frames stop early."""
    data = WALK_AND_PAUSE.read_bytes()
    path.write_bytes(data[: int(len(data) * share)])
    return path


def header_only_copy(path: Path) -> Path:
    """The clip's boxes up to its index and a few bytes of frame data: it opens, and no
    frame decodes."""
    data = WALK_AND_PAUSE.read_bytes()
    path.write_bytes(data[: data.index(b"mdat") + 64])
    return path


class Agent:
    """``run_cameras`` in a thread, with the board, meters and metrics a service has."""

    def __init__(self, cameras: list[dict[str, object]]) -> None:
        self.config = AgentConfig.model_validate({"metrics": {"port": 0}, "cameras": cameras})
        ids = [c.id for c in self.config.cameras]
        self.board = StatusBoard(self.config.device_id, ids, LiveSettings(self.config), lambda: 0)
        self.meters = [CameraMeter(i) for i in ids]
        self.metrics = AgentMetrics(self.meters, Outbox(None), None, self.board)
        self.events: list[PersonEvent] = []
        self.stop = threading.Event()
        self.states: dict[str, list[CameraState]] = {i: [] for i in ids}
        self._watching = threading.Event()
        self._watch = threading.Thread(target=self._record_states, daemon=True)
        self.thread = threading.Thread(
            target=run_cameras,
            args=(self.config, self.events.append, self.stop),
            kwargs={"meters": self.meters, "board": self.board},
            daemon=True,
        )
        self._watch.start()
        self.thread.start()

    def _record_states(self) -> None:
        """Every state each camera passes through (polled: enough to see ``live``)."""
        while not self._watching.wait(0.02):
            for camera, seen in self.states.items():
                state = self.board.camera_state(camera)
                if not seen or seen[-1] is not state:
                    seen.append(state)

    def state(self, camera: str) -> CameraState:
        return self.board.camera_state(camera)

    def errors(self, camera: str, reason: str) -> float:
        """``edge_agent_source_errors_total{camera, reason}`` as a scrape reads it."""
        for family in text_string_to_metric_families(self.metrics.render().decode()):
            for sample in family.samples:
                if sample.name == "edge_agent_source_errors_total" and sample.labels == {
                    "camera": camera,
                    "reason": reason,
                }:
                    return float(sample.value)
        return 0.0

    def close(self) -> None:
        self.stop.set()
        self.thread.join(60)
        self._watching.set()
        self._watch.join(5)
        assert not self.thread.is_alive(), "the agent did not stop"


def test_a_file_that_appears_later_is_retried_and_goes_live(tmp_path: Path) -> None:
    later = tmp_path / "later.mp4"
    agent = Agent([{"id": "door", "source": str(later)}])
    try:
        wait_until(lambda: agent.errors("door", "missing") >= 2, 60, "the missing file retried")
        assert agent.state("door") in (CameraState.DOWN, CameraState.CONNECTING)
        assert "missing" in agent.board.camera_errors()["door"]
        assert agent.events == []
        # The file arrives the way a file should: written aside, renamed into place.
        time.sleep(2.0)
        partial = tmp_path / ".later.mp4.part"
        shutil.copyfile(WALK_AND_PAUSE, partial)
        os.replace(partial, later)
        appeared = time.monotonic()
        wait_until(lambda: len(agent.events) >= CLIP_PEOPLE, 90, "the clip's people")
        took = time.monotonic() - appeared
        agent.thread.join(60)
        assert not agent.thread.is_alive(), "a plain file that ended stops its camera"
    finally:
        agent.close()
    print(f"\nfile picked up and counted {took:.1f} s after it appeared")
    assert CameraState.LIVE in agent.states["door"], agent.states["door"]
    assert agent.state("door") is CameraState.ENDED
    assert len(agent.events) == CLIP_PEOPLE
    assert {e.camera_id for e in agent.events} == {"door"}
    assert "door" not in agent.board.camera_errors(), "the error is cleared once it works"
    assert took < 40.0, "picked up within the longest backoff (30 s) plus the clip"


def test_broken_files_are_down_with_a_reason_and_counted(tmp_path: Path) -> None:
    (tmp_path / "junk.mp4").write_bytes(os.urandom(64 * 1024))  # not a video at all
    agent = Agent(
        [
            {"id": "cut", "source": str(truncated_copy(tmp_path / "cut.mp4"))},
            {"id": "empty", "source": str(header_only_copy(tmp_path / "empty.mp4"))},
            {"id": "junk", "source": str(tmp_path / "junk.mp4")},
        ]
    )
    try:
        wait_until(
            lambda: (
                agent.errors("empty", "no_frames") >= 2
                and agent.errors("junk", "unopenable") >= 2
                and agent.errors("cut", "truncated") >= 1
            ),
            90,
            "every broken file reported (the undecodable ones twice: they are retried)",
        )
        errors = agent.metrics.healthz()[1]["camera_errors"]
        healthy = agent.metrics.healthz()[0]
        status = agent.board.status(True)  # what the retained status would say
        time.sleep(1.0)
    finally:
        agent.close()
    for camera in ("cut", "empty", "junk"):
        assert agent.state(camera) in (CameraState.DOWN, CameraState.CONNECTING), camera
        assert CameraState.ENDED not in agent.states[camera], (camera, agent.states[camera])
    # The truncated file decoded a few frames (live for a moment), then broke: down, and
    # not read again (that would count its first people twice).
    assert agent.state("cut") is CameraState.DOWN
    assert agent.errors("cut", "truncated") == 1
    assert "truncated" in errors["cut"] and "stops at frame" in errors["cut"]
    # The others never decoded a frame, so they were never live.
    assert CameraState.LIVE not in agent.states["empty"]
    assert CameraState.LIVE not in agent.states["junk"]
    assert "no_frames" in errors["empty"] and "unopenable" in errors["junk"]
    assert not healthy
    # The status carries each broken camera's reason code (no paths, no decoder text).
    assert {c.camera_id: c.error for c in status.cameras} == {
        "cut": "truncated",
        "empty": "no_frames",
        "junk": "unopenable",
    }
    assert agent.meters[0].processed > 0 and agent.meters[1].processed == 0
    assert agent.meters[2].processed == 0
