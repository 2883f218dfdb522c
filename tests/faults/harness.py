"""Private services for fault tests: a Mosquitto and a PostgreSQL of our own to break.

The shared broker and database on 1883/5432 serve every other test and must never be
stopped, so each fault test gets a Mosquitto on a free port (persistence on, in its own
directory) and the session gets a PostgreSQL cluster on a free port, both real server
processes that the tests stop, kill and restart. PostgreSQL refuses to run as root, so
as root its commands run as the ``postgres`` OS user, in a directory that user owns.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import asyncpg
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from edge_agent.contract import EventTopic, PersonEvent, events_subscription
from edge_agent.delivery.outbox import DB_NAME, Outbox
from tests.conftest import free_port, wait_until

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
PG_BIN = Path(os.environ.get("TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


class PrivateMosquitto:
    """A Mosquitto on its own port with persistence in its own directory.

    No per-client queue limit (``max_queued_messages 0``): the guarantee under test
    ends where the broker drops messages, and docs/hub.md asks for this setting.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        directory.mkdir(parents=True, exist_ok=True)
        self.config = directory / "mosquitto.conf"
        self.config.write_text(
            "\n".join(
                [
                    f"listener {self.port} 127.0.0.1",
                    "allow_anonymous true",
                    "persistence true",
                    f"persistence_location {directory}/",
                    "max_queued_messages 0",
                    "max_inflight_messages 100",
                    f"log_dest file {directory}/mosquitto.log",
                    "log_type error",
                    "log_type warning",
                    "log_type notice",
                    "log_type information",
                    # As root, Mosquitto would switch to the `mosquitto` user, which cannot
                    # write here; elsewhere this line is ignored.
                    "user root",
                ]
            )
            + "\n"
        )
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        """Start (or restart) on the same port; wait until it accepts connections."""
        assert self.process is None or self.process.poll() is not None, "already running"
        out = (self.directory / f"stdout-{self.starts}.log").open("wb")
        self.process = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.config)], stdout=out, stderr=subprocess.STDOUT
        )
        out.close()
        self.starts += 1
        process = self.process

        def up() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"mosquitto exited with {process.returncode}: {self.log()}")
            return port_open(self.port)

        wait_until(up, 10, f"mosquitto on port {self.port}")

    def pause(self) -> None:
        """SIGSTOP: connections stay open but nothing is read or acknowledged."""
        assert self.process is not None and self.process.poll() is None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after :meth:`pause`."""
        assert self.process is not None and self.process.poll() is None
        self.process.send_signal(signal.SIGCONT)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop it (SIGTERM: a clean shutdown that writes the persistence file)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)  # a paused broker cannot act on SIGTERM
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log(self) -> str:
        """What Mosquitto logged so far."""
        path = self.directory / "mosquitto.log"
        return path.read_text(errors="replace") if path.exists() else ""


class PrivatePostgres:
    """A PostgreSQL 15 cluster in a temporary directory, listening on 127.0.0.1 only."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="faults-pg-", dir="/tmp"))
        self.data = self.root / "data"
        self.logfile = self.root / "postgres.log"
        self.port = free_port()
        self._as_root = os.geteuid() == 0
        if self._as_root:
            shutil.chown(self.root, "postgres", "postgres")
        atexit.register(self.destroy)  # even when the session is interrupted
        self._run(
            [
                str(PG_BIN / "initdb"),
                "-D",
                str(self.data),
                "-U",
                "postgres",
                "-A",
                "trust",
                "--no-sync",
                "-E",
                "UTF8",
            ]
        )

    def _run(self, argv: list[str]) -> None:
        if self._as_root:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        result = subprocess.run(argv, capture_output=True, timeout=120, check=False)
        assert result.returncode == 0, (argv, result.stdout[-2000:], result.stderr[-2000:])

    def url(self, database: str) -> str:
        """The connection URL of one database on this server."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        """Start the server (same data, same port) and wait until it accepts connections."""
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} -c fsync=off"
        pg_ctl = [str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.logfile)]
        self._run([*pg_ctl, "-o", options, "-w", "-t", "60", "start"])

    def stop(self, mode: str = "fast") -> None:
        """``pg_ctl stop -m fast``: connections are cut, the server shuts down cleanly."""
        self._run([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"])

    def running(self) -> bool:
        """Whether the server accepts TCP connections."""
        return port_open(self.port)

    def destroy(self) -> None:
        """Stop the server if it runs and remove its files."""
        if (self.data / "postmaster.pid").exists():
            with contextlib.suppress(AssertionError):
                self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


class StreamPublisher:
    """Publishes events like an agent: QoS 1, paho's automatic reconnect, and every message
    the broker has not acknowledged kept and sent again after reconnecting.

    ``stream`` paces the events so faults land mid-stream; ``wait_all_acknowledged``
    waits for a PUBACK for each.
    """

    def __init__(self, port: int, topic_root: str, host: str = "127.0.0.1") -> None:
        self.topic_root = topic_root
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"fault-pub-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv5,
        )
        self._client.reconnect_delay_set(min_delay=1, max_delay=2)
        self._client.on_publish = self._on_publish
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._lock = threading.Lock()
        self._pending: set[int] = set()
        self._acked_early: set[int] = set()
        self.connected = threading.Event()
        self.connects = 0
        self.disconnects = 0
        self.sent = 0
        self._client.connect_async(host, port, keepalive=5)
        self._client.loop_start()
        assert self.connected.wait(10), "publisher could not connect"

    def _on_connect(self, *args: object) -> None:
        reason = args[3]
        if isinstance(reason, ReasonCode) and not reason.is_failure:
            self.connects += 1
            self.connected.set()

    def _on_disconnect(self, *_args: object) -> None:
        self.disconnects += 1
        self.connected.clear()

    def _on_publish(self, *args: object) -> None:
        mid = args[2]
        assert isinstance(mid, int)
        with self._lock:
            if mid in self._pending:
                self._pending.discard(mid)
            else:
                self._acked_early.add(mid)

    def publish(self, event: PersonEvent) -> None:
        """Hand one event to paho (sent now, or kept and sent once reconnected)."""
        topic = str(EventTopic(self.topic_root, event.device_id, event.camera_id))
        info = self._client.publish(topic, event.model_dump_json(), qos=1)
        with self._lock:
            if info.mid in self._acked_early:
                self._acked_early.discard(info.mid)
            else:
                self._pending.add(info.mid)
            self.sent += 1

    def stream(self, events: Sequence[PersonEvent], per_second: float) -> None:
        """Publish ``events`` at a steady rate (blocks until the last one is handed over)."""
        start = time.monotonic()
        for i, event in enumerate(events):
            delay = start + i / per_second - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            self.publish(event)

    def unacknowledged(self) -> int:
        """Messages the broker has not acknowledged yet."""
        with self._lock:
            return len(self._pending)

    def wait_all_acknowledged(self, timeout_s: float = 60.0) -> None:
        """Wait until the broker has acknowledged every message."""
        wait_until(lambda: self.unacknowledged() == 0, timeout_s, "PUBACK for every event")

    def close(self) -> None:
        """Disconnect and stop the network thread."""
        self._client.disconnect()
        self._client.loop_stop()


def count_events(url: str, ids: Sequence[uuid.UUID] | None = None) -> tuple[int, int]:
    """(rows, distinct event ids) in ``person_events``, optionally only among ``ids``."""

    async def run() -> tuple[int, int]:
        conn = await asyncpg.connect(url)
        try:
            if ids is None:
                row = await conn.fetchrow(
                    "SELECT count(*), count(DISTINCT event_id) FROM person_events"
                )
            else:
                row = await conn.fetchrow(
                    "SELECT count(*), count(DISTINCT event_id) FROM person_events"
                    " WHERE event_id = ANY($1::uuid[])",
                    list(ids),
                )
            assert row is not None
            return int(row[0]), int(row[1])
        finally:
            await conn.close()

    return asyncio.run(run())


def try_count_events(url: str) -> tuple[int, int] | None:
    """Like :func:`count_events`, or None while the database is unreachable or not migrated."""
    try:
        return count_events(url)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
        return None


class EventWatcher:
    """Every event id delivered on the private broker under a topic root (plain QoS 1
    subscription beside the hub's): an independent record of what the agent sent."""

    def __init__(self, port: int, topic_root: str) -> None:
        self._ids: list[str] = []
        self._lock = threading.Lock()
        subscribed = threading.Event()
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"fault-watch-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv5,
        )
        self._client.on_message = self._on_message
        self._client.on_subscribe = lambda *_: subscribed.set()
        self._client.connect("127.0.0.1", port)
        self._client.subscribe(events_subscription(topic_root), qos=1)
        self._client.loop_start()
        assert subscribed.wait(10), "could not subscribe"

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        event_id = json.loads(msg.payload)["event_id"]
        with self._lock:
            self._ids.append(event_id)

    def ids(self) -> list[str]:
        """Event ids in arrival order (a redelivered one appears again)."""
        with self._lock:
            return list(self._ids)

    def close(self) -> None:
        """Disconnect."""
        self._client.disconnect()
        self._client.loop_stop()


