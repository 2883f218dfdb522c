"""The on-disk outbox: order, deletion on acknowledgement, replay, bounds, WAL."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from edge_agent.delivery.outbox import DB_NAME, Outbox, default_state_dir


def payloads(box: Outbox) -> list[bytes]:
    return [e.payload for e in box.read_after(0, 1_000_000)]


def test_entries_come_back_in_insertion_order_and_acks_delete(tmp_path: Path) -> None:
    box = Outbox(tmp_path / DB_NAME)
    ids = [box.append("t/a", f"m{i}".encode()) for i in range(5)]
    assert ids == sorted(ids)
    assert payloads(box) == [b"m0", b"m1", b"m2", b"m3", b"m4"]
    assert [e.payload for e in box.read_after(ids[1], 2)] == [b"m2", b"m3"]
    assert box.delete([ids[0], ids[2], 999_999]) == 2
    assert payloads(box) == [b"m1", b"m3", b"m4"]
    assert box.depth() == 3 and box.size_bytes() == 6
    box.close()


def test_unacknowledged_entries_survive_a_reopen_in_order(tmp_path: Path) -> None:
    path = tmp_path / "state" / DB_NAME
    box = Outbox(path)
    ids = [box.append("t/a", f"m{i}".encode()) for i in range(4)]
    box.delete([ids[1]])
    box.close()
    again = Outbox(path)
    assert payloads(again) == [b"m0", b"m2", b"m3"]
    assert again.depth() == 3
    assert again.append("t/a", b"m4") > ids[-1], "ids keep growing after a reopen"
    again.close()


def test_a_full_outbox_drops_the_oldest_and_counts_them_across_restarts(
    tmp_path: Path,
) -> None:
    path = tmp_path / DB_NAME
    box = Outbox(path, max_entries=3)
    for i in range(5):
        box.append("t/a", f"m{i}".encode())
    assert payloads(box) == [b"m2", b"m3", b"m4"]
    assert box.dropped == 2
    box.close()
    again = Outbox(path, max_entries=3)
    assert again.dropped == 2
    again.append("t/a", b"m5")
    assert again.dropped == 3 and payloads(again) == [b"m3", b"m4", b"m5"]
    again.close()


def test_the_byte_bound_drops_the_oldest(tmp_path: Path) -> None:
    box = Outbox(tmp_path / DB_NAME, max_entries=100, max_bytes=25)
    for i in range(4):
        box.append("t/a", bytes([65 + i]) * 10)
    assert payloads(box) == [b"C" * 10, b"D" * 10]
    assert box.dropped == 2 and box.size_bytes() == 20
    box.close()


def test_entries_already_handed_to_mqtt_are_evicted_last(tmp_path: Path) -> None:
    box = Outbox(tmp_path / DB_NAME, max_entries=3)
    for i in range(3):
        box.append("t/a", f"m{i}".encode())
    box.read_after(0, 1)  # m0 is with paho: it will arrive, so drop m1 instead
    box.append("t/a", b"m3")
    assert payloads(box) == [b"m0", b"m2", b"m3"]
    assert box.dropped == 1
    box.close()


def test_the_file_is_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / DB_NAME
    box = Outbox(path)
    box.append("t/a", b"x")
    assert box.journal_mode() == "wal"
    with sqlite3.connect(path) as other:
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    box.close()


def test_concurrent_appends_and_deletes_keep_every_entry_once(tmp_path: Path) -> None:
    box = Outbox(tmp_path / DB_NAME)
    per_thread = 200

    def writer(n: int) -> None:
        for i in range(per_thread):
            box.append(f"t/{n}", f"{n}-{i}".encode())

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    seen: list[bytes] = []
    cursor = 0
    while any(t.is_alive() for t in threads) or box.depth():
        batch = box.read_after(cursor, 50)
        if batch:
            cursor = batch[-1].id
            seen += [e.payload for e in batch]
            box.delete(e.id for e in batch)
    assert sorted(seen) == sorted(f"{n}-{i}".encode() for n in range(4) for i in range(200))
    for n in range(4):  # each writer's entries in its own order
        mine = [p for p in seen if p.startswith(f"{n}-".encode())]
        assert mine == [f"{n}-{i}".encode() for i in range(per_thread)]
    box.close()


def test_bounds_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="positive"):
        Outbox(tmp_path / DB_NAME, max_entries=0)


def test_the_state_dir_falls_back_to_the_users_when_the_system_one_is_unusable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    usable = tmp_path / "var-lib" / "edge-agent"
    assert default_state_dir(usable) == usable and usable.is_dir()
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert default_state_dir(blocked / "edge-agent") == tmp_path / "xdg" / "edge-agent"


def test_a_second_agent_cannot_share_the_state_dir(tmp_path: Path) -> None:
    first = Outbox.in_dir(tmp_path, 10, 1_000_000)
    with pytest.raises(RuntimeError, match="another agent"):
        Outbox.in_dir(tmp_path, 10, 1_000_000)
    first.close()
    Outbox.in_dir(tmp_path, 10, 1_000_000).close()  # free again once the first closed
