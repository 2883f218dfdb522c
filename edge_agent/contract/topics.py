"""Where each message goes: ``{root}/v1/{device_id}/{channel}[/{camera_id}]``.

The channels, who publishes on each and how (QoS, retain, per camera), the builders of
every topic with its ids checked, the wildcard filters a hub subscribes to, and the
parsers that split a received topic back into its parts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Final, Literal

from pydantic import BaseModel

from edge_agent.contract.device_messages import (
    DailyCount,
    DesiredConfig,
    DeviceHealth,
    DeviceStatus,
    Occupancy,
)
from edge_agent.contract.events import PersonEvent
from edge_agent.contract.fields import CONTRACT_VERSION
from edge_agent.contract.ids import checked_id, is_valid_id

TOPIC_VERSION: Final = f"v{CONTRACT_VERSION}"
DEFAULT_TOPIC_ROOT: Final = "audience"


@dataclass(frozen=True, slots=True)
class EventTopic:
    """The parts of an events topic: ``{root}/v1/{device_id}/events/{camera_id}``."""

    root: str
    device_id: str
    camera_id: str

    def __str__(self) -> str:
        return f"{self.root}/{TOPIC_VERSION}/{self.device_id}/events/{self.camera_id}"


def events_subscription(root: str = DEFAULT_TOPIC_ROOT) -> str:
    """The wildcard filter a hub subscribes to for every device's events."""
    return f"{root}/{TOPIC_VERSION}/+/events/+"


def _levels(topic: str, root: str) -> tuple[str, list[str]]:
    """The ``{root}/v1/`` prefix and the levels after it, or ``ValueError`` if not under it."""
    prefix = f"{root}/{TOPIC_VERSION}/"
    if not topic.startswith(prefix):
        raise ValueError(f"topic {topic[:120]!r} is not under {prefix!r}")
    return prefix, topic[len(prefix) :].split("/")


def _check_ids(topic: str, device_id: str, camera_id: str | None) -> None:
    if not is_valid_id(device_id) or (camera_id is not None and not is_valid_id(camera_id)):
        raise ValueError(f"topic {topic[:120]!r} has an invalid device or camera id")


def parse_event_topic(topic: str, root: str = DEFAULT_TOPIC_ROOT) -> EventTopic:
    """Split an events topic into its parts, or raise ``ValueError`` saying why not."""
    prefix, parts = _levels(topic, root)
    if len(parts) != 3 or parts[1] != "events":
        raise ValueError(f"topic {topic[:120]!r} is not {prefix}<device>/events/<camera>")
    device_id, _, camera_id = parts
    _check_ids(topic, device_id, camera_id)
    return EventTopic(root, device_id, camera_id)


class Channel(StrEnum):
    """The last fixed topic level(s) after ``{root}/v1/{device_id}/``."""

    EVENTS = "events"
    STATUS = "status"
    HEALTH = "health"
    OCCUPANCY = "occupancy"
    CONFIG = "config"
    COUNTS = "counts"


@dataclass(frozen=True, slots=True)
class ChannelSpec:
    """How a channel is used: who publishes, QoS, retain, payload, per camera or not."""

    payload: type[BaseModel]
    qos: Literal[0, 1]
    retain: bool
    from_device: bool
    per_camera: bool
    summary: str


CHANNELS: Final[Mapping[Channel, ChannelSpec]] = MappingProxyType(
    {
        Channel.EVENTS: ChannelSpec(
            PersonEvent, 1, False, True, True, "One message per tracked person, when it ends."
        ),
        Channel.STATUS: ChannelSpec(
            DeviceStatus, 1, True, True, False, "The device's state; also its last will."
        ),
        Channel.HEALTH: ChannelSpec(
            DeviceHealth, 0, False, True, False, "Periodic frame rates, latencies and load."
        ),
        Channel.OCCUPANCY: ChannelSpec(
            Occupancy, 0, False, True, True, "Faces in view now, per camera."
        ),
        Channel.CONFIG: ChannelSpec(
            DesiredConfig, 1, True, False, False, "Run-time settings pushed to the device."
        ),
        Channel.COUNTS: ChannelSpec(
            DailyCount, 1, True, True, True, "People seen since local midnight, per camera."
        ),
    }
)


