"""Prometheus metrics and the local ``/metrics`` + ``/healthz`` endpoint.

The service test runs ``edge-agent run`` on a looping clip plus a stream nobody serves,
against the real Mosquitto, and reads the endpoint the way a scraper and a supervisor
would."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from edge_agent.config import AgentConfig
from edge_agent.contract import CameraState, status_topic
from edge_agent.delivery.outbox import Outbox
from edge_agent.delivery.publisher import MqttPublisher
from edge_agent.device.health_server import HealthServer
from edge_agent.device.live_config import LiveSettings
from edge_agent.device.metrics import AgentMetrics
from edge_agent.device.status_board import StatusBoard
from edge_agent.device.telemetry import CameraMeter, Telemetry
from tests.conftest import MQTT_HOST, MQTT_PORT, http_get, wait_until
from tests.edge.broker_tools import clear_retained
from tests.edge.test_agent_service import start_agent, stop
from tests.paths import WALK_AND_PAUSE

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(text: str) -> Samples:
    """Every sample of a Prometheus text page, keyed by name and sorted labels."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def board_for(cameras: list[str]) -> StatusBoard:
    return StatusBoard("dev-obs", cameras, LiveSettings(AgentConfig()), lambda: 0)


def test_two_agents_in_one_process_keep_separate_registries() -> None:
    first, second = CameraMeter("a"), CameraMeter("a")
    one = AgentMetrics([first], Outbox(None))
    two = AgentMetrics([second], Outbox(None))
    first.processed, second.processed = 7, 2
    first.times.add("detect", 4.0)
    assert (
        value(scrape(one.render().decode()), "edge_agent_frames_processed_total", camera="a") == 7
    )
    assert (
        value(scrape(two.render().decode()), "edge_agent_frames_processed_total", camera="a") == 2
    )
    counts = scrape(one.render().decode())
    assert value(counts, "edge_agent_stage_latency_seconds_count", camera="a", stage="detect") == 1
    assert (
        "edge_agent_stage_latency_seconds_count",
        (("camera", "a"), ("stage", "detect")),
    ) not in (scrape(two.render().decode()))


def test_scrapes_and_health_messages_share_the_stage_samples() -> None:
    """A scrape drains the camera's samples into the histograms and keeps them for the
    next health message: neither consumer starves the other."""
    meter = CameraMeter("door")
    metrics = AgentMetrics([meter], Outbox(None))
    for ms in (3.0, 5.0):
        meter.times.add("detect", ms)
    metrics.render()
    meter.times.add("detect", 7.0)
    assert meter.take_times() == {"detect": [3.0, 5.0, 7.0]}
    assert meter.take_times() == {}
    samples = scrape(metrics.render().decode())
    assert (
        value(samples, "edge_agent_stage_latency_seconds_count", camera="door", stage="detect") == 3
    )
    total = value(samples, "edge_agent_stage_latency_seconds_sum", camera="door", stage="detect")
    assert total == pytest.approx(0.015)


def test_healthz_is_503_until_every_camera_that_should_run_is_live(tmp_path: Path) -> None:
    board = board_for(["door", "hall"])
    outbox = Outbox.in_dir(tmp_path, max_entries=10, max_bytes=1 << 20)
    metrics = AgentMetrics([CameraMeter("door"), CameraMeter("hall")], outbox, board=board)
    server = HealthServer(metrics, port=0)
    assert server.start()
    url = f"http://127.0.0.1:{server.port}"
    try:
        status, body = http_get(f"{url}/healthz")
        assert status == 503
        assert body["cameras"] == {"door": "connecting", "hall": "connecting"}
        board.set_camera("door", CameraState.LIVE)
        board.set_camera("hall", CameraState.ENDED)  # a plain file that ended is fine
        status, body = http_get(f"{url}/healthz")
        assert (status, body["status"], body["outbox_full"]) == (200, "ok", False)
        for n in range(10):
            outbox.append("t", b"x%d" % n)
        status, body = http_get(f"{url}/healthz")
        assert (status, body["outbox_full"], body["outbox_depth"]) == (503, True, 10)
        assert http_get(f"{url}/nope")[0] == 404
        status, text = http_get(f"{url}/metrics")
        assert status == 200
        samples = scrape(text)
        assert value(samples, "edge_agent_outbox_depth") == 10
        assert value(samples, "edge_agent_camera_state", camera="hall", state="ended") == 1
        assert value(samples, "edge_agent_mqtt_connected") == 0
    finally:
        server.close()
        outbox.close()


def test_a_taken_port_is_logged_not_fatal(tmp_path: Path) -> None:
    metrics = AgentMetrics([CameraMeter("door")], Outbox(None))
    first = HealthServer(metrics, port=0)
    assert first.start()
    try:
        assert first.port is not None
        assert not HealthServer(metrics, port=first.port).start()
    finally:
        first.close()


