"""Home Assistant MQTT discovery, the plain availability topic and the daily counts.

Against the real Mosquitto: ``edge-agent run`` with ``[home_assistant] discovery`` on
publishes retained configs that carry what Home Assistant requires of each component,
their state and availability topics receive values their templates can read, Home
Assistant's birth message makes the agent announce again, and a restart with one camera
fewer removes that camera's entities (empty retained configs). Plus the pieces alone."""

from __future__ import annotations

import json
import re
import signal
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from edge_agent.config import AgentConfig
from edge_agent.contract import (
    DailyCount,
    DeviceState,
    availability_topic,
    config_topic,
    counts_topic,
    parse_daily_count,
    parse_status,
    status_topic,
)
from edge_agent.contract.home_assistant import (
    DeviceInfo,
    birth_topic,
    discovery_configs,
    ha_id,
)
from edge_agent.delivery.clock import AgentClock
from edge_agent.device.home_assistant import STATE_FILE, DailyCounts
from tests.conftest import MQTT_HOST, MQTT_PORT, make_event, wait_until
from tests.edge.broker_tools import Watcher, clear_retained, retained
from tests.edge.test_agent_service import start_agent, stop
from tests.paths import WALK_AND_PAUSE

AVAILABILITY_MODES = {"all", "any", "latest"}
TEMPLATE = re.compile(r"^\{\{ value_json\.([a-z_]+) \}\}$")


def render(template: str | None, payload: bytes) -> str:
    """What Home Assistant's ``value_template`` gives for ``payload`` (only the form
    ``{{ value_json.key }}`` the agent uses; anything else fails the test)."""
    if template is None:
        return payload.decode()
    match = TEMPLATE.match(template)
    assert match, f"unexpected template {template!r}"
    return str(json.loads(payload)[match.group(1)])


def write_config(
    path: Path, root: str, device: str, prefix: str, state: Path, cameras: list[str]
) -> Path:
    blocks = "".join(
        f'\n[[cameras]]\nid = "{camera}"\nsource = {json.dumps(str(WALK_AND_PAUSE))}\n'
        "loop = true\nrealtime = true\nfps = 5\n"
        for camera in cameras
    )
    path.write_text(
        f"""device_id = "{device}"
state_dir = {json.dumps(str(state))}

[mqtt]
host = "{MQTT_HOST}"
port = {MQTT_PORT}
topic_root = "{root}"
keepalive_s = 5

[metrics]
port = 0

[returns]
enabled = false

[health]
interval_s = 1
occupancy_interval_s = 1

[home_assistant]
discovery = true
prefix = "{prefix}"
{blocks}"""
    )
    return path


def check_config(topic: str, config: dict[str, Any], root: str, device: str) -> str:
    """Assert what Home Assistant requires of a discovery config; returns its component."""
    prefix_part, component, node, object_id, last = topic.rsplit("/", 4)
    assert last == "config" and prefix_part
    assert re.fullmatch(r"[A-Za-z0-9_-]+", node) and re.fullmatch(r"[A-Za-z0-9_-]+", object_id)
    assert component in {"sensor", "binary_sensor"}, topic
    assert isinstance(config["unique_id"], str) and config["unique_id"]
    assert isinstance(config["name"], str) and config["name"]
    assert isinstance(config["state_topic"], str) and config["state_topic"].startswith(root)
    block = config["device"]
    assert isinstance(block["identifiers"], list) and block["identifiers"]
    for key in ("name", "manufacturer", "model", "sw_version"):
        assert isinstance(block[key], str) and block[key], key
    assert block["name"] == device
    if component == "binary_sensor":
        assert {config["payload_on"], config["payload_off"]} == {"online", "offline"}
        assert config["device_class"] == "connectivity"
    else:
        assert config["unit_of_measurement"] == "people"
        assert config["state_class"] in {"measurement", "total_increasing"}
    for entry in config.get("availability", []):
        assert set(entry) <= {
            "topic",
            "payload_available",
            "payload_not_available",
            "value_template",
        }
        assert isinstance(entry["topic"], str) and "+" not in entry["topic"]
        assert entry.get("payload_available", "online") == "online"
        assert entry.get("payload_not_available", "offline") == "offline"
    if "availability" in config:
        assert config["availability_mode"] in AVAILABILITY_MODES
        topics = {entry["topic"] for entry in config["availability"]}
        assert topics == {status_topic(root, device), availability_topic(root, device)}
    return component


def latest(watcher: Watcher, topic: str) -> bytes | None:
    found = [payload for t, payload, _ in watcher.received() if t == topic]
    return found[-1] if found else None


