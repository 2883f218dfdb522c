"""Return visits: the agent on a looped clip in which two real people step into view and
out again. Within the return window each second visit is recognised (counted once, the
event names the first); after the window it is a new visitor (counted twice). The two
people are never taken for each other, though the second arrives soon after the first
has left."""

from __future__ import annotations

import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
from numpy.typing import NDArray

from edge_agent.config import AgentConfig
from edge_agent.contract import PersonEvent
from edge_agent.runner import run_cameras
from edge_agent.tools.demo_clip import make_visit_clip, portrait
from tests.edge.conftest import read_rgb
from tests.paths import LFW

SECONDS = 6.0
VISITS = ((1.0, 2.6), (3.8, 5.4))  # each person's time in view; 1.2 s apart


def _second_person() -> NDArray[np.uint8]:
    """A real LFW photo, scaled to the astronaut portrait's height."""
    rgb = read_rgb(LFW / "AJ_Lamas_0001.jpg")
    return np.ascontiguousarray(cv2.resize(rgb, (224, 224), interpolation=cv2.INTER_AREA))


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("returns") / "two-visitors.mp4"
    visits = [(portrait(), *VISITS[0]), (_second_person(), *VISITS[1])]
    return make_visit_clip(path, visits, SECONDS)


def _two_passes(clip: Path, window_s: float) -> list[PersonEvent]:
    """Play the clip like a camera until four people have left (two passes)."""
    config = AgentConfig.model_validate(
        {
            "metrics": {"port": 0},
            "returns": {"window_s": window_s},
            "cameras": [{"id": "door", "source": str(clip), "loop": True, "realtime": True}],
        }
    )
    events: list[PersonEvent] = []
    stop = threading.Event()

    def publish(event: PersonEvent) -> None:
        events.append(event)
        if len(events) >= 4:
            stop.set()

    guard = threading.Timer(4 * SECONDS, stop.set)  # a hang fails below, not forever
    guard.start()
    try:
        run_cameras(config, publish, stop)
    finally:
        guard.cancel()
    for event in events:
        print(
            f"track {event.track_id}: {event.first_seen:%H:%M:%S.%f} - "
            f"{event.last_seen:%H:%M:%S.%f} return_of={event.return_of}"
        )
    return events


def test_a_person_back_within_the_window_is_counted_once(clip: Path) -> None:
    events = _two_passes(clip, window_s=60.0)
    assert len(events) == 4
    first_a, first_b, again_a, again_b = events
    assert first_a.return_of is None
    assert first_b.return_of is None, "the second person is not the first one coming back"
    assert again_a.return_of == first_a.event_id
    assert again_b.return_of == first_b.event_id
    assert sum(e.return_of is None for e in events) == 2  # unique visitors


def test_a_person_back_after_the_window_is_counted_twice(clip: Path) -> None:
    # Each person is away about 4.4 s between passes: longer than a 2 s window.
    events = _two_passes(clip, window_s=2.0)
    assert len(events) == 4
    assert all(e.return_of is None for e in events)
