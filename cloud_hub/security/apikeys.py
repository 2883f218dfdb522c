"""API keys: who may call the hub's HTTP API, and with which scope (no FastAPI here).

Keys are random strings (``ahk_`` + 43 URL-safe characters, 256 bits) handed to a
person or a program once; the hub's configuration holds only their SHA-256, as
``HUB_API_KEYS="name:scope:sha256hex,..."``. A plain (unsalted, fast) hash is enough
because the keys are random, not chosen by people: nothing short of the key itself
hashes to the stored value. The presented key is hashed and compared with every
configured hash in constant time, so timing reveals neither which keys exist nor how
much of one matched.

Scopes are ordered, each including the ones before it:

* ``metrics``: ``GET /metrics`` only (a Prometheus scraper);
* ``read``: every read endpoint (statistics, events, devices, live results), and metrics;
* ``admin``: everything, including future endpoints that change state.

``/healthz`` is always open (load balancers and orchestrators probe it without
credentials; it reveals only up/down). ``/metrics`` needs a key unless
``HUB_METRICS_PUBLIC=true`` leaves it to a network policy. See docs/security.md.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import Literal, get_args

Scope = Literal["metrics", "read", "admin"]
SCOPES: tuple[Scope, ...] = get_args(Scope)
KEY_PREFIX = "ahk_"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
_HEX = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True, slots=True)
class ApiKey:
    """One configured key: who it is for, what it may do, and the key's SHA-256."""

    name: str
    scope: Scope
    digest: bytes

    def config_entry(self) -> str:
        """The ``name:scope:sha256hex`` form ``HUB_API_KEYS`` holds."""
        return f"{self.name}:{self.scope}:{self.digest.hex()}"


def hash_key(key: str) -> bytes:
    """SHA-256 of a key as it is presented."""
    return hashlib.sha256(key.encode("utf-8")).digest()


def new_key(name: str, scope: Scope) -> tuple[str, ApiKey]:
    """A fresh random key (shown once) and its configuration entry."""
    if not _NAME.match(name):
        raise ValueError(f"bad key name {name!r}: letters, digits and _.@- only")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    return key, ApiKey(name, scope, hash_key(key))


def parse_api_keys(value: str) -> tuple[ApiKey, ...]:
    """Parse ``name:scope:sha256hex`` entries separated by commas, spaces or newlines."""
    keys: list[ApiKey] = []
    names: set[str] = set()
    for entry in re.split(r"[,\s]+", value.strip()):
        if not entry:
            continue
        parts = entry.split(":")
        if len(parts) != 3:
            raise ValueError(f"API key entry {entry[:20]!r}… is not name:scope:sha256hex")
        name, scope, digest = parts
        if not _NAME.match(name):
            raise ValueError(f"API key name {name!r}: letters, digits and _.@- only")
        if name in names:
            raise ValueError(f"API key name {name!r} appears twice")
        if scope not in SCOPES:
            raise ValueError(f"API key {name!r}: scope {scope!r} is not one of {SCOPES}")
        if not _HEX.match(digest.lower()):
            raise ValueError(f"API key {name!r}: the hash must be 64 hex digits (SHA-256)")
        names.add(name)
        keys.append(ApiKey(name, scope, bytes.fromhex(digest)))
    return tuple(keys)


def find_key(keys: tuple[ApiKey, ...], presented: str) -> ApiKey | None:
    """The configured key ``presented`` is, compared in constant time against all of them."""
    digest = hash_key(presented)
    found: ApiKey | None = None
    for key in keys:  # no early exit: the time taken does not depend on which one matched
        if hmac.compare_digest(key.digest, digest):
            found = key
    return found


def allows(granted: Scope, needed: Scope) -> bool:
    """Whether a key of scope ``granted`` may do what needs ``needed``."""
    return SCOPES.index(granted) >= SCOPES.index(needed)
