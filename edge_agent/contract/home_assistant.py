"""Home Assistant MQTT discovery: the retained configs that make a device's topics entities.

Home Assistant reads ``{prefix}/{component}/{node_id}/{object_id}/config`` (retained JSON)
and creates one entity per config, grouped into a device by ``device.identifiers``. An
empty retained payload on the same topic removes the entity. Home Assistant announces
itself with ``online`` on ``{prefix}/status`` (its birth message); an agent republishes
its configs then. Field names are Home Assistant's (MQTT sensor and binary sensor).

Per device (``node_id`` = the device id with ``.`` as ``_``; Home Assistant allows only
``[A-Za-z0-9_-]`` there):

- ``binary_sensor/{node}/connectivity``: the JSON status's ``state``, device class
  ``connectivity``; on = ``online``. It has no availability of its own, so an agent that
  vanished shows *disconnected* (from its last will) rather than *unavailable*.

Per camera (``{cam}`` = the camera id with ``.`` as ``_``):

- ``sensor/{node}/{cam}_people_in_view``: ``people`` of the occupancy topic;
- ``sensor/{node}/{cam}_people_today``: ``people`` of the retained counts topic, state class
  ``total_increasing`` (a drop to 0 at local midnight starts a new cycle).

The sensors are *available* only while both availability entries say so (mode ``all``):
the JSON status (through ``{{ value_json.state }}``), which is also the MQTT last will and
so turns ``offline`` on an unclean disconnect, and the plain availability topic, which the
agent sets on connect and on a clean stop.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from edge_agent.contract.topics import (
    AVAILABILITY_OFFLINE,
    AVAILABILITY_ONLINE,
    availability_topic,
    counts_topic,
    occupancy_topic,
    status_topic,
)

DEFAULT_DISCOVERY_PREFIX: Final = "homeassistant"
BIRTH_ONLINE: Final = "online"  # Home Assistant's birth payload on {prefix}/status
PEOPLE_UNIT: Final = "people"
STATE_TEMPLATE: Final = "{{ value_json.state }}"
PEOPLE_TEMPLATE: Final = "{{ value_json.people }}"
_HA_ID: Final = re.compile(r"^[A-Za-z0-9_-]+$")


def ha_id(value: str) -> str:
    """A contract id as a Home Assistant ``node_id``/``object_id`` (``.`` becomes ``_``)."""
    out = value.replace(".", "_")
    if not _HA_ID.match(out):
        raise ValueError(f"{value!r} cannot be a Home Assistant node or object id")
    return out


def birth_topic(prefix: str = DEFAULT_DISCOVERY_PREFIX) -> str:
    """``{prefix}/status``: where Home Assistant publishes ``online`` when it starts."""
    return f"{prefix}/status"


def discovery_topic(prefix: str, component: str, node_id: str, object_id: str) -> str:
    """``{prefix}/{component}/{node_id}/{object_id}/config``."""
    return f"{prefix}/{component}/{ha_id(node_id)}/{ha_id(object_id)}/config"


def discovery_filter(prefix: str, component: str, node_id: str) -> str:
    """Every config of one device and component: ``{prefix}/{component}/{node_id}/+/config``."""
    return f"{prefix}/{component}/{ha_id(node_id)}/+/config"


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """The Home Assistant device the entities belong to."""

    device_id: str
    sw_version: str
    manufacturer: str = "audience-edge"
    model: str = "edge-agent"

    def block(self) -> dict[str, Any]:
        """The ``device`` mapping of every config."""
        return {
            "identifiers": [f"audience/{self.device_id}"],
            "name": self.device_id,
            "manufacturer": self.manufacturer,
            "model": self.model,
            "sw_version": self.sw_version,
        }


def availability(root: str, device_id: str) -> list[dict[str, str]]:
    """The two availability entries of every sensor (used with ``availability_mode: all``)."""
    return [
        {
            "topic": status_topic(root, device_id),
            "value_template": STATE_TEMPLATE,
            "payload_available": AVAILABILITY_ONLINE,
            "payload_not_available": AVAILABILITY_OFFLINE,
        },
        {
            "topic": availability_topic(root, device_id),
            "payload_available": AVAILABILITY_ONLINE,
            "payload_not_available": AVAILABILITY_OFFLINE,
        },
    ]


def discovery_configs(
    prefix: str, root: str, device: DeviceInfo, camera_ids: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """Every retained discovery config of one device: topic -> JSON object.

    Raises ``ValueError`` when two cameras would share an entity (ids that differ only by
    ``.`` and ``_``)."""
    node = ha_id(device.device_id)
    common: dict[str, Any] = {
        "device": device.block(),
        "origin": {"name": "audience-edge", "sw_version": device.sw_version},
    }
    configs: dict[str, dict[str, Any]] = {
        discovery_topic(prefix, "binary_sensor", node, "connectivity"): {
            "name": "Connectivity",
            "unique_id": f"audience/{device.device_id}/connectivity",
            "state_topic": status_topic(root, device.device_id),
            "value_template": STATE_TEMPLATE,
            "payload_on": AVAILABILITY_ONLINE,
            "payload_off": AVAILABILITY_OFFLINE,
            "device_class": "connectivity",
            "entity_category": "diagnostic",
            "qos": 1,
            **common,
        }
    }
    sensor_common: dict[str, Any] = {
        **common,
        "availability": availability(root, device.device_id),
        "availability_mode": "all",
        "unit_of_measurement": PEOPLE_UNIT,
        "value_template": PEOPLE_TEMPLATE,
    }
    for camera in camera_ids:
        cam = ha_id(camera)
        entities: dict[str, dict[str, Any]] = {
            f"{cam}_people_in_view": {
                "unique_id": f"audience/{device.device_id}/{camera}/people_in_view",
                "name": f"{camera} people in view",
                "state_topic": occupancy_topic(root, device.device_id, camera),
                "state_class": "measurement",
                "icon": "mdi:account-group",
            },
            f"{cam}_people_today": {
                "unique_id": f"audience/{device.device_id}/{camera}/people_today",
                "name": f"{camera} people today",
                "state_topic": counts_topic(root, device.device_id, camera),
                "state_class": "total_increasing",
                "icon": "mdi:counter",
                "qos": 1,
            },
        }
        for object_id, fields in entities.items():
            topic = discovery_topic(prefix, "sensor", node, object_id)
            if topic in configs:
                raise ValueError(f"cameras collide on Home Assistant entity {object_id!r}")
            configs[topic] = {**fields, **sensor_common}
    return configs
