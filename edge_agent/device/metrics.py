"""Prometheus metrics of one agent, in a registry of its own (never the global one, so
tests and several agents in one process do not clash).

Nothing here runs on a camera thread. Counters the camera threads already keep on their
:class:`~edge_agent.device.telemetry.CameraMeter` (frames, drops, events, rejected tracks, people in
view) are read when Prometheus scrapes; stage latencies are the same
:class:`~edge_agent.device.telemetry.WindowTimes` samples the health message uses, moved into
histograms by whoever drains them (the telemetry thread, or a scrape).
"""

from __future__ import annotations

import platform
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from edge_agent import __version__
from edge_agent.contract import CameraState
from edge_agent.delivery.clock import UNFIXABLE, ClockGate
from edge_agent.delivery.outbox import Outbox
from edge_agent.delivery.publisher import MqttPublisher
from edge_agent.device.status_board import StatusBoard
from edge_agent.device.telemetry import CameraMeter

#: Seconds; per-frame stages sit in the low milliseconds, per-person ones in tens.
LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
)  # fmt: skip
#: Camera states in which a camera is doing what it should (a plain file that ended).
HEALTHY_STATES = frozenset({CameraState.LIVE, CameraState.ENDED})
#: The outbox counts as full this close to its byte bound (eviction keeps it under).
FULL_BYTES_SHARE = 0.99