@dataclass(frozen=True, slots=True)
class DeviceTopic:
    """Any contract topic: ``{root}/v1/{device_id}/{channel}[/{camera_id}]``."""

    root: str
    device_id: str
    channel: Channel
    camera_id: str | None = None

    def __str__(self) -> str:
        base = f"{self.root}/{TOPIC_VERSION}/{self.device_id}/{self.channel.value}"
        return base if self.camera_id is None else f"{base}/{self.camera_id}"


def status_topic(root: str, device_id: str) -> str:
    """``{root}/v1/{device_id}/status``: retained DeviceStatus, and the last will."""
    return str(DeviceTopic(root, checked_id(device_id, "device_id"), Channel.STATUS))


def health_topic(root: str, device_id: str) -> str:
    """``{root}/v1/{device_id}/health``: periodic DeviceHealth."""
    return str(DeviceTopic(root, checked_id(device_id, "device_id"), Channel.HEALTH))


def occupancy_topic(root: str, device_id: str, camera_id: str) -> str:
    """``{root}/v1/{device_id}/occupancy/{camera_id}``: Occupancy of one camera."""
    device = checked_id(device_id, "device_id")
    return str(DeviceTopic(root, device, Channel.OCCUPANCY, checked_id(camera_id, "camera_id")))


def config_topic(root: str, device_id: str) -> str:
    """``{root}/v1/{device_id}/config``: retained DesiredConfig, which the device subscribes to."""
    return str(DeviceTopic(root, checked_id(device_id, "device_id"), Channel.CONFIG))


def counts_topic(root: str, device_id: str, camera_id: str) -> str:
    """``{root}/v1/{device_id}/counts/{camera_id}``: retained DailyCount of one camera."""
    device = checked_id(device_id, "device_id")
    return str(DeviceTopic(root, device, Channel.COUNTS, checked_id(camera_id, "camera_id")))


# The plain availability topic: not a JSON channel (so not in CHANNELS), one word.
AVAILABILITY_ONLINE: Final = "online"
AVAILABILITY_OFFLINE: Final = "offline"


def availability_topic(root: str, device_id: str) -> str:
    """``{root}/v1/{device_id}/availability``: retained, QoS 1, exactly ``online`` or
    ``offline`` (plain text, for consumers that do not parse JSON). Set on connect and on
    a clean stop only: the last will is the JSON status, so after an unclean disconnect
    this topic still says ``online``; the status topic is the authority."""
    return f"{root}/{TOPIC_VERSION}/{checked_id(device_id, 'device_id')}/availability"


def subscription(channel: Channel, root: str = DEFAULT_TOPIC_ROOT) -> str:
    """The wildcard filter for one channel of every device (and every camera)."""
    base = f"{root}/{TOPIC_VERSION}/+/{channel.value}"
    return f"{base}/+" if CHANNELS[channel].per_camera else base


def status_subscription(root: str = DEFAULT_TOPIC_ROOT) -> str:
    """``{root}/v1/+/status``: every device's status."""
    return subscription(Channel.STATUS, root)


def health_subscription(root: str = DEFAULT_TOPIC_ROOT) -> str:
    """``{root}/v1/+/health``: every device's health."""
    return subscription(Channel.HEALTH, root)


def occupancy_subscription(root: str = DEFAULT_TOPIC_ROOT) -> str:
    """``{root}/v1/+/occupancy/+``: every camera's occupancy."""
    return subscription(Channel.OCCUPANCY, root)


def config_subscription(root: str = DEFAULT_TOPIC_ROOT) -> str:
    """``{root}/v1/+/config``: every device's desired config (for a fleet tool or the hub)."""
    return subscription(Channel.CONFIG, root)


def counts_subscription(root: str = DEFAULT_TOPIC_ROOT) -> str:
    """``{root}/v1/+/counts/+``: every camera's count of the day."""
    return subscription(Channel.COUNTS, root)


def parse_topic(topic: str, root: str = DEFAULT_TOPIC_ROOT) -> DeviceTopic:
    """Split any contract topic into its parts, or raise ``ValueError`` saying why not."""
    _, parts = _levels(topic, root)
    try:
        channel = Channel(parts[1]) if len(parts) >= 2 else None
    except ValueError:
        channel = None
    if channel is None or len(parts) != (3 if CHANNELS[channel].per_camera else 2):
        raise ValueError(f"topic {topic[:120]!r} is not a {TOPIC_VERSION} contract topic")
    camera_id = parts[2] if len(parts) == 3 else None
    _check_ids(topic, parts[0], camera_id)
    return DeviceTopic(root, parts[0], channel, camera_id)
