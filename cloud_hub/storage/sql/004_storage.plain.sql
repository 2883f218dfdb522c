-- Plain PostgreSQL storage, the same schema as the TimescaleDB variant: person_events
-- range-partitioned on last_seen, and stats_hourly / stats_daily as views that read
-- rollup tables below a watermark and aggregate person_events above it (what TimescaleDB's
-- real-time continuous aggregates do). The hub keeps the rollups and partitions current
-- (cloud_hub.storage.rollups): materialising finished hours, re-aggregating hours that late events
-- changed, creating partitions ahead and dropping expired ones.

-- The table is rebuilt: a partitioned table's unique keys must contain its partition key,
-- so the primary key becomes (event_id, last_seen), which a redelivered event (same
-- last_seen) still hits. Existing rows are copied into the new table.
ALTER TABLE person_events RENAME TO person_events_unpartitioned;
ALTER TABLE person_events_unpartitioned RENAME CONSTRAINT person_events_pkey
    TO person_events_unpartitioned_pkey;
ALTER INDEX person_events_last_seen RENAME TO person_events_unpartitioned_last_seen;
ALTER INDEX person_events_device_camera_time RENAME TO person_events_unpartitioned_dct;

CREATE TABLE person_events (
    event_id          uuid        NOT NULL,
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
    received_at       timestamptz NOT NULL DEFAULT now(),
    return_of         uuid        NULL,
    PRIMARY KEY (event_id, last_seen)
) PARTITION BY RANGE (last_seen);
CREATE INDEX person_events_last_seen ON person_events (last_seen, event_id);
CREATE INDEX person_events_device_camera_time ON person_events (device_id, camera_id, last_seen);
-- Rows no partition covers (older than the first one the hub made) land here.
CREATE TABLE person_events_default PARTITION OF person_events DEFAULT;

-- Partitions are aligned windows of a fixed width counted from the Unix epoch (as
-- TimescaleDB aligns chunks), chosen by HUB_CHUNK_INTERVAL_DAYS when this migration ran.
CREATE TABLE person_events_partitions (
    name text        PRIMARY KEY,
    lo   timestamptz NOT NULL,
    hi   timestamptz NOT NULL
);
CREATE TABLE person_events_partitioning (
    width interval NOT NULL CHECK (width >= interval '1 hour')
);
INSERT INTO person_events_partitioning
VALUES (coalesce(nullif(current_setting('hub.chunk_interval', true), ''), '7 days')::interval);

-- Create the missing partitions for every window overlapping [since, until), moving any
-- rows the default partition holds for a window into it. Returns how many it created.
CREATE FUNCTION hub_ensure_partitions(since timestamptz, until timestamptz)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    w      double precision;
    k      bigint;
    lo     timestamptz;
    hi     timestamptz;
    part   text;
    made   integer := 0;
BEGIN
    SELECT extract(epoch FROM width) INTO w FROM person_events_partitioning;
    FOR k IN floor(extract(epoch FROM since) / w)::bigint
          .. ceil(extract(epoch FROM until) / w)::bigint - 1 LOOP
        lo := to_timestamp(k * w);
        hi := to_timestamp((k + 1) * w);
        part := 'person_events_' || to_char(lo AT TIME ZONE 'UTC', 'YYYYMMDD_HH24');
        CONTINUE WHEN to_regclass(part) IS NOT NULL;
        IF EXISTS (SELECT 1 FROM person_events_default WHERE last_seen >= lo AND last_seen < hi)
        THEN
            CREATE TEMP TABLE hub_moving ON COMMIT DROP AS
            SELECT * FROM person_events_default WHERE false;
            WITH moved AS (
                DELETE FROM person_events_default
                WHERE last_seen >= lo AND last_seen < hi RETURNING *
            )
            INSERT INTO hub_moving SELECT * FROM moved;
            EXECUTE format('CREATE TABLE %I PARTITION OF person_events FOR VALUES FROM (%L) TO (%L)',
                           part, lo, hi);
            INSERT INTO person_events (
                event_id, device_id, camera_id, track_id, first_seen, last_seen, dwell_s,
                gender, gender_confidence, age, age_low, age_high, age_confidence,
                direction, crops, models, received_at, return_of)
            SELECT event_id, device_id, camera_id, track_id, first_seen, last_seen, dwell_s,
                   gender, gender_confidence, age, age_low, age_high, age_confidence,
                   direction, crops, models, received_at, return_of
            FROM hub_moving;
            DROP TABLE hub_moving;
        ELSE
            EXECUTE format('CREATE TABLE %I PARTITION OF person_events FOR VALUES FROM (%L) TO (%L)',
                           part, lo, hi);
        END IF;
        INSERT INTO person_events_partitions VALUES (part, lo, hi);
        made := made + 1;
    END LOOP;
    RETURN made;
