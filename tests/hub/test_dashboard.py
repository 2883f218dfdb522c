"""The dashboard in a real browser: a running hub, contract events over MQTT, Debian's
Chromium driven headless by Playwright. The page loads with the data, the camera and
time-range filters change the charts, an event published while the page is open appears
in the live feed (and the charts follow), and nothing is fetched from another origin.

A screenshot of the final state is saved to ``test-output/dashboard.png`` at the
repository root (gitignored; CI leaves it in its clone). Chromium comes from Debian
(``.ci/services.sh`` installs it); ``CHROMIUM`` overrides where it is. Without it the
test fails: it is not skipped.
"""

from __future__ import annotations

import os
import shutil
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from cloud_hub.security.apikeys import new_key
from edge_agent.contract import (
    CameraState,
    CameraStatus,
    DeviceState,
    DeviceStatus,
    PersonEvent,
    event_watcher,
    status_topic,
)
from tests.conftest import (
    TEST_ADMIN_KEY,
    TEST_API_KEYS,
    HubFactory,
    make_event,
    publish_event_list,
    publish_messages,
    wait_until,
)
from tests.hub.conftest import StorageDb

OUTPUT_DIR = Path(__file__).resolve().parents[2] / "test-output"
SCREENSHOT = OUTPUT_DIR / "dashboard.png"
AGE_BANDS = ("0-12", "13-17", "18-24", "25-34", "35-44", "45-54", "55-64", "65+", "unknown")


def chromium_path() -> str:
    path = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).is_file():
        pytest.fail(
            f"Chromium not found ({path}): apt-get install chromium (.ci/services.sh does)",
            pytrace=False,
        )
    return path


@pytest.fixture
def browser() -> Iterator[Browser]:
    """Headless Chromium. Set up after (so torn down before) the database fixtures: the
    sync API runs an event loop while open, and they call asyncio.run."""
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium_path(), headless=True)
        try:
            yield launched
        finally:
            launched.close()


def hour(t: datetime) -> datetime:
    return t.replace(minute=0, second=0, microsecond=0)


def band(age: float | None) -> str:
    if age is None:
        return "unknown"
    for limit, name in ((13, "0-12"), (18, "13-17"), (25, "18-24"), (35, "25-34")):
        if age < limit:
            return name
    for limit, name in ((45, "35-44"), (55, "45-54"), (65, "55-64")):
        if age < limit:
            return name
    return "65+"


def attrs(page: Page, selector: str, *names: str) -> list[tuple[str | None, ...]]:
    """Attributes of every element matching ``selector`` (SVG ones included)."""
    found: list[list[str | None]] = page.eval_on_selector_all(
        selector, "(els, names) => els.map(e => names.map(n => e.getAttribute(n)))", list(names)
    )
    return [tuple(row) for row in found]


def traffic(page: Page) -> dict[datetime, int]:
    return {
        datetime.fromisoformat(str(start)): int(str(value))
        for start, value in attrs(page, "#traffic rect.bar", "data-start", "data-value")
    }


def gender_split(page: Page) -> dict[str, int]:
    return {
        g: int(page.inner_text(f'#gender li[data-gender="{g}"] .count'))
        for g in ("female", "male", "unknown")
    }


def ages(page: Page) -> dict[str, int]:
    return {str(b): int(str(v)) for b, v in attrs(page, "#age rect.bar", "data-band", "data-value")}


def feed_ids(page: Page) -> list[str]:
    return [str(i) for (i,) in attrs(page, "#feed li", "data-event-id")]


def with_p_female(event: PersonEvent, p: float) -> PersonEvent:
    """``event`` as an agent 0.3 sends it: with P(female) when it has a gender."""
    if event.gender is None or event.schema_version == 1:
        return event
    return PersonEvent.model_validate({**event.model_dump(), "p_female": p})


def shown_range(page: Page) -> str:
    """The range the page asked for, read back from its last stats request."""
    return str(page.get_attribute("body", "data-range"))


