"""Network sources: a clip served over HTTP is read through OpenCV like a camera stream."""

from __future__ import annotations

import functools
import http.server
import itertools
import threading
from collections.abc import Iterator

import pytest

from edge_agent.camera.sources import SourceError, open_capture, read_frames
from tests.conftest import free_port
from tests.paths import VIDEO, WALK_AND_PAUSE


@pytest.fixture
def clip_server() -> Iterator[str]:
    """Serve ../shared/data/video over HTTP on a free port; yields the base URL."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(VIDEO))
    handler.log_message = lambda *args, **kwargs: None  # type: ignore[method-assign]
    port = free_port()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}"
    server.shutdown()


def test_url_source_gives_the_same_frames_as_the_file(clip_server: str) -> None:
    url = f"{clip_server}/{WALK_AND_PAUSE.name}"
    from_url = list(read_frames("net", url))
    from_file = list(read_frames("file", str(WALK_AND_PAUSE)))
    assert len(from_url) == len(from_file) > 30
    assert from_url[10].rgb.shape == from_file[10].rgb.shape
    assert (from_url[10].rgb == from_file[10].rgb).all()


def test_url_that_does_not_answer_is_a_clear_error() -> None:
    with pytest.raises(SourceError, match="cannot open"):
        open_capture(f"http://127.0.0.1:{free_port()}/nothing.mp4")


def test_fps_limit_skips_frames() -> None:
    native = list(read_frames("file", str(WALK_AND_PAUSE)))
    limited = list(read_frames("file", str(WALK_AND_PAUSE), max_fps=4.0))
    assert len(limited) == pytest.approx(len(native) / 3, abs=2)  # the clip is 12 fps
    gaps = [b.t - a.t for a, b in itertools.pairwise(limited)]
    assert min(gaps) >= 0.25 - 1e-6
