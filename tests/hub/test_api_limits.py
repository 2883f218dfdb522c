"""What one API request may make a running hub do (issue 12): statistics whose answer
would be too large are refused before the query, from an estimate, and a wrong estimate
is still bounded by the statement's LIMIT; request bodies are read only after the key is
known and only up to HUB_MAX_BODY_BYTES; validation errors do not echo large inputs;
time ranges are checked alike everywhere; HEAD works wherever GET does; responses say
nosniff and no-store. Memory is the hub process's peak RSS (VmHWM), read before and after.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import select
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode, urlsplit

import asyncpg
import httpx

from cloud_hub.settings import HubSettings
from cloud_hub.storage.db import prepare_database
from tests.conftest import HubFactory, RunningHub, make_event, publish_event_list, wait_until
from tests.hub.conftest import StorageDb
from tests.hub.test_export import peak_rss_kb

MB = 1024 * 1024

# 200 registered cameras on 50 devices, and events over the last 29 days that fill many
# of their (hour, camera, gender, age band, direction) cells: read in full, the answer
# below would be millions of cells.
_SEED = """
INSERT INTO devices (device_id, first_seen, last_seen, events)
SELECT 'lim-' || d, $1, $1, 0 FROM generate_series(0, 49) AS d;
INSERT INTO cameras (device_id, camera_id, name, site)
SELECT 'lim-' || (c % 50), 'cam-' || (c / 50), 'camera ' || c, 'site-' || (c % 7)
FROM generate_series(0, 199) AS c;
"""
_EVENTS = """
INSERT INTO person_events (event_id, device_id, camera_id, track_id, first_seen, last_seen,
    dwell_s, gender, gender_confidence, age, age_low, age_high, age_confidence, direction,
    crops, models)
SELECT gen_random_uuid(), 'lim-' || (c % 50), 'cam-' || (c / 50), i, t - interval '3 seconds',
       t, 3.0, (ARRAY['female', 'male', NULL])[1 + i % 3], 0.9,
       (ARRAY[8, 15, 21, 30, 40, 50, 60, 70])[1 + (i / 3) % 8], 1, 99, 0.6,
       (ARRAY['in', 'out', NULL])[1 + (i / 24) % 3], 3, '{}'
FROM (SELECT i, (i / 7) % 200 AS c,
             $1::timestamptz + (i % $4) * interval '1 hour' + (i % 3599) * interval '1 second'
             AS t
      FROM generate_series($2::bigint, $3::bigint) AS i) AS g
