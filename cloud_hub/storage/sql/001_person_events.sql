-- Person events as the edge publishes them, one row per event_id (the idempotency key).
CREATE TABLE person_events (
    event_id          uuid PRIMARY KEY,
    device_id         text        NOT NULL,
    camera_id         text        NOT NULL,
    track_id          bigint      NOT NULL,
    first_seen        timestamptz NOT NULL,
    last_seen         timestamptz NOT NULL,
    dwell_s           real        NOT NULL,
    gender            text        NULL CHECK (gender IN ('female', 'male')),
    gender_confidence real        NULL,
    age               real        NULL,
    age_low           real        NULL,
    age_high          real        NULL,
    age_confidence    real        NULL,
    -- The band the stats API groups by, computed once at write time.
    age_band          text GENERATED ALWAYS AS (
        CASE
            WHEN age IS NULL THEN 'unknown'
            WHEN age < 13 THEN '0-12'
            WHEN age < 18 THEN '13-17'
            WHEN age < 25 THEN '18-24'
            WHEN age < 35 THEN '25-34'
            WHEN age < 45 THEN '35-44'
            WHEN age < 55 THEN '45-54'
            WHEN age < 65 THEN '55-64'
            ELSE '65+'
        END
    ) STORED,
    direction         text        NULL CHECK (direction IN ('in', 'out')),
    crops             integer     NOT NULL,
    models            jsonb       NOT NULL DEFAULT '{}',
    received_at       timestamptz NOT NULL DEFAULT now()
);

-- Stats and paging read by time, optionally narrowed to one device or camera.
CREATE INDEX person_events_last_seen ON person_events (last_seen, event_id);
CREATE INDEX person_events_device_camera_time ON person_events (device_id, camera_id, last_seen);

CREATE TABLE devices (
    device_id        text PRIMARY KEY,
    first_seen       timestamptz NOT NULL,
    last_seen        timestamptz NOT NULL,
    last_received_at timestamptz NOT NULL DEFAULT now(),
    events           bigint      NOT NULL DEFAULT 0
);

-- Messages the hub refused, kept for diagnosis (dead letters); the payload is truncated.
CREATE TABLE rejected_messages (
    id          bigserial PRIMARY KEY,
    received_at timestamptz NOT NULL DEFAULT now(),
    topic       text        NOT NULL,
    reason      text        NOT NULL,
    detail      text        NOT NULL,
    payload     bytea       NOT NULL
);
CREATE INDEX rejected_messages_received_at ON rejected_messages (received_at);
