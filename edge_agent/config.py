"""Agent configuration: one TOML file, a section per concern, validated by Pydantic.

Every field has a default that works on a developer machine; a device's file under
``/etc/edge-agent/agent.toml`` sets its id, its broker and its cameras.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Annotated, Final, Literal, get_args

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from edge_agent.contract import DEFAULT_TOPIC_ROOT, IdString


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MqttConfig(_Section):
    """Where and how the agent publishes (see docs/security.md for credentials and TLS)."""

    host: str = "127.0.0.1"
    port: int = Field(
        default=1883, ge=1, le=65535, description="1883 plain; 8883 is the usual TLS port."
    )
    protocol: Literal["5", "3.1.1"] = "5"
    topic_root: str = DEFAULT_TOPIC_ROOT
    username: str | None = Field(
        default=None, description="The broker user; the shipped ACL expects the device id."
    )
    password: str | None = Field(
        default=None, description="The broker password; password_file keeps it out of here."
    )
    password_file: Path | None = Field(
        default=None,
        description="A file holding only the broker password (read at start; a trailing "
        "newline is ignored): agent.toml can then be readable while the secret is not.",
    )
    keepalive_s: int = Field(default=30, ge=5)
    tls: bool = Field(
        default=False,
        description="Connect over TLS; implied by tls_ca. Without tls_ca the system CAs verify.",
    )
    tls_ca: Path | None = Field(default=None, description="CA certificate (PEM) for the broker.")
    tls_cert: Path | None = Field(default=None, description="Client certificate (PEM).")
    tls_key: Path | None = Field(default=None, description="The client certificate's key (PEM).")

    @model_validator(mode="after")
    def _cert_with_key(self) -> MqttConfig:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together: set both or neither")
        return self

    @model_validator(mode="after")
    def _one_password_source(self) -> MqttConfig:
        if self.password is not None and self.password_file is not None:
            raise ValueError("password and password_file are alternatives: set one")
        return self

    def resolved_password(self) -> str | None:
        """The password, from ``password_file`` when that is set.

        Raises ``ValueError`` naming the setting and the file when it cannot be read or
        is empty (``edge-agent run`` prints it and exits 2): no connection without it.
        """
        if self.password_file is None:
            return self.password
        try:
            text = self.password_file.read_text(encoding="utf-8")
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise ValueError(f"mqtt.password_file {self.password_file}: {reason}") from exc
        password = text.rstrip("\r\n")
        if not password:
            raise ValueError(f"mqtt.password_file {self.password_file} is empty")
        return password

    @property
    def uses_tls(self) -> bool:
        """Whether the connection is encrypted."""
        return self.tls or self.tls_ca is not None or self.tls_cert is not None


class CameraConfig(_Section):
    """One source: a file path, an ``rtsp://``/``http://`` URL, or a USB index like ``0``."""

    id: IdString
    source: str
    fps: float | None = Field(default=None, gt=0, description="Process at most this rate.")
    loop: bool = False
    line: tuple[tuple[float, float], tuple[float, float]] | None = Field(
        default=None,
        description="Counting line: two points [x, y] in frame fractions (0..1, y down), "
        "directed from the first to the second (edge_agent/tracking/counting_line.py).",
    )
    in_side: Literal["left", "right"] = Field(
        default="left", description="Side of the directed line that is 'in', facing along it."
    )
    roi: tuple[float, float, float, float] | None = Field(
        default=None,
        description="Region of interest [x1, y1, x2, y2] in frame fractions: only faces in "
        "it are detected (the detector sees the region at its full resolution, so small "
        "faces in it are found more often, and it costs no more).",
    )
    realtime: bool = Field(
        default=False,
        description="Pace a file source by its media clock, like a camera (frames the agent "
        "cannot keep up with are then dropped); live sources always are.",
    )

    @model_validator(mode="after")
    def _line_in_frame(self) -> CameraConfig:
        if self.roi is not None:
            x1, y1, x2, y2 = self.roi
            if not (0.0 <= x1 < x2 <= 1.0 and 0.0 <= y1 < y2 <= 1.0):
                raise ValueError("roi is [x1, y1, x2, y2] in frame fractions, x1 < x2, y1 < y2")
        if self.line is not None:
            if any(not 0.0 <= v <= 1.0 for point in self.line for v in point):
                raise ValueError("line points are frame fractions between 0 and 1")
            if self.line[0] == self.line[1]:
                raise ValueError("line needs two distinct points")
        return self


class TrackerConfig(_Section):
    """When a face is the same person, and when a person has left."""

    iou_match: float = Field(default=0.3, gt=0, lt=1)
    max_missed_s: float = Field(default=1.0, gt=0, description="Unseen this long: track ends.")
    min_hits: int = Field(default=3, ge=1, description="Detections before a track counts.")
    best_crops: int = Field(default=5, ge=1, le=50)


