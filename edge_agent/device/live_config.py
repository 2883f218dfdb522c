"""Run-time settings pushed by the fleet (the retained ``config`` topic), applied live.

The file's configuration is the base; a :class:`DesiredConfig` overrides the fields it
sets. Camera threads poll :attr:`LiveSettings.version` between frames (one integer
comparison) and copy the settings into their own pipeline there, so nothing a frame is
using changes under it and no lock sits in the hot loop.
"""

from __future__ import annotations

import re
import threading
from typing import Any, Protocol

from pydantic import ValidationError

from edge_agent.config import AgentConfig
from edge_agent.contract import DesiredConfig


class TakesSettings(Protocol):
    """A camera's pipeline, as far as live settings reach it (no vision import here)."""

    def apply_settings(self, config: AgentConfig) -> None: ...


_UNPRINTABLE = re.compile(r"[^\x20-\x7e]+")


def _merged(base: AgentConfig, desired: DesiredConfig) -> AgentConfig:
    data: dict[str, Any] = base.model_dump()
    for section in ("detector", "tracker", "estimator"):
        overrides = getattr(desired, section).model_dump(exclude_none=True)
        data[section].update(overrides)
    if desired.health_interval_s is not None:
        data["health"]["interval_s"] = desired.health_interval_s
    return AgentConfig.model_validate(data)


def describe_error(error: Exception) -> str:
    """One printable line (the status message's ``config_error`` allows 1024)."""
    text = _UNPRINTABLE.sub(" ", str(error)).strip() or type(error).__name__
    return text[:1024]


class LiveSettings:
    """The effective configuration and a version that changes whenever it does."""

    def __init__(self, base: AgentConfig) -> None:
        self.base = base
        self._lock = threading.Lock()
        self._effective = base
        self.version = 0  # bumped on every change; read without the lock
        self.applied: str | None = None  # the DesiredConfig version in force
        self.error: str | None = None  # why the last one was refused

    @property
    def effective(self) -> AgentConfig:
        """The file's configuration with the desired overrides applied."""
        with self._lock:
            return self._effective

    def update(self, desired: DesiredConfig | None) -> None:
        """Apply a desired config (``None``: back to the file's); raise ``ValueError``
        when it does not combine with the file into a valid configuration."""
        try:
            effective = self.base if desired is None else _merged(self.base, desired)
        except ValidationError as error:
            raise ValueError(describe_error(error)) from error
        with self._lock:
            self._effective = effective
            self.applied = None if desired is None else desired.version
            self.error = None
            self.version += 1

    def refuse(self, reason: str) -> None:
        """Record why a pushed config was not applied; the previous one stays."""
        with self._lock:
            self.error = reason[:1024] or "invalid config"

    def apply_to(self, pipeline: TakesSettings) -> int:
        """Copy the live settings into one camera's pipeline (call between frames, in
        the thread detecting for that camera); returns the version applied."""
        with self._lock:
            cfg, version = self._effective, self.version
        pipeline.apply_settings(cfg)
        return version
