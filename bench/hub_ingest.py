"""Hub ingest throughput and publish-to-commit latency, against the ceiling and a naive baseline.

Usage::

    python bench/hub_ingest.py [--events 60000] [--batch-sizes 250,500,1000,2000]
        [--publishers 2] [--paced-rate 5000] [--orm-events 3000] [--protocol 5]
        [--backends plain[,timescaledb]] [--drain-rounds 1] [--drain-only]

Needs the local PostgreSQL (and Redis: the hub's live cache stays on, as in production).
Each measurement gets a throwaway database, migrated by the hub's own code for its
backend: plain PostgreSQL on ``TEST_PG_ADMIN_URL`` (127.0.0.1:5432), TimescaleDB on
``TEST_TSDB_ADMIN_URL`` (127.0.0.1:5433, ``.ci/timescaledb.sh``; its own scheduler runs
the refresh policies while the hub ingests, as in production). The broker is a private
Mosquitto on a free port with ``max_queued_messages 0`` (what docs/hub.md asks for: the
machine's Mosquitto keeps its default of 1,000 queued messages per client and would drop
a backlog) and no persistence; ``--broker system`` uses 127.0.0.1:1883 instead.

Events come from the fleet simulator (``cloud_hub.tools.simulated_fleet.Fleet``: 500
devices x 4 cameras), serialized once before timing. Per batch size:

- **raw**: ``event_writes.store_batch`` (the hub's own ``INSERT ... SELECT FROM unnest``) straight
  to PostgreSQL, one batch after another on one connection: the write ceiling.
- **hub, live**: one ``cloud-hub serve`` process; ``--publishers`` processes publish every
  event as fast as a window of 2,000 unacknowledged QoS 1 messages each allows.
  Throughput = events / (last commit - first publish).
- **hub, drain** (best batch size): the events are queued at the broker while the hub is
  stopped (its persistent session), then the hub starts: commits per second between its
  first and last commit, with no publisher competing for the CPU.
- **hub, paced** (``--paced-rate``): publishers hold a steady rate: latency at that load.
- **backends** (``--backends plain,timescaledb``): the live, paced and ORM runs use the
  first backend; the drain (and the raw ceiling before it) runs on each backend in turn,
  ``--drain-rounds`` times, with the same events, broker and settings, and the summary
  gives each backend's drain rate, its share of that backend's raw rate, and
  TimescaleDB's drain as a share of plain's (the target: at least 80 %).
  ``--drain-only`` skips the live runs (the first of ``--batch-sizes`` is drained).
- **ORM baseline**: a naive consumer (same broker, QoS 1, ack after commit) that validates
  each message and inserts it through a SQLModel/SQLAlchemy session, one row and one
  commit per message.

Publish-to-commit latency, per event: *publish* is ``time.time()`` in the publisher just
before ``client.publish()`` for that event (kept in the publisher, keyed by event_id);
*commit* is when the bench's LISTEN connection received the NOTIFY that a bench-only
``AFTER INSERT ... FOR EACH STATEMENT`` trigger (added to the throwaway database, not a
migration) queued inside the writing transaction: PostgreSQL delivers notifications only
at commit, so this is the commit as seen by a client, upper bound. The trigger also
sends ``clock_timestamp()`` at the end of the statement (the lower bound); the gap between
the two is printed. Rows are matched to transactions by ``xmin``. Same machine, same clock.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import asyncpg
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cloud_hub.settings import HubSettings
from cloud_hub.storage.db import prepare_database
from cloud_hub.storage.event_writes import store_batch
from cloud_hub.tools.simulated_fleet import Fleet
from edge_agent.contract import EventTopic, PersonEvent
from edge_agent.logs import configure_logging

SERVERS = {
    "plain": os.environ.get("TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
    "timescaledb": os.environ.get(
        "TEST_TSDB_ADMIN_URL", "postgresql://postgres@127.0.0.1:5433/postgres"
    ),
}
NAMES = {"plain": "plain", "timescaledb": "TimescaleDB"}
WINDOW = 2000

_TRIGGER = """
CREATE FUNCTION bench_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('bench_commit',
        (txid_current() % 4294967296)::text || ' ' || extract(epoch FROM clock_timestamp())::text);
    RETURN NULL;
