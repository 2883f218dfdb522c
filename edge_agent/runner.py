"""``edge-agent run``: every configured camera in its own thread, one MQTT connection.

A camera thread owns its models (LiteRT interpreters are not shared between threads)
and its pipeline; a source that fails is reopened with backoff and never stalls the
others. File sources end; with ``loop = true`` they restart, like a camera would.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import structlog

from edge_agent.config import AgentConfig, CameraConfig
from edge_agent.contract import PersonEvent
from edge_agent.pipeline import CameraPipeline, load_models
from edge_agent.publisher import MqttPublisher
from edge_agent.sources import SourceError, is_live, read_frames

log = structlog.get_logger(__name__)

PublishFn = Callable[[PersonEvent], None]

MAX_BACKOFF_S = 30.0


def run_camera(
    config: AgentConfig,
    camera: CameraConfig,
    publish: PublishFn,
    stop: threading.Event,
) -> int:
    """Process one camera until its file ends or ``stop`` is set; returns events sent.

    A live source that fails to open or drops is reopened after a backoff that doubles
    up to ``MAX_BACKOFF_S`` and resets once frames flow again. A file that cannot be
    read is reported once and that camera stops (retrying would not heal it).
    """
    models = load_models(config)
    live = is_live(camera.source)
    sent = 0
    backoff = 1.0
    while not stop.is_set():
        pipeline = CameraPipeline(config.device_id, camera.id, config, models)
        frames = 0
        try:
            for frame in read_frames(camera.id, camera.source, camera.fps):
                frames += 1
                for event in pipeline.process(frame):
                    publish(event)
                    sent += 1
                if stop.is_set():
                    break
        except SourceError as error:
            log.error("camera_source_failed", camera=camera.id, error=str(error))
            if not live:
                break
        finally:
            # People still in view when the stream stops are counted, not dropped.
            for event in pipeline.finish():
                publish(event)
                sent += 1
        if stop.is_set() or (not live and not camera.loop):
            break
        if frames:
            backoff = 1.0
        if live or not frames:
            log.warning("camera_reconnecting", camera=camera.id, retry_s=backoff)
            stop.wait(backoff)
            backoff = min(MAX_BACKOFF_S, backoff * 2)
    log.info("camera_stopped", camera=camera.id, events=sent)
    return sent


def run_agent(config: AgentConfig, stop: threading.Event | None = None) -> int:
    """Run until every finite source has ended or ``stop`` is set; returns events sent."""
    stop = stop or threading.Event()
    if not config.cameras:
        raise ValueError("no cameras configured: add at least one [[cameras]] section")
    publisher = MqttPublisher(config.mqtt, client_id=f"edge-agent-{config.device_id}")
    publisher.start()
    totals: dict[str, int] = {}

    def worker(camera: CameraConfig) -> None:
        try:
            totals[camera.id] = run_camera(config, camera, publisher.publish, stop)
        except Exception:
            log.exception("camera_crashed", camera=camera.id)
            totals[camera.id] = 0

    threads = [
        threading.Thread(target=worker, args=(c,), name=f"camera-{c.id}", daemon=True)
        for c in config.cameras
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        while thread.is_alive():
            thread.join(timeout=0.5)
    left = publisher.close()
    sent = sum(totals.values())
    log.info("agent_stopped", events=sent, unacknowledged=left)
    return sent
