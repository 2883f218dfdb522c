"""Hostile input: thousands of malformed messages through the real broker to a real hub.

Hypothesis generates (topic, payload) pairs that are each invalid for a reason of their
own: wrong types, missing and extra fields, out-of-range values, far-future, pre-2020 and
unordered timestamps, NUL characters, huge strings, deep nesting, invalid UTF-8, a device
in the topic that is not the payload's, truncated and non-object JSON, bad topics. Every
one is checked against the contract before it is sent (``parse_event`` must refuse it),
so the test cannot pass by sending valid events. Then the hub must still serve, have
stored none of them, have dead-lettered and counted each one that reached its
subscription under the reason expected for it, and still store a valid event sent
afterwards.

The expected reason is never asked of the hub's code: each branch of the generator
names the reason of what it built (a pre-2020 time is ``bad_time``, a truncated object
``bad_json``, ...), by the precedence the hub documents: ``too_large`` (over 16 KiB),
then ``bad_topic``, then ``invalid_utf8``, ``bad_json``, ``schema`` (which includes
``last_seen`` before ``first_seen``), ``device_mismatch``, ``bad_time`` (before
2020-01-01 or more than ten minutes ahead). Each message's reason is checked in the dead
letters, not only the totals. ``FIXED`` below is the same idea as a table written out by
hand, one message per row with its reason.

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

from edge_agent.contract import (
    EARLIEST_EVENT_TIME,
    MAX_CLOCK_SKEW,
    MAX_PAYLOAD_BYTES,
    events_subscription,
    parse_event,
)
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
# The limits the reasons follow, written out rather than read from the code under test.
PAYLOAD_LIMIT = 16 * 1024  # bytes; one more is too_large
EARLIEST = datetime(2020, 1, 1, tzinfo=UTC)  # a time before it is bad_time
SKEW = timedelta(minutes=10)  # a time further ahead than this is bad_time
DEEP = 1_000  # JSON nested this deep is bad_json (the deepest event field is 2 levels)

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
    ["missing", "wrong", "extra", "future", "past", "unordered", "naive", "nul", "huge", "mix"]
)
_LONGEST_BEFORE = int((EARLIEST - datetime(1, 1, 2, tzinfo=UTC)).total_seconds())
_BEFORE_EARLIEST = st.one_of(
    st.just(datetime(1970, 1, 1, tzinfo=UTC)),  # a device clock that was never set
    st.integers(1, _LONGEST_BEFORE).map(lambda s: EARLIEST - timedelta(seconds=s)),
)
_REQUIRED_LISTS = st.lists(st.sampled_from(REQUIRED), min_size=1, max_size=4)
_FIELD = st.sampled_from(FIELDS)
_FIELD_LISTS = st.lists(_FIELD, min_size=2, max_size=5)
_EXTRA_KEYS = st.text(max_size=12).filter(lambda k: k not in FIELDS)
_NUL_WHERE = st.sampled_from(["device_id", "camera_id", "event_id", "models_key"])
_HUGE_WHERE = st.sampled_from(["camera_id", "device_id", "event_id", "padding"])
_HUGE_CHAR = st.sampled_from("xZ9\u00e9\u4e2d")


def broken_event(draw: st.DrawFn, device: str, camera: str) -> tuple[bytes, str]:
    """A valid event with something wrong in it: JSON that parses, a contract it breaks;
    and the reason the hub must give."""
    data = good_dict(draw, device, camera)
    how = draw(_HOW)
    reason = "schema"
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
        reason = "bad_time"
    elif how == "past":  # both times before 2020, or first_seen alone
        moment = draw(_BEFORE_EARLIEST)
        if draw(_BOOL):
            data["last_seen"] = iso(moment)
            moment -= timedelta(seconds=draw(_DWELL))
        data["first_seen"] = iso(moment)
        reason = "bad_time"
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
    payload = json.dumps(data, ensure_ascii=draw(_BOOL)).encode()
    return payload, "too_large" if len(payload) > PAYLOAD_LIMIT else reason


_NESTING = st.sampled_from(["list", "object", "event"])
_DEPTH = st.one_of(st.integers(0, 8), st.integers(DEEP, 40_000))


def deep_nesting(draw: st.DrawFn) -> tuple[bytes, str]:
    """Nested lists or objects, shallow (JSON that is not an event, or not JSON at all
    when empty) or deep (refused as JSON), and the reason."""
    depth = draw(_DEPTH)
    kind = draw(_NESTING)
    if kind == "list":  # depth 0: nothing at all
        payload, shallow = b"[" * depth + b"]" * depth, "schema" if depth else "bad_json"
    elif kind == "object":  # depth 0: the number 1
        payload, shallow = b'{"a":' * depth + b"1" + b"}" * depth, "schema"
    else:  # depth 0: {"event_id":}
        payload = b'{"event_id":' + b"[" * depth + b"]" * depth + b"}"
        shallow = "schema" if depth else "bad_json"
    if len(payload) > PAYLOAD_LIMIT:
        return payload, "too_large"
    return payload, "bad_json" if depth >= DEEP else shallow


# Bytes no JSON text can start with: garbage after one of them is never JSON.
_NOT_JSON_START = st.sampled_from([b"\x00", b"#", b"}", b"]", b"'", b"<", b"=", b"\x7f"])


def garbage(draw: st.DrawFn) -> tuple[bytes, str]:
    """Random bytes: not UTF-8 (invalid_utf8), or UTF-8 that is not JSON (bad_json)."""
    payload = draw(st.binary(max_size=300))
    try:
        payload.decode("utf-8")  # the UTF-8 standard, as any strict decoder applies it
    except UnicodeDecodeError:
        return payload, "invalid_utf8"
    return draw(_NOT_JSON_START) + payload, "bad_json"


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


Message = tuple[str, bytes, str]  # topic (the root as ``{root}``), payload, expected reason


@st.composite
def hostile_messages(draw: st.DrawFn) -> Message:
    """One message the hub must refuse, and the reason it must give (when it reaches the
    hub: an off-filter topic does not)."""
    device, camera = draw(ids), draw(ids)
    good_topic = f"{ROOT}/v1/{device}/events/{camera}"
    kind = draw(_KINDS)
    if kind == "broken":
        return good_topic, *broken_event(draw, device, camera)
    if kind == "not_object":  # valid JSON, but not an object
        value = draw(_NOT_OBJECTS)
        return good_topic, json.dumps(value).encode(), "schema"
    if kind == "garbage":
        return good_topic, *garbage(draw)
    if kind == "truncated":  # no proper prefix of a JSON object is JSON
        payload = valid_payload(draw, device, camera)
        return good_topic, payload[: draw(st.integers(0, len(payload) - 1))], "bad_json"
    if kind == "nested":
        return good_topic, *deep_nesting(draw)
    if kind == "utf8":
        return good_topic, invalid_utf8(draw, device, camera), "invalid_utf8"
    if kind == "mismatch":
        other = draw(ids)
        assume(other not in (device, camera))
        which = draw(_DEVICE_OR_CAMERA)
        payload_device, payload_camera = (other, camera) if which == "device" else (device, other)
        return good_topic, valid_payload(draw, payload_device, payload_camera), "device_mismatch"
    if kind == "bad_id_topic":
        bad = draw(bad_ids)
        if draw(_BOOL):
            topic = f"{ROOT}/v1/{bad}/events/{camera}"
        else:
            topic = f"{ROOT}/v1/{device}/events/{bad}"
        return topic, valid_payload(draw, device, camera), "bad_topic"
    if kind == "off_filter_topic":
        dev = draw(topic_text) if draw(_BOOL) else device
        shape = draw(_OFF_FILTER)
        topic = shape.replace("{dev}", dev).replace("{camera}", camera)
        return topic, valid_payload(draw, device, camera), "bad_topic"
    # too_large: a valid event padded past the contract's limit
    payload = valid_payload(draw, device, camera)
    size = draw_size(draw, PAYLOAD_LIMIT + 1)
    return good_topic, payload + b" " * (size - len(payload)), "too_large"


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


def generate(examples: int = EXAMPLES, seed_value: int = SEED) -> list[Message]:
    """Draw ``examples`` hostile messages with Hypothesis, reproducibly from the seed, and
    check each against the contract as it is drawn (a valid one fails the draw, shrunk)."""
    drawn: list[Message] = []
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
    def collect(message: Message) -> None:
        topic, payload, _ = message
        assert len(payload) <= MAX_SIZE
        with pytest.raises(ValueError):
            parse_event(topic.replace(ROOT, root, 1), payload, root=root)
        drawn.append(message)

    collect()
    return drawn


def test_hostile_messages_are_all_refused_and_counted(
    hub_factory: Any, db: Any, wait_until: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    # The hub asks the broker for packets of at most 64 KiB by default, and the broker
    # drops bigger ones unseen; here every message up to MAX_SIZE must arrive and be
    # labelled, so the hub takes them all.
    hub = hub_factory.start(mqtt_max_packet_bytes=MAX_SIZE + 64 * 1024)
    started = time.monotonic()
    generated = generate()
    generated_s = time.monotonic() - started
    assert len(generated) >= EXAMPLES

    root = hub.topic_root
    digest = hashlib.sha256()
    for topic, payload, _ in generated:
        digest.update(len(topic).to_bytes(4, "big") + topic.encode())
        digest.update(len(payload).to_bytes(4, "big") + payload)
    labelled = [(topic.replace(ROOT, root, 1), payload, why) for topic, payload, why in generated]
    messages = [(topic, payload) for topic, payload, _ in labelled]
    subscription = events_subscription(root)
    reaching = [(t, p, why) for t, p, why in labelled if mqtt.topic_matches_sub(subscription, t)]
    expected = Counter(why for _, _, why in reaching)
    assert set(expected) >= {
        "too_large",
        "bad_topic",
        "invalid_utf8",
        "bad_json",
        "schema",
        "device_mismatch",
        "bad_time",
    }, expected
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
    assert counts == dict(expected), "each message counted once, under the reason expected for it"
    assert sum(counts.values()) == len(reaching)

    status, health = hub.request("/healthz")
    assert status == 200 and health["status"] == "ok", health
    hub.get("/v1/stats")
    assert db("SELECT count(*) FROM person_events")[0][0] == stored_before

    # Message by message: each dead letter (topic, first 2 KiB) under its expected reason.
    letters = db(
        "SELECT topic, payload, reason FROM rejected_messages WHERE starts_with(topic, $1)",
        f"{root}/",
    )
    assert len(letters) == len(reaching)
    got = Counter((r["topic"], bytes(r["payload"]), r["reason"]) for r in letters)
    want = Counter((t, p[:2048], why) for t, p, why in reaching)
    wrong = sorted((got - want).items())[:5], sorted((want - got).items())[:5]
    assert got == want, f"labelled differently (got, expected): {wrong}"

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


# --- the same, as a table written out by hand ---------------------------------------------

DROP = object()  # a field to leave out
_FIXED_TOPIC = "{root}/v1/{dev}/events/cam-1"


def _event(device: str, **changes: Any) -> bytes:
    """A valid event of ``device`` (camera ``cam-1``, 2026-01-01) with ``changes`` made."""
    data: dict[str, Any] = {
        "schema_version": 1,
        "event_id": str(uuid.uuid5(uuid.NAMESPACE_OID, device)),
        "device_id": device,
        "camera_id": "cam-1",
        "track_id": 7,
        "first_seen": "2026-01-01T10:00:00Z",
        "last_seen": "2026-01-01T10:00:04.5Z",
        "dwell_s": 4.5,
        "gender": {"value": "female", "confidence": 0.9},
        "age": {"value": 30.0, "low": 25.0, "high": 35.0, "confidence": 0.6},
        "direction": "in",
        "crops": 3,
        "models": {"detector": "blazeface-full"},
    }
    for name, value in changes.items():
        if value is DROP:
            del data[name]
        else:
            data[name] = value
    return json.dumps(data).encode()


def _padded(payload: bytes, size: int) -> bytes:
    return payload + b" " * (size - len(payload))


def _ahead(now: datetime, **delta: float) -> str:
    return iso(now + timedelta(**delta))


Make = Any  # (device, now) -> payload
# (what, topic shape, payload, the reason the hub must give). ``{dev}`` is the row's own
# device id (fixed-00, fixed-01, ...), so each row has a topic of its own; ``now`` is only
# for the rows about a clock that runs ahead.
FIXED: list[tuple[str, str, Make, str]] = [
    # too_large comes first: more than 16 KiB, whatever the topic and the content.
    ("a valid event padded to 16 KiB + 1", _FIXED_TOPIC,
     lambda d, now: _padded(_event(d), 16 * 1024 + 1), "too_large"),
    ("20 KB of x on a bad topic", "{root}/v1/bad id {dev}/events/cam-1",
     lambda d, now: b"x" * 20_000, "too_large"),
    ("exactly 16 KiB, crops missing (not too large)", _FIXED_TOPIC,
     lambda d, now: _padded(_event(d, crops=DROP), 16 * 1024), "schema"),
    # bad_topic: a topic the subscription matches but whose ids are not ids.
    ("a space in the device id", "{root}/v1/dev ok-{dev}/events/cam-1",
     lambda d, now: _event(d), "bad_topic"),
    ("an empty device level", "{root}/v1//events/{dev}", lambda d, now: _event(d), "bad_topic"),
    ("a 65-character device id", "{root}/v1/{dev}" + "d" * 57 + "/events/cam-1",
     lambda d, now: _event(d), "bad_topic"),
    ("a bad topic and a payload that is not UTF-8", "{root}/v1/caf\u00e9-{dev}/events/cam-1",
     lambda d, now: b"\xff\xfe", "bad_topic"),
    # invalid_utf8
    ("0xff inside a string", _FIXED_TOPIC,
     lambda d, now: _event(d).replace(b'"cam-1"', b'"cam-\xff1"'), "invalid_utf8"),
    ("a UTF-16 surrogate encoded as UTF-8", _FIXED_TOPIC,
     lambda d, now: _event(d).replace(b'"cam-1"', b'"cam-\xed\xa0\x801"'), "invalid_utf8"),
    ("an overlong encoding of /", _FIXED_TOPIC,
     lambda d, now: _event(d).replace(b'"cam-1"', b'"cam-\xc0\xaf1"'), "invalid_utf8"),
    ("not UTF-8 and not JSON", _FIXED_TOPIC, lambda d, now: b"\xff\xfe\x00garbage",
     "invalid_utf8"),
    # bad_json
    ("an empty payload", _FIXED_TOPIC, lambda d, now: b"", "bad_json"),
    ("an event without its closing brace", _FIXED_TOPIC, lambda d, now: _event(d)[:-1],
     "bad_json"),
    ("a trailing comma", _FIXED_TOPIC, lambda d, now: _event(d)[:-1] + b",}", "bad_json"),
    ("single quotes", _FIXED_TOPIC, lambda d, now: b"{'event_id': 1}", "bad_json"),
    ("plain text", _FIXED_TOPIC, lambda d, now: b"hello", "bad_json"),
    ("lists nested 5,000 deep", _FIXED_TOPIC, lambda d, now: b"[" * 5000 + b"]" * 5000,
     "bad_json"),
    # schema: JSON, but not an event
    ("a JSON list", _FIXED_TOPIC, lambda d, now: b"[]", "schema"),
    ("a JSON number", _FIXED_TOPIC, lambda d, now: b"1", "schema"),
    ("JSON null", _FIXED_TOPIC, lambda d, now: b"null", "schema"),
    ("an empty object", _FIXED_TOPIC, lambda d, now: b"{}", "schema"),
    ("crops missing", _FIXED_TOPIC, lambda d, now: _event(d, crops=DROP), "schema"),
    ("an extra field", _FIXED_TOPIC, lambda d, now: _event(d, colour="red"), "schema"),
    ("a negative dwell", _FIXED_TOPIC, lambda d, now: _event(d, dwell_s=-1.0), "schema"),
    ("age 121", _FIXED_TOPIC,
     lambda d, now: _event(d, age={"value": 121.0, "low": 110.0, "high": 121.0,
                                   "confidence": 0.5}), "schema"),
    ("gender other", _FIXED_TOPIC,
     lambda d, now: _event(d, gender={"value": "other", "confidence": 0.9}), "schema"),
    ("schema_version 2", _FIXED_TOPIC, lambda d, now: _event(d, schema_version=2), "schema"),
    ("a last_seen without a time zone", _FIXED_TOPIC,
     lambda d, now: _event(d, last_seen="2026-01-01T10:00:04.5"), "schema"),
    ("a NUL in the payload's device id", _FIXED_TOPIC,
     lambda d, now: _event(d, device_id=d + "\u0000"), "schema"),
    ("last_seen before first_seen", _FIXED_TOPIC,
     lambda d, now: _event(d, first_seen="2026-01-01T10:00:10Z"), "schema"),
    ("last_seen before first_seen, both in 1970", _FIXED_TOPIC,
     lambda d, now: _event(d, first_seen="1970-01-01T00:00:10Z",
                           last_seen="1970-01-01T00:00:00Z"), "schema"),
    ("year 1 at +14:00 (year 0 in UTC)", _FIXED_TOPIC,
     lambda d, now: _event(d, first_seen="0001-01-01T00:00:00+14:00",
                           last_seen="0001-01-01T00:00:00+14:00", dwell_s=0.0), "schema"),
    # device_mismatch: a device speaking for another
    ("the payload's device is another's", _FIXED_TOPIC,
     lambda d, now: _event(d, device_id="someone-else"), "device_mismatch"),
    ("the payload's camera is another's", _FIXED_TOPIC,
     lambda d, now: _event(d, camera_id="cam-2"), "device_mismatch"),
    # bad_time: before 2020-01-01, or more than ten minutes ahead
    ("1970: a clock that was never set", _FIXED_TOPIC,
     lambda d, now: _event(d, first_seen="1970-01-01T00:00:00Z",
                           last_seen="1970-01-01T00:00:04.5Z"), "bad_time"),
    ("year 1", _FIXED_TOPIC,
     lambda d, now: _event(d, first_seen="0001-01-01T00:00:00Z",
                           last_seen="0001-01-01T00:00:00Z", dwell_s=0.0), "bad_time"),
    ("one second before 2020", _FIXED_TOPIC,
     lambda d, now: _event(d, first_seen="2019-12-31T23:59:54.5Z",
                           last_seen="2019-12-31T23:59:59Z"), "bad_time"),
    ("first_seen alone before 2020", _FIXED_TOPIC,
     lambda d, now: _event(d, first_seen="2019-12-31T23:59:59Z"), "bad_time"),
    ("an hour ahead", _FIXED_TOPIC,
     lambda d, now: _event(d, first_seen=_ahead(now, hours=1, seconds=-4.5),
                           last_seen=_ahead(now, hours=1)), "bad_time"),
    ("last_seen alone an hour ahead", _FIXED_TOPIC,
     lambda d, now: _event(d, last_seen=_ahead(now, hours=1)), "bad_time"),
    ("eleven minutes ahead", _FIXED_TOPIC,
     lambda d, now: _event(d, first_seen=_ahead(now, minutes=11),
                           last_seen=_ahead(now, minutes=11)), "bad_time"),
    ("year 9999", _FIXED_TOPIC,
     lambda d, now: _event(d, first_seen="9999-12-31T23:59:50Z",
                           last_seen="9999-12-31T23:59:59Z"), "bad_time"),
]  # fmt: skip
# Just inside the bounds: stored, not refused.
ACCEPTED: list[tuple[str, Make]] = [
    ("exactly 2020-01-01T00:00:00Z", lambda d, now: _event(
        d, first_seen="2020-01-01T00:00:00Z", last_seen="2020-01-01T00:00:00Z", dwell_s=0.0)),
    ("nine minutes ahead", lambda d, now: _event(
        d, first_seen=_ahead(now, minutes=9), last_seen=_ahead(now, minutes=9))),
    ("exactly 16 KiB", lambda d, now: _padded(_event(d), 16 * 1024)),
]  # fmt: skip


def test_the_written_out_limits_are_the_contracts() -> None:
    """The literals the expected reasons follow are the contract's (docs/mqtt-contract.md)."""
    assert MAX_PAYLOAD_BYTES == PAYLOAD_LIMIT == 16 * 1024
    assert EARLIEST_EVENT_TIME == EARLIEST == datetime(2020, 1, 1, tzinfo=UTC)
    assert MAX_CLOCK_SKEW == SKEW


