"""What a read asks for: :class:`StatsFilter` (which events count) and :class:`Filters`,
the WHERE clause builder the reads share."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class StatsFilter:
    """Which events count: by device, camera, site (from ``cameras``) and dimensions.
    Its camera part alone says which cameras occupancy and the daily report read."""

    device_id: str | None = None
    camera_id: str | None = None
    site: str | None = None
    gender: str | None = None
    age_band: str | None = None
    direction: str | None = None


class Filters:
    """A WHERE clause built from optional filters, with numbered parameters."""

    def __init__(self, *preset: object) -> None:
        self.clauses: list[str] = []
        self.args: list[object] = list(preset)

    def add(self, sql: str, *values: object) -> None:
        """Append ``sql`` whose ``{}`` placeholders become the next parameter numbers."""
        numbers = [f"${len(self.args) + i + 1}" for i in range(len(values))]
        self.clauses.append(sql.format(*numbers))
        self.args.extend(values)

    def add_if_given(self, sql: str, value: object) -> None:
        """:meth:`add` ``sql`` with ``value``, unless it is None (a filter not asked for)."""
        if value is not None:
            self.add(sql, value)

    def where(self) -> str:
        """The clause, or nothing when no filter was added."""
        return f"WHERE {' AND '.join(self.clauses)}" if self.clauses else ""
