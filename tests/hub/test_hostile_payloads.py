"""Hostile input: thousands of malformed messages through the real broker to a real hub.

Hypothesis generates (topic, payload) pairs that are each invalid for a reason of their
own: wrong types, missing and extra fields, out-of-range values, far-future and
unordered timestamps, NUL characters, huge strings, deep nesting, invalid UTF-8, a device
in the topic that is not the payload's, truncated and non-object JSON, bad topics. Every
one is checked against the contract before it is sent (``parse_event`` must refuse it),
so the test cannot pass by sending valid events. Then the hub must still serve, have
stored none of them, have counted each one that reached its subscription under the
reason the contract gives, and still store a valid event sent afterwards.

Reproducible: the examples come from a fixed seed (``HOSTILE_SEED`` to change it) and
the test prints a digest of the whole set. Hypothesis also mixes literal constants from
the local modules loaded in the process into its choices, so the same seed gives the same
set for the same collection (this file alone, say) but a slightly different one inside
a larger run; every property holds for any set it draws.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from hypothesis import HealthCheck, Phase, assume, given, seed, settings
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion
from prometheus_client.parser import text_string_to_metric_families

from cloud_hub.storage import Rejected
from cloud_hub.validation import validate
from edge_agent.contract import MAX_PAYLOAD_BYTES, events_subscription, parse_event
from tests.conftest import MQTT_HOST, MQTT_PORT, make_event, publish_messages

EXAMPLES = 11_500  # about 90% reach the hub's subscription: at least 10,000 must
AT_THE_HUB = 10_000
SEED = int(os.environ.get("HOSTILE_SEED", "20261124"))
ROOT = "{root}"  # placeholder: the hub's topic root is substituted at publish time
# Fixed times keep payloads byte-for-byte reproducible: a valid event's are in the past,
# a clock fault's far beyond the contract's ten minutes of allowed skew.
BASE_TIME = datetime(2026, 1, 1, tzinfo=UTC)
FUTURE_TIME = datetime(2100, 1, 1, tzinfo=UTC)
MAX_SIZE = 250_000  # under Mosquitto's and paho's limits; too_large starts at 16 KiB

REQUIRED = [
    "event_id",
    "device_id",
    "camera_id",
    "track_id",
    "first_seen",
    "last_seen",
    "dwell_s",
    "crops",
]
FIELDS = [*REQUIRED, "schema_version", "gender", "age", "direction", "models"]

_ALNUM = "ABCXYZabcxyz0189"
ids = st.builds(
    lambda first, rest: first + rest,
    st.sampled_from(_ALNUM),
    st.text(alphabet=_ALNUM + "_.-", max_size=15),
)  # valid device and camera ids
# Topic text MQTT allows (no NUL, no control characters, no surrogates or non-characters)
# and Mosquitto passes on, without the separator and wildcards.
topic_text = st.text(
    st.characters(
        exclude_categories=("Cc", "Cs", "Cn"), exclude_characters="/+#", max_codepoint=0x2FFFF
    ),
    max_size=20,
)
bad_ids = st.one_of(
    st.just(""),
    st.sampled_from(["*", "dev*", "%2B", "%23", "\uff0b", "\uff03", "dev ok", "-lead", ".x"]),
    st.sampled_from(["..", "_", "dev\u00e9", "caf\u00e9-1", "dev\u2028", "$dev", "dev:1"]),
    st.integers(65, 300).map(lambda n: "d" * n),  # longer than the 64 an id may have
    topic_text.filter(lambda s: parse_id_rejects(s)),
)


def parse_id_rejects(candidate: str) -> bool:
    """Whether ``candidate`` is not a valid device or camera id."""
    try:
        parse_event(f"r/v1/{candidate}/events/c", b"{}", root="r")
    except ValueError as exc:
        return "invalid device or camera id" in str(exc) or "is not r/v1" in str(exc)
    return False


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def good_dict(draw: st.DrawFn, device: str, camera: str) -> dict[str, Any]:
    """A valid event as a JSON object (as ``make_event`` builds them), to be broken."""
    last = BASE_TIME - timedelta(seconds=draw(_AGO))
    dwell = draw(_DWELL)
    age = draw(_AGE)
    gender = draw(_GENDER)
    return {
        "schema_version": 1,
        "event_id": str(draw(_UUIDS)),
        "device_id": device,
        "camera_id": camera,
        "track_id": draw(_TRACK),
        "first_seen": iso(last - timedelta(seconds=dwell)),
        "last_seen": iso(last),
        "dwell_s": float(dwell),
        "gender": None if gender is None else {"value": gender, "confidence": 0.9},
        "age": None
        if age is None
        else {"value": age, "low": age - 5, "high": min(120, age + 5), "confidence": 0.6},
        "direction": draw(_DIRECTION),
        "crops": draw(_CROPS),
        "models": {"detector": "blazeface-full", "age": "dlib-int8"},
    }


def valid_payload(draw: st.DrawFn, device: str, camera: str) -> bytes:
    return json.dumps(good_dict(draw, device, camera)).encode()


_AGO = st.integers(0, 86_400)
_DWELL = st.integers(0, 600)
_AGE = st.one_of(st.none(), st.integers(5, 115))
_GENDER = st.sampled_from(["female", "male", None])
_UUIDS = st.uuids()
_TRACK = st.integers(0, 2**63 - 1)
_DIRECTION = st.sampled_from(["in", "out", None])
_CROPS = st.integers(0, 10)
_TENTH = st.integers(0, 9)
_BOOL = st.booleans()


def draw_size(draw: st.DrawFn, least: int) -> int:
    """Mostly a few times ``least``, one time in ten up to ``MAX_SIZE - 2000``."""
    high = MAX_SIZE - 2_000 if draw(_TENTH) == 0 else max(4 * least, 2_000)
    return draw(st.integers(least, high))


json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=30),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)

# A value of the wrong type (or an impossible one) for each field.
WRONG: dict[str, st.SearchStrategy[Any]] = {
    "event_id": st.one_of(
        st.text(alphabet="ghijklmnopqrstuvwxyz-", max_size=40), st.integers(), st.lists(st.none())
    ),
    "device_id": st.one_of(st.integers(), st.none(), st.lists(ids, min_size=1, max_size=2)),
    "camera_id": st.one_of(st.integers(), st.none(), st.dictionaries(ids, ids, max_size=2)),
    "track_id": st.one_of(
        st.integers(max_value=-1),
        st.integers(min_value=2**63),
        st.text(alphabet="abcxyz", min_size=1, max_size=10),
        st.floats(0.1, 0.9),
        st.lists(st.integers(), max_size=3),
    ),
    "first_seen": st.one_of(
        st.text(alphabet="abcxyz:-", max_size=25),
        st.sampled_from(["2024-13-45T25:61:00Z", "yesterday", "2024-01-01T00:00:00"]),
    ),
    "last_seen": st.one_of(
        st.sampled_from(["", "now", "2024-02-30T10:00:00Z", "2024-01-01 10:00"]),
        st.lists(st.integers(), min_size=1, max_size=3),
    ),
    "dwell_s": st.one_of(
        st.floats(max_value=-1e-6, allow_nan=False, allow_infinity=False),
        st.floats(min_value=7 * 24 * 3600.0 + 1, allow_nan=False, allow_infinity=False),
        st.text(alphabet="abc", min_size=1, max_size=5),
        st.dictionaries(st.text(max_size=3), st.integers(), min_size=1, max_size=2),
    ),
    "crops": st.one_of(
        st.integers(max_value=-1), st.integers(min_value=10_001), st.floats(0.1, 0.9)
    ),
    "schema_version": st.one_of(st.integers(2, 10**6), st.integers(max_value=0), st.just("1x")),
    "gender": st.one_of(
        st.fixed_dictionaries({"value": st.sampled_from(["other", "F", "", "FEMALE"])}).map(
            lambda d: {**d, "confidence": 0.9}
        ),
        st.fixed_dictionaries(
            {
                "value": st.just("male"),
                "confidence": st.one_of(st.floats(-1e9, 0.49), st.floats(1.0001, 1e9)),
            }
        ),
        st.text(min_size=1, max_size=10),
        st.lists(st.none(), min_size=1, max_size=2),
    ),
    "age": st.one_of(
        st.fixed_dictionaries(
            {"value": st.floats(121, 1e6), "low": st.just(0.0), "high": st.just(120.0)}
        ).map(lambda d: {**d, "confidence": 0.5}),
        st.fixed_dictionaries(
            {"value": st.just(40.0), "low": st.just(50.0), "high": st.just(60.0)}
        ).map(lambda d: {**d, "confidence": 0.5}),
        st.just({"value": 30.0}),
        st.integers(),
    ),
    "direction": st.one_of(st.sampled_from(["up", "IN", "", "sideways"]), st.integers()),
    "models": st.one_of(
        st.dictionaries(ids, ids, min_size=9, max_size=12),
        st.just({"age": "v1\u0000"}),
        st.just({"\u0000": "v1"}),
        st.just({"detector": "\u00e9t\u00e9"}),
        st.integers(65, 400).map(lambda n: {"age": "v" * n}),
        st.integers(33, 200).map(lambda n: {"k" * n: "v1"}),
        st.lists(st.text(max_size=5), min_size=1, max_size=3),
    ),
}


_HOW = st.sampled_from(
    ["missing", "wrong", "extra", "future", "unordered", "naive", "nul", "huge", "mix"]
)
_REQUIRED_LISTS = st.lists(st.sampled_from(REQUIRED), min_size=1, max_size=4)
_FIELD = st.sampled_from(FIELDS)
_FIELD_LISTS = st.lists(_FIELD, min_size=2, max_size=5)
_EXTRA_KEYS = st.text(max_size=12).filter(lambda k: k not in FIELDS)
_NUL_WHERE = st.sampled_from(["device_id", "camera_id", "event_id", "models_key"])
_HUGE_WHERE = st.sampled_from(["camera_id", "device_id", "event_id", "padding"])
_HUGE_CHAR = st.sampled_from("xZ9\u00e9\u4e2d")


def broken_event(draw: st.DrawFn, device: str, camera: str) -> bytes:
    """A valid event with something wrong in it: JSON that parses, a contract it breaks."""
    data = good_dict(draw, device, camera)
    how = draw(_HOW)
    if how == "missing":
        for name in draw(_REQUIRED_LISTS):
            data.pop(name, None)
    elif how == "wrong":
        name = draw(_FIELD)
        data[name] = draw(WRONG[name])
    elif how == "extra":
        for _ in range(draw(st.integers(1, 3))):
            key = draw(_EXTRA_KEYS)
            data[key] = draw(json_values)
    elif how == "future":
        years = draw(st.integers(0, 7_899))  # 2100 to 9999: valid dates, decades ahead
        last = FUTURE_TIME.replace(year=FUTURE_TIME.year + years)
        data["last_seen"] = iso(last)
        data["first_seen"] = iso(last - timedelta(seconds=draw(st.integers(0, 3600))))
    elif how == "unordered":
        data["first_seen"], data["last_seen"] = data["last_seen"], data["first_seen"]
        if data["first_seen"] == data["last_seen"]:
            data["last_seen"] = iso(BASE_TIME - timedelta(days=2))
    elif how == "naive":
        data["last_seen"] = data["last_seen"].removesuffix("Z")
    elif how == "nul":
        where = draw(_NUL_WHERE)
        if where == "models_key":
            data["models"] = {"age\u0000": "v1"}
        else:
            text = data[where]
            cut = draw(st.integers(0, len(text)))
            data[where] = text[:cut] + "\u0000" + text[cut:]
    elif how == "huge":
        size = draw_size(draw, 257)
        name = draw(_HUGE_WHERE)
        char = draw(_HUGE_CHAR)
        data[name] = char * (size // 6 if ord(char) > 127 else size)  # "\u4e2d" is 6 bytes
    else:  # several things wrong at once
        for name in draw(_FIELD_LISTS):
            data[name] = draw(WRONG[name])
    return json.dumps(data, ensure_ascii=draw(_BOOL)).encode()


_NESTING = st.sampled_from(["list", "object", "event"])


def deep_nesting(draw: st.DrawFn) -> bytes:
    depth = draw_size(draw, 1) // 6
    kind = draw(_NESTING)
    if kind == "list":
        return b"[" * depth + b"]" * depth
    if kind == "object":
        return b'{"a":' * depth + b"1" + b"}" * depth
    return b'{"event_id":' + b"[" * depth + b"]" * depth + b"}"


_NOT_UTF8 = st.sampled_from(
    [b"\xff", b"\xfe\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xc0\xaf", b"\xe2\x82", b"\x80"]
)


def invalid_utf8(draw: st.DrawFn, device: str, camera: str) -> bytes:
    """A valid event with bytes that are not UTF-8 spliced into one of its strings."""
    payload = valid_payload(draw, device, camera)
    bad = draw(_NOT_UTF8)
    quotes = [i for i, byte in enumerate(payload) if byte == ord('"')]
    at = quotes[draw(st.integers(0, len(quotes) - 1))] + 1
    return payload[:at] + bad + payload[at:]


@st.composite
def hostile_messages(draw: st.DrawFn) -> tuple[str, bytes]:
    """One message (topic with the root as ``{root}``, payload) the hub must refuse."""
    device, camera = draw(ids), draw(ids)
    good_topic = f"{ROOT}/v1/{device}/events/{camera}"
    kind = draw(_KINDS)
    if kind == "broken":
        return good_topic, broken_event(draw, device, camera)
    if kind == "not_object":
        value = draw(_NOT_OBJECTS)
        return good_topic, json.dumps(value).encode()
    if kind == "garbage":
        return good_topic, draw(st.binary(max_size=300))
    if kind == "truncated":
        payload = valid_payload(draw, device, camera)
        return good_topic, payload[: draw(st.integers(0, len(payload) - 1))]
    if kind == "nested":
        return good_topic, deep_nesting(draw)
    if kind == "utf8":
        return good_topic, invalid_utf8(draw, device, camera)
    if kind == "mismatch":
        other = draw(ids)
        assume(other not in (device, camera))
        which = draw(_DEVICE_OR_CAMERA)
        payload_device, payload_camera = (other, camera) if which == "device" else (device, other)
        return good_topic, valid_payload(draw, payload_device, payload_camera)
    if kind == "bad_id_topic":
        bad = draw(bad_ids)
        if draw(_BOOL):
            return f"{ROOT}/v1/{bad}/events/{camera}", valid_payload(draw, device, camera)
        return f"{ROOT}/v1/{device}/events/{bad}", valid_payload(draw, device, camera)
    if kind == "off_filter_topic":
        dev = draw(topic_text) if draw(_BOOL) else device
        shape = draw(_OFF_FILTER)
        topic = shape.replace("{dev}", dev).replace("{camera}", camera)
        return topic, valid_payload(draw, device, camera)
    # too_large: a valid event padded past the contract's limit
    payload = valid_payload(draw, device, camera)
    size = draw_size(draw, MAX_PAYLOAD_BYTES + 1)
    return good_topic, payload + b" " * (size - len(payload))


_KINDS = st.sampled_from(
    [
        "broken",
        "broken",
        "broken",
        "broken",
        "not_object",
        "garbage",
        "truncated",
        "nested",
        "utf8",
        "mismatch",
        "bad_id_topic",
        "off_filter_topic",
        "too_large",
    ]
)


_OFF_FILTER = st.sampled_from(
    [
        "{root}x/v1/{dev}/events/{camera}",
        "x{root}/v1/{dev}/events/{camera}",
        "{root}/v2/{dev}/events/{camera}",
        "{root}/V1/{dev}/events/{camera}",
        "{root}/v01/{dev}/events/{camera}",
        "{root}/v1/{dev}/event/{camera}",
        "{root}/v1/{dev}/events/{camera}/extra",
        "{root}/v1/{dev}/events",
        "{root}/v1/events/{camera}",
        "/{root}/v1/{dev}/events/{camera}",
        "{root}//v1/{dev}/events/{camera}",
        "{root}/v1/{dev}/events/{camera}/",
    ]
)
_NOT_OBJECTS = json_values.filter(lambda v: not isinstance(v, dict))
_DEVICE_OR_CAMERA = st.sampled_from(["device", "camera"])


def generate(examples: int = EXAMPLES, seed_value: int = SEED) -> list[tuple[str, bytes]]:
    """Draw ``examples`` hostile messages with Hypothesis, reproducibly from the seed, and
    check each against the contract as it is drawn (a valid one fails the draw, shrunk)."""
    drawn: list[tuple[str, bytes]] = []
    root = "root-under-test"

    @seed(seed_value)
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        phases=[Phase.generate, Phase.shrink],
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    @given(hostile_messages())
    def collect(message: tuple[str, bytes]) -> None:
        topic, payload = message
        assert len(payload) <= MAX_SIZE
        with pytest.raises(ValueError):
            parse_event(topic.replace(ROOT, root, 1), payload, root=root)
        drawn.append((topic, payload))

    collect()
    return drawn


def test_hostile_messages_are_all_refused_and_counted(
    hub: Any, db: Any, wait_until: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    started = time.monotonic()
    generated = generate()
    generated_s = time.monotonic() - started
    assert len(generated) >= EXAMPLES

    root = hub.topic_root
    digest = hashlib.sha256()
    for topic, payload in generated:
        digest.update(len(topic).to_bytes(4, "big") + topic.encode())
        digest.update(len(payload).to_bytes(4, "big") + payload)
    messages = [(topic.replace(ROOT, root, 1), payload) for topic, payload in generated]
    subscription = events_subscription(root)
    reaching = [(t, p) for t, p in messages if mqtt.topic_matches_sub(subscription, t)]
    expected: Counter[str] = Counter()
    for topic, payload in reaching:
        verdict = validate(topic, payload, root)
        assert isinstance(verdict, Rejected), (topic, payload[:200])
        expected[verdict.reason] += 1
    assert len(reaching) >= AT_THE_HUB, f"only {len(reaching)} reach the hub's subscription"
    assert len(messages) - len(reaching) >= 100, "off-filter topics must be exercised too"

    stored_before = db("SELECT count(*) FROM person_events")[0][0]
    rejected_before = _rejections(hub)

    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"hostile-{uuid.uuid4().hex[:8]}",
        protocol=mqtt.MQTTv5,
    )
    client.max_inflight_messages_set(200)
    client.connect(MQTT_HOST, MQTT_PORT)
    client.loop_start()
    try:
        counted = 0
        # Chunks under Mosquitto's default per-client queue (1000), each counted before the
        # next, so the broker never has a reason to drop one.
        for start in range(0, len(messages), 900):
            chunk = messages[start : start + 900]
            infos = [client.publish(topic, payload, qos=1) for topic, payload in chunk]
            for info in infos:
                info.wait_for_publish(timeout=30)
                assert info.is_published(), "the broker did not acknowledge a message"
            counted += sum(mqtt.topic_matches_sub(subscription, t) for t, _ in chunk)
            target = counted

            def arrived(target: int = target) -> bool:
                return sum(_rejections(hub).values()) - sum(rejected_before.values()) >= target

            wait_until(arrived, 60, f"{target} rejections counted")
        assert client.is_connected(), "the broker dropped the publisher"
    finally:
        client.disconnect()
        client.loop_stop()

    time.sleep(0.5)  # a count past the expected one would show now
    after = _rejections(hub)
    counts = {r: int(after.get(r, 0) - rejected_before.get(r, 0)) for r in after}
    counts = {r: n for r, n in counts.items() if n}
    elapsed = time.monotonic() - started
    with capsys.disabled():
        print(
            f"\n[hostile] generated={len(messages)} reaching_hub={len(reaching)}"
            f" counted={sum(counts.values())} by_reason={dict(sorted(counts.items()))}"
            f" generate_s={generated_s:.1f} total_s={elapsed:.1f} seed={SEED}"
            f" digest={digest.hexdigest()[:16]}"
        )
    assert counts == dict(expected), "each message counted once, under the contract's reason"
    assert sum(counts.values()) == len(reaching)

    status, health = hub.request("/healthz")
    assert status == 200 and health["status"] == "ok", health
    hub.get("/v1/stats")
    assert db("SELECT count(*) FROM person_events")[0][0] == stored_before

    letters = db("SELECT count(*) FROM rejected_messages WHERE topic LIKE $1", f"{root}/%")
    assert letters[0][0] == len(reaching)

    good = make_event("dev-after-hostile", "cam-1")
    client_topic = f"{root}/v1/{good.device_id}/events/{good.camera_id}"
    publish_messages([(client_topic, good.model_dump_json().encode())])
    wait_until(
        lambda: (
            db("SELECT count(*) FROM person_events WHERE event_id = $1", good.event_id)[0][0] == 1
        ),
        what="a valid event after the hostile ones",
    )
    assert db("SELECT count(*) FROM person_events")[0][0] == stored_before + 1


def _rejections(hub: Any) -> dict[str, float]:
    """``hub_messages_rejected_total`` by reason, from ``/metrics``."""
    status, text = hub.request("/metrics")
    assert status == 200
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "hub_messages_rejected_total":
                out[sample.labels["reason"]] = float(sample.value)
    return out
