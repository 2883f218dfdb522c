"""The agent's one rule for time stamps: no event leaves stamped before the clock was set.

A device without a real-time clock boots at 1970 and tells the time only once NTP has
synced, and a hub dead-letters anything stamped before the contract's
``EARLIEST_EVENT_TIME`` (``TimeBounds``). So the agent measures when things happen on the
monotonic clock, which is right from boot and never jumps, and turns a monotonic instant
into wall time with the offset between the two clocks at the moment of conversion::

    wall(event) = wall_now - (mono_now - mono_event)

Once the wall clock is set that offset is known, so an event seen before NTP synced gets
its true time afterwards. :class:`ClockGate` is where every event of the service passes:
stamped on a set clock, it goes straight on; otherwise it waits (in memory, bounded) and
is re-stamped and published in order as soon as the clock is set. An event that cannot be
re-stamped (no monotonic time: the monotonic clock of the boot that saw it is gone) is
never published; it is counted and logged.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

import structlog

from edge_agent.contract import DEFAULT_TIME_BOUNDS, PersonEvent, TimeBounds

log = structlog.get_logger(__name__)

#: Events held while the clock is not set; beyond it the oldest go (counted).
MAX_HELD: Final = 10_000
#: How often a gate holding events looks at the clock.
CHECK_INTERVAL_S: Final = 1.0

# Reasons in ``ClockGate.discarded`` (and the ``edge_agent_events_discarded_total`` metric).
HOLD_FULL: Final = "clock_hold_full"
NEVER_SET: Final = "clock_never_set"
UNFIXABLE: Final = "clock_unset_stamp"


def _system_wall() -> datetime:
    return datetime.now(UTC)


class AgentClock:
    """Wall and monotonic time, injectable for tests (never change the system clock)."""

    def __init__(
        self,
        wall: Callable[[], datetime] = _system_wall,
        mono: Callable[[], float] = time.monotonic,
        bounds: TimeBounds = DEFAULT_TIME_BOUNDS,
    ) -> None:
        self._wall = wall
        self._mono = mono
        self.bounds = bounds

    def monotonic(self) -> float:
        """Seconds on the monotonic clock (what frames and tracks are measured on)."""
        return self._mono()

    def now(self) -> datetime:
        """The wall clock now, right or not."""
        return self._wall()

    def is_set(self) -> bool:
        """Whether the wall clock can stamp events (it is past the contract's earliest)."""
        return self.bounds.clock_is_set(self._wall())

    def wall_at(self, mono: float) -> datetime:
        """The wall time of monotonic instant ``mono``, by today's offset between the two
        clocks; before the clock is set this is as wrong as the clock."""
        return self.converter()(mono)

    def converter(self) -> Callable[[float], datetime]:
        """``wall_at`` with the clocks read once, so the times of one event keep their
        exact distance from each other."""
        wall, now = self._wall(), self._mono()
        return lambda mono: wall - timedelta(seconds=now - mono)

    def stamped_on_set_clock(self, event: PersonEvent) -> bool:
        """Whether ``event``'s times came from a set clock (``first_seen`` is the earlier)."""
        return self.bounds.clock_is_set(event.first_seen)

    def payload_stamped_before_set(self, payload: bytes) -> bool:
        """Whether a stored event's JSON is stamped before the clock can have been set
        (an entry a previous boot wrote at 1970: its monotonic times are gone with that
        boot, so it can never be fixed). Anything unreadable is left to the hub."""
        try:
            first_seen = datetime.fromisoformat(str(json.loads(payload)["first_seen"]))
        except (ValueError, KeyError, TypeError):
            return False
        if first_seen.tzinfo is None:
            return False
        return not self.bounds.clock_is_set(first_seen)


SYSTEM_CLOCK: Final = AgentClock()

# Where an event goes next (the publisher's publish, a test's list.append); the scheduler
# and the runner take the same.
PublishFn = Callable[[PersonEvent], None]


@dataclass(frozen=True, slots=True)
class _Held:
    event: PersonEvent
    first_mono: float
    last_mono: float


class ClockGate:
    """Between the pipeline and the publisher: holds events stamped before the clock was
    set and publishes them re-stamped, in order, once it is. Thread-safe."""

    def __init__(
        self, publish: PublishFn, clock: AgentClock = SYSTEM_CLOCK, limit: int = MAX_HELD
    ) -> None:
        self.publish = publish
        self.clock = clock
        self.limit = limit
        self.restamped = 0
        self.discarded: Counter[str] = Counter()
        self._held: deque[_Held] = deque()
        self._lock = threading.Lock()

    def offer(self, event: PersonEvent, first_mono: float | None, last_mono: float | None) -> None:
        """Publish ``event`` now if it can be; else hold it until the clock is set.

        ``first_mono``/``last_mono`` are its times on the monotonic clock (``None`` when
        it has none, e.g. times from a file's own timeline: such an event is published
        as it is if its stamps are plausible, and dropped, counted, if not).
        """
        with self._lock:
            self._release_locked()
            plausible = self.clock.stamped_on_set_clock(event)
            if plausible and (not self._held or first_mono is None):
                self.publish(event)
                return
            if first_mono is None or last_mono is None:
                self._discard(UNFIXABLE, event)
                return
            if len(self._held) >= self.limit:
                self._discard(HOLD_FULL, self._held.popleft().event)
            if not self._held:
                log.warning(
                    "events_held_clock_not_set",
                    clock=self.clock.now().isoformat(),
                    earliest=self.clock.bounds.earliest.isoformat(),
                )
            self._held.append(_Held(event, first_mono, last_mono))
            self._release_locked()

    def release(self) -> int:
        """If the clock is set now, publish every held event re-stamped; returns how many."""
        with self._lock:
            return self._release_locked()

    def held(self) -> int:
        """Events waiting for the clock."""
        with self._lock:
            return len(self._held)

    def run(self, stop: threading.Event, interval_s: float = CHECK_INTERVAL_S) -> None:
        """Look at the clock every ``interval_s`` until ``stop`` (a thread's target)."""
        while not stop.wait(interval_s):
            try:
                self.release()
            except Exception:
                log.exception("clock_gate_failed")

    def close(self) -> int:
        """Release what can be; what still waits is lost with the process (its monotonic
        times mean nothing after it): counted and logged. Returns how many were lost."""
        with self._lock:
            self._release_locked()
            lost = len(self._held)
            if lost:
                self.discarded[NEVER_SET] += lost
                log.error(
                    "events_lost_clock_never_set",
                    count=lost,
                    clock=self.clock.now().isoformat(),
                )
            self._held.clear()
            return lost

    def _release_locked(self) -> int:
        if not self._held or not self.clock.is_set():
            return 0
        released = 0
        wall_at = self.clock.converter()
        while self._held:
            item = self._held.popleft()
            event = item.event.model_copy(
                update={
                    "first_seen": wall_at(item.first_mono),
                    "last_seen": wall_at(item.last_mono),
                }
            )
            self.publish(event)
            released += 1
        self.restamped += released
        log.info("events_restamped_clock_set", count=released)
        return released

    def _discard(self, reason: str, event: PersonEvent) -> None:
        self.discarded[reason] += 1
        log.error(
            "event_discarded_bad_clock",
            reason=reason,
            event_id=str(event.event_id),
            first_seen=event.first_seen.isoformat(),
        )