class AgentMetrics(Collector):
    """The agent's registry: stage histograms plus values read at scrape time."""

    def __init__(
        self,
        meters: Sequence[CameraMeter],
        outbox: Outbox,
        publisher: MqttPublisher | None = None,
        board: StatusBoard | None = None,
        gate: ClockGate | None = None,
    ) -> None:
        self.meters = meters
        self.outbox = outbox
        self.publisher = publisher
        self.board = board
        self.gate = gate
        self.registry = CollectorRegistry(auto_describe=False)
        self.stage_latency = Histogram(
            "edge_agent_stage_latency_seconds",
            "Wall-clock time per pipeline stage (decode, detect, track per frame; align, "
            "gender, age per face crop).",
            ["camera", "stage"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(self)
        for meter in meters:
            meter.observer = self.observe

    def observe(self, camera_id: str, samples: Mapping[str, list[float]]) -> None:
        """Move drained stage samples (milliseconds) into the histograms."""
        for stage, values in samples.items():
            child = self.stage_latency.labels(camera=camera_id, stage=stage)
            for milliseconds in values:
                child.observe(milliseconds / 1000.0)

    def outbox_full(self) -> bool:
        """Whether the next event would evict an older one."""
        outbox = self.outbox
        return (
            outbox.depth() >= outbox.max_entries
            or outbox.size_bytes() >= FULL_BYTES_SHARE * outbox.max_bytes
        )

    def mqtt_connected(self) -> bool:
        """Whether the broker connection is up (``False`` without a publisher)."""
        return self.publisher is not None and self.publisher.connected.is_set()

    def camera_states(self) -> dict[str, CameraState]:
        """Each camera's state (``connecting`` for all without a status board)."""
        if self.board is None:
            return {m.camera_id: CameraState.CONNECTING for m in self.meters}
        return {m.camera_id: self.board.camera_state(m.camera_id) for m in self.meters}

    def healthz(self) -> tuple[bool, dict[str, Any]]:
        """(healthy, report): healthy when every camera that should run is live (or a
        plain file has ended) and the outbox is not full."""
        states = self.camera_states()
        full = self.outbox_full()
        healthy = all(s in HEALTHY_STATES for s in states.values()) and not full
        report: dict[str, Any] = {
            "status": "ok" if healthy else "unhealthy",
            "cameras": {camera: state.value for camera, state in states.items()},
            "camera_errors": {} if self.board is None else self.board.camera_errors(),
            "outbox_depth": self.outbox.depth(),
            "outbox_full": full,
            "outbox_dropped": self.outbox.dropped,
            "mqtt_connected": self.mqtt_connected(),
        }
        return healthy, report

    def render(self) -> bytes:
        """The registry in Prometheus' text format."""
        return generate_latest(self.registry)

    def collect(self) -> Iterator[Metric]:
        """Values read at scrape time (the histograms are collected by the registry)."""
        for meter in self.meters:
            meter.collect_times()  # fresh latencies for this scrape
        build = InfoMetricFamily("edge_agent_build", "The agent's release and Python.")
        build.add_metric([], {"version": __version__, "python": platform.python_version()})
        yield build
        labels = ["camera"]
        processed = CounterMetricFamily(
            "edge_agent_frames_processed", "Frames run through the pipeline.", labels=labels
        )
        dropped = CounterMetricFamily(
            "edge_agent_frames_dropped",
            "Frames the agent could not keep up with and skipped (a paced or live source "
            "replaced them before a detector was free).",
            labels=labels,
        )
        events = CounterMetricFamily("edge_agent_events", "Person events produced.", labels=labels)
        returns = CounterMetricFamily(
            "edge_agent_returns",
            "Person events recognised as someone coming back within the return window.",
            labels=labels,
        )
        rejected = CounterMetricFamily(
            "edge_agent_tracks_rejected",
            "Tracks whose crops the face mesh did not take for faces (no event).",
            labels=labels,
        )
        tracks = GaugeMetricFamily(
            "edge_agent_active_tracks", "Confirmed people in view now.", labels=labels
        )
        for meter in self.meters:
            camera = [meter.camera_id]
            processed.add_metric(camera, meter.processed)
            dropped.add_metric(camera, meter.dropped)
            events.add_metric(camera, meter.events)
            returns.add_metric(camera, meter.returns)
            rejected.add_metric(camera, meter.rejected())
            tracks.add_metric(camera, meter.in_view())
        yield from (processed, dropped, events, returns, rejected, tracks)
        errors = CounterMetricFamily(
            "edge_agent_source_errors",
            "Times a camera's source failed: missing, not_a_file, unopenable, no_frames "
            "(opens, decodes nothing), truncated (stops short of its frame count), decode, "
            "disconnected (a stream that stopped).",
            labels=["camera", "reason"],
        )
        for meter in self.meters:
            for reason, count in sorted(meter.source_errors.items()):
                errors.add_metric([meter.camera_id, reason], count)
        yield errors
        discarded = CounterMetricFamily(
            "edge_agent_events_discarded",
            "Events never published because their time stamps came from a clock that was "
            "not set and cannot be fixed (clock_unset_stamp: left in the outbox by an "
            "earlier boot; clock_never_set: held until the agent stopped; "
            "clock_hold_full: more held than the gate keeps).",
            labels=["reason"],
        )
        counts = dict(self.gate.discarded) if self.gate is not None else {}
        counts[UNFIXABLE] = counts.get(UNFIXABLE, 0) + self.outbox.discarded
        for reason, count in sorted(counts.items()):
            discarded.add_metric([reason], count)
        yield discarded
        yield GaugeMetricFamily(
            "edge_agent_events_held",
            "Events waiting for the device's clock to be set (re-stamped when it is).",
            value=0 if self.gate is None else self.gate.held(),
        )
        state = GaugeMetricFamily(
            "edge_agent_camera_state",
            "1 for each camera's current state (connecting, live, down, ended).",
            labels=["camera", "state"],
        )
        for camera_id, current in self.camera_states().items():
            for candidate in CameraState:
                state.add_metric([camera_id, candidate.value], float(candidate is current))
        yield state
        yield GaugeMetricFamily(
            "edge_agent_outbox_depth",
            "Events stored and not yet acknowledged by the broker.",
            value=self.outbox.depth(),
        )
        yield CounterMetricFamily(
            "edge_agent_outbox_dropped",
            "Events evicted because the outbox was full (over the outbox file's life).",
            value=self.outbox.dropped,
        )
        yield GaugeMetricFamily(
            "edge_agent_mqtt_connected",
            "1 while the broker connection is up.",
            value=float(self.mqtt_connected()),
        )
