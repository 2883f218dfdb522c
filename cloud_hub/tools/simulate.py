"""A fleet simulator: many devices publishing contract-valid messages, for demos and load tests.

``cloud-hub simulate --devices 50 --cameras 4 --rate 200 --duration 60`` connects one MQTT
client per simulated device (its own session and last will, as a real agent has) and
publishes what a simulated fleet (``cloud_hub.tools.simulated_fleet``) makes, built with the
contract's models and topic builders only:

- **person events** (QoS 1) at ``rate`` per second overall: gender and age from a
  plausible audience mix (some faces too poor to tell), dwell from a log-normal, direction
  in/out/unknown, and returns (``return_of`` naming an earlier simulated event of the
  same device, with that person's gender and age). With ``--backfill-days D`` the events'
  times spread over the last D days following a daily traffic curve (quiet nights, a
  lunch and an evening peak, quieter weekends), so a demo hub gets a history at once;
  without, they happen now.
- **status** (QoS 1, retained): ``online`` with agent version, models and every camera
  ``live`` at start, ``DeviceStatus.last_will`` registered as the last will, and an
  ``offline`` status on a clean stop, as the agent does.
- **health** (QoS 0) per device and **occupancy** (QoS 0) per camera at start and every
  ``--health-interval`` / ``--occupancy-interval`` seconds.

One thread drives every client (paho without its network thread: publishes go straight
to the socket, PUBACKs are read when the socket is readable). At most ``--inflight`` QoS 1
messages are unacknowledged at once over all clients; events count as sent when the
broker acknowledged them, and the achieved rate is measured on those.
"""

from __future__ import annotations

import selectors
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TextIO

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from pydantic import BaseModel

from cloud_hub.tools.simulated_fleet import Fleet, SimulatedDevice, backfill_times
from edge_agent.contract import (
    DeviceState,
    DeviceStatus,
    EventTopic,
    PersonEvent,
    health_topic,
    occupancy_topic,
    status_topic,
)
from edge_agent.contract.broker_tls import BrokerCredentials, apply_credentials


@dataclass
class SimConfig:
    """What to simulate and where to send it."""

    devices: int = 10
    cameras: int = 2
    rate: float = 50.0  # events per second overall; 0 = as fast as the window allows
    duration_s: float | None = None
    count: int | None = None
    host: str = "127.0.0.1"
    port: int = 1883
    topic_root: str = "audience"
    seed: int = 0
    protocol: str = "5"
    credentials: BrokerCredentials = field(default_factory=BrokerCredentials)
    inflight: int = 1000
    health_interval_s: float = 10.0
    occupancy_interval_s: float = 10.0
    backfill_days: float = 0.0
    device_prefix: str = "sim"
    progress_s: float = 5.0

    def total_events(self) -> int | None:
        """Events to send, or ``None`` to run until stopped."""
        if self.count is not None:
            return self.count
        if self.duration_s is not None:
            if self.rate <= 0:
                return None
            return max(0, round(self.rate * self.duration_s))
        return None


class _Conn:
    """One device's MQTT connection, driven by the simulator's thread."""

    def __init__(self, sim: Simulator, device: SimulatedDevice, client_id: str) -> None:
        cfg = sim.config
        v5 = cfg.protocol == "5"
        self.device = device
        self.connected = False
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
        )
        apply_credentials(self.client, cfg.credentials)
        self.client.max_inflight_messages_set(max(1, cfg.inflight))
        self.client.max_queued_messages_set(0)
        will = DeviceStatus.last_will(device.device_id)
        self.client.will_set(
            status_topic(cfg.topic_root, device.device_id),
            will.model_dump_json(),
            qos=1,
            retain=True,
        )
        self.client.on_connect = self._on_connect
        self.client.on_publish = sim._on_publish

    def _on_connect(self, *args: Any) -> None:
        reason = args[3]
        if reason.is_failure:
            raise ConnectionError(f"broker refused {self.device.device_id}: {reason}")
        self.connected = True


