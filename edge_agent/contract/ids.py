"""Identifiers on the wire: device and camera ids, which are topic levels, and event ids.

Device and camera ids appear in MQTT topics, so they must not contain topic separators
or wildcards; event ids are UUIDv7, so they sort by creation time in the database.
"""

from __future__ import annotations

import os
import re
import time
import uuid
from typing import Annotated, Final

from pydantic import StringConstraints

# Ids appear in MQTT topics, so they must not contain topic separators or wildcards.
ID_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
IdString = Annotated[str, StringConstraints(pattern=ID_PATTERN)]
_ID_RE: Final = re.compile(ID_PATTERN)


def is_valid_id(value: str) -> bool:
    """Whether ``value`` can be a device or camera id (one topic level, no wildcards)."""
    return _ID_RE.match(value) is not None


def checked_id(value: str, what: str) -> str:
    """``value`` if it is a valid id, else ``ValueError`` naming ``what`` it was meant as."""
    if not is_valid_id(value):
        raise ValueError(f"{what} {value[:80]!r} is not a valid topic id")
    return value


def uuid7(now_ns: int | None = None) -> uuid.UUID:
    """A time-ordered UUIDv7 (RFC 9562), so ids sort by creation time in the database.

    Python 3.11's ``uuid`` module has no v7 (it arrives in 3.14); this is the RFC's
    layout: 48 bits of Unix milliseconds, version, 74 random bits, variant.
    """
    ms = (time.time_ns() if now_ns is None else now_ns) // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76
    value |= (rand >> 68) << 64  # 12 random bits
    value |= 0b10 << 62
    value |= rand & ((1 << 62) - 1)
    return uuid.UUID(int=value)