def test_each_hostile_message_of_the_table_gets_its_reason(
    hub: Any, db: Any, wait_until: Any
) -> None:
    root, now = hub.topic_root, datetime.now(UTC)
    rows = [
        (what, shape.format(root=root, dev=f"fixed-{i:02d}"), make(f"fixed-{i:02d}", now), why)
        for i, (what, shape, make, why) in enumerate(FIXED)
    ]
    assert len({topic for _, topic, _, _ in rows}) == len(rows)
    subscription = events_subscription(root)
    assert all(mqtt.topic_matches_sub(subscription, topic) for _, topic, _, _ in rows)
    before = _rejections(hub)

    publish_messages([(topic, payload) for _, topic, payload, _ in rows])
    wait_until(
        lambda: sum(_rejections(hub).values()) - sum(before.values()) >= len(rows),
        60,
        f"{len(rows)} rejections counted",
    )

    got = {
        r["topic"]: r["reason"]
        for r in db(
            "SELECT topic, reason FROM rejected_messages WHERE starts_with(topic, $1)",
            f"{root}/",
        )
    }
    wrong = [(what, got.get(topic), why) for what, topic, _, why in rows if got.get(topic) != why]
    assert not wrong, "(message, reason given, reason expected): " + repr(wrong)
    assert len(got) == len(rows)
    after = _rejections(hub)
    counts = {r: int(n - before.get(r, 0)) for r, n in after.items() if n - before.get(r, 0)}
    assert counts == dict(Counter(why for *_, why in rows))
    stored = db("SELECT count(*) FROM person_events WHERE device_id LIKE 'fixed-%'")
    assert stored[0][0] == 0

    good = [
        (f"{root}/v1/edge-{i}/events/cam-1", make(f"edge-{i}", now), what)
        for i, (what, make) in enumerate(ACCEPTED)
    ]
    publish_messages([(topic, payload) for topic, payload, _ in good])
    for i, (_, _, what) in enumerate(good):
        wait_until(
            lambda i=i: (
                db("SELECT count(*) FROM person_events WHERE device_id = $1", f"edge-{i}")[0][0]
                == 1
            ),
            what=f"{what} stored",
        )
