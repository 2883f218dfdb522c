"""Hub settings: one class, read from ``HUB_*`` environment variables.

Every default works on a developer machine with the local services running, so a
newcomer needs no configuration; production overrides them through the environment.
"""

from __future__ import annotations

import socket
from datetime import datetime, timedelta
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from edge_agent.contract import (
    DEFAULT_TOPIC_ROOT,
    EARLIEST_EVENT_TIME,
    MAX_PAYLOAD_BYTES,
    TimeBounds,
)
from edge_agent.contract.broker_tls import BrokerCredentials


def _default_client_id() -> str:
    return f"cloud-hub-{socket.gethostname()}"[:64]


def _default_state_dir() -> Path:
    return Path.home() / ".local" / "share" / "audience-hub"


class HubSettings(BaseSettings):
    """Everything the hub reads from its environment."""

    model_config = SettingsConfigDict(env_prefix="HUB_", extra="ignore")

    database_url: str = "postgresql://postgres@127.0.0.1:5432/audience"
    db_pool_size: int = Field(
        default=8, ge=1, le=100, description="Connections the ingest, API and upkeep share."
    )

    # Storage (docs/hub.md, "Storage"): TimescaleDB when the server has it, else plain
    # PostgreSQL with partitions and rollup tables; both answer the same.
    timescaledb: Literal["auto", "on", "off"] = Field(
        default="auto",
        description="For a database not migrated yet: use TimescaleDB when the server offers "
        "it (auto), require it (on), or never (off). A migrated database keeps its kind.",
    )
    chunk_interval_days: int = Field(
        default=7, ge=1, le=366, description="Hypertable chunk / partition width."
    )
    rollup_refresh_s: float = Field(
        default=60.0, ge=1, description="How often hour and day rollups are brought up to date."
    )
    rollup_lag_s: int = Field(
        default=600,
        ge=300,
        description="An hour is materialised once it ended this long ago; until then (and "
        "for the newest events) stats aggregate raw events at query time.",
    )
    rollup_late_days: int = Field(
        default=30,
        ge=0,
        description="Events arriving up to this many days late still change hour/day stats "
        "(at the next refresh); 0 = no limit.",
    )
    compress_after_days: int = Field(
        default=7, ge=0, description="TimescaleDB: compress raw chunks this old; 0 = never."
    )
    retention_days: int = Field(default=0, ge=0, description="Drop raw events this old; 0 = keep.")
    rollup_retention_days: int = Field(
        default=0, ge=0, description="Drop hourly rollups this old (daily ones stay); 0 = keep."
    )
    rollup_jobs: Literal["auto", "hub", "database"] = Field(
        default="auto",
        description="TimescaleDB: who runs the policies: its background workers (database), "
        "the hub (hub), or the hub only when no TimescaleDB scheduler runs (auto).",
    )

    earliest_event: datetime = Field(
        default=EARLIEST_EVENT_TIME,
        description="Events, statuses, health and occupancy stamped before this are "
        "dead-lettered (reason bad_time): a device whose clock was never set stamps 1970.",
    )

    # --- API cost limits (limits on what one request may make the hub do) ---

    max_body_bytes: int = Field(
        default=1_048_576,
        ge=1024,
        le=1_073_741_824,
        description="Largest request body the API reads (413 beyond it, by Content-Length "
        "before reading, or while a chunked body streams in).",
    )
    stats_max_pairs: int = Field(
        default=20_000,
        ge=1_000,
        le=10_000_000,
        description="Bucket x group pairs one /v1/stats or /v1/occupancy answer may hold "
        "(cameras x 25 for /v1/reports/daily); estimated before the query, 422 beyond.",
    )
    shares_max_days: int = Field(
        default=31,
        ge=1,
        le=3660,
        description="The longest range /v1/stats?shares=true answers (it scans the range's "
        "events: about 0.9 s a week for 100,000 events a day); 422 beyond.",
    )

    mqtt_host: str = "127.0.0.1"
    mqtt_port: int = Field(default=1883, ge=1, le=65535)
    mqtt_protocol: Literal["5", "3.1.1"] = "5"
    mqtt_username: str | None = None
    mqtt_password: str | None = None
    mqtt_tls: bool = Field(
        default=False, description="TLS to the broker; implied by mqtt_tls_ca or mqtt_tls_cert."
    )
    mqtt_tls_ca: Path | None = Field(default=None, description="CA certificate (PEM).")
    mqtt_tls_cert: Path | None = Field(default=None, description="Client certificate (PEM).")
    mqtt_tls_key: Path | None = Field(default=None, description="Its private key (PEM).")
    mqtt_client_id: str = Field(
        default_factory=_default_client_id,
        description="Stable per hub process: the broker keeps its unacked messages by this id.",
    )
    mqtt_session_expiry_s: int = Field(default=86_400, ge=0)
    mqtt_keepalive_s: int = Field(default=30, ge=5)
    mqtt_max_packet_bytes: int = Field(
        default=4 * MAX_PAYLOAD_BYTES,
        ge=MAX_PAYLOAD_BYTES + 256,
        le=268_435_455,
        description="MQTT 5 Maximum Packet Size the hub asks of the broker. A message a bit "
        "over the contract's limit still arrives and is dead-lettered as too_large (so it "
        "shows); a bigger one is dropped by the broker instead of filling the hub's memory. "
        "MQTT 3.1.1 has no such property: set the broker's max_packet_size.",
    )
    topic_root: str = DEFAULT_TOPIC_ROOT
    share_group: str = Field(
        default="hub",
        description="Subscribe as $share/<group>/...; empty where the broker lacks them.",
    )

    redis_url: str | None = "redis://127.0.0.1:6379/0"
    recent_ttl_s: int = Field(default=3600, ge=1)
    recent_max_per_camera: int = Field(default=500, ge=1)
    live_stream_max: int = Field(
        default=10_000,
        ge=100,
        description="Entries each Redis live stream keeps (events, occupancy, status): how "
        "far back a reconnecting /v1/live/events client can resume.",
    )
    live_token_secret: str | None = Field(
        default=None,
        min_length=32,
        description="HMAC key for /v1/live tokens (32+ characters); hubs behind one load "
        "balancer need the same. Unset: a random key per process.",
    )
    live_token_ttl_s: int = Field(
        default=60, ge=5, le=86_400, description="How long a live token may open a stream."
    )
    export_batch_rows: int = Field(
        default=2_000, ge=10, le=50_000, description="Rows per database read of an export."
    )

    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8000, ge=0, le=65535)
    api_keys: str = Field(
        default="",
        description="name:scope:sha256hex entries, comma-separated (cloud-hub apikey create); "
        "with none, every endpoint but /healthz answers 401.",
    )
    metrics_public: bool = Field(
        default=False, description="Serve /metrics without a key (guard it by network policy)."
    )

    log_format: Literal["json", "console"] = "json"
    log_level: str = "info"

    batch_size: int = Field(default=500, ge=1, le=10_000)
    batch_max_wait_s: float = Field(default=0.2, gt=0, le=10)
    queue_size: int = Field(default=5_000, ge=1)
    gc_threshold: int = Field(
        default=50_000,
        ge=0,
        description="Python's first-generation GC threshold in `serve` (net container "
        "allocations between collections); 0 keeps Python's default (700). See docs/hub.md.",
    )
    db_retry_max_s: float = Field(default=10.0, gt=0)
    db_startup_wait_s: float = Field(
        default=60.0, ge=0, description="Keep trying to reach the database this long at start."
    )

    state_dir: Path = Field(default_factory=_default_state_dir)

    @field_validator("api_keys")
    @classmethod
    def _valid_api_keys(cls, value: str) -> str:
        from cloud_hub.security.apikeys import parse_api_keys

        parse_api_keys(value)  # fail at startup, not on the first request
        return value

    @model_validator(mode="after")
    def _late_window_within_retention(self) -> HubSettings:
        # A late event re-aggregates its hour from raw rows; once retention dropped some of
        # that hour's rows, re-aggregating it would lose counts, so late events must not
        # reach back that far.
        for name in ("retention_days", "rollup_retention_days"):
            keep = getattr(self, name)
            if keep and not 0 < self.rollup_late_days < keep:
                raise ValueError(f"rollup_late_days must be between 1 and {name} - 1")
        if 0 < self.rollup_late_days < 3:
            raise ValueError("rollup_late_days must be 0 (no limit) or at least 3")
        return self

    def broker_credentials(self) -> BrokerCredentials:
        """How the hub's clients (ingest, the simulator) authenticate to the broker."""
        return BrokerCredentials(
            self.mqtt_username,
            self.mqtt_password,
            self.mqtt_tls,
            self.mqtt_tls_ca,
            self.mqtt_tls_cert,
            self.mqtt_tls_key,
        )

    @model_validator(mode="after")
    def _tls_cert_with_key(self) -> HubSettings:
        if (self.mqtt_tls_cert is None) != (self.mqtt_tls_key is None):
            raise ValueError("mqtt_tls_cert and mqtt_tls_key go together: set both or neither")
        return self

    @field_validator("earliest_event")
    @classmethod
    def _aware_earliest(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("earliest_event needs a time zone, e.g. 2020-01-01T00:00:00Z")
        if value.year < 1970:
            raise ValueError("earliest_event must be 1970 or later")
        return value

    @property
    def time_bounds(self) -> TimeBounds:
        """What message times the hub accepts (the contract's rule, this hub's earliest)."""
        return TimeBounds(earliest=self.earliest_event)

    @property
    def rollup_late_window(self) -> timedelta | None:
        """How late an event may arrive and still change the hour and day statistics;
        None: no limit (``HUB_ROLLUP_LATE_DAYS=0``)."""
        return timedelta(days=self.rollup_late_days) if self.rollup_late_days else None

    @property
    def event_filter(self) -> str:
        """The topic filter the hub subscribes to, shared when a group is set."""
        from edge_agent.contract import events_subscription

        return self._subscription(events_subscription(self.topic_root), shared=True)

    def _subscription(self, plain: str, shared: bool) -> str:
        return f"$share/{self.share_group}/{plain}" if shared and self.share_group else plain

    @property
    def telemetry_filters(self) -> list[str]:
        """Status, health and occupancy subscriptions. Status is never shared: brokers send
        no retained messages to shared subscriptions, and the retained status is how a hub
        learns the state of devices that connected before it; every hub stores it (an
        idempotent upsert). Health and occupancy are shared like events."""
        from edge_agent.contract import Channel, subscription

        return [
            self._subscription(subscription(Channel.STATUS, self.topic_root), shared=False),
            self._subscription(subscription(Channel.HEALTH, self.topic_root), shared=True),
            self._subscription(subscription(Channel.OCCUPANCY, self.topic_root), shared=True),
        ]

    @property
    def api_url(self) -> str:
        """Where the API answers, for printing and for the ``stats`` command."""
        return f"http://{self.http_host}:{self.http_port}"