def config_messages(watcher: Watcher, prefix: str) -> dict[str, bytes]:
    """The latest payload on each discovery config topic the watcher saw."""
    out: dict[str, bytes] = {}
    for topic, payload, _ in watcher.received(f"{prefix}/"):
        if topic.endswith("/config"):
            out[topic] = payload
    return out


@pytest.fixture
def ha_prefix() -> str:
    return f"ha-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def device(topic_root: str) -> Iterator[str]:
    name = f"ha-{uuid.uuid4().hex[:6]}"
    yield name
    topics = [status_topic(topic_root, name), config_topic(topic_root, name)]
    topics += [availability_topic(topic_root, name)]
    topics += [counts_topic(topic_root, name, camera) for camera in ("door", "hall")]
    clear_retained(topics)


def test_discovery_birth_and_removal_against_the_broker(
    topic_root: str, device: str, ha_prefix: str, tmp_path: Path
) -> None:
    watcher = Watcher([f"{ha_prefix}/#", f"{topic_root}/#"])
    state = tmp_path / "state"
    config = write_config(
        tmp_path / "agent.toml", topic_root, device, ha_prefix, state, ["door", "hall"]
    )
    agent = start_agent(config, tmp_path / "run1.log")
    announced: dict[str, bytes] = {}
    try:
        announced = wait_until(
            lambda: len(c := config_messages(watcher, ha_prefix)) >= 5 and c,
            90,
            "five discovery configs (connectivity, two sensors per camera)",
        )
        configs = {topic: json.loads(payload) for topic, payload in announced.items()}
        for topic, payload in announced.items():
            assert retained(topic) == payload, f"{topic} is not retained"
        components = [check_config(t, c, topic_root, device) for t, c in configs.items()]
        assert sorted(components) == ["binary_sensor"] + ["sensor"] * 4
        unique_ids = [c["unique_id"] for c in configs.values()]
        assert len(set(unique_ids)) == len(unique_ids)
        assert len({json.dumps(c["device"], sort_keys=True) for c in configs.values()}) == 1
        node = ha_id(device)
        assert all(t.startswith(f"{ha_prefix}/") and f"/{node}/" in t for t in configs)

        # Every state and availability topic gets a value its template reads.
        def readable() -> bool:
            for item in configs.values():
                payload = latest(watcher, item["state_topic"])
                if payload is None:
                    return False
                value = render(item.get("value_template"), payload)
                if "payload_on" in item:
                    assert value in {item["payload_on"], item["payload_off"]}
                    if value != item["payload_on"]:
                        return False
                else:
                    assert int(value) >= 0
                for entry in item.get("availability", []):
                    seen = latest(watcher, entry["topic"])
                    if seen is None or render(entry.get("value_template"), seen) != "online":
                        return False
            return True

        wait_until(readable, 60, "a readable value on every state and availability topic")
        assert retained(availability_topic(topic_root, device)) == b"online"
        today = retained(counts_topic(topic_root, device, "door"))
        assert today is not None
        count = parse_daily_count(counts_topic(topic_root, device, "door"), today, topic_root)
        assert count is not None and count.people >= 0

        # Home Assistant's birth message: every config again.
        before = len(watcher.received(f"{ha_prefix}/sensor/"))
        connectivity = len(watcher.received(f"{ha_prefix}/binary_sensor/"))
        _publish(birth_topic(ha_prefix), b"online")
        wait_until(
            lambda: (
                len(watcher.received(f"{ha_prefix}/sensor/")) >= before + 4
                and len(watcher.received(f"{ha_prefix}/binary_sensor/")) > connectivity
            ),
            30,
            "the configs again after Home Assistant's birth message",
        )

        # A clean stop: plain offline, JSON offline with a time.
        assert stop(agent) == 0, (tmp_path / "run1.log").read_text()[-3000:]
        assert retained(availability_topic(topic_root, device)) == b"offline"
        status_payload = retained(status_topic(topic_root, device))
        assert status_payload is not None
        final = parse_status(status_topic(topic_root, device), status_payload, root=topic_root)
        assert final is not None and final.state is DeviceState.OFFLINE
        saved = json.loads((state / STATE_FILE).read_text())
        assert set(saved["announced"]) == set(configs)

        # Restart with one camera fewer: its entities are removed (configs emptied).
        write_config(tmp_path / "agent.toml", topic_root, device, ha_prefix, state, ["door"])
        agent = start_agent(config, tmp_path / "run2.log")
        hall = [t for t in configs if f"/{node}/hall_" in t]
        assert len(hall) == 2
        wait_until(
            lambda: all(latest(watcher, t) == b"" for t in hall), 90, "hall's configs emptied"
        )
        for topic in hall:
            assert retained(topic) is None, topic
        for topic in set(configs) - set(hall):
            kept = retained(topic)
            assert kept is not None and json.loads(kept) == configs[topic], topic
        wait_until(
            lambda: (
                set(json.loads((state / STATE_FILE).read_text())["announced"])
                == set(configs) - set(hall)
            ),
            30,
            "the state file to forget hall",
        )
        assert stop(agent) == 0, (tmp_path / "run2.log").read_text()[-3000:]
    finally:
        if agent.poll() is None:
            agent.send_signal(signal.SIGKILL)
            agent.wait(timeout=30)
        watcher.close()
        clear_retained([*announced, *configs_of(topic_root, device, ha_prefix)])


