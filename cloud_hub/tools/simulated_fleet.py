"""A simulated fleet: devices that produce contract-valid messages, reproducible from a seed.

Built with the contract's models only (``cloud_hub.tools.simulate`` publishes them):

- **person events**: gender and age from a plausible audience mix (some faces too poor
  to tell), dwell from a log-normal, direction in/out/unknown, and returns
  (``return_of`` naming an earlier simulated event of the same device, with that person's
  gender and age). :func:`backfill_times` spreads event times over the last days
  following a daily traffic curve (quiet nights, a lunch and an evening peak, quieter
  weekends), so a demo hub gets a history at once.
- **status**: ``online`` with agent version, models and every camera ``live``, or
  ``offline``.
- **health** per device and **occupancy** per camera, with plausible load and latencies.
"""

from __future__ import annotations

import math
import random
import uuid
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from edge_agent.contract import (
    AgeEstimate,
    CameraHealth,
    CameraState,
    CameraStatus,
    DeviceHealth,
    DeviceState,
    DeviceStatus,
    Direction,
    Gender,
    GenderEstimate,
    LatencyMs,
    Occupancy,
    PersonEvent,
    uuid7,
)

AGENT_VERSION = "sim-0.1"
MODELS = {"detector": "blazeface-full", "age": "dlib-int8", "gender": "dlib-int8"}
# Relative traffic by hour of day (0-23): closed at night, a lunch and an evening peak.
DAILY_SHAPE = (
    0.02, 0.01, 0.01, 0.01, 0.01, 0.03, 0.08, 0.25, 0.45, 0.55, 0.65, 0.80,
    1.00, 0.95, 0.70, 0.65, 0.75, 0.90, 0.95, 0.70, 0.45, 0.25, 0.10, 0.04,
)  # fmt: skip
WEEKEND_FACTOR = 0.7
RETURN_SHARE = 0.12
WATCHER_SHARE = 0.45
RETURN_WINDOW = timedelta(hours=4)


@dataclass
class _Person:
    event_id: uuid.UUID
    last_seen: datetime
    gender: GenderEstimate | None
    age: AgeEstimate | None


@dataclass
class SimulatedDevice:
    """One simulated device: its cameras, track ids, recent visitors and faces in view."""

    device_id: str
    cameras: list[str]
    tracks: dict[str, int] = field(default_factory=dict)
    recent: deque[_Person] = field(default_factory=lambda: deque(maxlen=200))
    people_in_view: dict[str, int] = field(default_factory=dict)


