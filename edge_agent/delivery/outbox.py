"""A durable, bounded queue of messages waiting for the broker's acknowledgement.

Every person event is committed here *before* it is handed to MQTT and deleted only when
the broker's PUBACK for it arrives, so a broker that is away for an hour or an agent that
is killed mid-stream loses nothing: on the next start the rows still here are sent again,
in insertion order.

Storage is one SQLite file in WAL mode (stdlib ``sqlite3``): readers never block the
writer, and a commit is one append to the write-ahead log.

Durability: appends commit with ``synchronous=FULL`` (the WAL is fsynced, so an event
survives a power cut as well as a crash; one fsync per *person* is nothing at these
rates) and deletes with ``synchronous=NORMAL`` (a delete lost to a power cut only sends
an event twice, which the hub's idempotent insert absorbs). A SIGKILL loses nothing
under either mode: the WAL is in the OS's page cache once ``commit`` returns.

Bounded by entries and by payload bytes: when full, the oldest rows *not yet handed to
MQTT* go first (those already in flight are in paho's memory and will arrive) and a
persisted counter records how many, so the status message can report drops across
restarts.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Final

DEFAULT_STATE_DIR: Final = Path("/var/lib/edge-agent")
DB_NAME: Final = "outbox.sqlite3"

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
INSERT OR IGNORE INTO counters (name, value) VALUES ('dropped', 0);
INSERT OR IGNORE INTO counters (name, value) VALUES ('discarded', 0);
"""


def default_state_dir(system: Path = DEFAULT_STATE_DIR) -> Path:
    """``system`` (``/var/lib/edge-agent``) where this user can create and write it (a
    device's service), else the XDG state directory (a developer's machine)."""
    try:
        system.mkdir(parents=True, exist_ok=True)
        if os.access(system, os.W_OK):
            return system
    except OSError:
        pass
    base = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    return base / "edge-agent"


@dataclass(frozen=True, slots=True)
class Entry:
    """One stored message; ``id`` orders the entries as they were appended."""

    id: int
    topic: str
    payload: bytes


def _exclusive(lock_path: Path) -> IO[bytes]:
    """Hold an exclusive lock for this process's lifetime (the kernel drops it on death).

    Two agents sharing one state directory would replay each other's events; the second
    one fails at start with a message instead.
    """
    handle = lock_path.open("ab")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise RuntimeError(
            f"another agent is using {lock_path.parent} (its outbox is locked); "
            "give each agent its own state_dir"
        ) from None
    return handle


