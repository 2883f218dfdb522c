"""Many cameras on a few cores: frames are dropped rather than queued, and the per-person
work is batched across cameras.

Each camera's reader hands its newest frame to a one-frame slot. A live (or paced) camera
replaces a frame no detector has taken yet, so a device that falls behind processes fewer
frames per second instead of queueing them: memory stays flat under any load. Detection
workers (each with its own interpreter) take the cameras whose slot is full in turn; a
camera is on at most one worker at a time, so its tracker sees its frames in order.

Tracks that end go to one bounded queue. The estimation worker takes whatever is queued,
from every camera, and runs landmarks, chips, both networks and the embeddings as one
batch, then publishes the events through the clock gate (edge_agent/delivery/clock.py: nothing
leaves stamped before the device's clock was set). When it falls behind, the queue fills,
detection waits, and the cameras drop frames: overload lowers the frame rate, never loses
a person.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass, field
from typing import Final

import structlog

from edge_agent.camera.sources import Frame
from edge_agent.config import AgentConfig
from edge_agent.delivery.clock import SYSTEM_CLOCK, AgentClock, ClockGate, PublishFn
from edge_agent.device.live_config import LiveSettings
from edge_agent.device.telemetry import CameraMeter
from edge_agent.pipeline import (
    CameraPipeline,
    EndedTracks,
    Models,
    estimate_outgoing,
    make_detector,
    make_person_detector,
)
from edge_agent.timing import StageTimes

log = structlog.get_logger(__name__)


class _EndOfStream:
    """Put in a slot when a source stops: flush that camera's tracks."""


END_OF_STREAM: Final = _EndOfStream()


@dataclass(eq=False)
class Lane:
    """One camera in the scheduler: its slot, pipeline and counters."""

    camera_id: str
    pipeline: CameraPipeline
    meter: CameraMeter
    item: Frame | _EndOfStream | None = None
    scheduled: bool = False  # in the ready queue or on a worker
    applied: int = 0  # live settings version in the pipeline (0: the config file)
    cond: threading.Condition = field(default_factory=threading.Condition)

    def busy(self) -> bool:
        """Something for this camera is waiting or being detected."""
        with self.cond:
            return self.scheduled or self.item is not None