END $$;
CREATE TRIGGER bench_commit AFTER INSERT ON person_events
    FOR EACH STATEMENT EXECUTE FUNCTION bench_notify();
"""


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait(check: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.05)


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


def _url(backend: str, name: str) -> str:
    """The URL of database ``name`` on ``backend``'s server."""
    return SERVERS[backend].rsplit("/", 1)[0] + f"/{name}"


def _timescaledb(backend: str) -> Literal["on", "off"]:
    """``HUB_TIMESCALEDB`` for a backend."""
    return "on" if backend == "timescaledb" else "off"


async def _create_db(name: str, migrate: bool, backend: str = "plain") -> None:
    conn = await asyncpg.connect(SERVERS[backend])
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    if migrate:
        await prepare_database(_url(backend, name), HubSettings(timescaledb=_timescaledb(backend)))


async def _drop_db(name: str, backend: str = "plain") -> None:
    conn = await asyncpg.connect(SERVERS[backend])
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def _sql(url: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url)
    try:
        if not args and not sql.lstrip().upper().startswith("SELECT"):
            await conn.execute(sql)  # several statements
            return []
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


def _count(url: str) -> int:
    return int(_run(_sql(url, "SELECT count(*) FROM person_events"))[0][0])


def _wait_stored(url: str, expected: int, poll_s: float) -> int:
    """Events stored once all ``expected`` are in, or once the count stood still 10 s."""
    stored, changed = 0, time.monotonic()
    while stored < expected and time.monotonic() - changed < 10:
        time.sleep(poll_s)
        now = _count(url)
        if now != stored:
            stored, changed = now, time.monotonic()
    return stored


# --- the broker -----------------------------------------------------------------------


class Broker:
    """A private Mosquitto without queue limits, or the machine's."""

    def __init__(self, kind: str) -> None:
        self.process: subprocess.Popen[bytes] | None = None
        self.dir: Path | None = None
        if kind == "system":
            self.port = 1883
            return
        self.dir = Path(tempfile.mkdtemp(prefix="bench-mosquitto-"))
        self.port = _port()
        config = self.dir / "mosquitto.conf"
        config.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
            "max_queued_messages 0\nmax_inflight_messages 0\nuser root\n"
            f"log_dest file {self.dir}/mosquitto.log\n"
        )
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.process = subprocess.Popen([binary, "-c", str(config)])

        def up() -> bool:
            with socket.socket() as sock:
                return sock.connect_ex(("127.0.0.1", self.port)) == 0

        _wait(up, 10, "mosquitto")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait()
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)


# --- commit times: LISTEN in a thread of its own ---------------------------------------