END $$;

-- Retention: drop the partitions that end at or before `before`, and delete older rows
-- from the default partition. Returns how many partitions it dropped.
CREATE FUNCTION hub_drop_partitions(before timestamptz)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    part    text;
    dropped integer := 0;
BEGIN
    FOR part IN SELECT name FROM person_events_partitions WHERE hi <= before ORDER BY lo LOOP
        EXECUTE format('DROP TABLE IF EXISTS %I', part);
        DELETE FROM person_events_partitions WHERE name = part;
        dropped := dropped + 1;
    END LOOP;
    DELETE FROM person_events_default WHERE last_seen < before;
    RETURN dropped;
END $$;

-- Partitions for the rows already stored, then the rows themselves.
SELECT hub_ensure_partitions(min(last_seen), max(last_seen) + interval '1 microsecond')
FROM person_events_unpartitioned HAVING count(*) > 0;
INSERT INTO person_events (
    event_id, device_id, camera_id, track_id, first_seen, last_seen, dwell_s,
    gender, gender_confidence, age, age_low, age_high, age_confidence,
    direction, crops, models, received_at, return_of)
SELECT event_id, device_id, camera_id, track_id, first_seen, last_seen, dwell_s,
       gender, gender_confidence, age, age_low, age_high, age_confidence,
       direction, crops, models, received_at, return_of
FROM person_events_unpartitioned;
DROP TABLE person_events_unpartitioned;

-- Rollups: the same columns as the TimescaleDB continuous aggregates.
CREATE TABLE stats_hourly_rollup (
    bucket     timestamptz      NOT NULL,
    device_id  text             NOT NULL,
    camera_id  text             NOT NULL,
    gender     text             NOT NULL,
    age_band   text             NOT NULL,
    direction  text             NOT NULL,
    events     bigint           NOT NULL,
    visitors   bigint           NOT NULL,
    age_sum    double precision NULL,
    age_n      bigint           NOT NULL,
    dwell_sum  double precision NULL
);
CREATE INDEX stats_hourly_rollup_bucket ON stats_hourly_rollup (bucket, device_id, camera_id);
CREATE INDEX stats_hourly_rollup_device ON stats_hourly_rollup (device_id, camera_id, bucket);
CREATE TABLE stats_daily_rollup (LIKE stats_hourly_rollup);
CREATE INDEX stats_daily_rollup_bucket ON stats_daily_rollup (bucket, device_id, camera_id);
CREATE INDEX stats_daily_rollup_device ON stats_daily_rollup (device_id, camera_id, bucket);

-- Everything before a rollup's watermark is materialised; nothing at or after it is.
CREATE TABLE rollup_watermarks (
    name      text        PRIMARY KEY,
    watermark timestamptz NOT NULL
);
INSERT INTO rollup_watermarks VALUES ('stats_hourly', '-infinity'), ('stats_daily', '-infinity');

-- Events stored after their hour may have been materialised: (device, span) to
-- re-aggregate. Written by a statement trigger, so the hub's write stays one statement.
CREATE TABLE rollup_invalidations (
    device_id text        NOT NULL,
    low       timestamptz NOT NULL,
    high      timestamptz NOT NULL
);

-- Only rows older than a minute are logged: the hub materialises an hour at least
-- HUB_ROLLUP_LAG_S (>= 5 minutes) after it ends, and a write transaction lasts seconds,
-- so a newer row is either seen by the materialisation or lands above the watermark.
CREATE FUNCTION person_events_invalidate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO rollup_invalidations (device_id, low, high)
    SELECT device_id, min(last_seen), max(last_seen)
    FROM new_rows
    WHERE last_seen < now() - interval '1 minute'
    GROUP BY device_id;
    RETURN NULL;
END $$;
CREATE TRIGGER person_events_invalidate
AFTER INSERT ON person_events
REFERENCING NEW TABLE AS new_rows
FOR EACH STATEMENT EXECUTE FUNCTION person_events_invalidate();

-- The (device, hour)s late events changed and the hub has not re-aggregated yet. The
-- views read those from person_events instead of the rollups, so a late event counts at
-- once; the hub's next round deletes the entries and updates the rollups atomically.
CREATE VIEW rollup_pending_hours AS
SELECT DISTINCT device_id, hour
FROM rollup_invalidations,
     generate_series(date_trunc('hour', low, 'UTC'), date_trunc('hour', high, 'UTC'),
                     interval '1 hour') AS hour
