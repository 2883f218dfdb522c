"""Cameras through a running hub: register, read, change and delete with an admin key;
read keys may only read; the camera's state comes from its device's status, and its
site decides which site's statistics its events count for."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import httpx

from cloud_hub.security.apikeys import new_key
from edge_agent.contract import CameraState, CameraStatus, DeviceState, DeviceStatus
from tests.conftest import (
    TEST_API_KEYS,
    HubFactory,
    make_event,
    publish_event_list,
    publish_messages,
    wait_until,
)

# Sites of their own: the database is shared with other tests.
LOBBY = f"lobby-{uuid.uuid4().hex[:6]}"
STREET = f"street-{uuid.uuid4().hex[:6]}"


def test_cameras_crud_and_scopes(hub_factory: HubFactory) -> None:
    read_key, read = new_key("viewer", "read")
    hub = hub_factory.start(api_keys=f"{TEST_API_KEYS},{read.config_entry()}")
    admin = httpx.Client(base_url=hub.base_url, headers={"X-API-Key": hub.api_key}, timeout=10)
    viewer = httpx.Client(base_url=hub.base_url, headers={"X-API-Key": read_key}, timeout=10)
    anonymous = httpx.Client(base_url=hub.base_url, timeout=10)
    door = {
        "device_id": "dev-c",
        "camera_id": "door",
        "name": "Front door",
        "site": LOBBY,
        "location": "north wall, 2.4 m",
        "counting_line": {"line": [[0.1, 0.5], [0.9, 0.5]], "in_side": "right"},
    }
    created = admin.post("/v1/cameras", json=door)
    assert created.status_code == 201, created.text
    body = created.json()
    assert {k: body[k] for k in door} == door
    assert body["state"] is None and body["device_state"] == "unknown"
    assert admin.post("/v1/cameras", json=door).status_code == 409
    assert viewer.post("/v1/cameras", json={**door, "camera_id": "x"}).status_code == 403
    assert anonymous.post("/v1/cameras", json={**door, "camera_id": "x"}).status_code == 401
    bad_line = {**door, "camera_id": "y", "counting_line": {"line": [[0.5, 0.5], [0.5, 0.5]]}}
    assert admin.post("/v1/cameras", json=bad_line).status_code == 422
    assert admin.post("/v1/cameras", json={**door, "camera_id": "a/b"}).status_code == 422
    assert admin.post("/v1/cameras", json={**door, "camera_id": "z", "extra": 1}).status_code == 422
    hall = {"device_id": "dev-c", "camera_id": "hall", "site": LOBBY}
    assert admin.post("/v1/cameras", json=hall).status_code == 201

    mine = viewer.get("/v1/cameras", params={"device_id": "dev-c"}).json()
    assert [c["camera_id"] for c in mine] == ["door", "hall"]
    assert len(viewer.get("/v1/cameras", params={"site": LOBBY}).json()) == 2
    assert viewer.get("/v1/cameras", params={"site": STREET}).json() == []
    assert viewer.get("/v1/cameras/dev-c/door").json()["name"] == "Front door"
    assert viewer.get("/v1/cameras/dev-c/nope").status_code == 404

    # Partial update: sent fields change (null clears), others stay.
    changed = admin.patch("/v1/cameras/dev-c/door", json={"site": STREET, "name": None})
    assert changed.status_code == 200, changed.text
    assert changed.json()["site"] == STREET and changed.json()["name"] is None
    assert changed.json()["location"] == door["location"]
    assert changed.json()["updated_at"] > body["updated_at"]
    assert viewer.patch("/v1/cameras/dev-c/door", json={"site": "x"}).status_code == 403
    assert admin.patch("/v1/cameras/dev-c/nope", json={"site": "x"}).status_code == 404
    assert admin.patch("/v1/cameras/dev-c/door", json={"site": "\x00"}).status_code == 422

    # Its state, as its device says; its events count for its current site.
    status = DeviceStatus(
        device_id="dev-c",
        state=DeviceState.ONLINE,
        at=datetime.now(UTC),
        agent_version="1.0.0",
        cameras=[CameraStatus(camera_id="door", state=CameraState.LIVE, fps=9.0)],
    )
    publish_messages([(f"{hub.topic_root}/v1/dev-c/status", status.model_dump_json().encode())])
    seen = wait_until(
        lambda: (c := viewer.get("/v1/cameras/dev-c/door").json())["state"] == "live" and c,
        what="camera state",
    )
    assert seen["fps"] == 9.0 and seen["device_state"] == "online"
    assert viewer.get("/v1/cameras/dev-c/hall").json()["state"] is None
    publish_event_list(hub.topic_root, [make_event("dev-c", "door"), make_event("dev-c", "hall")])
    wait_until(lambda: hub.get("/v1/stats?device_id=dev-c")["totals"]["total"] == 2)
    assert hub.get(f"/v1/stats?site={STREET}")["totals"]["total"] == 1
    lobby = hub.get(f"/v1/stats?site={LOBBY}&group_by=camera")["totals"]["groups"]
    assert [g["key"] for g in lobby] == [{"device_id": "dev-c", "camera_id": "hall"}]

    assert viewer.delete("/v1/cameras/dev-c/door").status_code == 403
    assert admin.delete("/v1/cameras/dev-c/door").status_code == 204
    assert admin.delete("/v1/cameras/dev-c/door").status_code == 404
    assert hub.get(f"/v1/stats?site={STREET}")["totals"]["total"] == 0
    assert hub.get("/v1/stats?device_id=dev-c")["totals"]["total"] == 2  # events stay
