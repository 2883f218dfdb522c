"""Age bands at their exact boundaries, on both backends.

The bands are half-open on the right: 13 is "13-17", 12.999 is still "0-12". The expected
band of every age is written out below, not computed by project code, so moving a
boundary (``age < 18`` to ``age <= 18``, say) fails here: in the stored row's
``age_band``, in the statistics by age band (whole hours from the rollups, minutes from
the raw rows), and in the dashboard's own band function for its live feed.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import asyncpg

from cloud_hub.settings import HubSettings
from cloud_hub.storage import rollups
from cloud_hub.storage.db import prepare_database
from edge_agent.contract import PersonEvent
from tests.conftest import HubFactory, make_event
from tests.hub.conftest import StorageDb
from tests.hub.test_storage import run, store, with_conn

# (age, band): each boundary from just below and exactly on it, and both ends of the range.
# 12.999 and the like are stored as PostgreSQL ``real``: 12.9989996, still below 13.
AGES: list[tuple[float, str]] = [
    (0.0, "0-12"),
    (12.999, "0-12"),
    (13.0, "13-17"),
    (17.999, "13-17"),
    (18.0, "18-24"),
    (24.999, "18-24"),
    (25.0, "25-34"),
    (34.999, "25-34"),
    (35.0, "35-44"),
    (44.999, "35-44"),
    (45.0, "45-54"),
    (54.999, "45-54"),
    (55.0, "55-64"),
    (64.999, "55-64"),
    (65.0, "65+"),
    (120.0, "65+"),
]
# How many of the ages above fall in each band (written out, not counted from AGES).
PER_BAND = {
    "0-12": 2,
    "13-17": 2,
    "18-24": 2,
    "25-34": 2,
    "35-44": 2,
    "45-54": 2,
    "55-64": 2,
    "65+": 2,
}

DEVICE, CAMERA = "dev-ages", "cam-1"


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _events(now: datetime) -> tuple[list[PersonEvent], datetime]:
    """One event per age, each alone in an hour of its own (the i-th two hours plus half
    an hour back), so each hour's and each minute's bucket holds exactly one age. Returns
    the events and the first of those hours."""
    top = rollups.floor_hour(now) - timedelta(hours=2)
    events = [
        make_event(DEVICE, CAMERA, last_seen=top - timedelta(hours=i, minutes=30), age=age)
        for i, (age, _) in enumerate(AGES)
    ]
    return events, top - timedelta(hours=len(AGES))


def _prepare(storage: StorageDb, now: datetime) -> tuple[list[PersonEvent], datetime]:
    settings = HubSettings(database_url=storage.url)
    run(prepare_database(storage.url, settings))
    events, first_hour = _events(now)
    assert len(store(storage, events)) == len(AGES)

    async def roll_up(conn: asyncpg.Connection) -> None:
        await rollups.maintain(conn, settings)

    run(with_conn(storage, roll_up))  # the whole hours are then read from the rollups
    return events, first_hour


def _band_of_each(buckets: list[dict[str, Any]]) -> dict[datetime, str]:
    """The band of the one event in each non-empty bucket."""
    out: dict[datetime, str] = {}
    for bucket in buckets:
        if not bucket["total"]:
            continue
        assert bucket["total"] == 1, bucket
        bands = [band for band, n in bucket["age"].items() if n]
        assert len(bands) == 1 and bucket["age"][bands[0]] == 1, bucket
        out[datetime.fromisoformat(bucket["start"])] = bands[0]
    return out


def test_age_bands_at_their_boundaries(storage: StorageDb, hub_factory: HubFactory) -> None:
    now = datetime.now(UTC)
    events, first_hour = _prepare(storage, now)

    # The stored rows.
    async def stored(conn: asyncpg.Connection) -> list[asyncpg.Record]:
        return list(
            await conn.fetch(
                "SELECT event_id, age_band FROM person_events WHERE device_id = $1", DEVICE
            )
        )

    bands = {row["event_id"]: row["age_band"] for row in run(with_conn(storage, stored))}
    assert {
        age: bands[event.event_id] for event, (age, _) in zip(events, AGES, strict=True)
    } == dict(AGES)

    # The statistics, through the API.
    hub = hub_factory.start(database_url=storage.url, rollup_refresh_s=3600)
    end = rollups.floor_hour(now) - timedelta(hours=1)
    want_hours = {
        rollups.floor_hour(event.last_seen): band
        for event, (_, band) in zip(events, AGES, strict=True)
    }
    want_minutes = {
        event.last_seen.replace(second=0, microsecond=0): band
        for event, (_, band) in zip(events, AGES, strict=True)
    }
    for bucket, want in (("hour", want_hours), ("minute", want_minutes)):
        query = urlencode(
            [
                ("start", _iso(first_hour)),
                ("end", _iso(end)),
                ("bucket", bucket),
                ("device_id", DEVICE),
                ("group_by", "age_band"),
            ]
        )
        stats = hub.get(f"/v1/stats?{query}")
        got = _band_of_each(stats["buckets"])
        assert got == want, bucket
        assert {b: n for b, n in stats["totals"]["age"].items() if n} == PER_BAND, bucket
        groups = {g["key"]["age_band"]: g["total"] for g in stats["totals"]["groups"]}
        assert groups == PER_BAND, bucket
        # Filtering by a band finds exactly its two ages.
        for band, count in PER_BAND.items():
            narrowed = hub.get(f"/v1/stats?{query}&{urlencode({'age_band': band})}")
            assert narrowed["totals"]["total"] == count, (bucket, band)

    assert Counter(dict(AGES).values()) == Counter(PER_BAND)  # the two tables agree


DASHBOARD_JS = Path(__file__).resolve().parents[2] / "cloud_hub" / "api" / "static" / "dashboard.js"


def test_dashboard_age_band_at_the_boundaries() -> None:
    """The live feed's band (computed in the browser from the event's age)."""
    source = DASHBOARD_JS.read_text(encoding="utf-8")
    match = re.search(r"^function ageBand\(age\) \{\n.*?^\}\n", source, re.DOTALL | re.MULTILINE)
    assert match, "ageBand not found in dashboard.js"
    node = shutil.which("node")
    assert node, "node is needed (make setup installs it for the TimescaleDB tests)"
    script = (
        match.group(0)
        + f"const ages = {json.dumps([age for age, _ in AGES])};\n"
        + "console.log(JSON.stringify(ages.map((value) => ageBand({ value }))));\n"
        + "console.log(JSON.stringify(ageBand(null)));\n"
    )
    done = subprocess.run(
        [node, "-e", script], capture_output=True, text=True, timeout=30, check=True
    )
    bands, unknown = done.stdout.splitlines()
    assert dict(zip((age for age, _ in AGES), json.loads(bands), strict=True)) == dict(AGES)
    assert json.loads(unknown) == "unknown"
