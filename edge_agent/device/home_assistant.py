"""Home Assistant and other simple consumers: the plain availability topic, each camera's
count of the day, and (optional) MQTT discovery with removal of cameras no longer there.

* **Availability** (``{root}/v1/{device}/availability``, retained, QoS 1): ``online`` on
  every connect, ``offline`` when the agent stops cleanly. MQTT allows one last will per
  connection and the JSON status holds it, so after an unclean disconnect this topic keeps
  saying ``online``; discovery therefore makes Home Assistant require both this topic and
  the status's ``state`` (``availability_mode: all``).
* **Counts** (``{root}/v1/{device}/counts/{camera}``, retained, QoS 1): person events since
  local midnight, per camera (:class:`DailyCounts`), sent when they change (checked every
  occupancy interval), on every connect, and at 0 when the date changes.
* **Discovery** (``[home_assistant] discovery``): the configs of
  :mod:`edge_agent.contract.home_assistant`, retained, on every connect and whenever Home
  Assistant publishes ``online`` on ``{prefix}/status``. The topics announced are kept in
  ``home_assistant.json`` in the state directory; at the next start, those no longer
  announced (a removed camera, discovery turned off, a new device id) get an empty
  retained payload, which removes the entities. A file rather than reading the retained
  configs back: it needs no read access to the discovery prefix on the broker, does not
  guess how long to wait for retained messages (MQTT has no end-of-retained marker), and
  removes only what this device announced.

The work runs on its own thread, woken by connects, Home Assistant's birth message, and
the occupancy interval; nothing here runs on a camera thread but :meth:`DailyCounts.count`.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from datetime import date
from pathlib import Path
from typing import Any, Final

import structlog

from edge_agent import __version__
from edge_agent.config import AgentConfig
from edge_agent.contract import (
    AVAILABILITY_OFFLINE,
    AVAILABILITY_ONLINE,
    DailyCount,
    PersonEvent,
    availability_topic,
    counts_topic,
)
from edge_agent.contract.home_assistant import (
    BIRTH_ONLINE,
    DeviceInfo,
    birth_topic,
    discovery_configs,
)
from edge_agent.delivery.clock import SYSTEM_CLOCK, AgentClock, PublishFn
from edge_agent.delivery.publisher import MqttPublisher

log = structlog.get_logger(__name__)

STATE_FILE: Final = "home_assistant.json"
ACK_WAIT_S: Final = 5.0


class DailyCounts:
    """People (person events) per camera since local midnight; thread-safe.

    An event counts on the day its ``last_seen`` falls on in the device's time zone, and
    only if that is the current day. The day moves forward only: a clock that reads
    earlier (not set yet after a reboot) keeps the counts restored from the last run."""

    def __init__(self, camera_ids: list[str], clock: AgentClock = SYSTEM_CLOCK) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._day = self._today()
        self._counts = dict.fromkeys(camera_ids, 0)
        self.version = 0  # grows with every change

    def _today(self) -> date:
        return self._clock.now().astimezone().date()

    def restore(self, day: date, counts: dict[str, int]) -> None:
        """Take a previous run's counts (cameras still configured only)."""
        with self._lock:
            self._day = day
            for camera in self._counts:
                self._counts[camera] = max(0, int(counts.get(camera, 0)))
            self.version += 1

    def _roll(self) -> None:
        today = self._today()
        if today > self._day:
            self._day = today
            self._counts = dict.fromkeys(self._counts, 0)
            self.version += 1

    def count(self, event: PersonEvent) -> None:
        """One more person on the event's camera, if the event ended today."""
        with self._lock:
            self._roll()
            if event.camera_id in self._counts and event.last_seen.astimezone().date() == (
                self._day
            ):
                self._counts[event.camera_id] += 1
                self.version += 1

    def counting(self, publish: PublishFn) -> PublishFn:
        """``publish``, then count the event (what the clock gate hands on)."""

        def publish_and_count(event: PersonEvent) -> None:
            publish(event)
            self.count(event)

        return publish_and_count

    def snapshot(self) -> tuple[date, dict[str, int], int]:
        """The day, the counts, and the version, after moving to today if it changed."""
        with self._lock:
            self._roll()
            return self._day, dict(self._counts), self.version


