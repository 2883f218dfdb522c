"""The live stream (Server-Sent Events) with a real hub: an event published over MQTT is
read from /v1/live/events; a reconnect with Last-Event-ID resumes; how browsers
authenticate (a short-lived token in the URL or a cookie) and what is refused."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx

from cloud_hub.live.tokens import LiveTokens
from cloud_hub.security.apikeys import new_key
from tests.conftest import TEST_API_KEYS, HubFactory, make_event, publish_event_list


def sse_messages(lines: Iterator[str]) -> Iterator[dict[str, str]]:
    """Parse a text/event-stream into messages ({"event", "id", "data"}); comments and
    the retry line are skipped."""
    message: dict[str, str] = {}
    for line in lines:
        if line == "":
            if message:
                yield message
            message = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            if name in ("event", "id", "data"):
                message[name] = value.removeprefix(" ")


def first_messages(response: httpx.Response, count: int, after: Any = None) -> list[dict[str, str]]:
    assert response.status_code == 200, response.read()
    assert response.headers["content-type"].startswith("text/event-stream")
    lines = response.iter_lines()
    assert next(lines) == "retry: 3000"  # subscribed now
    if after is not None:
        after()
    out = []
    for message in sse_messages(lines):
        out.append(message)
        if len(out) == count:
            break
    return out


def test_live_events_over_sse(hub_factory: HubFactory) -> None:
    read_key, read = new_key("browser", "read")
    metrics_key, metrics = new_key("prom", "metrics")
    hub = hub_factory.start(
        api_keys=f"{TEST_API_KEYS},{read.config_entry()},{metrics.config_entry()}"
    )
    url = hub.base_url
    minted = httpx.post(f"{url}/v1/live/token", headers={"X-API-Key": read_key})
    assert minted.status_code == 200
    token = minted.json()["token"]
    assert minted.json()["expires_in"] == 60
    cookie = minted.cookies.get("hub_live_token")
    assert cookie == token
    assert "httponly" in minted.headers["set-cookie"].lower()
    assert "path=/v1/live" in minted.headers["set-cookie"].lower()

    # A browser: the token in the URL. An event published over MQTT arrives.
    first = make_event("dev-live", "cam-1", track_id=1)
    other = make_event("dev-other", "cam-1", track_id=9)
    stream = f"{url}/v1/live/events?device_id=dev-live&token={token}"
    with httpx.stream("GET", stream, timeout=20) as response:
        got = first_messages(
            response, 1, lambda: publish_event_list(hub.topic_root, [other, first])
        )
    assert got[0]["event"] == "event"
    data = json.loads(got[0]["data"])
    assert data["event_id"] == str(first.event_id) and data["device_id"] == "dev-live"
    first_id = got[0]["id"]

    # Missed while away: a reconnect with Last-Event-ID (as EventSource sends it) gets
    # them first, in order; the cookie the token call set authenticates it.
    later = [make_event("dev-live", "cam-1", track_id=i) for i in (2, 3)]
    publish_event_list(hub.topic_root, later)
    time.sleep(0.5)
    with (
        httpx.Client(cookies={"hub_live_token": cookie}, timeout=20) as client,
        client.stream(
            "GET", f"{url}/v1/live/events?device_id=dev-live", headers={"Last-Event-ID": first_id}
        ) as response,
    ):
        got = first_messages(response, 2)
    assert [json.loads(m["data"])["track_id"] for m in got] == [2, 3]
    assert got[0]["id"] > first_id

    # A server or curl: the API key in a header; occupancy and status on request.
    with httpx.stream(
        "GET",
        f"{url}/v1/live/events?types=event&types=status&device_id=dev-hdr",
        headers={"X-API-Key": read_key},
        timeout=20,
    ) as response:
        status = b'{"schema_version": 1, "device_id": "dev-hdr", "state": "offline"}'

        def publish_status() -> None:
            from tests.conftest import publish_messages

            publish_messages([(f"{hub.topic_root}/v1/dev-hdr/status", status)])

        got = first_messages(response, 1, publish_status)
    assert got[0]["event"] == "status" and "id" not in got[0]
    assert json.loads(got[0]["data"])["state"] == "offline"

    # Refused: nothing, a forged or unknown token, a metrics key, a key in the URL.
    def code(path: str, headers: dict[str, str] | None = None) -> int:
        with httpx.stream("GET", url + path, headers=headers, timeout=10) as response:
            return response.status_code

    assert code("/v1/live/events") == 401
    assert code(f"/v1/live/events?token={token[:-2]}xx") == 401
    assert code("/v1/live/events?token=hlt_e30.AAAA") == 401
    assert code("/v1/live/events", {"X-API-Key": metrics_key}) == 403
    assert code(f"/v1/live/events?token={read_key}") == 401  # keys never go in URLs
    assert httpx.post(f"{url}/v1/live/token", headers={"X-API-Key": metrics_key}).status_code == 403
    assert httpx.post(f"{url}/v1/live/token").status_code == 401
    assert code("/v1/live/events?after=nonsense", {"X-API-Key": read_key}) == 422


def test_live_tokens_expire_and_follow_their_key() -> None:
    key_text, key = new_key("dash", "read")
    tokens = LiveTokens("s" * 32, ttl_s=60)
    token, expires = tokens.mint(key, now=1_000_000)
    assert expires == 1_000_060
    assert tokens.verify(token, (key,), now=1_000_059) == key
    assert tokens.verify(token, (key,), now=1_000_060) is None  # expired
    assert LiveTokens("t" * 32, 60).verify(token, (key,), now=1_000_001) is None  # other secret
    _, rotated = new_key("dash", "read")
    assert tokens.verify(token, (rotated,), now=1_000_001) is None  # the key was rotated
    _, demoted = new_key("dash", "metrics")
    demoted = type(key)(key.name, "metrics", key.digest)
    assert tokens.verify(token, (demoted,), now=1_000_001) is None  # scope now too small
    assert tokens.verify(key_text, (key,), now=1_000_001) is None


def test_live_stream_needs_redis(hub_factory: HubFactory) -> None:
    hub = hub_factory.start(redis_url="redis://127.0.0.1:1/0")
    with httpx.stream(
        "GET", f"{hub.base_url}/v1/live/events", headers={"X-API-Key": hub.api_key}, timeout=10
    ) as response:
        assert response.status_code == 503
