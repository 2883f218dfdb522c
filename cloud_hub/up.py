"""Placeholder: replaced below."""

from __future__ import annotations

from cloud_hub.settings import HubSettings


async def run_up(settings: HubSettings, source: str | None, *, exit_after_demo: bool) -> int:
    """Not yet."""
    raise NotImplementedError
