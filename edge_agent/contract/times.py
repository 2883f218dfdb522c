"""Which message times a receiver accepts: one rule, shared by the agent and the hub.

A device without a real-time clock boots at 1970 and a clock can run ahead; neither
gives data. Every time a message carries is checked against :class:`TimeBounds`, and
every time is held in UTC (:data:`UtcDatetime`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Final

from pydantic import AfterValidator, AwareDatetime

# An event stamped further in the future than this is a clock fault, not data.
MAX_CLOCK_SKEW: Final = timedelta(minutes=10)
# An event stamped before this is a clock that was never set (a device without a
# real-time clock boots at 1970), not data. The hub may lower or raise it
# (``HUB_EARLIEST_EVENT``); the agent holds events until its clock is past it.
EARLIEST_EVENT_TIME: Final = datetime(2020, 1, 1, tzinfo=UTC)


class EventTimeError(ValueError):
    """A message's time is outside what a hub accepts: before the earliest time (a clock
    that was never set) or beyond the clock-skew bound (a clock that runs ahead)."""


@dataclass(frozen=True, slots=True)
class TimeBounds:
    """The one rule for acceptable message times, shared by the agent and the hub.

    A time must be at or after ``earliest`` and at most ``max_skew`` ahead of the
    receiver's clock. Every time a message carries is checked, so whatever the database
    stores can be turned into hours, days and series without overflowing.
    """

    earliest: datetime = EARLIEST_EVENT_TIME
    max_skew: timedelta = MAX_CLOCK_SKEW

    def check(self, what: str, moment: datetime | None, now: datetime | None = None) -> None:
        """Raise :class:`EventTimeError` saying why ``moment`` is not acceptable."""
        if moment is None:
            return
        if moment < self.earliest:
            raise EventTimeError(
                f"{what} {moment.isoformat()} is before the earliest accepted time "
                f"{self.earliest.isoformat()} (was the device's clock set?)"
            )
        if moment > (now or datetime.now(UTC)) + self.max_skew:
            raise EventTimeError(
                f"{what} {moment.isoformat()} is in the future beyond the allowed clock "
                f"skew of {self.max_skew.total_seconds():.0f} s"
            )

    def clock_is_set(self, now: datetime | None = None) -> bool:
        """Whether a device's wall clock can stamp events yet (it is past ``earliest``)."""
        return (now or datetime.now(UTC)) >= self.earliest


DEFAULT_TIME_BOUNDS: Final = TimeBounds()


def _utc(value: datetime) -> datetime:
    try:
        return value.astimezone(UTC)
    except OverflowError as exc:  # 0001-01-01T00:00+14:00 is in year 0 in UTC
        raise ValueError(f"{value.isoformat()} is outside the years 1-9999 in UTC") from exc


UtcDatetime = Annotated[AwareDatetime, AfterValidator(_utc)]