def outbox_ids(state_dir: Path) -> list[str]:
    """Event ids in an agent's outbox now (read while the agent runs: WAL allows it)."""
    with contextlib.closing(sqlite3.connect(state_dir / DB_NAME, timeout=10)) as db:
        rows = db.execute("SELECT payload FROM outbox ORDER BY id").fetchall()
    return [json.loads(payload)["event_id"] for (payload,) in rows]


def journal_outbox(state_dir: Path) -> None:
    """Before the agent's first start: make its outbox file and add a journal the agent
    knows nothing of, a table that a trigger fills with every row inserted into the
    outbox, in the inserting transaction itself.

    It only grows and the agent never touches it, so it records every event the agent
    ever committed, also one the agent deleted before the broker's PUBACK: the expected
    set of a "nothing lost" test, which the outbox as left after a kill cannot be.
    """
    Outbox(state_dir / DB_NAME).close()  # the agent's own schema
    with contextlib.closing(sqlite3.connect(state_dir / DB_NAME, timeout=10)) as db:
        db.executescript(
            """
            CREATE TABLE IF NOT EXISTS test_journal (id INTEGER PRIMARY KEY, payload BLOB);
            CREATE TRIGGER IF NOT EXISTS test_journal_insert AFTER INSERT ON outbox
            BEGIN
                INSERT INTO test_journal (id, payload) VALUES (NEW.id, NEW.payload);
            END;
            """
        )


