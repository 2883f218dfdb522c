"""The MQTT wire contract: topics and payloads, defined once and imported by both sides.

The edge agent builds these models and publishes ``model_dump_json()``; the cloud hub
parses incoming bytes with :func:`parse_event` and rejects anything that does not fit.
This package depends on Pydantic only, so the hub can import it without the vision stack.

Versioning: the topic carries the contract's major version (``v1``) and every payload
carries ``schema_version``. Additive, optional fields keep the version; anything else
means ``v2`` topics, served side by side until the fleet has moved.

Its modules, each importable on its own; every name is also importable from here:

- :mod:`~edge_agent.contract.ids`: device and camera ids, event ids (UUIDv7);
- :mod:`~edge_agent.contract.times`: which message times a receiver accepts;
- :mod:`~edge_agent.contract.fields`: the strict model base and bounded field types;
- :mod:`~edge_agent.contract.events`: the person event;
- :mod:`~edge_agent.contract.device_messages`: status, health, occupancy, desired config;
- :mod:`~edge_agent.contract.topics`: channels, topic builders, subscriptions, topic parsers;
- :mod:`~edge_agent.contract.parsing`: validating a received topic and payload together;
- :mod:`~edge_agent.contract.broker_tls`: credentials and TLS for a client of the broker;
- :mod:`~edge_agent.contract.home_assistant`: Home Assistant MQTT discovery configs (the
  one module whose names are imported from it, not from here: only the agent needs them).
"""

from __future__ import annotations

from edge_agent.contract.device_messages import (
    CameraHealth,
    CameraState,
    CameraStatus,
    DailyCount,
    DesiredConfig,
    DetectorSettings,
    DeviceHealth,
    DeviceState,
    DeviceStatus,
    EstimatorSettings,
    LatencyMs,
    Occupancy,
    TrackerSettings,
)
from edge_agent.contract.events import (
    AGE_BAND_LOWER_BOUNDS,
    AGE_BAND_NAMES,
    EVENT_SCHEMA_VERSION,
    FLAT_EVENT_FIELDS,
    AgeEstimate,
    Direction,
    Gender,
    GenderEstimate,
    PersonEvent,
    csv_cell,
    event_watcher,
    flat_event,
)
from edge_agent.contract.fields import CONTRACT_VERSION
from edge_agent.contract.ids import ID_PATTERN, IdString, uuid7
from edge_agent.contract.ids import ID_PATTERN as _ID_PATTERN  # its name before the split
from edge_agent.contract.parsing import (
    MAX_PAYLOAD_BYTES,
    parse_daily_count,
    parse_desired_config,
    parse_event,
    parse_health,
    parse_occupancy,
    parse_status,
)
from edge_agent.contract.times import (
    DEFAULT_TIME_BOUNDS,
    EARLIEST_EVENT_TIME,
    MAX_CLOCK_SKEW,
    EventTimeError,
    TimeBounds,
    UtcDatetime,
)
from edge_agent.contract.topics import (
    AVAILABILITY_OFFLINE,
    AVAILABILITY_ONLINE,
    CHANNELS,
    DEFAULT_TOPIC_ROOT,
    TOPIC_VERSION,
    Channel,
    ChannelSpec,
    DeviceTopic,
    EventTopic,
    availability_topic,
    config_subscription,
    config_topic,
    counts_subscription,
    counts_topic,
    events_subscription,
    health_subscription,
    health_topic,
    occupancy_subscription,
    occupancy_topic,
    parse_event_topic,
    parse_topic,
    status_subscription,
    status_topic,
    subscription,
)

__all__ = [
    "AGE_BAND_LOWER_BOUNDS",
    "AGE_BAND_NAMES",
    "AVAILABILITY_OFFLINE",
    "AVAILABILITY_ONLINE",
    "CHANNELS",
    "CONTRACT_VERSION",
    "DEFAULT_TIME_BOUNDS",
    "DEFAULT_TOPIC_ROOT",
    "EARLIEST_EVENT_TIME",
    "EVENT_SCHEMA_VERSION",
    "FLAT_EVENT_FIELDS",
    "ID_PATTERN",
    "MAX_CLOCK_SKEW",
    "MAX_PAYLOAD_BYTES",
    "TOPIC_VERSION",
    "_ID_PATTERN",
    "AgeEstimate",
    "CameraHealth",
    "CameraState",
    "CameraStatus",
    "Channel",
    "ChannelSpec",
    "DailyCount",
    "DesiredConfig",
    "DetectorSettings",
    "DeviceHealth",
    "DeviceState",
    "DeviceStatus",
    "DeviceTopic",
    "Direction",
    "EstimatorSettings",
    "EventTimeError",
    "EventTopic",
    "Gender",
    "GenderEstimate",
    "IdString",
    "LatencyMs",
    "Occupancy",
    "PersonEvent",
    "TimeBounds",
    "TrackerSettings",
    "UtcDatetime",
    "availability_topic",
    "config_subscription",
    "config_topic",
    "counts_subscription",
    "counts_topic",
    "csv_cell",
    "event_watcher",
    "events_subscription",
    "flat_event",
    "health_subscription",
    "health_topic",
    "occupancy_subscription",
    "occupancy_topic",
    "parse_daily_count",
    "parse_desired_config",
    "parse_event",
    "parse_event_topic",
    "parse_health",
    "parse_occupancy",
    "parse_status",
    "parse_topic",
    "status_subscription",
    "status_topic",
    "subscription",
    "uuid7",
]