def test_telemetry_feeds_the_histograms_without_a_scrape() -> None:
    meter = CameraMeter("door")
    metrics = AgentMetrics([meter], Outbox(None))
    publisher = MqttPublisher(AgentConfig().mqtt, client_id=f"obs-{uuid.uuid4().hex[:6]}")
    telemetry = Telemetry(publisher, "dev-obs", [meter], Outbox(None), LiveSettings(AgentConfig()))
    meter.times.add("age", 12.0)
    assert telemetry.health().latency_ms["age"].p50 == 12.0
    # health() drained the sample: a scrape now finds it in the histogram, not anew.
    labels = {"camera": "door", "stage": "age"}
    total = metrics.registry.get_sample_value("edge_agent_stage_latency_seconds_sum", labels)
    assert total == pytest.approx(0.012)
    assert metrics.registry.get_sample_value("edge_agent_stage_latency_seconds_count", labels) == 1


@pytest.fixture
def device(topic_root: str) -> Iterator[str]:
    name = f"obs-{uuid.uuid4().hex[:6]}"
    yield name
    clear_retained([status_topic(topic_root, name)])


def test_service_endpoint_reports_a_live_clip_and_a_dead_stream(
    topic_root: str, device: str, tmp_path: Path, free_port: Callable[[], int]
) -> None:
    metrics_port, dead_port = free_port(), free_port()
    config = tmp_path / "agent.toml"
    config.write_text(
        f"""device_id = "{device}"
state_dir = {json.dumps(str(tmp_path / "state"))}

[mqtt]
host = "{MQTT_HOST}"
port = {MQTT_PORT}
topic_root = "{topic_root}"

[metrics]
port = {metrics_port}

[[cameras]]
id = "door"
source = {json.dumps(str(WALK_AND_PAUSE))}
loop = true

[[cameras]]
id = "dead"
source = "http://127.0.0.1:{dead_port}/x.mp4"
"""
    )
    agent = start_agent(config, tmp_path / "agent.log")
    url = f"http://127.0.0.1:{metrics_port}"

    def get(path: str) -> tuple[int, object] | None:
        try:
            return http_get(f"{url}{path}")
        except OSError:  # not listening yet
            return None

    def metrics() -> Samples:
        reply = get("/metrics")
        return {} if reply is None else scrape(str(reply[1]))

    try:

        def door_live_dead_down() -> tuple[int, object] | None:
            reply = get("/healthz")
            if reply is None or not isinstance(reply[1], dict):
                return None
            cameras = reply[1]["cameras"]
            return reply if cameras == {"door": "live", "dead": "down"} else None

        status, body = wait_until(door_live_dead_down, 120, "door live and dead down")
        assert status == 503
        assert isinstance(body, dict) and body["mqtt_connected"] is True
        assert body["outbox_full"] is False

        first = value(metrics(), "edge_agent_frames_processed_total", camera="door")
        wait_until(
            lambda: value(metrics(), "edge_agent_frames_processed_total", camera="door") > first,
            30,
            "frames processed rising",
        )
        later = wait_until(
            lambda: (
                s if value(s := metrics(), "edge_agent_events_total", camera="door") > 0 else None
            ),
            180,
            "events after the first pass",
        )
        detect = value(
            later, "edge_agent_stage_latency_seconds_count", camera="door", stage="detect"
        )
        assert detect > 0
        assert (
            value(later, "edge_agent_stage_latency_seconds_count", camera="door", stage="decode")
            > 0
        )
        assert value(later, "edge_agent_frames_processed_total", camera="dead") == 0
        assert value(later, "edge_agent_camera_state", camera="dead", state="down") == 1
        assert value(later, "edge_agent_mqtt_connected") == 1
        print(
            "frames",
            value(later, "edge_agent_frames_processed_total", camera="door"),
            "events",
            value(later, "edge_agent_events_total", camera="door"),
            "detect count",
            detect,
            "detect sum s",
            value(later, "edge_agent_stage_latency_seconds_sum", camera="door", stage="detect"),
        )
    finally:
        assert stop(agent) == 0
    log = (tmp_path / "agent.log").read_text()
    assert "metrics_server_listening" in log, log[-3000:]


def test_metrics_name_the_release() -> None:
    """``edge_agent_build_info``: a fleet dashboard tells the agents' releases apart."""
    import platform

    from edge_agent import __version__

    samples = scrape(AgentMetrics([CameraMeter("door")], Outbox(None)).render().decode())
    labels = {"version": __version__, "python": platform.python_version()}
    assert value(samples, "edge_agent_build_info", **labels) == 1.0