class HomeAssistantLink:
    """Availability, counts and discovery for one agent (see the module's description)."""

    def __init__(
        self,
        config: AgentConfig,
        publisher: MqttPublisher,
        counts: DailyCounts,
        state_dir: Path,
        clock: AgentClock = SYSTEM_CLOCK,
    ) -> None:
        ha = config.home_assistant
        device, root = config.device_id, config.mqtt.topic_root
        cameras = [c.id for c in config.cameras]
        self.publisher = publisher
        self.counts = counts
        self.clock = clock
        self.device_id = device
        self.interval_s = config.health.occupancy_interval_s
        self.birth = birth_topic(ha.prefix) if ha.discovery else None
        self.availability = availability_topic(root, device) if ha.topics_on else None
        self.count_topics = {c: counts_topic(root, device, c) for c in cameras if ha.topics_on}
        info = DeviceInfo(device, __version__)
        self.configs = discovery_configs(ha.prefix, root, info, cameras) if ha.discovery else {}
        self.path = state_dir / STATE_FILE
        saved = read_state(self.path)
        self.announced: set[str] = {str(t) for t in saved.get("announced", [])}
        # No file yet, or not one this agent wrote: the counts start at 0.
        with contextlib.suppress(KeyError, TypeError, ValueError):
            counts.restore(date.fromisoformat(saved["day"]), dict(saved["counts"]))
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._connect_due = self._announce_due = False
        self._sent_version = -1
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.announcements = 0  # times the discovery configs went out

    @staticmethod
    def wanted(config: AgentConfig, state_dir: Path) -> bool:
        """Whether an agent needs the link: topics on, or announcements left to remove."""
        return config.home_assistant.topics_on or bool(
            read_state(state_dir / STATE_FILE).get("announced")
        )

    def attach(self) -> None:
        """Register with the publisher (before it starts) and start the thread."""
        self.publisher.on_connected(self._connected)
        if self.birth is not None:
            self.publisher.subscribe(self.birth, self._on_birth)
        self._thread = threading.Thread(target=self._run, name="home-assistant", daemon=True)
        self._thread.start()

    def _connected(self) -> None:
        with self._lock:
            self._connect_due = self._announce_due = True
        self._wake.set()

    def _on_birth(self, payload: bytes) -> None:
        if payload.strip() == BIRTH_ONLINE.encode():
            log.info("home_assistant_online", topic=self.birth)
            with self._lock:
                self._announce_due = True
            self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.interval_s)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.turn()
            except Exception:
                log.exception("home_assistant_failed")

    def turn(self) -> None:
        """One round: what a connect or a birth message asked for, then the counts."""
        if not self.publisher.connected.is_set():
            return
        with self._lock:
            connect, self._connect_due = self._connect_due, False
            announce, self._announce_due = self._announce_due, False
        if connect and self.availability is not None:
            self.publisher.publish_retained(self.availability, AVAILABILITY_ONLINE.encode())
        if announce and not self.announce():
            with self._lock:
                self._announce_due = True  # again at the next connect or turn
        self.send_counts(force=connect)

    def announce(self) -> bool:
        """Clear what is no longer announced, publish every config; True once the broker
        has acknowledged them all (only then does the state file forget the cleared)."""
        stale = sorted(self.announced - set(self.configs))
        sent = all(self.publisher.publish_retained(topic, b"") for topic in stale)
        for topic, config in self.configs.items():
            payload = json.dumps(config, separators=(",", ":")).encode()
            sent = self.publisher.publish_retained(topic, payload) and sent
        deadline = time.monotonic() + ACK_WAIT_S
        while self.publisher.retained_pending() and time.monotonic() < deadline:
            time.sleep(0.02)
        if not sent or self.publisher.retained_pending():
            log.warning("home_assistant_discovery_unconfirmed", stale=len(stale))
            return False
        if stale:
            log.info("home_assistant_entities_removed", topics=stale)
        self.announced = set(self.configs)
        self.announcements += 1
        self.save()
        return True

    def send_counts(self, force: bool = False) -> None:
        """Each camera's count, when it changed (or ``force``) and the clock is set."""
        if not self.count_topics or not self.clock.is_set():
            return
        day, counts, version = self.counts.snapshot()
        if version == self._sent_version and not force:
            return
        at = self.clock.now()
        ok = True
        for camera, topic in self.count_topics.items():
            message = DailyCount(
                device_id=self.device_id, camera_id=camera, day=day, at=at, people=counts[camera]
            )
            ok = self.publisher.publish_retained(topic, message.model_dump_json().encode()) and ok
        if ok:
            self._sent_version = version
        self.save()

    def save(self) -> None:
        """Write the announced topics and the day's counts (atomically: write, rename)."""
        day, counts, _ = self.counts.snapshot()
        state = {"announced": sorted(self.announced), "day": day.isoformat(), "counts": counts}
        write_state(self.path, state)

    def close(self, timeout_s: float = 3.0) -> None:
        """Stop the thread; send the last counts and ``offline`` while still connected."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=ACK_WAIT_S + 2)
        try:
            self.send_counts()
            if self.availability is not None:
                self.publisher.publish_retained(self.availability, AVAILABILITY_OFFLINE.encode())
            deadline = time.monotonic() + timeout_s
            while self.publisher.retained_pending() and time.monotonic() < deadline:
                time.sleep(0.02)
            self.save()
        except Exception:
            log.exception("home_assistant_close_failed")


def read_state(path: Path) -> dict[str, Any]:
    """The link's state file, or ``{}`` when it is missing or unreadable."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_state(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` as JSON to a temporary file beside ``path`` and rename it over
    (logged, not raised, when the disk refuses: the counts go on in memory)."""
    temporary = path.with_suffix(".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary.write_text(json.dumps(state, sort_keys=True), encoding="utf-8")
        os.replace(temporary, path)
    except OSError as error:
        log.warning("home_assistant_state_not_saved", path=str(path), error=str(error))