def _publish(topic: str, payload: bytes) -> None:
    """A plain (not retained) QoS 1 message, as Home Assistant sends its birth."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=f"ha-{uuid.uuid4().hex[:8]}", protocol=mqtt.MQTTv5
    )
    client.connect(MQTT_HOST, MQTT_PORT)
    client.loop_start()
    try:
        client.publish(topic, payload, qos=1).wait_for_publish(5)
    finally:
        client.disconnect()
        client.loop_stop()


def configs_of(root: str, device: str, prefix: str) -> list[str]:
    """Every config topic the agent of these tests could have announced."""
    info = DeviceInfo(device, "0")
    return list(discovery_configs(prefix, root, info, ["door", "hall"]))


# --- the pieces, without a broker ------------------------------------------------------


def test_discovery_configs_name_every_entity_once() -> None:
    configs = discovery_configs(
        "homeassistant", "audience", DeviceInfo("shop.12", "0.1.0"), ["a.b"]
    )
    assert sorted(configs) == [
        "homeassistant/binary_sensor/shop_12/connectivity/config",
        "homeassistant/sensor/shop_12/a_b_people_in_view/config",
        "homeassistant/sensor/shop_12/a_b_people_today/config",
    ]
    today = configs["homeassistant/sensor/shop_12/a_b_people_today/config"]
    assert today["state_topic"] == counts_topic("audience", "shop.12", "a.b")
    assert today["state_class"] == "total_increasing"
    assert today["availability_mode"] == "all"
    with pytest.raises(ValueError, match="collide"):
        discovery_configs("homeassistant", "audience", DeviceInfo("d", "0"), ["a.b", "a_b"])


def test_config_section_defaults_off() -> None:
    config = AgentConfig()
    assert not config.home_assistant.discovery and not config.home_assistant.topics_on
    assert config.home_assistant.prefix == "homeassistant"
    on = AgentConfig.model_validate({"home_assistant": {"plain_topics": True}})
    assert on.home_assistant.topics_on
    with pytest.raises(ValueError):
        AgentConfig.model_validate({"home_assistant": {"prefix": "ha/#"}})


def test_daily_counts_reset_at_local_midnight_and_ignore_other_days() -> None:
    now = [datetime(2026, 11, 24, 12, 0, tzinfo=UTC)]
    clock = AgentClock(lambda: now[0], lambda: 0.0)
    counts = DailyCounts(["door"], clock)
    local_today = now[0].astimezone().date()
    seen = datetime.combine(local_today, datetime.min.time()).astimezone() + timedelta(hours=12)
    counts.count(make_event("dev-1", "door", last_seen=seen))
    counts.count(make_event("dev-1", "elsewhere", last_seen=seen))
    counts.count(make_event("dev-1", "door", last_seen=seen - timedelta(days=1)))
    day, values, _ = counts.snapshot()
    assert (day, values) == (local_today, {"door": 1})
    now[0] += timedelta(days=1)  # the next day: 0 again
    assert counts.snapshot()[1] == {"door": 0}
    counts.restore(date(2020, 1, 1), {"door": 5})  # an older day restored...
    assert counts.snapshot()[1] == {"door": 0}  # ...moves on to today at once


def test_daily_count_parses_and_checks_its_topic() -> None:
    at = datetime.now(UTC)
    message = DailyCount(device_id="d", camera_id="c", day=at.date(), at=at, people=3)
    topic = counts_topic("audience", "d", "c")
    assert parse_daily_count(topic, message.model_dump_json().encode()) == message
    assert parse_daily_count(topic, b"") is None
    with pytest.raises(ValueError, match="does not match"):
        parse_daily_count(
            counts_topic("audience", "d", "other"), message.model_dump_json().encode()
        )