WHERE hour < (SELECT watermark FROM rollup_watermarks WHERE name = 'stats_hourly');

-- Those hours, aggregated from person_events.
CREATE VIEW rollup_pending_hourly AS
SELECT p.hour AS bucket,
       e.device_id,
       e.camera_id,
       coalesce(e.gender, 'unknown') AS gender,
       e.age_band,
       coalesce(e.direction, 'none') AS direction,
       count(*) AS events,
       count(*) FILTER (WHERE e.return_of IS NULL) AS visitors,
       sum(e.age::double precision) AS age_sum,
       count(e.age) AS age_n,
       sum(e.dwell_s::double precision) AS dwell_sum
FROM rollup_pending_hours p
JOIN person_events e ON e.device_id = p.device_id
 AND e.last_seen >= p.hour AND e.last_seen < p.hour + interval '1 hour'
GROUP BY 1, 2, 3, 4, 5, 6;

CREATE VIEW stats_hourly AS
SELECT bucket, device_id, camera_id, gender, age_band, direction,
       events, visitors, age_sum, age_n, dwell_sum
FROM stats_hourly_rollup r
WHERE bucket < (SELECT watermark FROM rollup_watermarks WHERE name = 'stats_hourly')
  AND NOT EXISTS (SELECT 1 FROM rollup_pending_hours p
                  WHERE p.device_id = r.device_id AND p.hour = r.bucket)
UNION ALL
SELECT date_trunc('hour', last_seen, 'UTC') AS bucket,
       device_id,
       camera_id,
       coalesce(gender, 'unknown') AS gender,
       age_band,
       coalesce(direction, 'none') AS direction,
       count(*) AS events,
       count(*) FILTER (WHERE return_of IS NULL) AS visitors,
       sum(age::double precision) AS age_sum,
       count(age) AS age_n,
       sum(dwell_s::double precision) AS dwell_sum
FROM person_events
WHERE last_seen >= (SELECT watermark FROM rollup_watermarks WHERE name = 'stats_hourly')
GROUP BY 1, 2, 3, 4, 5, 6
UNION ALL
SELECT * FROM rollup_pending_hourly;

-- Days the same way: a day holding a pending hour of a device is summed, for that
-- device, from its hourly rollups plus its pending hours aggregated from raw events.
CREATE VIEW rollup_pending_days AS
SELECT DISTINCT device_id, date_trunc('day', hour, 'UTC') AS day
FROM rollup_pending_hours
WHERE hour < (SELECT watermark FROM rollup_watermarks WHERE name = 'stats_daily');

CREATE VIEW stats_daily AS
SELECT bucket, device_id, camera_id, gender, age_band, direction,
       events, visitors, age_sum, age_n, dwell_sum
FROM stats_daily_rollup r
WHERE bucket < (SELECT watermark FROM rollup_watermarks WHERE name = 'stats_daily')
  AND NOT EXISTS (SELECT 1 FROM rollup_pending_days p
                  WHERE p.device_id = r.device_id AND p.day = r.bucket)
UNION ALL
SELECT date_trunc('day', bucket, 'UTC') AS bucket,
       device_id, camera_id, gender, age_band, direction,
       sum(events)::bigint, sum(visitors)::bigint, sum(age_sum), sum(age_n)::bigint,
       sum(dwell_sum)
FROM (
    SELECT * FROM stats_hourly
    WHERE bucket >= (SELECT watermark FROM rollup_watermarks WHERE name = 'stats_daily')
    UNION ALL
    SELECT r.bucket, r.device_id, r.camera_id, r.gender, r.age_band, r.direction,
           r.events, r.visitors, r.age_sum, r.age_n, r.dwell_sum
    FROM rollup_pending_days p
    JOIN stats_hourly_rollup r ON r.device_id = p.device_id
     AND r.bucket >= p.day AND r.bucket < p.day + interval '1 day'
    WHERE NOT EXISTS (SELECT 1 FROM rollup_pending_hours q
                      WHERE q.device_id = r.device_id AND q.hour = r.bucket)
    UNION ALL
    SELECT * FROM rollup_pending_hourly
    WHERE bucket < (SELECT watermark FROM rollup_watermarks WHERE name = 'stats_daily')
) AS hours
GROUP BY 1, 2, 3, 4, 5, 6;
