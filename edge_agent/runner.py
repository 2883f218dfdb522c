"""``edge-agent run``: every configured camera through one scheduler, one MQTT connection.

Each camera has a reader thread that owns its source: a source that fails is reopened
with backoff and never stalls the others. Frames go to the shared detection and
estimation workers (edge_agent/scheduler.py), which load the models once for all
cameras. File sources end; with ``loop = true`` they restart, like a camera would.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Sequence

import structlog

from edge_agent.camera.sources import SourceError, is_live, read_frames
from edge_agent.config import AgentConfig, CameraConfig
from edge_agent.contract import (
    CameraState,
    config_topic,
    parse_desired_config,
    status_topic,
)
from edge_agent.delivery.clock import SYSTEM_CLOCK, AgentClock, ClockGate, PublishFn
from edge_agent.delivery.outbox import Outbox, default_state_dir
from edge_agent.delivery.publisher import MqttPublisher
from edge_agent.device.health_server import HealthServer
from edge_agent.device.home_assistant import DailyCounts, HomeAssistantLink
from edge_agent.device.live_config import LiveSettings, describe_error
from edge_agent.device.metrics import AgentMetrics
from edge_agent.device.status_board import StatusBoard
from edge_agent.device.telemetry import CameraMeter, Telemetry
from edge_agent.pipeline import CameraPipeline, load_models
from edge_agent.scheduler import Lane, Scheduler
from edge_agent.tracking.returning_visitors import Embedder, ReturnMatcher
from edge_agent.vision.model_files import ModelFiles

log = structlog.get_logger(__name__)

MAX_BACKOFF_S = 30.0


def read_camera(
    camera: CameraConfig,
    scheduler: Scheduler,
    lane: Lane,
    stop: threading.Event,
    board: StatusBoard | None = None,
    clock: AgentClock = SYSTEM_CLOCK,
) -> None:
    """Feed one camera's frames to the scheduler until its file ends or ``stop`` is set.

    A source that fails (a stream that drops or does not answer, a file that is not there
    yet or cannot be opened or decoded) is reported ``down`` with its reason, counted in
    ``CameraMeter.source_errors``, and reopened after a backoff that doubles up to
    ``MAX_BACKOFF_S`` and resets once frames flow again. One exception: a file that broke
    after some of its frames were counted (truncated) is not read again unless it loops,
    since that would count its people twice; it stays ``down``. A file that simply ended
    is ``ended``. Live and paced sources never wait for the detectors: a frame they are
    not ready for is dropped.
    """

    def state(value: CameraState, error: str | None = None) -> None:
        if board is not None:
            board.set_camera(camera.id, value, error)

    is_stream = is_live(camera.source)
    paced = is_stream or camera.realtime
    backoff = 1.0
    while not stop.is_set():
        frames = 0
        failure: SourceError | None = None
        try:
            for frame in read_frames(
                camera.id,
                camera.source,
                camera.fps,
                lane.meter.times,
                realtime=camera.realtime,
                skip=(lambda: scheduler.slot_full(lane)) if paced else None,
                clock=clock,
            ):
                if not frames:
                    state(CameraState.LIVE)
                frames += 1
                scheduler.submit(lane, frame, wait=not paced)
                if stop.is_set():
                    break
        except SourceError as error:
            failure = error
        finally:
            # People still in view when the stream stops are counted, not dropped.
            scheduler.end_stream(lane)
        if stop.is_set():
            break
        if failure is None and not is_stream:
            if not camera.loop:
                state(CameraState.ENDED)
                break
            if frames:
                backoff = 1.0
                continue  # a looping file starts again at once
        reason = "disconnected" if failure is None else failure.reason
        lane.meter.source_errors[reason] += 1
        if failure is not None:
            log.error(
                "camera_source_failed",
                camera=camera.id,
                reason=reason,
                error=str(failure),
                frames=frames,
            )
        state(CameraState.DOWN, f"{reason}: {failure}" if failure else reason)
        if failure is not None and frames and not is_stream and not camera.loop:
            log.error("camera_file_broken", camera=camera.id, frames=frames, retry=False)
            break
        if frames and failure is None:
            backoff = 1.0
        log.warning("camera_reconnecting", camera=camera.id, retry_s=backoff, reason=reason)
        if stop.wait(backoff):
            break
        backoff = min(MAX_BACKOFF_S, backoff * 2)
        state(CameraState.CONNECTING)
    log.info("camera_stopped", camera=camera.id, events=lane.meter.events)


def run_cameras(
    config: AgentConfig,
    publish: PublishFn,
    stop: threading.Event,
    *,
    live: LiveSettings | None = None,
    meters: Sequence[CameraMeter] | None = None,
    board: StatusBoard | None = None,
    clock: AgentClock = SYSTEM_CLOCK,
    gate: ClockGate | None = None,
) -> Scheduler:
    """Run every configured camera through one scheduler until all finite sources have
    ended or ``stop`` is set; returns the (stopped) scheduler and its figures.

    Events go to ``publish`` through ``gate`` (default: a new one on ``clock``), which
    holds those stamped before the clock was set (edge_agent/delivery/clock.py)."""
    live = live or LiveSettings(config)
    meters = meters or [CameraMeter(c.id) for c in config.cameras]
    models = load_models(config)
    models = dataclasses.replace(models, embedder=_load_embedder(config, models.files))
    if board is not None:
        board.set_models(models.versions)
    returns = ReturnMatcher(config.returns) if config.returns.enabled else None
    scheduler = Scheduler(config, models, publish, live, clock, gate)
    for camera, meter in zip(config.cameras, meters, strict=True):
        pipeline = CameraPipeline(
            config.device_id, camera.id, config, models, meter.times, returns=returns, clock=clock
        )
        scheduler.add_camera(pipeline, meter)
    scheduler.start()

    def reader(camera: CameraConfig) -> None:
        lane = scheduler.lanes[camera.id]
        try:
            read_camera(camera, scheduler, lane, stop, board, clock)
        except Exception:
            log.exception("camera_crashed", camera=camera.id)
            if board is not None:
                board.set_camera(camera.id, CameraState.DOWN)

    threads = [
        threading.Thread(target=reader, args=(c,), name=f"camera-{c.id}", daemon=True)
        for c in config.cameras
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        while thread.is_alive():
            thread.join(timeout=0.5)
    scheduler.close()
    return scheduler


def run_agent(
    config: AgentConfig, stop: threading.Event | None = None, clock: AgentClock = SYSTEM_CLOCK
) -> int:
    """Run until every finite source has ended or ``stop`` is set; returns events sent.

    Events go through the clock gate (held until ``clock`` is set) into the outbox under
    ``state_dir``; whatever the broker has not acknowledged when the agent stops (or
    dies) is sent on the next start, except entries stamped before a clock was set,
    which no hub accepts and nothing can fix any more: those are discarded, counted.
    """
    stop = stop or threading.Event()
    if not config.cameras:
        raise ValueError("no cameras configured: add at least one [[cameras]] section")
    device, root = config.device_id, config.mqtt.topic_root
    state_dir = config.state_dir or default_state_dir()
    limits = config.outbox
    outbox = Outbox.in_dir(state_dir, limits.max_entries, int(limits.max_mb * 1024 * 1024))
    for entry in outbox.discard_where(lambda e: clock.payload_stamped_before_set(e.payload)):
        log.error("outbox_entry_discarded_clock_unset", id=entry.id, topic=entry.topic)
    if outbox.depth():
        log.info("outbox_replay", entries=outbox.depth(), path=str(outbox.path))
    publisher = MqttPublisher(
        config.mqtt, client_id=f"edge-agent-{device}", outbox=outbox, inflight=limits.inflight
    )
    live = LiveSettings(config)
    board = StatusBoard(
        device,
        [c.id for c in config.cameras],
        live,
        lambda: outbox.dropped,
        publisher.status_changed,
    )
    publisher.set_status(
        status_topic(root, device), board.build, board.last_will(device), ready=clock.is_set
    )
    desired_topic = config_topic(root, device)

    def on_config(payload: bytes) -> None:
        try:
            live.update(parse_desired_config(desired_topic, payload, root))
            log.info("config_applied", version=live.applied)
        except ValueError as error:  # pydantic's ValidationError is one
            live.refuse(describe_error(error))
            log.warning("config_refused", error=live.error)
        publisher.status_changed()

    publisher.subscribe_config(desired_topic, on_config)
    counts = DailyCounts([c.id for c in config.cameras], clock)
    link: HomeAssistantLink | None = None
    if HomeAssistantLink.wanted(config, state_dir):  # [home_assistant]: plain topics, discovery
        link = HomeAssistantLink(config, publisher, counts, state_dir, clock)
        link.attach()
    publisher.start()
    meters = [CameraMeter(c.id) for c in config.cameras]
    telemetry = Telemetry(publisher, device, meters, outbox, live, clock)
    telemetry_stop = threading.Event()
    reporter = threading.Thread(
        target=telemetry.run, args=(telemetry_stop,), name="telemetry", daemon=True
    )
    reporter.start()
    gate = ClockGate(counts.counting(publisher.publish), clock)
    server: HealthServer | None = None
    if config.metrics.port:
        metrics = AgentMetrics(meters, outbox, publisher, board, gate)
        server = HealthServer(metrics, config.metrics.bind, config.metrics.port)
        server.start()
    run_cameras(
        config,
        publisher.publish,
        stop,
        live=live,
        meters=meters,
        board=board,
        clock=clock,
        gate=gate,
    )
    sent = sum(meter.events for meter in meters)
    telemetry_stop.set()
    reporter.join(timeout=5)
    if server is not None:
        server.close()
    if link is not None:
        link.close()
    left = publisher.close()
    log.info("agent_stopped", events=sent, unacknowledged=left)
    return sent


def _load_embedder(config: AgentConfig, files: ModelFiles) -> Embedder | None:
    """The face-embedding network when returns are on, else ``None`` (nothing loaded)."""
    if not config.returns.enabled:
        return None
    from edge_agent.vision.embedding import FaceEmbedder  # onnxruntime: loaded only when used

    return FaceEmbedder.from_model_files(files, config.returns.model, config.detector.threads)
