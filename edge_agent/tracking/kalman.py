"""A constant-velocity Kalman filter on one box, stepped by stream seconds, not frames.

Person detection runs at a few per second and frames may be dropped, so the time between
two updates varies; the motion model is written per second and every step takes its own
``dt``. The state is ``[cx, cy, w, h, vx, vy, vw, vh]`` (centre, size, and their rates in
pixels per second). Width rather than ByteTrack's aspect ratio keeps every term in pixels,
so one scale (the box height) sets all the noise: a person twice as close moves twice as
many pixels for the same walk and has twice the detector jitter.

Noise, in box heights ``h``: the detector's box jitter is ``MEASURE_STD`` per coordinate;
the process is white-noise acceleration (``ACCEL_STD`` for the centre: a walker stops or
turns within about half a second; ``GROW_STD`` for the size: walking toward the camera);
a new box's velocity is unknown up to ``INIT_SPEED_STD`` (a brisk walk).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np
from numpy.typing import NDArray

MEASURE_STD: Final = 0.05  # box jitter per coordinate, box heights
ACCEL_STD: Final = 2.0  # centre acceleration, box heights / s^2
GROW_STD: Final = 0.5  # size acceleration, box heights / s^2
INIT_SPEED_STD: Final = 1.0  # a new track's centre speed, box heights / s
INIT_GROW_STD: Final = 0.25  # a new track's size rate, box heights / s
MIN_SIDE: Final = 1.0  # pixels: an extrapolated box never shrinks below this

_H: Final = np.hstack([np.eye(4), np.zeros((4, 4))])
_ACCEL: Final = np.array([ACCEL_STD, ACCEL_STD, GROW_STD, GROW_STD])


def box_to_measurement(box: NDArray[np.floating]) -> NDArray[np.float64]:
    """``x1, y1, x2, y2`` to ``cx, cy, w, h``."""
    x1, y1, x2, y2 = (float(v) for v in box)
    return np.array([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], np.float64)


def measurement_to_box(z: NDArray[np.float64]) -> NDArray[np.float32]:
    """``cx, cy, w, h`` to ``x1, y1, x2, y2`` (sides at least ``MIN_SIDE``)."""
    half_w, half_h = max(z[2], MIN_SIDE) / 2, max(z[3], MIN_SIDE) / 2
    return np.array([z[0] - half_w, z[1] - half_h, z[0] + half_w, z[1] + half_h], np.float32)


def _transition(dt: float) -> NDArray[np.float64]:
    f = np.eye(8)
    f[:4, 4:] = dt * np.eye(4)
    return f


def _process_noise(dt: float, height: float) -> NDArray[np.float64]:
    """Piecewise-constant white acceleration over ``dt``, scaled by the box height."""
    var = (_ACCEL * height) ** 2
    q = np.zeros((8, 8))
    idx = np.arange(4)
    q[idx, idx] = var * dt**4 / 4
    q[idx, idx + 4] = q[idx + 4, idx] = var * dt**3 / 2
    q[idx + 4, idx + 4] = var * dt**2
    return q


@dataclass(slots=True)
class BoxFilter:
    """One box's state at stream time ``t``: mean ``[8]`` and covariance ``[8, 8]``."""

    mean: NDArray[np.float64]
    cov: NDArray[np.float64]
    t: float

    @classmethod
    def start(cls, box: NDArray[np.floating], t: float) -> BoxFilter:
        """A filter at ``box`` with unknown velocity."""
        z = box_to_measurement(box)
        h = max(float(z[3]), MIN_SIDE)
        std = np.array(
            [2 * MEASURE_STD] * 4 + [INIT_SPEED_STD] * 2 + [INIT_GROW_STD] * 2, np.float64
        )
        return cls(np.concatenate([z, np.zeros(4)]), np.diag((std * h) ** 2), t)

    def _advanced(self, t: float) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        dt = max(0.0, t - self.t)
        if dt == 0.0:
            return self.mean, self.cov
        f = _transition(dt)
        height = max(float(self.mean[3]), MIN_SIDE)
        return f @ self.mean, f @ self.cov @ f.T + _process_noise(dt, height)

    def box_at(self, t: float) -> NDArray[np.float32]:
        """The box extrapolated to ``t``, state unchanged."""
        dt = max(0.0, t - self.t)
        return measurement_to_box(self.mean[:4] + dt * self.mean[4:])

    def centre_std(self) -> float:
        """The larger standard deviation of the centre's position, pixels."""
        return float(np.sqrt(max(self.cov[0, 0], self.cov[1, 1])))

    def predict(self, t: float) -> None:
        """Move the state to time ``t`` (no-op for ``t`` at or before the state's)."""
        if t > self.t:
            self.mean, self.cov = self._advanced(t)
            self.t = t

    def update(self, box: NDArray[np.floating], t: float) -> None:
        """Correct with a detected box at ``t`` (predicting to ``t`` first)."""
        self.predict(t)
        z = box_to_measurement(box)
        height = max(float(self.mean[3]), MIN_SIDE)
        r = np.eye(4) * (MEASURE_STD * height) ** 2
        s = _H @ self.cov @ _H.T + r
        gain = np.linalg.solve(s, _H @ self.cov).T  # P H^T S^-1, S symmetric
        self.mean = self.mean + gain @ (z - _H @ self.mean)
        self.cov = (np.eye(8) - gain @ _H) @ self.cov
        self.cov = (self.cov + self.cov.T) / 2

    def hold(self, t: float) -> None:
        """The scene did not move up to ``t``: time passes, the box stays where it was."""
        self.t = max(self.t, t)

    def stop_growing(self) -> None:
        """Zero the size rates (a lost box keeps its size rather than extrapolate it)."""
        self.mean[6:] = 0.0

    @property
    def box(self) -> NDArray[np.float32]:
        """The current estimate as ``x1, y1, x2, y2``."""
        return measurement_to_box(self.mean[:4])
