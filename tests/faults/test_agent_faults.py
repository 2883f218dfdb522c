"""Faults at the edge: the real agent (``edge-agent run``, durable outbox) killed, or cut
off from the broker for a minute, while it counts people on a looping clip.

The known set is every event the agent ever wrote to its outbox, recorded as it was
written by a journal the agent cannot see or erase (a trigger on its outbox table,
``harness.journal_outbox``), not read from the outbox after the fault: a row the agent
deleted before its PUBACK would be gone from there. ``sqlite_sequence`` (AUTOINCREMENT)
cross-checks the count. Every journaled event must reach the broker (an independent
subscriber) and be in the hub's database exactly once, and nothing else.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from tests.conftest import free_port, wait_until
from tests.faults.conftest import FaultRig
from tests.faults.harness import (
    EventWatcher,
    device_event_ids,
    journal_ids,
    journal_outbox,
    outbox_ids,
    outbox_totals,
    start_agent,
    write_agent_config,
)
from tests.paths import WALK_AND_PAUSE
from tests.relay import Relay


def _stop(agent: subprocess.Popen[bytes]) -> int:
    """SIGTERM: the agent publishes people still in view and waits for PUBACKs."""
    if agent.poll() is None:
        agent.send_signal(signal.SIGTERM)
    return agent.wait(timeout=90)


def _alive(agent: subprocess.Popen[bytes], log: Path) -> None:
    if agent.poll() is not None:
        raise AssertionError(f"the agent exited ({agent.returncode}):\n{log.read_text()[-3000:]}")


def _stored_at_least(
    rig: FaultRig, device: str, count: int, agent: subprocess.Popen[bytes], log: Path
) -> bool:
    _alive(agent, log)
    return len(device_event_ids(rig.database_url, device)) >= count


def _written_at_least(state: Path, count: int, agent: subprocess.Popen[bytes], log: Path) -> bool:
    _alive(agent, log)
    return outbox_totals(state)[0] >= count


def _queued_at_least(state: Path, count: int, agent: subprocess.Popen[bytes], log: Path) -> bool:
    _alive(agent, log)
    return outbox_totals(state)[2] >= count


def _wait_delivered(watcher: EventWatcher, state: Path, timeout_s: float = 30.0) -> None:
    """Give the broker's subscriber time to see every journaled event (the assertion on
    what is missing comes in :func:`_verify`, with the numbers)."""
    deadline = time.monotonic() + timeout_s
    while set(journal_ids(state)) - set(watcher.ids()) and time.monotonic() < deadline:
        time.sleep(0.2)


def _verify(
    rig: FaultRig,
    device: str,
    state: Path,
    watcher: EventWatcher,
    capsys: pytest.CaptureFixture[str],
    case: str,
    details: str,
) -> None:
    written, dropped, queued = outbox_totals(state)
    journal = journal_ids(state)
    at_broker = set(watcher.ids())
    never_sent = [i for i in journal if i not in at_broker]
    with contextlib.suppress(AssertionError):  # what is missing is asserted below
        wait_until(
            lambda: len(device_event_ids(rig.database_url, device)) >= len(set(journal)),
            60,
            f"{len(journal)} events in the database",
        )
    time.sleep(1.0)  # a duplicate or a stray row would show up now
    rows = device_event_ids(rig.database_url, device)
    with capsys.disabled():
        print(
            f"\n[fault {case}] written_to_outbox={written} journaled={len(journal)}"
            f" at_broker={len(at_broker)} never_reached_broker={len(never_sent)}"
            f" rows={len(rows)} distinct_event_ids={len(set(rows))} dropped={dropped}"
            f" still_queued={queued} {details}"
        )
    assert dropped == 0 and queued == 0, "the outbox neither dropped nor kept anything"
    assert len(journal) == len(set(journal)) == written, "the journal saw every insert"
    assert not never_sent, f"{len(never_sent)} events the agent wrote never reached the broker"
    assert len(rows) == len(set(rows)) == written, "each stored once, nothing lost"
    assert set(rows) == set(journal), "exactly the events the agent wrote"


def test_agent_killed_mid_stream_and_restarted(
    rig: FaultRig, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """(b) SIGKILL while events flow and some await their PUBACK: what the outbox held is
    sent again by the next run, and what reached the broker anyway is stored once."""
    hub = rig.start_hub()
    device = f"agent-kill-{uuid.uuid4().hex[:6]}"
    state = tmp_path / "state"
    watcher = EventWatcher(rig.broker.port, rig.topic_root)
    config = write_agent_config(
        tmp_path / "agent.toml", rig.topic_root, device, rig.broker.port, state, WALK_AND_PAUSE
    )
    journal_outbox(state)
    log = tmp_path / "agent-1.log"
    agent = start_agent(config, log)
    try:
        wait_until(
            lambda: _stored_at_least(rig, device, 4, agent, log),
            180,
            "the agent's first events stored",
        )
        # The broker stalls (SIGSTOP) so PUBACKs stop: events pile up unacknowledged in
        # the outbox, and some already sit in the broker's socket buffer. Then SIGKILL.
        rig.broker.pause()
        try:
            wait_until(
                lambda: _queued_at_least(state, 3, agent, log),
                120,
                "unacknowledged events in the outbox",
            )
            agent.kill()
            assert agent.wait(timeout=30) == -signal.SIGKILL
        finally:
            rig.broker.resume()
        in_outbox_at_kill = outbox_ids(state)
        written_first = outbox_totals(state)[0]

        log = tmp_path / "agent-2.log"
        agent = start_agent(config, log)
        wait_until(
            lambda: _written_at_least(state, written_first + 4, agent, log),
            180,
            "the restarted agent writing new events",
        )
        assert _stop(agent) == 0, log.read_text()[-3000:]
        _wait_delivered(watcher, state)
    finally:
        if agent.poll() is None:
            agent.kill()
        watcher.close()
    _verify(
        rig,
        device,
        state,
        watcher,
        capsys,
        "b: agent SIGKILL",
        f"written_before_kill={written_first} in_outbox_at_kill={len(in_outbox_at_kill)}"
        f" duplicates_ignored_by_hub={hub.metric('hub_events_duplicate_total'):.0f}",
    )
    assert len(in_outbox_at_kill) >= 3


def test_device_offline_for_a_minute(
    rig: FaultRig, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """(e) The device's network gone for 60 s (a relay between agent and broker cut):
    the agent keeps counting into its outbox and sends it all once it is back."""
    rig.start_hub()
    device = f"agent-offline-{uuid.uuid4().hex[:6]}"
    state = tmp_path / "state"
    watcher = EventWatcher(rig.broker.port, rig.topic_root)
    relay = Relay(free_port(), rig.broker.port)
    config = write_agent_config(
        tmp_path / "agent.toml", rig.topic_root, device, relay.port, state, WALK_AND_PAUSE
    )
    journal_outbox(state)
    log = tmp_path / "agent.log"
    agent = start_agent(config, log)
    try:
        wait_until(
            lambda: _stored_at_least(rig, device, 4, agent, log),
            180,
            "the agent's first events stored",
        )
        relay.down()
        offline_since = time.monotonic()
        written_at_cut = outbox_totals(state)[0]
        time.sleep(60.0)
        _alive(agent, log)
        # Totals first, ids second: the agent keeps writing, so the ids read later can
        # only be more, never fewer, unless something was sent while offline.
        written_offline = outbox_totals(state)[0] - written_at_cut
        queued_offline = outbox_ids(state)
        offline_s = time.monotonic() - offline_since
        relay.up()
        wait_until(lambda: outbox_totals(state)[2] == 0, 120, "the outbox drained")
        assert _stop(agent) == 0, log.read_text()[-3000:]
        _wait_delivered(watcher, state)
    finally:
        if agent.poll() is None:
            agent.kill()
        relay.close()
        watcher.close()
    assert written_offline >= 5, "the agent kept counting people while offline"
    assert len(queued_offline) >= written_offline, "nothing got through while offline"
    _verify(
        rig,
        device,
        state,
        watcher,
        capsys,
        "e: device offline 60 s",
        f"offline_s={offline_s:.0f} written_while_offline={written_offline}"
        f" queued_at_reconnect={len(queued_offline)}",
    )
