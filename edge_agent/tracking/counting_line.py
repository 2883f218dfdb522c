"""A camera's counting line: which way a face's centre crossed it, if it did.

The line is a directed segment ``a -> b`` in normalised frame coordinates (0..1, x to the
right, y *down*, as on the screen). Stand on ``a`` and look toward ``b``: ``in_side`` says
whether the left or the right hand side of the segment is "in". With
``line = [[0.0, 0.5], [1.0, 0.5]]`` (left edge to right edge across the middle) the left
hand side is the upper half of the picture and the right hand side the lower half.

A track's centre has a side only when it is more than ``tolerance`` (frame fraction) from
the line; inside that band it keeps the side it had (hysteresis), so a face hovering on
the line does not flip. A step from one side to the other counts as a crossing only when
it passes through the segment itself, not its extension. A track went "in" or "out"
when the side at first sight differs from the side at last sight and its crossings of
the segment add up to one net crossing that way. The state per track is a few numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from edge_agent.config import AgentConfig
from edge_agent.contract import Direction

Point = tuple[float, float]
Side = Literal[-1, 0, 1]  # -1 left, +1 right of a -> b; 0 within the tolerance band

DEFAULT_TOLERANCE: Final = 0.02


@dataclass(frozen=True, slots=True)
class CountingLine:
    """A directed segment ``a -> b`` and which of its sides is "in"."""

    a: Point
    b: Point
    in_side: Literal["left", "right"] = "left"
    tolerance: float = DEFAULT_TOLERANCE

    def __post_init__(self) -> None:
        if self.length == 0.0:
            raise ValueError("a counting line needs two distinct points")

    @property
    def length(self) -> float:
        """The segment's length in normalised units."""
        dx, dy = self.b[0] - self.a[0], self.b[1] - self.a[1]
        return float((dx * dx + dy * dy) ** 0.5)

    def offset(self, p: Point) -> float:
        """Signed distance of ``p`` from the infinite line: < 0 left, > 0 right of a -> b.

        Screen coordinates have y down, so the cross product's sign is the mirror of the
        usual mathematical convention: negative is the left hand side.
        """
        (ax, ay), (bx, by) = self.a, self.b
        return ((bx - ax) * (p[1] - ay) - (by - ay) * (p[0] - ax)) / self.length

    def side(self, p: Point) -> Side:
        """-1 left, +1 right, 0 within ``tolerance`` of the line."""
        d = self.offset(p)
        if d < -self.tolerance:
            return -1
        if d > self.tolerance:
            return 1
        return 0

    def step_hits_segment(self, p: Point, q: Point) -> bool:
        """Whether the step ``p -> q`` (on opposite sides) meets the segment itself."""
        dp, dq = self.offset(p), self.offset(q)
        if dp == dq:
            return False
        s = dp / (dp - dq)  # where along p -> q the step meets the infinite line
        x = p[0] + s * (q[0] - p[0])
        y = p[1] + s * (q[1] - p[1])
        (ax, ay), (bx, by) = self.a, self.b
        u = ((x - ax) * (bx - ax) + (y - ay) * (by - ay)) / (self.length**2)
        return 0.0 <= u <= 1.0

    @property
    def in_sign(self) -> Side:
        """The side value of "in"."""
        return -1 if self.in_side == "left" else 1

    def follow(self) -> LineCrossing:
        """Fresh crossing state for a new track."""
        return LineCrossing(self)


class LineCrossing:
    """One track's position relative to one counting line, in constant memory."""

    __slots__ = ("_anchor", "first_side", "line", "net", "side")

    def __init__(self, line: CountingLine) -> None:
        self.line = line
        self.first_side: Side = 0  # the first side the centre was clearly on
        self.side: Side = 0  # the side it is on now (kept while within the band)
        self.net = 0  # crossings of the segment toward "in" minus those toward "out"
        self._anchor: Point | None = None  # last centre clearly on ``side``

    def observe(self, p: Point) -> None:
        """Take the track's centre in one more frame."""
        now = self.line.side(p)
        if now == 0:
            return
        if self.side == 0:
            self.first_side = self.side = now
        elif now != self.side:
            assert self._anchor is not None
            if self.line.step_hits_segment(self._anchor, p):
                self.net += 1 if now == self.line.in_sign else -1
            self.side = now
        self._anchor = p

    def direction(self) -> Direction | None:
        """IN or OUT for a net crossing of the segment, else None."""
        if self.first_side == self.side:
            return None
        if self.net > 0 and self.side == self.line.in_sign:
            return Direction.IN
        if self.net < 0 and self.side != self.line.in_sign:
            return Direction.OUT
        return None


def camera_line(config: AgentConfig, camera_id: str) -> CountingLine | None:
    """The counting line configured for ``camera_id`` under ``[[cameras]]``, if any."""
    for camera in config.cameras:
        if camera.id == camera_id and camera.line is not None:
            return CountingLine(camera.line[0], camera.line[1], camera.in_side)
    return None