class Scheduler:
    """Detection workers and one estimation worker shared by every camera."""

    def __init__(
        self,
        config: AgentConfig,
        models: Models,
        publish: PublishFn,
        live: LiveSettings | None = None,
        clock: AgentClock = SYSTEM_CLOCK,
        gate: ClockGate | None = None,
    ) -> None:
        self.config = config
        self.models = models
        self.publish = publish
        self.live = live
        # Every event leaves through the gate (given: the agent's, which its metrics read).
        self.gate = gate or ClockGate(publish, clock)
        self.lanes: dict[str, Lane] = {}
        self.estimate_failures = 0  # batches whose estimation raised (logged)
        # Per-person stages, device-wide: total milliseconds and batches per stage (totals,
        # not samples, so a long-running agent keeps constant memory).
        self.estimate_ms: dict[str, float] = {}
        self.estimate_batches: dict[str, int] = {}
        self.estimated_crops = 0
        self._ready: queue.Queue[Lane | None] = queue.Queue()  # each lane at most once
        self._pending: queue.Queue[EndedTracks | None] = queue.Queue(
            maxsize=config.scheduler.pending_tracks
        )
        self._threads: list[threading.Thread] = []
        self._gate_stop = threading.Event()

    def add_camera(self, pipeline: CameraPipeline, meter: CameraMeter) -> Lane:
        """Register a camera before ``start``."""
        lane = Lane(pipeline.camera_id, pipeline, meter)
        meter.attach(pipeline)
        self.lanes[lane.camera_id] = lane
        return lane

    def start(self) -> None:
        """Start the detection workers and the estimation worker."""
        workers = self.config.scheduler.workers()
        for number in range(workers):
            # The first worker uses the detector loaded with the models; LiteRT interpreters
            # are not shared, so every other worker makes its own.
            thread = threading.Thread(
                target=self._detect_loop, args=(number == 0,), name=f"detect-{number}", daemon=True
            )
            self._threads.append(thread)
        self._threads.append(
            threading.Thread(target=self._estimate_loop, name="estimate", daemon=True)
        )
        self._threads.append(
            threading.Thread(
                target=self.gate.run, args=(self._gate_stop,), name="clock-gate", daemon=True
            )
        )
        for thread in self._threads:
            thread.start()

    # Reader side -----------------------------------------------------------------------

    def slot_full(self, lane: Lane) -> bool:
        """A frame is still waiting for a detector: a paced reader can skip decoding."""
        return isinstance(lane.item, Frame)

    def submit(self, lane: Lane, frame: Frame, *, wait: bool) -> None:
        """Give a camera's newest frame to the detectors. ``wait`` (files read as fast as
        they are processed) blocks until the slot is free; otherwise a frame still
        waiting is replaced (dropped: ``Frame.index`` then skips, which the meter counts)."""
        with lane.cond:
            while lane.item is END_OF_STREAM or (wait and lane.item is not None):
                lane.cond.wait()
            lane.item = frame
            self._schedule(lane)

    def end_stream(self, lane: Lane) -> None:
        """The camera's source stopped: flush its tracks once its last frame is done."""
        with lane.cond:
            while lane.item is not None:
                lane.cond.wait()
            lane.item = END_OF_STREAM
            self._schedule(lane)

    def _schedule(self, lane: Lane) -> None:
        if not lane.scheduled:
            lane.scheduled = True
            self._ready.put(lane)

    # Workers ---------------------------------------------------------------------------

    def _detect_loop(self, use_loaded: bool) -> None:
        files = self.models.files
        own = self.models.detector if use_loaded else make_detector(self.config, files)
        own_people = (
            self.models.person_detector if use_loaded else make_person_detector(self.config, files)
        )
        while (lane := self._ready.get()) is not None:
            with lane.cond:
                item, lane.item = lane.item, None
                lane.cond.notify_all()
            try:
                if isinstance(item, Frame):
                    self._take_settings(lane)
                    ended = lane.pipeline.track(item, own, own_people)
                    lane.meter.frame(item.index)
                else:
                    ended = lane.pipeline.end_stream()
                    lane.meter.restart()  # here, in frame order: the reopened source counts from 0
                if ended.tracks:
                    self._pending.put(ended)  # blocks when estimation is behind
            except Exception:
                log.exception("detection_failed", camera=lane.camera_id)
            with lane.cond:
                if lane.item is not None:
                    self._ready.put(lane)
                else:
                    lane.scheduled = False
                    lane.cond.notify_all()

    def _take_settings(self, lane: Lane) -> None:
        if self.live is None or self.live.version == lane.applied:
            return
        lane.applied = self.live.apply_to(lane.pipeline)
        log.info(
            "camera_settings_applied",
            camera=lane.camera_id,
            config_version=self.live.applied,
            min_hits=lane.pipeline.tracker.faces.config.min_hits,
            score_threshold=lane.pipeline.score_threshold,
        )

    def _estimate_loop(self) -> None:
        limit = self.config.scheduler.estimate_batch
        done = False
        while not done:
            first = self._pending.get()
            if first is None:
                break
            batch, crops = [first], first.crops
            while crops < limit:
                try:
                    more = self._pending.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    done = True
                    break
                batch.append(more)
                crops += more.crops
            self._estimate(batch)

    def _estimate(self, batch: list[EndedTracks]) -> None:
        times = StageTimes()
        estimator = self.models.estimator
        estimator.times = times
        try:
            outgoing = estimate_outgoing(batch, self.models, times)
        except Exception:
            self.estimate_failures += 1
            people = sum(len(ended.tracks) for ended in batch)
            log.exception("estimation_failed", people=people)
            return
        self.estimated_crops += sum(ended.crops for ended in batch)
        for stage, values in times.samples.items():
            self.estimate_ms[stage] = self.estimate_ms.get(stage, 0.0) + sum(values)
            self.estimate_batches[stage] = self.estimate_batches.get(stage, 0) + len(values)
        # Per-person stages ran once for the whole batch: each camera in it saw that time.
        for pipeline in {id(e.pipeline): e.pipeline for e in batch}.values():
            for stage, values in times.samples.items():
                for value in values:
                    pipeline.times.add(stage, value)
        for out in outgoing:
            event = out.event
            self.gate.offer(event, out.first_mono, out.last_mono)
            meter = self.lanes[event.camera_id].meter
            meter.events += 1
            meter.returns += event.return_of is not None

    # Shutdown --------------------------------------------------------------------------

    def close(self, timeout: float = 60.0) -> None:
        """After every reader has ended its stream: finish the queued work, stop workers."""
        for lane in self.lanes.values():
            with lane.cond:
                lane.cond.wait_for(lambda: not lane.scheduled and lane.item is None, timeout)  # noqa: B023
        workers = [t for t in self._threads if t.name.startswith("detect-")]
        for _ in workers:
            self._ready.put(None)
        for thread in workers:
            thread.join(timeout)
        self._pending.put(None)
        estimators = [t for t in self._threads if t.name == "estimate"]
        for thread in estimators:
            thread.join(timeout)
        self._gate_stop.set()
        for thread in self._threads:
            thread.join(timeout)
        self.gate.close()