def expect_share(page: Page, shares: dict[str, Any]) -> None:
    """The gender card states the corrected share and its range as the API gives them."""
    corrected = shares["gender"]["corrected"]
    box = page.locator("#gender-share")
    expect(box).to_have_attribute("data-share", f"{corrected['share']:.4f}")
    expect(box).to_have_attribute("data-low", f"{corrected['low']:.4f}")
    expect(box).to_have_attribute("data-high", f"{corrected['high']:.4f}")
    pct = lambda x: f"{100 * x:.0f}%"  # noqa: E731
    expect(box.locator(".share")).to_have_text(f"Women: {pct(corrected['share'])}")
    expect(box.locator(".range")).to_have_text(
        f"{pct(corrected['low'])} to {pct(corrected['high'])}"
    )
    expect(box).to_contain_text("corrected for the errors the models are known to make")
    expect(box).to_contain_text("90% range")


def loaded(page: Page, range_: str, camera: str) -> None:
    """Wait until the charts show this filter's data."""
    expect(page.locator("body")).to_have_attribute("data-loaded", f"{range_}|{camera}")


def test_dashboard_in_headless_chromium(
    hub_factory: HubFactory, plain_storage: StorageDb, browser: Browser
) -> None:
    expect.set_options(timeout=15_000)
    read_key, read = new_key("dashboard", "read")
    # A database of its own: the page shows everything the hub holds.
    hub = hub_factory.start(
        database_url=plain_storage.url, api_keys=f"{TEST_API_KEYS},{read.config_entry()}"
    )
    root = hub.topic_root

    # A registered, named camera, a device that says it is online, and eleven people:
    # nine watchers (one from a 0.1 agent, attention unknown) and two passers-by.
    admin = {"X-API-Key": TEST_ADMIN_KEY}
    created = httpx.post(
        f"{hub.base_url}/v1/cameras",
        headers=admin,
        json={"device_id": "dev-b", "camera_id": "cam-hall", "name": "Main hall", "site": "lobby"},
    )
    assert created.status_code == 201, created.text
    now = datetime.now(UTC).replace(microsecond=0)
    online = DeviceStatus(
        device_id="dev-a",
        state=DeviceState.ONLINE,
        at=now - timedelta(seconds=5),
        agent_version="1.4.2",
        cameras=[CameraStatus(camera_id="cam-door", state=CameraState.LIVE, fps=12.5)],
    )
    publish_messages([(status_topic(root, "dev-a"), online.model_dump_json().encode())])
    watch, passer = {"watcher": True}, {"watcher": False, "gender": None, "age": None}
    door = [  # (hours ago, dwell, what else)
        (0.1, 6.0, watch | {"gender": "female", "age": 8.0, "attention_s": 3.0}),
        (1.2, 4.0, watch | {"gender": "female", "age": 22.0, "attention_s": 1.0}),
        (1.4, 5.0, watch | {"gender": "female", "age": 30.0, "attention_s": 2.5}),
        (3.5, 3.0, watch | {"gender": "female", "age": 31.0, "attention_s": 1.5}),
        (5.5, 8.0, watch | {"gender": "male", "age": 41.0, "attention_s": 4.0}),
        (8.5, 2.0, watch | {"gender": None, "age": None, "attention_s": 0.5}),
        (0.2, 10.0, passer),
        (2.3, 7.5, passer),
    ]
    hall = [
        (2.2, 4.0, watch | {"gender": "male", "age": 50.0, "attention_s": 2.0}),
        (2.6, 6.0, watch | {"gender": "male", "age": 60.0, "attention_s": 3.0}),
        (12.5, 5.0, {"gender": "male", "age": 70.0, "schema_version": 1}),
    ]
    events = [
        make_event("dev-a", "cam-door", last_seen=now - timedelta(hours=h), dwell_s=d, **kw)
        for h, d, kw in door
    ] + [
        make_event("dev-b", "cam-hall", last_seen=now - timedelta(hours=h), dwell_s=d, **kw)
        for h, d, kw in hall
    ]
    # Agents 0.3 send each watcher's calibrated P(female): the corrected share's input.
    events = [with_p_female(e, 0.65 + 0.3 * (i % 2) if e.gender and e.gender.value == "female"
                            else 0.1 + 0.05 * (i % 3)) for i, e in enumerate(events)]  # fmt: skip
    watchers = [e for e in events if event_watcher(e)]
    publish_event_list(root, events)
    wait_until(lambda: hub.get("/v1/stats")["totals"]["total"] == 11, what="events stored")
    wait_until(
        lambda: hub.get("/v1/devices/dev-a")["state"] == "online", what="the device's status"
    )

    context = browser.new_context(
        viewport={"width": 1280, "height": 1000}, locale="en-GB", timezone_id="UTC"
    )
    page = context.new_page()
    requests: list[str] = []
    page_errors: list[str] = []
    console_errors: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.on("pageerror", lambda e: page_errors.append(str(e)))
    page.on(
        "console",
        lambda m: (
            console_errors.append(f"{m.text} {m.location['url']}") if m.type == "error" else 0
        ),
    )
    try:
        page.goto(f"{hub.base_url}/dashboard")

        # The key form: an unknown key is refused, a read key opens the dashboard.
        expect(page.locator("#login")).to_be_visible()
        page.fill("#api-key", "ahk_" + "x" * 43)
        page.click("#login button")
        expect(page.locator("#login-error")).to_contain_text("does not know")
        page.fill("#api-key", read_key)
        page.click("#login button")
        loaded(page, "24h", "")
        assert page.evaluate("sessionStorage.length") == 1

        # Everything: eleven passers-by over 24 hourly bars, nine of them watchers, the
        # watchers' split and ages, two cameras. By hand: 9 / 11 watch; attention over
        # the eight schema 2 watchers, (3 + 1 + 2.5 + 1.5 + 4 + 0.5 + 2 + 3) / 8 = 2.19 s;
        # dwell over everyone, (6 + 4 + 5 + 3 + 8 + 2 + 10 + 7.5 + 4 + 6 + 5) / 11 = 5.5 s.
        expect(page.locator("#kpi-total")).to_have_text("11")
        expect(page.locator("#kpi-watchers")).to_have_text("9")
        expect(page.locator("#kpi-watcher-rate")).to_have_text("81.8%")
        expect(page.locator("#kpi-attention")).to_have_text("2.2 s")
        expect(page.locator("#kpi-dwell")).to_have_text("5.5 s")
        expect(page.locator("#kpi-returns")).to_have_text("0")
        bars = traffic(page)
        assert len(bars) == 24
        assert {t: n for t, n in bars.items() if n} == dict(
            Counter(hour(e.last_seen) for e in events)
        )
        watching = attrs(page, "#traffic rect.watchers", "data-start", "data-value")
        assert {datetime.fromisoformat(str(t)): int(str(n)) for t, n in watching} == dict(
            Counter(hour(e.last_seen) for e in watchers)
        )
        assert gender_split(page) == {"female": 4, "male": 4, "unknown": 1}  # watchers only
        # The corrected female share and its 90% range, as the hub computes them, in words.
        expect_share(page, hub.get("/v1/stats?shares=true&" + shown_range(page))["shares"])
        expected_ages = dict.fromkeys(AGE_BANDS, 0) | Counter(
            band(e.age.value if e.age else None) for e in watchers
        )
        assert ages(page) == expected_ages
        assert dict(attrs(page, "#cameras .camera-row", "data-camera", "data-value")) == {
            "dev-a/cam-door": "8",
            "dev-b/cam-hall": "3",
        }
        expect(page.locator("#cameras")).to_contain_text("Main hall")
        expect(page.locator('#devices tr[data-device="dev-a"] .badge')).to_have_text("online")
        expect(page.locator('#devices tr[data-device="dev-a"]')).to_contain_text("1.4.2")
        expect(page.locator('#devices tr[data-device="dev-b"] .badge')).to_have_text("unknown")
        # The live feed opens with the last minute's events (stored seconds ago).
        expect(page.locator("#live-state")).to_have_text("live")
        wait_until(lambda: len(feed_ids(page)) == 11, 15, "the feed's replay")
        assert set(feed_ids(page)) == {str(e.event_id) for e in events}
        expect(page.locator("#feed li .passing")).to_have_count(2)
        first_watcher = page.locator(f'#feed li[data-event-id="{events[0].event_id}"]')
        expect(first_watcher.locator(".watch")).to_have_text("watching 3.0 s")

        # The camera filter: only the hall's three men, everywhere but the comparison; the
        # 0.1 agent's one watches with unknown attention: (2 + 3) / 2.
        page.select_option("#camera", "dev-b/cam-hall")
        loaded(page, "24h", "dev-b/cam-hall")
        expect(page.locator("#kpi-total")).to_have_text("3")
        expect(page.locator("#kpi-watchers")).to_have_text("3")
        expect(page.locator("#kpi-watcher-rate")).to_have_text("100.0%")
        expect(page.locator("#kpi-attention")).to_have_text("2.5 s")
        expect(page.locator("#kpi-dwell")).to_have_text("5.0 s")
        assert gender_split(page) == {"female": 0, "male": 3, "unknown": 0}
        assert {b: n for b, n in ages(page).items() if n} == {"45-54": 1, "55-64": 1, "65+": 1}
        hall_shares = hub.get(
            "/v1/stats?shares=true&device_id=dev-b&camera_id=cam-hall&" + shown_range(page)
        )["shares"]
        assert hall_shares["gender"]["watchers"] == 2  # the 0.1 agent's sends no P(female)
        expect_share(page, hall_shares)
        assert sum(traffic(page).values()) == 3
        selected = attrs(page, "#cameras .camera-row.selected", "data-camera")
        assert selected == [("dev-b/cam-hall",)]
        expect(page.locator("#live-state")).to_have_text("live")
        hall_ids = {str(e.event_id) for e in events if e.camera_id == "cam-hall"}
        wait_until(lambda: set(feed_ids(page)) == hall_ids, 15, "the hall's feed")

        # A woman walks into the hall: she shows in the feed, then in the charts.
        new = make_event("dev-b", "cam-hall", gender="female", age=27.0, track_id=99)
        publish_event_list(root, [new])
        first = page.locator("#feed li").first
        expect(first).to_have_attribute("data-event-id", str(new.event_id))
        expect(first).to_contain_text("female")
        expect(first).to_contain_text("25-34")
        expect(page.locator("#kpi-total")).to_have_text("4")
        wait_until(lambda: gender_split(page)["female"] == 1, 10, "the split to follow")

        # The time range: the last hour by minute holds only her.
        page.select_option("#range", "1h")
        loaded(page, "1h", "dev-b/cam-hall")
        expect(page.locator("#traffic-title")).to_have_text("Traffic by minute")
        bars = traffic(page)
        assert len(bars) == 60 and sum(bars.values()) == 1
        expect(page.locator("#kpi-total")).to_have_text("1")

        # Back to everything for the screenshot: twelve people; the feed replays its minute.
        page.select_option("#range", "24h")
        page.select_option("#camera", "")
        loaded(page, "24h", "")
        expect(page.locator("#kpi-total")).to_have_text("12")
        expect(page.locator("#kpi-watchers")).to_have_text("10")
        expect(page.locator("#live-state")).to_have_text("live")
        wait_until(lambda: str(new.event_id) in feed_ids(page), 15, "the feed again")
        OUTPUT_DIR.mkdir(exist_ok=True)
        page.screenshot(path=str(SCREENSHOT), full_page=True)
        print(f"dashboard screenshot: {SCREENSHOT}")
    except Exception:
        OUTPUT_DIR.mkdir(exist_ok=True)
        page.screenshot(path=str(OUTPUT_DIR / "dashboard-failure.png"), full_page=True)
        raise
    finally:
        context.close()

    assert not page_errors, page_errors
    # The one error: the unknown key's 401.
    assert [e for e in console_errors if "status of 401" not in e] == [], console_errors
    foreign = [u for u in requests if not u.startswith(hub.base_url + "/")]
    assert not foreign, f"the page fetched from elsewhere: {foreign}"
    assert any("/v1/live/events" in u and "token=" not in u for u in requests)


def test_dashboard_files_are_served_with_a_strict_policy(hub: Any) -> None:
    page = httpx.get(f"{hub.base_url}/dashboard")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "script-src 'self'" in policy
    assert "http" not in page.text  # nothing from elsewhere
    for path, kind in (("dashboard.js", "text/javascript"), ("dashboard.css", "text/css")):
        served = httpx.get(f"{hub.base_url}/dashboard/{path}")
        assert served.status_code == 200 and served.headers["content-type"].startswith(kind)
    assert httpx.get(f"{hub.base_url}/dashboard/other.js").status_code == 404