class PeopleConfig(_Section):
    """Person detection and tracking: everyone in view counts, whether or not they show a
    face. Detection runs at ``detect_fps`` per camera; between detections the tracker's
    motion model carries each person, so a lower rate saves CPU at little cost in count."""

    enabled: bool = Field(default=True, description="Off: count faces only (before 0.2).")
    model: Literal["nanodet_int8", "nanodet"] = Field(
        default="nanodet_int8",
        description="Person detector: NanoDet-g with int8 convolutions, or in fp32.",
    )
    score_threshold: float = Field(
        default=0.25, gt=0, lt=1, description="Lowest box score the tracker looks at."
    )
    high_score: float = Field(
        default=0.5, gt=0, lt=1, description="Boxes matched first, and that may start a track."
    )
    detect_fps: float = Field(default=5.0, gt=0, le=60, description="Person detections/s.")
    iou_match: float = Field(default=0.2, gt=0, lt=1)
    max_missed_s: float = Field(
        default=1.0, gt=0, description="Unseen this long (motion-predicted meanwhile): gone."
    )
    min_hits: int = Field(default=3, ge=1, description="Detections before a person counts.")
    threads: int = Field(default=1, ge=1, le=16, description="Inference threads per camera.")
    watcher_min_s: float = Field(
        default=0.25, ge=0, le=60, description="A frontal face this long makes a watcher."
    )


class DetectorConfig(_Section):
    """BlazeFace variant and thresholds."""

    model: Literal["short_range", "full_range"] = "full_range"
    score_threshold: float = Field(default=0.6, gt=0, lt=1)
    min_face_px: int = Field(default=24, ge=8, description="Smaller faces are not estimated.")
    threads: int = Field(default=1, ge=1, le=16, description="Inference threads per camera.")
    detect_fps: float = Field(
        default=8.0, gt=0, le=120, description="Face detections/s while someone is in view."
    )


ModelSetName = Literal[
    "dlib-mixed",
    "dlib-int8",
    "dlib-fp32",
    "faceapi-fp16",
    "faceapi-fp32",
    "ensemble-int8",
    "ensemble-fp32",
    "dlib-heads",
]
MODEL_SET_NAMES: Final = get_args(ModelSetName)
# Names older configurations used, still accepted: the dlib networks at either precision.
MODEL_SET_ALIASES: Final = {"int8": "dlib-int8", "fp32": "dlib-fp32"}
VariantsName = Literal["default", "none", "zoom", "pair", "flip", "scale3", "jitter7", "full"]


def _model_set(value: object) -> object:
    return MODEL_SET_ALIASES.get(value, value) if isinstance(value, str) else value


class EstimatorConfig(_Section):
    """How hard to look at each kept face, and with which networks."""

    tta: bool = Field(
        default=True,
        description="Average the test-time variants named by `variants`; false: one plain "
        "chip per network (the fleet may switch this live).",
    )
    variants: VariantsName = Field(
        default="default",
        description="Which chips each network averages (edge_agent/vision/align.py VARIANT_SETS): "
        "default = each model set's measured choice (docs/models.md); none = one plain chip; "
        "zoom = one chip 6% tighter; pair = plain + zoom; flip = plain + mirror; "
        "scale3, jitter7; full = 7 jitters x mirror (14 chips, the old default).",
    )
    min_face_score: float = Field(
        default=0.5, ge=0, le=1, description="Face-mesh presence below this: not a face."
    )
    models: Annotated[ModelSetName, BeforeValidator(_model_set)] = Field(
        default="dlib-mixed",
        description="Model set (docs/models.md): dlib-mixed (dlib's int8 age network with its "
        "float gender network, the default), dlib-int8 / dlib-fp32 (both int8 or both float), "
        "faceapi-fp16 / faceapi-fp32 (face-api's network, float16 "
        "weights or float), ensemble-int8 (dlib int8 + face-api fp16, averaged) / "
        "ensemble-fp32; dlib-heads (dlib-mixed fused with gender and age heads on the face "
        "embedding, trained on FairFace); int8 and fp32 mean the dlib sets.",
    )


class OutboxConfig(_Section):
    """The on-disk queue of events the broker has not acknowledged (``delivery/outbox.py``)."""

    max_entries: int = Field(default=100_000, ge=10, description="Then the oldest go.")
    max_mb: float = Field(default=64.0, gt=0, description="Payload megabytes, then the oldest go.")
    inflight: int = Field(
        default=20, ge=1, le=1000, description="Events handed to MQTT before their PUBACKs."
    )