"""


async def _seed(url: str, start: datetime, events: int, hours: int = 696) -> None:
    """A migrated database with the fleet and ``events`` events over ``hours`` hours
    from ``start``, analysed; the hub started after it materialises them at once."""
    await prepare_database(url, HubSettings(database_url=url))
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(_SEED.replace("$1", f"'{start.isoformat()}'::timestamptz"))
        for first in range(0, events, 100_000):
            last = min(events, first + 100_000) - 1
            await conn.execute(_EVENTS, start, first, last, hours)
        await conn.execute("ANALYZE")
    finally:
        await conn.close()


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _healthz_latencies(hub: RunningHub, stop: threading.Event, out: list[float]) -> None:
    while not stop.is_set():
        began = time.perf_counter()
        httpx.get(f"{hub.base_url}/healthz", timeout=30)
        out.append(time.perf_counter() - began)
        time.sleep(0.02)


def test_an_oversized_group_by_is_refused_before_the_query(
    hub_factory: HubFactory, plain_storage: StorageDb
) -> None:
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    start = now - timedelta(days=29)
    asyncio.run(_seed(plain_storage.url, start, 300_000))
    hub = hub_factory.start(database_url=plain_storage.url)
    headers = {"X-API-Key": hub.api_key}
    query = urlencode(
        [("bucket", "hour"), ("start", _iso(start)), ("end", _iso(now))]
        + [("group_by", g) for g in ("camera", "gender", "age_band", "direction")]
    )
    url = f"{hub.base_url}/v1/stats?{query}"
    # Warm the hub (pool, statement caches) with one answer that fits.
    small = f"{hub.base_url}/v1/stats?bucket=day&start={_iso(start)}&end={_iso(now)}"
    assert httpx.get(small, headers=headers, timeout=60).status_code == 200
    before = peak_rss_kb(hub.process.pid)

    # Six at once, as in the report, while /healthz is polled and an event is published.
    stop, latencies = threading.Event(), list[float]()
    poller = threading.Thread(target=_healthz_latencies, args=(hub, stop, latencies))
    poller.start()
    began = time.perf_counter()
    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda _: httpx.get(url, headers=headers, timeout=120), range(6)))
    elapsed = time.perf_counter() - began
    event = make_event("lim-live", "cam-1")
    publish_event_list(hub.topic_root, [event])
    wait_until(
        lambda: hub.get("/v1/events?device_id=lim-live")["events"], 20, "event stored meanwhile"
    )
    stop.set()
    poller.join()
    grown_mb = (peak_rss_kb(hub.process.pid) - before) / 1024
    print(
        f"\n[stats limit] 6 over-limit requests answered in {elapsed:.2f} s, hub peak RSS "
        f"+{grown_mb:.1f} MB, /healthz max {max(latencies) * 1000:.0f} ms"
    )
    for answer in answers:
        assert answer.status_code == 422, answer.text[:300]
        detail = answer.json()["detail"]
        # 696 hours x (200 cameras x 3 x 9 x 3): the estimate, the limit, what to do.
        assert "11,275,200" in detail and "20,000" in detail, detail
        assert "camera 200" in detail and "HUB_STATS_MAX_PAIRS" in detail, detail
        assert "shorten the range" in detail, detail
    assert elapsed < 3, f"six refusals took {elapsed:.1f} s: the stats were computed first"
    assert grown_mb < 50, f"the hub's peak memory grew by {grown_mb:.0f} MB"
    assert max(latencies) < 1, f"/healthz stalled {max(latencies):.1f} s"

    # Narrowed as the message says, the same grouping is answered.
    site = f"{hub.base_url}/v1/stats?{query.replace('bucket=hour', 'bucket=week')}&site=site-1"
    grouped = httpx.get(site, headers=headers, timeout=60)
    assert grouped.status_code == 200, grouped.text[:300]
    assert grouped.json()["totals"]["total"] > 0

    # The daily report and occupancy estimate the same way: 200 cameras x 25 fit, but
    # 200 cameras x 2,880 minutes do not.
    report = httpx.get(f"{hub.base_url}/v1/reports/daily", headers=headers, timeout=60)
    assert report.status_code == 200 and len(report.json()["cameras"]) >= 200
    occupancy = httpx.get(
        f"{hub.base_url}/v1/occupancy",
        params={"bucket": "minute", "start": _iso(now - timedelta(days=2)), "group_by": "camera"},
        headers=headers,
    )
    assert occupancy.status_code == 422 and "minute buckets" in occupancy.json()["detail"]


def test_a_wrong_estimate_is_bounded_by_the_limit(
    hub_factory: HubFactory, plain_storage: StorageDb
) -> None:
    """Events of cameras the hub has no record of (no registry, no status, no devices
    row) make the estimate too low; the statement still stops at the limit."""
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    asyncio.run(_seed(plain_storage.url, now - timedelta(hours=24), 20_000, hours=24))
    hub = hub_factory.start(database_url=plain_storage.url, stats_max_pairs=1_000)

    async def forget_the_fleet() -> None:
        conn = await asyncpg.connect(plain_storage.url)
        try:
            await conn.execute("DELETE FROM cameras; DELETE FROM devices")
        finally:
            await conn.close()

    asyncio.run(forget_the_fleet())
    params = {"bucket": "hour", "start": _iso(now - timedelta(hours=24)), "end": _iso(now)}
    status, body = hub.request(f"/v1/stats?{urlencode({**params, 'group_by': 'camera'})}")
    # Estimated 24 x 1 camera; 24 x 200 cells are there: refused at 1,001 rows read.
    assert status == 422 and "more than 1,000" in body["detail"], body
    assert hub.request(f"/v1/stats?{urlencode(params)}")[0] == 200

    # The daily report: 200 registered cameras x 25 > 1,000, until filtered by site.
    asyncio.run(_seed(plain_storage.url, now - timedelta(hours=1), 0))  # the fleet again
    status, body = hub.request("/v1/reports/daily")
    assert status == 422 and "filter by site" in body["detail"], body
    assert hub.request("/v1/reports/daily?site=site-3")[0] == 200


# --- request bodies -------------------------------------------------------------------------


def _post_streaming(
    hub: RunningHub,
    path: str,
    size: int,
    headers: dict[str, str],
    chunked: bool = False,
    send_body: bool = True,
) -> tuple[int, bytes, int, float]:
    """POST ``size`` bytes one 64 KiB chunk at a time (the same chunk: the test allocates
    no large body), stopping as soon as the hub answers. (status, body, bytes sent,
    seconds to the answer)."""
    address = urlsplit(hub.base_url)
    sock = socket.create_connection((address.hostname, address.port), timeout=30)
    head = [f"POST {path} HTTP/1.1", f"Host: {address.netloc}", "Content-Type: application/json"]
    head += [f"{k}: {v}" for k, v in headers.items()]
    head.append("Transfer-Encoding: chunked" if chunked else f"Content-Length: {size}")
    chunk = b" " * 65536
    framed = b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk
    began = time.perf_counter()
    sent = 0
    try:
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
        while send_body and sent < size:
            if select.select([sock], [], [], 0)[0]:
                break  # the hub answered
            piece = framed if chunked else chunk[: size - sent]
            try:
                sock.sendall(piece)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(chunk) if chunked else len(piece)
        if chunked and sent >= size:
            sock.sendall(b"0\r\n\r\n")
        answer = b""
        while b"\r\n\r\n" not in answer:
            data = sock.recv(65536)
            if not data:
                break
            answer += data
        elapsed = time.perf_counter() - began
        status = int(answer.split(b" ", 2)[1])
        head_end = answer.index(b"\r\n\r\n")
        length = next(
            int(line.split(b":", 1)[1])
            for line in answer[:head_end].lower().split(b"\r\n")
            if line.startswith(b"content-length:")
        )
        body = answer[head_end + 4 :]
        while len(body) < length:
            data = sock.recv(65536)
            if not data:
                break
            body += data
        return status, body, sent, elapsed
    finally:
        sock.close()


def test_bodies_are_read_only_after_the_key_and_only_so_much(hub: RunningHub) -> None:
    status, _, _, _ = _post_streaming(hub, "/v1/cameras", 10, {})  # warm the path
    assert status == 401
    before = peak_rss_kb(hub.process.pid)
    answers = {
        "content-length": _post_streaming(hub, "/v1/cameras", 100 * MB, {}),
        "chunked": _post_streaming(hub, "/v1/cameras", 100 * MB, {}, chunked=True),
        "unknown key": _post_streaming(
            hub, "/v1/cameras", 100 * MB, {"X-API-Key": "ahk_" + "x" * 43}, chunked=True
        ),
    }
    grown_mb = (peak_rss_kb(hub.process.pid) - before) / 1024
    for name, (status, body, sent, elapsed) in answers.items():
        print(
            f"\n[body] 100 MB unauthenticated POST ({name}): {status} after {elapsed * 1000:.0f}"
            f" ms, {sent / MB:.1f} MB sent before the answer"
        )
        assert status == 401, (name, body)
        assert json.loads(body)["detail"] in ("an API key is required", "unknown API key")
        assert sent < 50 * MB, f"{name}: the hub let {sent / MB:.0f} MB in before answering"
        assert elapsed < 2, name
    print(f"[body] hub peak RSS +{grown_mb:.1f} MB")
    assert grown_mb < 10, f"the hub's peak memory grew by {grown_mb:.0f} MB"

    # A key, but more than HUB_MAX_BODY_BYTES (1 MiB): 413 by Content-Length before a
    # byte of the body is sent, and 413 once a chunked body passes the limit.
    key = {"X-API-Key": hub.api_key}
    status, body, _, _ = _post_streaming(hub, "/v1/cameras", 2 * MB, key, send_body=False)
    assert status == 413, body
    status, body, sent, _ = _post_streaming(hub, "/v1/cameras", 100 * MB, key, chunked=True)
    assert status == 413 and json.loads(body) == {"detail": "Content Too Large"}, body
    assert sent < 50 * MB
    grown_mb = (peak_rss_kb(hub.process.pid) - before) / 1024
    assert grown_mb < 10, f"the hub's peak memory grew by {grown_mb:.0f} MB"

    # Under the limit the body is read and validated; the 422 does not repeat it.
    camera = {"device_id": "dev-lim", "camera_id": "cam-1", "name": "n" * 900_000}
    invalid = httpx.post(f"{hub.base_url}/v1/cameras", json=camera, headers=key)
    assert invalid.status_code == 422
    assert len(invalid.content) < 1000, f"a 422 of {len(invalid.content):,} bytes"
    (error,) = invalid.json()["detail"]
    assert error["loc"] == ["body", "name"] and error["input"].endswith("(900,000 characters)")
    missing = httpx.post(f"{hub.base_url}/v1/cameras", json={"name": "x" * 150}, headers=key)
    assert missing.status_code == 422 and len(missing.content) < 1000
    assert all("input" not in e for e in missing.json()["detail"])  # the body itself


# --- ranges, HEAD, headers --------------------------------------------------------------------


def _head(hub: RunningHub, path: str, headers: dict[str, str]) -> http.client.HTTPResponse:
    address = urlsplit(hub.base_url)
    conn = http.client.HTTPConnection(address.hostname or "", address.port, timeout=10)
    conn.request("HEAD", path, headers=headers)
    response = conn.getresponse()
    response.read()
    conn.close()
    return response


def test_ranges_head_and_headers(hub: RunningHub) -> None:
    key = {"X-API-Key": hub.api_key}
    now = datetime.now(UTC)
    events = [make_event("dev-head", "cam-1", last_seen=now - timedelta(minutes=i)) for i in (1, 2)]
    publish_event_list(hub.topic_root, events)
    wait_until(lambda: len(hub.get("/v1/events?device_id=dev-head")["events"]) == 2)
    backwards = {"start": _iso(now), "end": _iso(now - timedelta(hours=1))}
    for path in ("/v1/events", "/v1/export/events", "/v1/stats", "/v1/occupancy"):
        answer = httpx.get(f"{hub.base_url}{path}", params=backwards, headers=key)
        assert answer.status_code == 422, path
        assert answer.json() == {"detail": "start must be before end"}, path
    assert hub.request(f"/v1/events?start={_iso(now - timedelta(hours=1))}")[0] == 200

    # HEAD wherever GET answers: the same status and headers, no body; streams end.
    for path in (
        "/v1/stats",
        "/v1/events?device_id=dev-head",
        "/v1/devices",
        "/v1/export/events?device_id=dev-head",
        "/v1/live/events",
        "/healthz",
        "/metrics",
        "/dashboard",
    ):
        began = time.perf_counter()
        head = _head(hub, path, key)
        assert head.status == 200, (path, head.status)
        assert time.perf_counter() - began < 5, path
        assert head.read() == b""
        if "live" not in path:  # the stream never ends
            got = httpx.get(f"{hub.base_url}{path}", headers=key)
            assert head.getheader("content-type") == got.headers["content-type"], path
    assert _head(hub, "/v1/stats", {}).status == 401
    assert _head(hub, "/v1/live/token", key).status == 405  # POST only

    # Every answer says nosniff and no-store, errors included; the dashboard's files,
    # which hold no data, keep their own no-cache.
    answers = {
        "json": httpx.get(f"{hub.base_url}/v1/stats", headers=key),
        "401": httpx.get(f"{hub.base_url}/v1/stats"),
        "404": httpx.get(f"{hub.base_url}/v1/devices/nobody", headers=key),
        "422": httpx.get(f"{hub.base_url}/v1/stats?bucket=year", headers=key),
        "413": httpx.post(f"{hub.base_url}/v1/cameras", content=b" " * (2 * MB), headers=key),
        "metrics": httpx.get(f"{hub.base_url}/metrics", headers=key),
        "healthz": httpx.get(f"{hub.base_url}/healthz"),
        "export": httpx.get(f"{hub.base_url}/v1/export/events", headers=key),
    }
    for name, answer in answers.items():
        assert answer.headers["x-content-type-options"] == "nosniff", name
        assert answer.headers["cache-control"] == "no-store", name
    assert answers["413"].status_code == 413
    page = httpx.get(f"{hub.base_url}/dashboard")
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["cache-control"] == "no-cache"


def test_a_request_that_is_not_http_gets_the_documented_400(hub: RunningHub) -> None:
    """The server refuses a malformed request (an empty Content-Length) before the API;
    every operation documents that 400, so clients and the schema fuzz can rely on it."""
    address = urlsplit(hub.base_url)
    assert address.hostname is not None and address.port is not None
    with socket.create_connection((address.hostname, address.port), timeout=30) as sock:
        sock.sendall(b"GET /v1/cameras HTTP/1.1\r\nHost: hub\r\nContent-Length:\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line.startswith(b"HTTP/1.1 400"), answer[:300]
    assert b"content-type: text/plain" in rest.lower()
    schema = httpx.get(f"{hub.base_url}/openapi.json", timeout=30).json()
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            assert "400" in operation["responses"], f"{method.upper()} {path}"
