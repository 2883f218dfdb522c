"""Periodic health (frame rates, stage latencies, outbox, CPU, memory, temperature) and
per-camera occupancy, published as QoS 0 telemetry while connected.

Camera threads only bump counters on a :class:`CameraMeter` and append stage times; the
:class:`Telemetry` thread turns deltas of those into rates and percentiles. Nothing here
does I/O on a camera thread. CPU and memory come from ``resource`` and ``/proc`` (no
psutil on the device); the temperature is the hottest ``/sys/class/thermal`` zone.
"""

from __future__ import annotations

import os
import resource
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
import structlog

from edge_agent.contract import (
    CameraHealth,
    DeviceHealth,
    LatencyMs,
    Occupancy,
    health_topic,
    occupancy_topic,
)
from edge_agent.delivery.clock import SYSTEM_CLOCK, AgentClock
from edge_agent.delivery.outbox import Outbox
from edge_agent.device.live_config import LiveSettings
from edge_agent.timing import StageTimes

if TYPE_CHECKING:
    from edge_agent.delivery.publisher import MqttPublisher

log = structlog.get_logger(__name__)


class PipelineCounts(Protocol):
    """What health reads from a camera's pipeline (kept to data, so device operations do
    not depend on the vision stages)."""

    rejected_tracks: int

    def in_view(self) -> int: ...


THERMAL = Path("/sys/class/thermal")


class WindowTimes(StageTimes):
    """Stage times that the reporter takes away each interval, so memory stays flat."""

    def drain(self) -> dict[str, list[float]]:
        """The samples since the last drain (swapped out whole: appends never block)."""
        taken, self.samples = self.samples, defaultdict(list)
        return dict(taken)


class CameraMeter:
    """One camera's counters, written by its thread and read by the reporter."""

    def __init__(self, camera_id: str) -> None:
        self.camera_id = camera_id
        self.processed = 0
        self.dropped = 0
        self.events = 0  # person events produced
        self.returns = 0  # of which recognised as a person coming back
        self.source_errors: Counter[str] = Counter()  # reason -> failures of the source
        self.times = WindowTimes()
        self.pipeline: PipelineCounts | None = None
        # Stage samples drained but not yet in a health message, and who else sees them
        # (the Prometheus histograms); only reporter threads take this lock.
        self.observer: Callable[[str, Mapping[str, list[float]]], None] | None = None
        self._pending: defaultdict[str, list[float]] = defaultdict(list)
        self._times_lock = threading.Lock()
        self._rejected_before = 0  # by the pipelines of earlier (re)starts
        self._last_index = -1

    def frame(self, index: int) -> None:
        """Count one processed frame; a gap in source indices counts as dropped."""
        self.processed += 1
        if index > self._last_index + 1:  # indices count the frames the source yielded
            self.dropped += index - self._last_index - 1
        self._last_index = index

    def restart(self) -> None:
        """The source reopened: its frame indices start again."""
        self._last_index = -1

    def attach(self, pipeline: PipelineCounts) -> None:
        """A new pipeline for this camera (the source (re)started)."""
        if self.pipeline is not None:
            self._rejected_before += self.pipeline.rejected_tracks
        self.pipeline = pipeline

    def rejected(self) -> int:
        """Tracks rejected as not a face, over every pipeline this camera ran."""
        pipeline = self.pipeline
        return self._rejected_before + (0 if pipeline is None else pipeline.rejected_tracks)

    def collect_times(self) -> None:
        """Drain the camera's stage samples: to the observer, and kept for health."""
        with self._times_lock:
            self._collect()

    def _collect(self) -> None:
        taken = self.times.drain()
        if self.observer is not None:
            self.observer(self.camera_id, taken)
        for stage, values in taken.items():
            self._pending[stage] += values

    def take_times(self) -> dict[str, list[float]]:
        """The stage samples since the last call (for one health message)."""
        with self._times_lock:
            self._collect()
            taken, self._pending = self._pending, defaultdict(list)
        return dict(taken)

    def in_view(self) -> int:
        """Confirmed people in view now (0 before the pipeline exists)."""
        pipeline = self.pipeline
        return 0 if pipeline is None else pipeline.in_view()