class HealthConfig(_Section):
    """How often the agent reports its health and each camera's occupancy."""

    interval_s: float = Field(default=30.0, ge=1.0, le=3600.0)
    occupancy_interval_s: float = Field(default=10.0, ge=1.0, le=3600.0)


class MetricsConfig(_Section):
    """The local HTTP endpoint: ``/metrics`` for Prometheus, ``/healthz`` for supervisors."""

    port: int = Field(default=9108, ge=0, le=65535, description="0 turns the endpoint off.")
    bind: str = Field(default="127.0.0.1", description="Listen address; 0.0.0.0 for all.")


class SchedulerConfig(_Section):
    """How camera frames share the cores (edge_agent/scheduler.py)."""

    detect_workers: int | None = Field(
        default=None,
        ge=1,
        le=16,
        description="Threads running the face detector, shared by every camera; each holds "
        "its own interpreter. Default: one per core, at most 4.",
    )
    estimate_batch: int = Field(
        default=32, ge=1, le=512, description="Most face crops, across cameras, per batch."
    )
    pending_tracks: int = Field(
        default=64,
        ge=1,
        le=10_000,
        description="Ended tracks waiting for estimation; when full, detection waits and "
        "cameras drop frames instead of memory growing.",
    )

    def workers(self) -> int:
        """Detection workers to start: the setting, or one per core up to 4 (measured on
        2 cores: 1.6x the frames per second of one worker; bench/edge_throughput.py)."""
        return self.detect_workers or max(1, min(4, os.cpu_count() or 1))


class ReturnsConfig(_Section):
    """Recognising a person who leaves the view and comes back (on-device embeddings)."""

    enabled: bool = Field(default=True, description="Compute one face embedding per person.")
    window_s: float = Field(
        default=600.0,
        ge=0.0,
        le=7 * 24 * 3600.0,
        description="A person seen again within this many seconds of leaving is a return.",
    )
    threshold: float = Field(
        default=0.94,
        gt=0,
        lt=1,
        description="Cosine similarity above which two people are one. 0.94: fewer than 0.1% of "
        "stranger pairs on LFW match; higher misses real returns, lower makes false ones in busy "
        "places (docs/edge-agent.md, Face embedding).",
    )
    across_cameras: bool = Field(
        default=False, description="Also match a person seen on another camera of this device."
    )
    max_people: int = Field(
        default=5000, ge=1, le=1_000_000, description="Remembered departures, oldest forgotten."
    )
    model: Literal["int8", "fp32"] = Field(
        default="int8",
        description="The embedding network: int8 (cosine 0.9997 to fp32, faster) or fp32.",
    )


class HomeAssistantConfig(_Section):
    """Home Assistant MQTT discovery, and the plain topics it (and Node-RED) reads
    (edge_agent/device/home_assistant.py; docs/edge-agent.md, Home Assistant)."""

    discovery: bool = Field(
        default=False,
        description="Announce the device's entities (people in view and today per camera, "
        "connectivity) as retained discovery configs; off again: they are removed.",
    )
    prefix: str = Field(
        default="homeassistant",
        pattern=r"^[^#+/]+(/[^#+/]+)*$",
        description="Home Assistant's discovery prefix (its birth message is {prefix}/status).",
    )
    plain_topics: bool = Field(
        default=False,
        description="Publish the plain availability topic and each camera's daily count even "
        "without discovery (which turns them on).",
    )

    @property
    def topics_on(self) -> bool:
        """Whether the availability and counts topics are published."""
        return self.discovery or self.plain_topics


class AgentConfig(_Section):
    """The whole agent."""

    device_id: IdString = "dev-local"
    models_dir: Path | None = None
    state_dir: Path | None = Field(
        default=None,
        description="The outbox lives here; default /var/lib/edge-agent when writable, "
        "else ~/.local/state/edge-agent.",
    )
    mqtt: MqttConfig = MqttConfig()
    detector: DetectorConfig = DetectorConfig()
    tracker: TrackerConfig = TrackerConfig()
    people: PeopleConfig = PeopleConfig()
    estimator: EstimatorConfig = EstimatorConfig()
    outbox: OutboxConfig = OutboxConfig()
    health: HealthConfig = HealthConfig()
    metrics: MetricsConfig = MetricsConfig()
    scheduler: SchedulerConfig = SchedulerConfig()
    returns: ReturnsConfig = ReturnsConfig()
    home_assistant: HomeAssistantConfig = HomeAssistantConfig()
    cameras: list[CameraConfig] = Field(default_factory=list)

    @classmethod
    def load(cls, path: Path) -> AgentConfig:
        """Read and validate a TOML file; errors name the file and the bad field."""
        with path.open("rb") as handle:
            data = tomllib.load(handle)
        return cls.model_validate(data)