def journal_ids(state_dir: Path) -> list[str]:
    """Event ids of every row the agent ever wrote to its outbox (:func:`journal_outbox`),
    in the order written."""
    with contextlib.closing(sqlite3.connect(state_dir / DB_NAME, timeout=10)) as db:
        rows = db.execute("SELECT payload FROM test_journal ORDER BY id").fetchall()
    return [json.loads(payload)["event_id"] for (payload,) in rows]


def outbox_totals(state_dir: Path) -> tuple[int, int, int]:
    """(entries ever appended, entries dropped for space, entries still queued).

    The outbox table is AUTOINCREMENT, so ``sqlite_sequence`` holds the highest id ever
    given out: the number of events the agent ever wrote there.
    """
    with contextlib.closing(sqlite3.connect(state_dir / DB_NAME, timeout=10)) as db:
        row = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'").fetchone()
        dropped = db.execute("SELECT value FROM counters WHERE name = 'dropped'").fetchone()
        depth = db.execute("SELECT count(*) FROM outbox").fetchone()
    return (0 if row is None else int(row[0])), int(dropped[0]), int(depth[0])


def write_agent_config(
    path: Path, topic_root: str, device: str, port: int, state_dir: Path, source: Path
) -> Path:
    """An agent on one looping file camera, publishing to ``127.0.0.1:port``."""
    path.write_text(
        f"""device_id = "{device}"
state_dir = {json.dumps(str(state_dir))}

[mqtt]
host = "127.0.0.1"
port = {port}
topic_root = "{topic_root}"
keepalive_s = 5

[[cameras]]
id = "door"
source = {json.dumps(str(source))}
loop = true
"""
    )
    return path


def start_agent(config: Path, log: Path) -> subprocess.Popen[bytes]:
    """``edge-agent run --config`` with JSON logs to ``log``."""
    with log.open("ab") as out:
        command = [sys.executable, "-m", "edge_agent.cli", "--log-format", "json", "run"]
        return subprocess.Popen(
            [*command, "--config", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def device_event_ids(url: str, device: str) -> list[str]:
    """Every ``event_id`` row stored for ``device`` (duplicates would appear twice)."""

    async def run() -> list[str]:
        conn = await asyncpg.connect(url)
        try:
            rows = await conn.fetch(
                "SELECT event_id FROM person_events WHERE device_id = $1", device
            )
            return [str(r[0]) for r in rows]
        finally:
            await conn.close()

    return asyncio.run(run())