def memory_mb() -> float:
    """The process's resident memory (VmRSS), or its peak where /proc is missing."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def temperature_c(root: Path = THERMAL) -> float | None:
    """The hottest thermal zone in degrees Celsius; ``None`` where there is none."""
    hottest: float | None = None
    for zone in root.glob("thermal_zone*/temp"):
        try:
            value = int(zone.read_text().strip()) / 1000.0
        except (OSError, ValueError):
            continue
        if -100.0 <= value <= 200.0:
            hottest = value if hottest is None else max(hottest, value)
    return hottest


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def latency(samples: Sequence[dict[str, list[float]]]) -> dict[str, LatencyMs]:
    """p50/p95 per stage over every camera's samples."""
    merged: defaultdict[str, list[float]] = defaultdict(list)
    for per_camera in samples:
        for stage, values in per_camera.items():
            merged[stage] += values
    out = {}
    for stage, values in merged.items():
        if values:
            p50, p95 = np.percentile(values, [50, 95])
            out[stage] = LatencyMs(p50=round(float(p50), 3), p95=round(float(max(p95, p50)), 3))
    return out


class Telemetry:
    """The reporter thread: health every ``interval_s`` (live), occupancy more often."""

    def __init__(
        self,
        publisher: MqttPublisher,
        device_id: str,
        meters: Sequence[CameraMeter],
        outbox: Outbox,
        live: LiveSettings,
        clock: AgentClock = SYSTEM_CLOCK,
    ) -> None:
        self.publisher = publisher
        self.clock = clock
        self.device_id = device_id
        self.meters = meters
        self.outbox = outbox
        self.live = live
        root = publisher.config.topic_root
        self.health_topic = health_topic(root, device_id)
        self._occupancy_topics = {
            m.camera_id: occupancy_topic(root, device_id, m.camera_id) for m in meters
        }
        self._dropped_at_start = outbox.dropped
        self._last = (time.monotonic(), _cpu_seconds())
        self._totals = {m.camera_id: (m.processed, m.dropped) for m in meters}
        self.sent_health = 0
        self.sent_occupancy = 0

    def run(self, stop: threading.Event) -> None:
        """Report until ``stop`` is set."""
        next_health = next_occupancy = time.monotonic()
        next_health += self.live.effective.health.interval_s
        while not stop.is_set():
            now = time.monotonic()
            try:
                if now >= next_occupancy:
                    self.send_occupancy()
                    next_occupancy = now + self.live.effective.health.occupancy_interval_s
                if now >= next_health:
                    self.send_health()
                    next_health = now + self.live.effective.health.interval_s
            except Exception:
                log.exception("telemetry_failed")
            # A live config may shorten the interval: never sleep past it.
            next_health = min(next_health, now + self.live.effective.health.interval_s)
            stop.wait(max(0.05, min(next_health, next_occupancy) - time.monotonic()))

    def health(self) -> DeviceHealth:
        """Measure everything since the last call."""
        now, cpu = time.monotonic(), _cpu_seconds()
        then, cpu_then = self._last
        self._last = (now, cpu)
        elapsed = max(now - then, 1e-3)
        cameras = []
        for meter in self.meters:
            processed, dropped = meter.processed, meter.dropped
            was_processed, was_dropped = self._totals[meter.camera_id]
            self._totals[meter.camera_id] = (processed, dropped)
            cameras.append(
                CameraHealth(
                    camera_id=meter.camera_id,
                    fps_processed=min(1000.0, round((processed - was_processed) / elapsed, 2)),
                    fps_dropped=min(1000.0, round((dropped - was_dropped) / elapsed, 2)),
                )
            )
        cores = os.cpu_count() or 1
        cpu_percent = min(100.0, max(0.0, 100.0 * (cpu - cpu_then) / elapsed / cores))
        return DeviceHealth(
            device_id=self.device_id,
            at=self.clock.now(),
            cameras=cameras,
            latency_ms=latency([m.take_times() for m in self.meters]),
            outbox_depth=self.outbox.depth(),
            outbox_dropped=self.outbox.dropped - self._dropped_at_start,
            cpu_percent=round(cpu_percent, 2),
            memory_mb=round(memory_mb(), 1),
            temperature_c=temperature_c(),
        )

    def send_health(self) -> None:
        """Publish one health message (skipped while disconnected, or while the clock is
        not set: a hub refuses the time, and stale health is not worth keeping)."""
        health = self.health()
        if not self.clock.is_set():
            return
        if self.publisher.send(self.health_topic, health.model_dump_json().encode()):
            self.sent_health += 1

    def send_occupancy(self) -> None:
        """Publish each camera's people in view (skipped while disconnected or while the
        clock is not set)."""
        if not self.clock.is_set():
            return
        at = self.clock.now()
        for meter in self.meters:
            people = min(10_000, meter.in_view())
            message = Occupancy(
                device_id=self.device_id, camera_id=meter.camera_id, at=at, people=people
            )
            topic = self._occupancy_topics[meter.camera_id]
            if self.publisher.send(topic, message.model_dump_json().encode()):
                self.sent_occupancy += 1