@dataclass
class Summary:
    """What the simulator sent (acknowledged by the broker for QoS 1)."""

    events: int = 0
    statuses: int = 0
    health: int = 0
    occupancy: int = 0
    elapsed_s: float = 0.0
    devices: list[str] = field(default_factory=list)
    cameras: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        """Events acknowledged per second while events were being sent."""
        return self.events / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def describe(self) -> str:
        """One human line."""
        return (
            f"sent {self.events} events from {len(self.devices)} devices x "
            f"{len(self.cameras)} cameras in {self.elapsed_s:.1f} s = {self.rate:,.0f} events/s "
            f"acknowledged; {self.statuses} statuses, {self.health} health, "
            f"{self.occupancy} occupancy"
        )


class Simulator:
    """Connects the fleet, publishes at the configured rate, and disconnects cleanly."""

    def __init__(self, config: SimConfig, out: TextIO | None = None) -> None:
        self.config = config
        self.out = out or sys.stdout
        self.fleet = Fleet(
            config.devices, config.cameras, config.seed, config.device_prefix, config.topic_root
        )
        self.summary = Summary(
            devices=[d.device_id for d in self.fleet.devices], cameras=self.fleet.devices[0].cameras
        )
        self._outstanding: dict[tuple[int, int], str] = {}  # (conn, mid) -> kind
        self._acked = {"event": 0, "status": 0}
        self._selector = selectors.DefaultSelector()
        self._conns: list[_Conn] = []
        self._stop = False
        self.sent_events: list[PersonEvent] = []  # kept only when ``keep_events``
        self.keep_events = False

    # --- network ------------------------------------------------------------------

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, *rest: Any) -> None:
        kind = self._outstanding.pop((userdata, mid), None)
        if kind is not None:
            self._acked[kind] += 1

    def _connect(self) -> None:
        cfg = self.config
        run_id = uuid.uuid4().hex[:6]
        for index, device in enumerate(self.fleet.devices):
            conn = _Conn(self, device, f"{device.device_id}-{run_id}"[:64])
            conn.client.user_data_set(index)
            conn.client.connect(cfg.host, cfg.port, keepalive=30)
            sock = conn.client.socket()
            assert sock is not None
            self._selector.register(sock, selectors.EVENT_READ, conn)
            self._conns.append(conn)
        deadline = time.monotonic() + 30
        while not all(c.connected for c in self._conns):
            if time.monotonic() > deadline:
                raise ConnectionError("not every device connected within 30 s")
            self._pump(0.05)

    def _pump(self, timeout: float) -> None:
        for conn in self._conns:
            if conn.client.want_write():
                conn.client.loop_write()
        for key, _ in self._selector.select(timeout):
            conn = key.data
            rc = conn.client.loop_read()
            if rc != mqtt.MQTT_ERR_SUCCESS:
                raise ConnectionError(f"{conn.device.device_id}: connection lost ({rc})")

    def _misc(self) -> None:
        for conn in self._conns:
            conn.client.loop_misc()

    def _publish(
        self, index: int, topic: str, model: BaseModel, qos: int, retain: bool, kind: str
    ) -> None:
        info = self._conns[index].client.publish(
            topic, model.model_dump_json(), qos=qos, retain=retain
        )
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise ConnectionError(f"publish failed: {mqtt.error_string(info.rc)}")
        if qos:
            self._outstanding[(index, info.mid)] = kind

    def _statuses(self, state: DeviceState) -> None:
        root = self.config.topic_root
        for index, device in enumerate(self.fleet.devices):
            status = self.fleet.status(device, state)
            self._publish(index, status_topic(root, device.device_id), status, 1, True, "status")

    def _telemetry(self, health: bool, occupancy: bool) -> None:
        root = self.config.topic_root
        for index, device in enumerate(self.fleet.devices):
            if health:
                self._publish(
                    index,
                    health_topic(root, device.device_id),
                    self.fleet.health(device),
                    0,
                    False,
                    "health",
                )
                self.summary.health += 1
            if occupancy:
                for camera in device.cameras:
                    sample = self.fleet.occupancy(device, camera)
                    self._publish(
                        index,
                        occupancy_topic(root, device.device_id, camera),
                        sample,
                        0,
                        False,
                        "occupancy",
                    )
                    self.summary.occupancy += 1

    def stop(self) -> None:
        """Finish after the current step (from a signal handler, say)."""
        self._stop = True

    def _drain(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while self._outstanding and time.monotonic() < deadline:
            self._pump(0.05)

    # --- the run ------------------------------------------------------------------

    def run(self) -> Summary:
        """Publish until the count or duration is reached (or :meth:`stop`)."""
        cfg = self.config
        total = cfg.total_events()
        index_of = {d.device_id: i for i, d in enumerate(self.fleet.devices)}
        times: Iterator[datetime] | None = None
        if cfg.backfill_days > 0:
            if total is None:
                raise ValueError("--backfill-days needs --count or --duration with a rate")
            times = backfill_times(total, cfg.backfill_days, self.fleet.rng, datetime.now(UTC))
        self._connect()
        self._statuses(DeviceState.ONLINE)
        self._telemetry(health=True, occupancy=True)
        started = time.monotonic()
        next_health = started + cfg.health_interval_s
        next_occupancy = started + cfg.occupancy_interval_s
        next_progress = started + cfg.progress_s
        next_misc = started + 1.0
        published = 0
        try:
            while not self._stop:
                now = time.monotonic()
                if total is not None and published >= total:
                    break
                if cfg.duration_s is not None and now - started >= cfg.duration_s:
                    break
                due = published + 1 if cfg.rate <= 0 else int((now - started) * cfg.rate) + 1
                if total is not None:
                    due = min(due, total)
                room = cfg.inflight - len(self._outstanding)
                for _ in range(min(due - published, room, 500)):
                    event = self.fleet.event(next(times) if times is not None else None)
                    topic = str(EventTopic(cfg.topic_root, event.device_id, event.camera_id))
                    self._publish(index_of[event.device_id], topic, event, 1, False, "event")
                    if self.keep_events:
                        self.sent_events.append(event)
                    published += 1
                if now >= next_health:
                    self._telemetry(health=True, occupancy=False)
                    next_health += cfg.health_interval_s
                if now >= next_occupancy:
                    self._telemetry(health=False, occupancy=True)
                    next_occupancy += cfg.occupancy_interval_s
                if now >= next_misc:
                    self._misc()
                    next_misc = now + 1.0
                if now >= next_progress:
                    elapsed = now - started
                    print(
                        f"[{elapsed:6.1f} s] {self._acked['event']} events acknowledged, "
                        f"{self._acked['event'] / elapsed:,.0f}/s",
                        file=self.out,
                        flush=True,
                    )
                    next_progress += cfg.progress_s
                wait = 0.0
                if cfg.rate > 0 and published < due:
                    wait = 0.0 if room > 0 else 0.01
                elif cfg.rate > 0:
                    wait = max(0.0, min(0.05, started + published / cfg.rate - time.monotonic()))
                elif room <= 0:
                    wait = 0.01
                self._pump(wait)
            self._drain(30)
            self.summary.elapsed_s = time.monotonic() - started
            self.summary.events = self._acked["event"]
        finally:
            self._shutdown()
        self.summary.statuses = self._acked["status"]
        return self.summary

    def _shutdown(self) -> None:
        """An offline status, then a clean disconnect (so no last will is sent)."""
        try:
            if all(c.connected for c in self._conns) and self._conns:
                self._statuses(DeviceState.OFFLINE)
                self._drain(10)
        except ConnectionError:
            pass
        for conn in self._conns:
            try:
                conn.client.disconnect()
                conn.client.loop_write()
            except (OSError, ConnectionError):
                pass
        self._selector.close()


def run_simulation(config: SimConfig, out: TextIO | None = None) -> Summary:
    """Run the simulator and print what it sent."""
    sim = Simulator(config, out)
    print(
        f"simulating {config.devices} devices x {config.cameras} cameras -> "
        f"{config.host}:{config.port} under {config.topic_root!r}, "
        f"{'max' if config.rate <= 0 else f'{config.rate:g}'} events/s",
        file=sim.out,
        flush=True,
    )
    import signal

    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in previous:
        signal.signal(sig, lambda *_: sim.stop())
    try:
        summary = sim.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print(summary.describe(), file=sim.out, flush=True)
    return summary
