"""Status, health and occupancy through the real broker to a running hub: devices online
and offline (retained status, last will, cleared status), versions, health, current
occupancy (Redis) and occupancy over time (database), and refusals of bad messages."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.contract import (
    CameraHealth,
    CameraState,
    CameraStatus,
    DeviceHealth,
    DeviceState,
    DeviceStatus,
    LatencyMs,
    Occupancy,
    health_topic,
    occupancy_topic,
    status_topic,
)
from tests.conftest import MQTT_HOST, MQTT_PORT, HubFactory, RunningHub, make_event, wait_until


def send(messages: list[tuple[str, bytes, int, bool]]) -> None:
    """Publish (topic, payload, qos, retain) as a device would."""
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"test-dev-{uuid.uuid4().hex[:8]}",
        protocol=mqtt.MQTTv5,
    )
    client.connect(MQTT_HOST, MQTT_PORT)
    client.loop_start()
    try:
        infos = [client.publish(t, p, qos=q, retain=r) for t, p, q, r in messages]
        for info in infos:
            info.wait_for_publish(timeout=20)
    finally:
        client.disconnect()
        client.loop_stop()


def device(hub: RunningHub, device_id: str) -> dict[str, Any] | None:
    status, body = hub.request(f"/v1/devices/{device_id}")
    return body if status == 200 else None


def test_devices_state_health_and_occupancy(hub_factory: HubFactory) -> None:
    root = hub_factory.topic_root
    now = datetime.now(UTC).replace(microsecond=0)
    online = DeviceStatus(
        device_id="dev-s",
        state=DeviceState.ONLINE,
        at=now - timedelta(seconds=5),
        agent_version="1.4.2",
        models={"detector": "blazeface-full", "age": "faceapi-fp16"},
        cameras=[
            CameraStatus(camera_id="door", state=CameraState.LIVE, fps=12.5),
            CameraStatus(camera_id="hall", state=CameraState.CONNECTING),
            CameraStatus(camera_id="shelf", state=CameraState.DOWN, error="truncated"),
        ],
        config_version="fleet-7",
    )
    # Retained before the hub runs: the hub learns it when it subscribes.
    send([(status_topic(root, "dev-s"), online.model_dump_json().encode(), 1, True)])
    hub = hub_factory.start()
    try:
        found = wait_until(lambda: device(hub, "dev-s"), 20, "the retained status")
        assert found["state"] == "online" and found["agent_version"] == "1.4.2"
        assert found["models"] == online.models and found["config_version"] == "fleet-7"
        assert found["cameras"] == [
            {"camera_id": "door", "state": "live", "fps": 12.5, "error": None},
            {"camera_id": "hall", "state": "connecting", "fps": None, "error": None},
            {"camera_id": "shelf", "state": "down", "fps": None, "error": "truncated"},
        ]
        assert found["events"] == 0 and found["last_seen"] is None and found["health"] is None

        health = DeviceHealth(
            device_id="dev-s",
            at=now,
            cameras=[CameraHealth(camera_id="door", fps_processed=11.0, fps_dropped=1.5)],
            latency_ms={"detect": LatencyMs(p50=8.0, p95=14.0)},
            outbox_depth=3,
            outbox_dropped=0,
            cpu_percent=42.5,
            memory_mb=310.0,
            temperature_c=61.0,
        )
        samples = [
            Occupancy(device_id="dev-s", camera_id=cam, at=now - timedelta(seconds=s), people=p)
            for cam, s, p in (("door", 30, 2), ("door", 20, 4), ("door", 10, 3), ("hall", 10, 1))
        ]
        send(
            [(health_topic(root, "dev-s"), health.model_dump_json().encode(), 0, False)]
            + [
                (occupancy_topic(root, o.device_id, o.camera_id), o.model_dump_json().encode(),
                 0, False)
                for o in samples
            ]
            + [
                # Refused: another device's status, and occupancy that is not JSON.
                (status_topic(root, "dev-x"), online.model_dump_json().encode(), 1, False),
                (occupancy_topic(root, "dev-s", "door"), b"{not json", 0, False),
            ]
        )  # fmt: skip
        found = wait_until(
            lambda: (d := device(hub, "dev-s")) and d["health"] and d, 20, "health stored"
        )
        assert found["health"]["cpu_percent"] == 42.5
        assert found["health"]["latency_ms"] == {"detect": {"p50": 8.0, "p95": 14.0}}
        assert found["health"]["cameras"][0]["fps_dropped"] == 1.5

        current = wait_until(
            lambda: (c := hub.get("/v1/occupancy/current?device_id=dev-s"))["total"] == 4 and c,
            20,
            "current occupancy",
        )
        assert current["source"] == "redis"
        assert {(c["camera_id"], c["people"]) for c in current["cameras"]} == {
            ("door", 3),
            ("hall", 1),
        }
        start = (now - timedelta(hours=1)).isoformat().replace("+00:00", "Z")
        end = (now + timedelta(minutes=1)).isoformat().replace("+00:00", "Z")
        by_camera = hub.get(
            f"/v1/occupancy?start={start}&end={end}&bucket=hour&group_by=camera&device_id=dev-s"
        )["buckets"]
        door = [b for b in by_camera if b["key"]["camera_id"] == "door"]
        assert sum(b["samples"] for b in door) == 3
        assert max(b["people_max"] for b in door) == 4
        assert hub.metric("hub_messages_rejected_total", reason="device_mismatch") == 1
        assert hub.metric("hub_messages_rejected_total", reason="bad_json") == 1

        # An event from it, then its last will: offline, what it runs is kept.
        hub_event = make_event("dev-s", "door")
        send(
            [
                (
                    f"{root}/v1/dev-s/events/door",
                    hub_event.model_dump_json().encode(),
                    1,
                    False,
                ),
                (
                    status_topic(root, "dev-s"),
                    DeviceStatus.last_will("dev-s").model_dump_json().encode(),
                    1,
                    True,
                ),
            ]
        )
        found = wait_until(
            lambda: (d := device(hub, "dev-s")) and d["state"] == "offline" and d["events"] and d,
            20,
            "offline",
        )
        assert found["agent_version"] == "1.4.2" and found["status_at"] is None
        assert found["last_heard_at"] >= found["status_received_at"]
        # (The database is shared with other tests: only this test's device is checked.)
        assert "dev-s" in [d["device_id"] for d in hub.get("/v1/devices?state=offline")]
        assert "dev-s" not in [d["device_id"] for d in hub.get("/v1/devices?state=online")]
        assert hub.request("/v1/devices/dev-none")[0] == 404
    finally:
        # Decommissioned: the retained status cleared; the device stays for its events.
        send([(status_topic(root, "dev-s"), b"", 1, True)])
    found = wait_until(
        lambda: (d := device(hub, "dev-s")) and d["state"] == "unknown" and d, 20, "cleared"
    )
    assert found["events"] == 1 and found["agent_version"] is None