class CommitListener:
    """Receipt time of each ``bench_commit`` notification, by transaction id."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.commits: dict[int, tuple[float, float]] = {}  # xid -> (received, statement end)
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)
        self._thread.start()
        self._ready.wait(10)

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        conn = await asyncpg.connect(self.url)

        def on_notify(_c: Any, _pid: int, _channel: str, payload: str) -> None:
            now = time.time()
            xid, at = payload.split()
            self.commits[int(xid)] = (now, float(at))

        await conn.add_listener("bench_commit", on_notify)
        self._ready.set()
        await self._stop.wait()
        await conn.close()

    def close(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(5)


# --- publishers ----------------------------------------------------------------------


def _publisher(
    port: int,
    protocol: str,
    messages: list[tuple[str, bytes]],
    rate: float,
    start: Any,
    out: Any,
) -> None:
    """Publish ``messages`` (QoS 1) as fast as the window allows, or at ``rate``; send back
    the publish time of each and how long until the last PUBACK."""
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"bench-pub-{uuid.uuid4().hex[:8]}",
        protocol=mqtt.MQTTv5 if protocol == "5" else mqtt.MQTTv311,
    )
    client.max_inflight_messages_set(WINDOW)
    client.max_queued_messages_set(0)
    acked = 0

    def on_publish(*_args: Any) -> None:
        nonlocal acked
        acked += 1

    client.on_publish = on_publish
    client.connect("127.0.0.1", port)
    while not client.is_connected():
        client.loop(0.05)
    times = [0.0] * len(messages)
    start.wait()
    began = time.time()
    for i, (topic, payload) in enumerate(messages):
        if rate > 0:
            due = began + i / rate
            while (now := time.time()) < due:
                client.loop(min(0.01, due - now))
        while i - acked >= WINDOW:
            client.loop(0.01)
        times[i] = time.time()
        client.publish(topic, payload, qos=1)
        if i % 200 == 0:
            client.loop(0)
    while acked < len(messages):
        client.loop(0.01)
    finished = time.time()
    client.disconnect()
    out.send((times, finished - began))
    out.close()


def publish_all(
    port: int, protocol: str, messages: list[tuple[str, bytes]], publishers: int, rate: float = 0
) -> tuple[list[float], float]:
    """Publish from several processes at once; (publish time per message, publisher rate)."""
    ctx = mp.get_context("fork")
    start = ctx.Event()
    procs, pipes = [], []
    for p in range(publishers):
        recv, send = ctx.Pipe(duplex=False)
        share = messages[p::publishers]
        proc = ctx.Process(
            target=_publisher, args=(port, protocol, share, rate / publishers, start, send)
        )
        proc.start()
        procs.append(proc)
        pipes.append(recv)
    time.sleep(1.0)  # let them connect
    start.set()
    times = [0.0] * len(messages)
    longest = 0.0
    for p, recv in enumerate(pipes):
        part, elapsed = recv.recv()
        times[p::publishers] = part
        longest = max(longest, elapsed)
    for proc in procs:
        proc.join()
    return times, len(messages) / longest


# --- hub --------------------------------------------------------------------------------


def start_hub(
    url: str,
    root: str,
    port: int,
    protocol: str,
    batch: int,
    queue: int,
    redis: bool = True,
    backend: str = "plain",
) -> Any:
    settings = HubSettings(
        database_url=url,
        topic_root=root,
        mqtt_port=port,
        mqtt_protocol=protocol,
        mqtt_client_id=f"hub-{root}",
        mqtt_session_expiry_s=600,
        http_port=_port(),
        batch_size=batch,
        queue_size=queue,
        batch_max_wait_s=0.05,
        log_format="console",
        log_level="warning",
        timescaledb=_timescaledb(backend),
        redis_url="redis://127.0.0.1:6379/0" if redis else "",
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
    for name, value in settings.model_dump().items():
        if value is not None:
            env[f"HUB_{name.upper()}"] = str(value)
    hub = subprocess.Popen([sys.executable, "-m", "cloud_hub.cli", "serve"], env=env)

    def healthy() -> bool:
        if hub.poll() is not None:
            raise RuntimeError(f"hub exited with {hub.returncode}")
        try:
            status: int = urllib.request.urlopen(settings.api_url + "/healthz", timeout=1).status
            return status == 200
        except OSError:
            return False

    _wait(healthy, 60, "hub health")
    return hub


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Result:
    """One measurement."""

    label: str
    events: int
    stored: int = 0
    rate: float = 0.0
    publisher_rate: float = 0.0
    p50_ms: float | None = None
    p99_ms: float | None = None
    notify_gap_ms: float | None = None
    hub_cpu_s: float | None = None
    notes: list[str] = field(default_factory=list)


def _latencies(
    url: str, events: list[PersonEvent], times: list[float], commits: dict[int, tuple[float, float]]
) -> tuple[list[float], float, float]:
    """Per-event publish-to-commit seconds, last commit time, median notify gap."""
    published = {e.event_id: t for e, t in zip(events, times, strict=True)}
    rows = _run(_sql(url, "SELECT event_id, xmin::text::bigint AS x FROM person_events"))
    lat = []
    last = 0.0
    for row in rows:
        commit = commits.get(row["x"])
        sent = published.get(row["event_id"])
        if commit is None or sent is None:
            continue
        lat.append(commit[0] - sent)
        last = max(last, commit[0])
    gaps = [received - at for received, at in commits.values()]
    return lat, last, statistics.median(gaps) if gaps else 0.0


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def measure_hub(
    args: argparse.Namespace,
    broker: Broker,
    events: list[PersonEvent],
    payloads: list[bytes],
    batch: int,
    mode: str,
    redis: bool = True,
    backend: str = "plain",
) -> Result:
    """One hub run: ``live`` (publish at full speed), ``paced``, or ``drain``."""
    name = f"audience_bench_{uuid.uuid4().hex[:8]}"
    url = _url(backend, name)
    root = f"bench-{uuid.uuid4().hex[:8]}"
    messages = [
        (str(EventTopic(root, e.device_id, e.camera_id)), p)
        for e, p in zip(events, payloads, strict=True)
    ]
    result = Result(f"hub {mode}" + ("" if redis else " -redis"), len(events))
    _run(_create_db(name, migrate=True, backend=backend))
    _run(_sql(url, _TRIGGER))
    listener = CommitListener(url)
    hub_args = (url, root, broker.port, args.protocol, batch, args.queue_size, redis, backend)
    hub = start_hub(*hub_args)
    try:
        if mode == "drain":
            hub.send_signal(signal.SIGTERM)  # its session stays: the broker queues for it
            hub.wait()
            times, result.publisher_rate = publish_all(
                broker.port, args.protocol, messages, args.publishers
            )
            hub = start_hub(*hub_args)
        profiler = _profile(args, hub.pid, f"{mode}{'' if redis else '-redis'}-{batch}")
        cpu0 = _cpu_s(hub.pid)
        if mode != "drain":
            rate = args.paced_rate if mode == "paced" else 0.0
            times, result.publisher_rate = publish_all(
                broker.port, args.protocol, messages, args.publishers, rate
            )
        stored = _wait_stored(url, len(events), 0.1)
        result.hub_cpu_s = _cpu_s(hub.pid) - cpu0
        if profiler is not None:
            profiler.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
            profiler.wait(30)
        time.sleep(0.3)  # the last notifications
        result.stored = stored
        lat, last_commit, gap = _latencies(url, events, times, listener.commits)
        result.notify_gap_ms = gap * 1000
        if mode == "drain":
            stamps = sorted(received for received, _ in listener.commits.values())
            first_rows = len(events) / max(1, len(stamps))  # about one batch
            result.rate = (stored - first_rows) / (stamps[-1] - stamps[0])
        else:
            result.rate = stored / (last_commit - min(times))
            result.p50_ms, result.p99_ms = _pct(lat, 0.5), _pct(lat, 0.99)
    finally:
        hub.terminate()
        hub.wait()
        listener.close()
        _run(_drop_db(name, backend))
    return result


def _profile(args: argparse.Namespace, pid: int, label: str) -> subprocess.Popen[bytes] | None:
    """With ``--profile DIR``: py-spy samples the hub (all threads, idle excluded) into
    ``DIR/{label}.txt``, collapsed stacks that ``sort | head`` or a flame graph tool read."""
    if not args.profile:
        return None
    out = Path(args.profile)
    out.mkdir(parents=True, exist_ok=True)
    command = ["py-spy", "record", "--pid", str(pid), "--format", "raw", "--threads"]
    command += ["--rate", "250", "-o", str(out / f"{label}.txt")]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


# --- raw ceiling ---------------------------------------------------------------------


def measure_raw(events: list[PersonEvent], batch: int, backend: str = "plain") -> Result:
    """``store_batch`` straight to PostgreSQL, batch after batch, on one connection."""
    name = f"audience_bench_{uuid.uuid4().hex[:8]}"
    url = _url(backend, name)
    _run(_create_db(name, migrate=True, backend=backend))

    async def run() -> float:
        pool = await asyncpg.create_pool(url, min_size=1, max_size=1)
        try:
            started = time.perf_counter()
            for i in range(0, len(events), batch):
                await store_batch(pool, events[i : i + batch], [])
            return time.perf_counter() - started
        finally:
            await pool.close()

    try:
        elapsed = _run(run())
        stored = _count(url)
    finally:
        _run(_drop_db(name, backend))
    return Result("raw", len(events), stored, stored / elapsed)


# --- naive ORM baseline -------------------------------------------------------------------


def _orm_consumer(url: str, port: int, protocol: str, root: str, ready: Any) -> None:
    """A naive hub: per message, validate, then one ORM insert and commit; ack after it."""
    import json as _json

    from sqlalchemy import Column
    from sqlalchemy.dialects.postgresql import JSONB
    from sqlmodel import Field, Session, SQLModel, create_engine

    class EventRow(SQLModel, table=True):
        __tablename__ = "person_events"
        event_id: uuid.UUID = Field(primary_key=True)
        device_id: str
        camera_id: str
        track_id: int
        first_seen: datetime
        last_seen: datetime = Field(primary_key=True)
        dwell_s: float
        gender: str | None = None
        gender_confidence: float | None = None
        age: float | None = None
        age_low: float | None = None
        age_high: float | None = None
        age_confidence: float | None = None
        direction: str | None = None
        crops: int
        models: dict[str, str] = Field(sa_column=Column(JSONB))
        return_of: uuid.UUID | None = None

    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"orm-{root}",
        protocol=mqtt.MQTTv5 if protocol == "5" else mqtt.MQTTv311,
        manual_ack=True,
    )

    def on_message(_c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        event = PersonEvent.model_validate_json(msg.payload)
        with Session(engine) as session:
            session.add(
                EventRow(
                    event_id=event.event_id,
                    device_id=event.device_id,
                    camera_id=event.camera_id,
                    track_id=event.track_id,
                    first_seen=event.first_seen,
                    last_seen=event.last_seen,
                    dwell_s=event.dwell_s,
                    gender=event.gender.value.value if event.gender else None,
                    gender_confidence=event.gender.confidence if event.gender else None,
                    age=event.age.value if event.age else None,
                    age_low=event.age.low if event.age else None,
                    age_high=event.age.high if event.age else None,
                    age_confidence=event.age.confidence if event.age else None,
                    direction=event.direction.value if event.direction else None,
                    crops=event.crops,
                    models=_json.loads(_json.dumps(event.models)),
                    return_of=event.return_of,
                )
            )
            session.commit()
        client.ack(msg.mid, msg.qos)

    def on_connect(*_a: Any) -> None:
        client.subscribe(f"{root}/v1/+/events/+", qos=1)

    client.on_message = on_message
    client.on_connect = on_connect
    client.on_subscribe = lambda *_a: ready.set()
    client.connect("127.0.0.1", port)
    client.loop_forever()


def measure_orm(
    args: argparse.Namespace, broker: Broker, events: list[PersonEvent], backend: str = "plain"
) -> Result:
    name = f"audience_bench_{uuid.uuid4().hex[:8]}"
    url = _url(backend, name)
    root = f"bench-{uuid.uuid4().hex[:8]}"
    _run(_create_db(name, migrate=True, backend=backend))
    _run(_sql(url, _TRIGGER))
    listener = CommitListener(url)
    ctx = mp.get_context("fork")
    ready = ctx.Event()
    consumer = ctx.Process(
        target=_orm_consumer, args=(url, broker.port, args.protocol, root, ready), daemon=True
    )
    consumer.start()
    result = Result("ORM baseline", len(events))
    try:
        ready.wait(30)
        messages = [
            (str(EventTopic(root, e.device_id, e.camera_id)), e.model_dump_json().encode())
            for e in events
        ]
        times, result.publisher_rate = publish_all(broker.port, args.protocol, messages, 1)
        stored = _wait_stored(url, len(events), 0.2)
        time.sleep(0.3)
        result.stored = stored
        lat, last_commit, gap = _latencies(url, events, times, listener.commits)
        result.rate = stored / (last_commit - min(times))
        result.p50_ms, result.p99_ms = _pct(lat, 0.5), _pct(lat, 0.99)
        result.notify_gap_ms = gap * 1000
    finally:
        consumer.terminate()
        consumer.join()
        listener.close()
        _run(_drop_db(name, backend))
    return result


# --- main ---------------------------------------------------------------------------------


def make_events(n: int, seed: int) -> list[PersonEvent]:
    """``n`` simulated events over the last hour, oldest first."""
    fleet = Fleet(500, 4, seed=seed, prefix="bench")
    rng = random.Random(seed)
    now = datetime.now(UTC)
    offsets = sorted((rng.random() * 3600 for _ in range(n)), reverse=True)
    return [fleet.event(now - timedelta(seconds=s)) for s in offsets]


_LABEL = 26  # width of the run column


def _row(result: Result, batch: int | str) -> str:
    lat = (
        f"{result.p50_ms:8.0f} {result.p99_ms:8.0f}"
        if result.p50_ms is not None and result.p99_ms is not None
        else f"{'-':>8} {'-':>8}"
    )
    cpu = f"{result.hub_cpu_s / result.stored * 1e6:6.0f}" if result.hub_cpu_s else f"{'-':>6}"
    pub = f"{result.publisher_rate:9,.0f}" if result.publisher_rate else f"{'-':>9}"
    gap = f"{result.notify_gap_ms:6.1f}" if result.notify_gap_ms else f"{'-':>6}"
    return (
        f"{result.label:<{_LABEL}} {batch!s:>6} {result.stored:>7}/{result.events:<7} "
        f"{result.rate:9,.0f} {pub} {lat} {cpu} {gap}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=60_000)
    parser.add_argument("--batch-sizes", default="250,500,1000,2000")
    parser.add_argument("--publishers", type=int, default=2)
    parser.add_argument("--paced-rate", type=float, default=5000, help="0: skip the paced run")
    parser.add_argument("--orm-events", type=int, default=3000, help="0: skip the ORM baseline")
    parser.add_argument("--queue-size", type=int, default=20_000, help="HUB_QUEUE_SIZE")
    parser.add_argument("--protocol", choices=["5", "3.1.1"], default="5")
    parser.add_argument("--broker", choices=["private", "system"], default="private")
    parser.add_argument("--no-drain", action="store_true")
    parser.add_argument(
        "--backends",
        default="plain",
        help="plain, timescaledb, or plain,timescaledb: the drain runs on each (the live, "
        "paced and ORM runs on the first)",
    )
    parser.add_argument(
        "--drain-rounds", type=int, default=1, help="drain each backend this many times, in turn"
    )
    parser.add_argument(
        "--drain-only", action="store_true", help="no live runs: drain at the first batch size"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--profile", help="py-spy the hub runs into this folder (needs py-spy)")
    args = parser.parse_args()
    configure_logging("console", "warning")
    sizes = [int(s) for s in args.batch_sizes.split(",")]
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    for backend in backends:
        if backend not in SERVERS:
            parser.error(f"unknown backend {backend!r}: plain, timescaledb")
    first = backends[0]
    several = len(backends) > 1

    def named(result: Result, backend: str) -> Result:
        if several or backend != "plain":
            result.label = f"{result.label} {NAMES[backend]}"
        return result

    print(f"generating {args.events:,} simulated events ...", flush=True)
    events = make_events(args.events, args.seed)
    payloads = [e.model_dump_json().encode() for e in events]
    print(
        f"{os.cpu_count()} CPUs; protocol {args.protocol}; {args.publishers} publisher "
        f"processes; HUB_QUEUE_SIZE={args.queue_size}, HUB_BATCH_MAX_WAIT_S=0.05; "
        f"backends {', '.join(NAMES[b] for b in backends)}",
        flush=True,
    )
    header = (
        f"{'run':<{_LABEL}} {'batch':>6} {'stored':>15} {'events/s':>9} {'pub/s':>9} "
        f"{'p50 ms':>8} {'p99 ms':>8} {'hub µs/ev':>6} {'gap ms':>6}"
    )
    broker = Broker(args.broker)
    rows: list[str] = []
    verdicts: list[str] = []
    try:
        best: tuple[float, int] = (0.0, sizes[0])
        if not args.drain_only:
            for size in sizes:
                raw = named(measure_raw(events, size, first), first)
                rows.append(_row(raw, size))
                live = measure_hub(args, broker, events, payloads, size, "live", backend=first)
                rows.append(
                    _row(named(live, first), size) + f"  = {live.rate / raw.rate:.0%} of raw"
                )
                print(rows[-2] + "\n" + rows[-1], flush=True)
                best = max(best, (live.rate, size))
            size = best[1]
            live = measure_hub(
                args, broker, events, payloads, size, "live", redis=False, backend=first
            )
            rows.append(_row(named(live, first), size))
            print(rows[-1], flush=True)
        size = best[1]
        # (drain rate, raw rate) per backend and round
        drains: dict[str, list[tuple[float, float]]] = {b: [] for b in backends}
        if not args.no_drain:
            for round_ in range(args.drain_rounds):
                for backend in backends:
                    # The ceiling again, right before: the machine's load drifts.
                    raw = named(measure_raw(events, size, backend), backend)
                    rows.append(_row(raw, size))
                    print(rows[-1], flush=True)
                    # With one backend, its first round also drains without the live cache.
                    for redis in (True,) if several or round_ else (True, False):
                        drain = measure_hub(
                            args, broker, events, payloads, size, "drain", redis, backend
                        )
                        rows.append(
                            _row(named(drain, backend), size)
                            + f"  = {drain.rate / raw.rate:.0%} of raw"
                        )
                        print(rows[-1], flush=True)
                        if redis:
                            drains[backend].append((drain.rate, raw.rate))
            verdicts = _verdicts(drains, size)
        if args.paced_rate > 0:
            paced = measure_hub(args, broker, events, payloads, size, "paced", backend=first)
            paced.label = f"hub @{args.paced_rate:,.0f}/s"
            rows.append(_row(named(paced, first), size))
            print(rows[-1], flush=True)
        if args.orm_events > 0:
            orm = measure_orm(args, broker, events[: args.orm_events], first)
            rows.append(_row(named(orm, first), 1))
            print(rows[-1], flush=True)
    finally:
        broker.stop()
    print("\n" + header)
    print("\n".join(rows))
    if verdicts:
        print("\n" + "\n".join(verdicts))


def _verdicts(drains: dict[str, list[tuple[float, float]]], size: int) -> list[str]:
    """Each backend's drain against its raw rate and the 20,000/s target; with both
    backends, TimescaleDB's drain as a share of plain's and the 80 % target."""
    lines = []
    for backend, runs in drains.items():
        if not runs:
            continue
        rate = statistics.median(r for r, _ in runs)
        raw = statistics.median(w for _, w in runs)
        shares = ", ".join(f"{r / w:.0%}" for r, w in runs)
        met = rate >= 20_000 and rate >= 0.3 * raw
        lines.append(
            f"{NAMES[backend]}: one hub sustains (drain, live cache on, batch {size}"
            + (f", median of {len(runs)}" if len(runs) > 1 else "")
            + f"): {rate:,.0f} events/s = {rate / raw:.0%} of the raw {raw:,.0f}/s "
            f"(each round: {shares}); target >= 20,000/s and >= 30%: "
            + ("met" if met else "NOT met")
        )
    plain, tsdb = drains.get("plain"), drains.get("timescaledb")
    if plain and tsdb:
        ratio = statistics.median(r for r, _ in tsdb) / statistics.median(r for r, _ in plain)
        rounds = ", ".join(f"{t[0] / p[0]:.0%}" for p, t in zip(plain, tsdb, strict=False))
        raw_ratio = statistics.median(w for _, w in tsdb) / statistics.median(w for _, w in plain)
        lines.append(
            f"TimescaleDB drain = {ratio:.0%} of plain's (each round: {rounds}; raw writes: "
            f"{raw_ratio:.0%} of plain's); target >= 80%: " + ("met" if ratio >= 0.8 else "NOT met")
        )
    return lines


if __name__ == "__main__":
    main()
