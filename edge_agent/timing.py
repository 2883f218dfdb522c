"""Per-stage wall-clock samples, kept in memory for benchmarks and the eval report.

Cheap enough for the hot loop (one ``perf_counter`` pair per stage); the agent turns the
same samples into Prometheus histograms, benchmarks into medians and percentiles.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np


class StageTimes:
    """Milliseconds per named stage, appended as the pipeline runs."""

    def __init__(self) -> None:
        self.samples: defaultdict[str, list[float]] = defaultdict(list)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time the body of a ``with`` block under ``name``."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.samples[name].append((time.perf_counter() - start) * 1000.0)

    def add(self, name: str, milliseconds: float) -> None:
        """Record a sample measured elsewhere."""
        self.samples[name].append(milliseconds)

    def summary(self) -> dict[str, tuple[int, float, float]]:
        """``{stage: (count, median ms, p95 ms)}``."""
        return {
            name: (len(v), float(np.median(v)), float(np.percentile(v, 95)))
            for name, v in self.samples.items()
            if v
        }
