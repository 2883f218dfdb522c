"""Every Prometheus metric the hub exports, defined in one place so names stay consistent."""

from __future__ import annotations

import platform

from prometheus_client import Counter, Gauge, Histogram, Info

from cloud_hub import __version__

MESSAGES_RECEIVED = Counter(
    "hub_messages_received_total", "MQTT messages handed to the ingest queue."
)
EVENTS_STORED = Counter("hub_events_stored_total", "Person events newly written to the database.")
EVENTS_DUPLICATE = Counter(
    "hub_events_duplicate_total", "Valid events already stored (redeliveries), not written again."
)
MESSAGES_REJECTED = Counter(
    "hub_messages_rejected_total", "Messages that failed validation, by reason.", ["reason"]
)
BATCH_SECONDS = Histogram(
    "hub_batch_write_seconds",
    "Time to write one batch and commit it.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
BATCH_SIZE = Histogram(
    "hub_batch_messages",
    "Messages per written batch.",
    buckets=(1, 5, 10, 25, 50, 100, 250, 500, 1000),
)
QUEUE_DEPTH = Gauge("hub_ingest_queue_depth", "Messages received but not yet written and acked.")
INGEST_LAG = Gauge(
    "hub_ingest_lag_seconds",
    "Seconds from the arrival of the oldest message of the last committed batch to its commit "
    "(the hub's own delay; a device's outbox backlog is not in it).",
)
LAST_COMMIT = Gauge(
    "hub_ingest_last_commit_timestamp_seconds",
    "Unix time of the last committed batch (when ingest started, until one is).",
)
DB_ERRORS = Counter("hub_db_errors_total", "Failed database writes (retried with backoff).")
REDIS_ERRORS = Counter("hub_redis_errors_total", "Failed or skipped live-cache updates.")
MQTT_CONNECTED = Gauge("hub_mqtt_connected", "1 while the hub is connected to the broker.")
TASK_FAILURES = Counter(
    "hub_background_task_failures_total",
    "Failed rounds of a background task (logged with the error; the task goes on).",
    ["task"],
)
ROLLUP_ROUNDS = Counter(
    "hub_rollup_rounds_total", "Completed rollup maintenance rounds (this process)."
)
# Which release answers: `hub_build_info{version, python} 1`, so a dashboard can show the
# fleet's hubs side by side and an alert can tell a rollout from a fault.
BUILD = Info("hub_build", "The hub's release and Python.")
BUILD.info({"version": __version__, "python": platform.python_version()})