class Outbox:
    """Thread-safe: camera threads append, the publisher reads, acknowledgements delete.

    ``path=None`` keeps the queue in memory (same behaviour, no durability), for
    publishers used without a state directory.
    """

    def __init__(
        self,
        path: Path | None,
        max_entries: int = 100_000,
        max_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        if max_entries < 1 or max_bytes < 1:
            raise ValueError("outbox bounds must be positive")
        self.path = path
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._lock_file: IO[bytes] | None = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._lock_file = _exclusive(path.with_suffix(".lock"))
        self._db = sqlite3.connect(
            ":memory:" if path is None else str(path),
            check_same_thread=False,
            isolation_level=None,  # explicit BEGIN/COMMIT below
        )
        self._lock = threading.Lock()
        with self._lock:
            if path is not None:
                mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    raise RuntimeError(f"SQLite refused WAL mode for {path} (got {mode})")
            self._db.executescript(_SCHEMA)
            count, size = self._db.execute(
                "SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM outbox"
            ).fetchone()
            self._count: int = count
            self._bytes: int = size
            self._dropped: int = self._db.execute(
                "SELECT value FROM counters WHERE name = 'dropped'"
            ).fetchone()[0]
            self._discarded: int = self._db.execute(
                "SELECT value FROM counters WHERE name = 'discarded'"
            ).fetchone()[0]
        self._handed_through = 0  # ids <= this are with MQTT: evicted only as a last resort

    @classmethod
    def in_dir(cls, state_dir: Path, max_entries: int, max_bytes: int) -> Outbox:
        """The outbox file under an agent's state directory."""
        return cls(state_dir / DB_NAME, max_entries, max_bytes)

    def append(self, topic: str, payload: bytes) -> int:
        """Commit one message (durably) and return its id; evict the oldest if full."""
        size = len(payload)
        with self._lock:
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("BEGIN IMMEDIATE")
            try:
                evicted = self._evict_for(size)
                cursor = self._db.execute(
                    "INSERT INTO outbox (topic, payload) VALUES (?, ?)", (topic, payload)
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._count += 1 - evicted[0]
            self._bytes += size - evicted[1]
            self._dropped += evicted[0]
            row_id = cursor.lastrowid
            assert row_id is not None
            return row_id

    def _evict_for(self, size: int) -> tuple[int, int]:
        """Delete the oldest rows until one more of ``size`` bytes fits; (rows, bytes)."""
        rows = nbytes = 0
        while self._count - rows >= self.max_entries or (
            self._bytes - nbytes + size > self.max_bytes and self._count - rows > 0
        ):
            victim = (
                self._db.execute(
                    "SELECT id, LENGTH(payload) FROM outbox WHERE id > ? ORDER BY id LIMIT 1",
                    (self._handed_through,),
                ).fetchone()
                or self._db.execute(
                    "SELECT id, LENGTH(payload) FROM outbox ORDER BY id LIMIT 1"
                ).fetchone()
            )
            if victim is None:
                break
            self._db.execute("DELETE FROM outbox WHERE id = ?", (victim[0],))
            rows += 1
            nbytes += victim[1]
        if rows:
            self._db.execute(
                "UPDATE counters SET value = value + ? WHERE name = 'dropped'", (rows,)
            )
        return rows, nbytes

    def discard_where(self, bad: Callable[[Entry], bool]) -> list[Entry]:
        """Delete the stored entries ``bad`` says must never be sent, counting them in
        ``discarded`` (persisted, like ``dropped``); returns them. Reads every entry: for
        the start, before anything is handed to MQTT."""
        with self._lock:
            rows = self._db.execute("SELECT id, topic, payload FROM outbox ORDER BY id").fetchall()
            gone = [e for e in (Entry(i, t, bytes(p)) for i, t, p in rows) if bad(e)]
            if not gone:
                return []
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany("DELETE FROM outbox WHERE id = ?", [(e.id,) for e in gone])
                self._db.execute(
                    "UPDATE counters SET value = value + ? WHERE name = 'discarded'", (len(gone),)
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._count -= len(gone)
            self._bytes -= sum(len(e.payload) for e in gone)
            self._discarded += len(gone)
            return gone

    def read_after(self, after_id: int, limit: int) -> list[Entry]:
        """Up to ``limit`` entries with ids above ``after_id``, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, topic, payload FROM outbox WHERE id > ? ORDER BY id LIMIT ?",
                (after_id, limit),
            ).fetchall()
            if rows:
                self._handed_through = max(self._handed_through, rows[-1][0])
        return [Entry(row_id, topic, bytes(payload)) for row_id, topic, payload in rows]

    def read_ids(self, ids: Iterable[int]) -> list[Entry]:
        """The entries with these ids that are still stored (evicted ones are gone)."""
        wanted = sorted(set(ids))
        if not wanted:
            return []
        marks = ",".join("?" * len(wanted))
        with self._lock:
            rows = self._db.execute(
                f"SELECT id, topic, payload FROM outbox WHERE id IN ({marks}) ORDER BY id",
                wanted,
            ).fetchall()
        return [Entry(row_id, topic, bytes(payload)) for row_id, topic, payload in rows]

    def delete(self, ids: Iterable[int]) -> int:
        """Remove acknowledged entries (unknown ids are ignored); returns rows removed."""
        wanted = [(i,) for i in ids]
        if not wanted:
            return 0
        with self._lock:
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("BEGIN IMMEDIATE")
            try:
                removed = 0
                nbytes = 0
                for (row_id,) in wanted:
                    row = self._db.execute(
                        "DELETE FROM outbox WHERE id = ? RETURNING LENGTH(payload)", (row_id,)
                    ).fetchone()
                    if row is not None:
                        removed += 1
                        nbytes += row[0]
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._count -= removed
            self._bytes -= nbytes
            return removed

    def depth(self) -> int:
        """Entries waiting for an acknowledgement."""
        with self._lock:
            return self._count

    def size_bytes(self) -> int:
        """Payload bytes waiting for an acknowledgement."""
        with self._lock:
            return self._bytes

    @property
    def dropped(self) -> int:
        """Entries evicted because the outbox was full, over this file's whole life."""
        with self._lock:
            return self._dropped

    @property
    def discarded(self) -> int:
        """Entries deleted unsent because they must never be sent (:meth:`discard_where`),
        over this file's whole life."""
        with self._lock:
            return self._discarded

    def journal_mode(self) -> str:
        """SQLite's journal mode for this file (``wal`` on disk)."""
        with self._lock:
            return str(self._db.execute("PRAGMA journal_mode").fetchone()[0]).lower()

    def close(self) -> None:
        """Checkpoint and close the file, and let another agent take the directory."""
        with self._lock:
            self._db.close()
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None
