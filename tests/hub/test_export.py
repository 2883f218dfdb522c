"""Exports through a running hub: 100,000 events streamed as CSV at flat memory (the
hub's peak RSS barely moves while it sends tens of megabytes), and the same events as
JSON and NDJSON, with the filters /v1/events has."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from tests.conftest import RunningHub, make_event, publish_event_list, wait_until

_FILL = """
INSERT INTO person_events (event_id, device_id, camera_id, track_id, first_seen, last_seen,
    dwell_s, gender, gender_confidence, age, age_low, age_high, age_confidence, direction,
    crops, models, return_of)
SELECT gen_random_uuid(), 'dev-export', 'cam-' || (i % 4), i, t - interval '5 seconds', t,
       4.5, (ARRAY['female', 'male', NULL])[1 + i % 3], 0.9, 30, 25, 35, 0.6,
       (ARRAY['in', 'out', NULL])[1 + i % 3], 3, '{"detector": "blazeface-full"}',
       CASE WHEN i % 5 = 0 THEN gen_random_uuid() END
FROM (SELECT i, $2::timestamptz + i * interval '1 second' AS t
      FROM generate_series(1, $1) AS i) AS g
"""
COUNT = 100_000


def peak_rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def test_a_large_export_streams_at_flat_memory(hub: RunningHub, db: object) -> None:
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(days=2)
    db(_FILL, COUNT, start)  # type: ignore[operator]
    headers = {"X-API-Key": hub.api_key}
    query = {
        "device_id": "dev-export",
        "start": start.isoformat(),
        "end": (start + timedelta(days=2)).isoformat(),
    }
    # Warm the hub (imports, pool, statement cache) before taking its peak.
    assert httpx.get(f"{hub.base_url}/v1/export/events", params=query, headers=headers).is_success
    before = peak_rss_kb(hub.process.pid)

    lines, size = 0, 0
    with httpx.stream(
        "GET",
        f"{hub.base_url}/v1/export/events",
        params={**query, "format": "csv"},
        headers=headers,
        timeout=120,
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/csv")
        assert "attachment" in response.headers["content-disposition"]
        assert "content-length" not in response.headers  # streamed (chunked)
        head = b""
        for chunk in response.iter_bytes():
            size += len(chunk)
            lines += chunk.count(b"\n")
            if len(head) < 4096:
                head += chunk[:4096]
    grown_mb = (peak_rss_kb(hub.process.pid) - before) / 1024
    print(f"\n[export] {COUNT} events, {size / 1e6:.1f} MB of CSV, hub peak RSS +{grown_mb:.1f} MB")
    assert lines == COUNT + 1
    assert size > 20_000_000
    assert grown_mb < 25, f"the hub's peak memory grew by {grown_mb:.0f} MB during the export"
    rows = list(csv.DictReader(io.StringIO(head.decode().rsplit("\n", 1)[0])))
    assert rows[0]["device_id"] == "dev-export" and rows[0]["track_id"] == "1"
    assert json.loads(rows[0]["models"]) == {"detector": "blazeface-full"}
    assert rows[0]["direction"] == "out" and rows[1]["gender"] == ""  # i=1: out; i=2: null


def test_export_formats_and_filters(hub: RunningHub) -> None:
    now = datetime.now(UTC)
    events = [
        make_event("dev-exp2", f"cam-{i % 2}", last_seen=now - timedelta(minutes=i), track_id=i)
        for i in range(7)
    ]
    publish_event_list(hub.topic_root, events)
    wait_until(lambda: len(hub.get("/v1/events?device_id=dev-exp2")["events"]) == 7)
    headers = {"X-API-Key": hub.api_key}
    url = f"{hub.base_url}/v1/export/events"

    as_json = httpx.get(url, params={"device_id": "dev-exp2", "format": "json"}, headers=headers)
    assert as_json.headers["content-type"] == "application/json"
    rows = as_json.json()
    assert [r["track_id"] for r in rows] == [6, 5, 4, 3, 2, 1, 0]  # oldest first
    assert rows[0]["event_id"] == str(events[6].event_id)
    assert rows[0]["models"] == {"detector": "blazeface-full", "age": "dlib-int8"}
    page = hub.get("/v1/events?device_id=dev-exp2&limit=1000")["events"]
    assert [r["event_id"] for r in rows] == [e["event_id"] for e in page]

    ndjson = httpx.get(
        url, params={"device_id": "dev-exp2", "camera_id": "cam-1", "format": "ndjson"},
        headers=headers,
    )  # fmt: skip
    assert ndjson.headers["content-type"] == "application/x-ndjson"
    assert [json.loads(line)["track_id"] for line in ndjson.text.splitlines()] == [5, 3, 1]

    empty = httpx.get(url, params={"device_id": "dev-none", "format": "json"}, headers=headers)
    assert empty.json() == []
    assert httpx.get(url, params={"format": "xml"}, headers=headers).status_code == 422
    assert httpx.get(url).status_code == 401
    backwards = {"start": now.isoformat(), "end": (now - timedelta(hours=1)).isoformat()}
    assert httpx.get(url, params=backwards, headers=headers).status_code == 422