class Fleet:
    """The simulated devices and the events they produce, reproducible from a seed."""

    def __init__(
        self, devices: int, cameras: int, seed: int = 0, prefix: str = "sim", root: str = "audience"
    ) -> None:
        if devices < 1 or not 1 <= cameras <= 64:
            raise ValueError("need at least one device and 1-64 cameras per device")
        self.root = root
        self.rng = random.Random(seed)
        width = max(3, len(str(devices - 1)))
        self.devices = [
            SimulatedDevice(f"{prefix}-{i:0{width}d}", [f"cam-{j + 1}" for j in range(cameras)])
            for i in range(devices)
        ]
        # Some doors are busier than others: a device's share of the traffic.
        self._weights = [self.rng.lognormvariate(0, 0.6) for _ in self.devices]
        self._cum = _cumulative(self._weights)

    def _pick_device(self) -> SimulatedDevice:
        x = self.rng.random() * self._cum[-1]
        lo, hi = 0, len(self._cum) - 1
        while lo < hi:
            mid = (lo + hi) // 2
            if self._cum[mid] < x:
                lo = mid + 1
            else:
                hi = mid
        return self.devices[lo]

    def _gender(self) -> GenderEstimate | None:
        x = self.rng.random()
        if x < 0.04:
            return None  # no usable face
        value = Gender.FEMALE if x < 0.53 else Gender.MALE
        confidence = min(0.99, 0.5 + abs(self.rng.gauss(0.35, 0.12)))
        return GenderEstimate(value=value, confidence=round(confidence, 3))

    def _age(self) -> AgeEstimate | None:
        x = self.rng.random()
        if x < 0.05:
            return None
        if x < 0.13:
            value = self.rng.uniform(3, 12)
        elif x < 0.21:
            value = self.rng.uniform(13, 18)
        elif x < 0.88:
            value = min(64.0, max(18.0, self.rng.gauss(36, 11)))
        else:
            value = self.rng.uniform(65, 88)
        spread = self.rng.uniform(3.0, 9.0)
        return AgeEstimate(
            value=round(value, 1),
            low=round(max(0.0, value - spread), 1),
            high=round(min(120.0, value + spread), 1),
            confidence=round(self.rng.uniform(0.6, 0.9), 3),
        )

    def event(self, last_seen: datetime | None = None) -> PersonEvent:
        """The next person event somewhere in the fleet, ending at ``last_seen`` (now)."""
        rng = self.rng
        device = self._pick_device()
        camera = rng.choice(device.cameras)
        last = last_seen or datetime.now(UTC)
        dwell = min(600.0, rng.lognormvariate(math.log(6.0), 0.8))
        earlier = [p for p in device.recent if last - RETURN_WINDOW <= p.last_seen < last]
        if earlier and rng.random() < RETURN_SHARE / 0.95:
            previous = rng.choice(earlier)
            gender, age, return_of = previous.gender, previous.age, previous.event_id
        else:
            gender, age, return_of = self._gender(), self._age(), None
        # About half the people in view face the camera; only their faces give a gender
        # and an age.
        watcher = return_of is not None or rng.random() < WATCHER_SHARE
        attention = round(dwell * rng.uniform(0.1, 0.8), 2) if watcher else 0.0
        if not watcher:
            gender, age = None, None
        x = rng.random()
        direction = Direction.IN if x < 0.45 else Direction.OUT if x < 0.9 else None
        track = device.tracks.get(camera, rng.randrange(1, 1000)) + 1
        device.tracks[camera] = track
        ms = int(last.timestamp() * 1000)
        event = PersonEvent(
            event_id=uuid7(ms * 1_000_000 if last_seen is not None else None),
            device_id=device.device_id,
            camera_id=camera,
            track_id=track,
            first_seen=last - timedelta(seconds=dwell),
            last_seen=last,
            dwell_s=round(dwell, 2),
            gender=gender,
            age=age,
            direction=direction,
            crops=max(1, min(50, int(dwell * rng.uniform(0.5, 2.0)))) if watcher else 0,
            watcher=watcher,
            attention_s=min(attention, round(dwell, 2)),
            return_of=return_of,
            models=MODELS,
        )
        if return_of is None and watcher:
            device.recent.append(_Person(event.event_id, last, gender, age))
        device.people_in_view[camera] = min(
            20, max(0, device.people_in_view.get(camera, 0) + rng.choice((-1, 0, 1)))
        )
        return event

    def status(
        self, device: SimulatedDevice, state: DeviceState = DeviceState.ONLINE
    ) -> DeviceStatus:
        """What the device says it is and runs."""
        if state is DeviceState.OFFLINE:
            return DeviceStatus(device_id=device.device_id, state=state, at=datetime.now(UTC))
        return DeviceStatus(
            device_id=device.device_id,
            state=state,
            at=datetime.now(UTC),
            agent_version=AGENT_VERSION,
            models=MODELS,
            cameras=[
                CameraStatus(
                    camera_id=c, state=CameraState.LIVE, fps=round(self.rng.uniform(12, 15), 1)
                )
                for c in device.cameras
            ],
        )

    def health(self, device: SimulatedDevice) -> DeviceHealth:
        """One health sample with plausible load and latencies."""
        rng = self.rng
        detect = rng.uniform(5, 9)
        return DeviceHealth(
            device_id=device.device_id,
            at=datetime.now(UTC),
            cameras=[
                CameraHealth(
                    camera_id=c,
                    fps_processed=round(rng.uniform(12, 15), 1),
                    fps_dropped=round(rng.uniform(0, 0.5), 2),
                )
                for c in device.cameras
            ],
            latency_ms={
                "detect": LatencyMs(p50=round(detect, 2), p95=round(detect * 1.6, 2)),
                "estimate": LatencyMs(p50=3.0, p95=4.8),
            },
            outbox_depth=rng.randrange(0, 3),
            outbox_dropped=0,
            cpu_percent=round(rng.uniform(20, 70), 1),
            memory_mb=round(rng.uniform(180, 260), 1),
            temperature_c=round(rng.uniform(45, 70), 1),
        )

    def occupancy(self, device: SimulatedDevice, camera: str) -> Occupancy:
        """How many faces the camera sees now."""
        return Occupancy(
            device_id=device.device_id,
            camera_id=camera,
            at=datetime.now(UTC),
            people=device.people_in_view.get(camera, 0),
        )


def _cumulative(weights: list[float]) -> list[float]:
    total, out = 0.0, []
    for w in weights:
        total += w
        out.append(total)
    return out


def backfill_times(
    count: int, days: float, rng: random.Random, end: datetime
) -> Iterator[datetime]:
    """``count`` times over the ``days`` before ``end``, oldest first, shaped like a day's
    traffic (``DAILY_SHAPE`` by UTC hour, weekends quieter)."""
    start = end - timedelta(days=days)
    hours = max(1, math.ceil(days * 24))
    first = start.replace(minute=0, second=0, microsecond=0)
    weights = []
    for h in range(hours + 1):
        moment = first + timedelta(hours=h)
        weekend = WEEKEND_FACTOR if moment.weekday() >= 5 else 1.0
        weights.append(DAILY_SHAPE[moment.hour] * weekend)
    cum = _cumulative(weights)
    picks = sorted(rng.random() * cum[-1] for _ in range(count))
    h = 0
    for x in picks:
        while cum[h] < x:
            h += 1
        within = (x - (cum[h - 1] if h else 0.0)) / weights[h] if weights[h] else 0.0
        moment = first + timedelta(hours=h, seconds=min(within, 1.0) * 3600)
        yield min(max(moment, start), end)
