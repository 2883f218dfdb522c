-- What devices say besides events (docs/mqtt-contract.md): the latest status (retained
-- on {root}/v1/{device}/status, also the last will), the latest health sample, and
-- occupancy folded into one row per camera and minute. Status and health keep only the
-- newest message per device; occupancy keeps its history, as counts per minute.
CREATE TABLE device_status (
    device_id      text        PRIMARY KEY,
    state          text        NOT NULL CHECK (state IN ('online', 'offline')),
    -- The device's own time; null in the last will, which the broker sends.
    at             timestamptz NULL,
    -- `at`, or when the hub received a status without one: what orders statuses.
    effective_at   timestamptz NOT NULL,
    received_at    timestamptz NOT NULL DEFAULT now(),
    agent_version  text        NULL,
    models         jsonb       NOT NULL DEFAULT '{}',
    cameras        jsonb       NOT NULL DEFAULT '[]',
    config_version text        NULL,
    config_error   text        NULL,
    outbox_dropped bigint      NOT NULL DEFAULT 0
);

CREATE TABLE device_health (
    device_id      text             PRIMARY KEY,
    at             timestamptz      NOT NULL,
    received_at    timestamptz      NOT NULL DEFAULT now(),
    cpu_percent    double precision NOT NULL,
    memory_mb      double precision NOT NULL,
    temperature_c  double precision NULL,
    outbox_depth   bigint           NOT NULL,
    outbox_dropped bigint           NOT NULL,
    cameras        jsonb            NOT NULL DEFAULT '[]',
    latency_ms     jsonb            NOT NULL DEFAULT '{}'
);

-- Occupancy samples (every occupancy_interval_s per camera, 10 s by default) summed per
-- UTC minute of their `at`: averages are people_sum / samples.
CREATE TABLE occupancy_minutely (
    bucket      timestamptz NOT NULL,
    device_id   text        NOT NULL,
    camera_id   text        NOT NULL,
    samples     integer     NOT NULL,
    people_sum  bigint      NOT NULL,
    people_max  integer     NOT NULL,
    people_min  integer     NOT NULL,
    last_at     timestamptz NOT NULL,
    last_people integer     NOT NULL,
    PRIMARY KEY (device_id, camera_id, bucket)
);
