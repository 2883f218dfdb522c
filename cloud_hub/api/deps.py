"""Typed dependencies the routers share: what ``create_app`` keeps in ``app.state`` (the
hub, and through it the pool, the settings and the live cache; the live tokens), and
the caller's API key (``cloud_hub.api.auth``)."""

from __future__ import annotations

from typing import Annotated

import asyncpg
from fastapi import Depends, Request

from cloud_hub.api.auth import RequireRead
from cloud_hub.live.cache import LiveCache
from cloud_hub.live.tokens import LiveTokens
from cloud_hub.security.apikeys import ApiKey
from cloud_hub.service import Hub
from cloud_hub.settings import HubSettings


def _hub(request: Request) -> Hub:
    hub: Hub = request.app.state.hub
    return hub


async def get_hub(request: Request) -> Hub:
    """The running hub: its database and broker state, for health."""
    return _hub(request)


async def get_pool(request: Request) -> asyncpg.Pool:
    """The hub's database pool (after the lifespan started the hub)."""
    return _hub(request).pool


async def get_settings(request: Request) -> HubSettings:
    """The settings the app was made with."""
    return _hub(request).settings


async def get_cache(request: Request) -> LiveCache:
    """The live cache (Redis); ``enabled`` is false when Redis was down at startup."""
    return _hub(request).cache


async def get_live_tokens(request: Request) -> LiveTokens:
    """What mints and checks the live stream's short-lived tokens."""
    tokens: LiveTokens = request.app.state.live_tokens
    return tokens


HubDep = Annotated[Hub, Depends(get_hub)]
Pool = Annotated[asyncpg.Pool, Depends(get_pool)]
Settings = Annotated[HubSettings, Depends(get_settings)]
Cache = Annotated[LiveCache, Depends(get_cache)]
Tokens = Annotated[LiveTokens, Depends(get_live_tokens)]
# The caller's key, which allows ``read`` (the same check as ``RequireRead``, made once).
ReadKey = Annotated[ApiKey, RequireRead]
