-- Person events schema 2 (agent 0.2): one event per person in view, face or not, with
-- whether they faced the camera (watcher) and for how long (attention_s). Rows stored
-- before this migration are schema 1 events (a 0.1 hub refused schema 2), each a person
-- who showed a face: watchers with unknown attention.
ALTER TABLE person_events
    ADD COLUMN watcher     boolean NOT NULL DEFAULT true,
    ADD COLUMN attention_s real    NULL;

-- The rollups gain the measures behind the new figures (passers-by are `events`, their
-- dwell `dwell_sum`, as before): watchers, and the attention of watchers whose attention
-- is known (mean attention = attention_sum / attention_n). Appended, so the columns keep
-- the order the hub's INSERT ... SELECT statements write. Existing rows: all watchers.
-- age_sum and age_n count watchers from now on (gender and age describe watchers); the
-- existing rows are all watchers, so they stay right.
ALTER TABLE stats_hourly_rollup
    ADD COLUMN watchers      bigint           NULL,
    ADD COLUMN attention_sum double precision NULL,
    ADD COLUMN attention_n   bigint           NOT NULL DEFAULT 0;
UPDATE stats_hourly_rollup SET watchers = events;
ALTER TABLE stats_hourly_rollup ALTER COLUMN watchers SET NOT NULL;
ALTER TABLE stats_daily_rollup
    ADD COLUMN watchers      bigint           NULL,
    ADD COLUMN attention_sum double precision NULL,
    ADD COLUMN attention_n   bigint           NOT NULL DEFAULT 0;
UPDATE stats_daily_rollup SET watchers = events;
ALTER TABLE stats_daily_rollup ALTER COLUMN watchers SET NOT NULL;
ALTER TABLE stats_hourly_fleet_rollup
    ADD COLUMN watchers      bigint           NULL,
    ADD COLUMN attention_sum double precision NULL,
    ADD COLUMN attention_n   bigint           NOT NULL DEFAULT 0;
UPDATE stats_hourly_fleet_rollup SET watchers = events;
ALTER TABLE stats_hourly_fleet_rollup ALTER COLUMN watchers SET NOT NULL;
ALTER TABLE stats_daily_fleet_rollup
    ADD COLUMN watchers      bigint           NULL,
    ADD COLUMN attention_sum double precision NULL,
    ADD COLUMN attention_n   bigint           NOT NULL DEFAULT 0;
UPDATE stats_daily_fleet_rollup SET watchers = events;
ALTER TABLE stats_daily_fleet_rollup ALTER COLUMN watchers SET NOT NULL;

-- The fleet rollups' trigger sums the new measures too.
CREATE OR REPLACE FUNCTION stats_fleet_refresh() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    fleet   text := CASE TG_TABLE_NAME WHEN 'stats_hourly_rollup' THEN 'stats_hourly_fleet_rollup'
                                      ELSE 'stats_daily_fleet_rollup' END;
    buckets timestamptz[];
BEGIN
    IF TG_OP = 'INSERT' THEN
        SELECT array_agg(DISTINCT bucket) INTO buckets FROM new_rows;
    ELSE
        SELECT array_agg(DISTINCT bucket) INTO buckets FROM old_rows;
    END IF;
    IF buckets IS NULL THEN
        RETURN NULL;
    END IF;
    EXECUTE format('DELETE FROM %I WHERE bucket = ANY ($1)', fleet) USING buckets;
    EXECUTE format(
        'INSERT INTO %I SELECT bucket, gender, age_band, direction, sum(events), sum(visitors),
                sum(age_sum), sum(age_n), sum(dwell_sum), sum(watchers), sum(attention_sum),
                sum(attention_n)
         FROM %I WHERE bucket = ANY ($1) GROUP BY 1, 2, 3, 4',
        fleet, TG_TABLE_NAME) USING buckets;
    RETURN NULL;
END $$;

-- Rows moved out of the default partition keep the new columns.
CREATE OR REPLACE FUNCTION hub_ensure_partitions(since timestamptz, until timestamptz)
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
                direction, crops, models, received_at, return_of, watcher, attention_s)
            SELECT event_id, device_id, camera_id, track_id, first_seen, last_seen, dwell_s,
                   gender, gender_confidence, age, age_low, age_high, age_confidence,
                   direction, crops, models, received_at, return_of, watcher, attention_s
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

-- The views (what ad-hoc SQL reads; the hub reads the tables directly) with the new
-- measures, defined as in 004.
DROP VIEW stats_daily;
DROP VIEW stats_hourly;
DROP VIEW rollup_pending_hourly;

CREATE VIEW rollup_pending_hourly AS
SELECT p.hour AS bucket,
       e.device_id,
       e.camera_id,
       coalesce(e.gender, 'unknown') AS gender,
       e.age_band,
       coalesce(e.direction, 'none') AS direction,
       count(*) AS events,
       count(*) FILTER (WHERE e.return_of IS NULL) AS visitors,
       sum(e.age::double precision) FILTER (WHERE e.watcher) AS age_sum,
       count(e.age) FILTER (WHERE e.watcher) AS age_n,
       sum(e.dwell_s::double precision) AS dwell_sum,
       count(*) FILTER (WHERE e.watcher) AS watchers,
       sum(e.attention_s::double precision) FILTER (WHERE e.watcher) AS attention_sum,
       count(e.attention_s) FILTER (WHERE e.watcher) AS attention_n
FROM rollup_pending_hours p
JOIN person_events e ON e.device_id = p.device_id
 AND e.last_seen >= p.hour AND e.last_seen < p.hour + interval '1 hour'
GROUP BY 1, 2, 3, 4, 5, 6;

CREATE VIEW stats_hourly AS
SELECT bucket, device_id, camera_id, gender, age_band, direction,
       events, visitors, age_sum, age_n, dwell_sum, watchers, attention_sum, attention_n
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
       sum(age::double precision) FILTER (WHERE watcher) AS age_sum,
       count(age) FILTER (WHERE watcher) AS age_n,
       sum(dwell_s::double precision) AS dwell_sum,
       count(*) FILTER (WHERE watcher) AS watchers,
       sum(attention_s::double precision) FILTER (WHERE watcher) AS attention_sum,
       count(attention_s) FILTER (WHERE watcher) AS attention_n
FROM person_events
WHERE last_seen >= (SELECT watermark FROM rollup_watermarks WHERE name = 'stats_hourly')
GROUP BY 1, 2, 3, 4, 5, 6
UNION ALL
SELECT * FROM rollup_pending_hourly;

CREATE VIEW stats_daily AS
SELECT bucket, device_id, camera_id, gender, age_band, direction,
       events, visitors, age_sum, age_n, dwell_sum, watchers, attention_sum, attention_n
FROM stats_daily_rollup r
WHERE bucket < (SELECT watermark FROM rollup_watermarks WHERE name = 'stats_daily')
  AND NOT EXISTS (SELECT 1 FROM rollup_pending_days p
                  WHERE p.device_id = r.device_id AND p.day = r.bucket)
UNION ALL
SELECT date_trunc('day', bucket, 'UTC') AS bucket,
       device_id, camera_id, gender, age_band, direction,
       sum(events)::bigint, sum(visitors)::bigint, sum(age_sum), sum(age_n)::bigint,
       sum(dwell_sum), sum(watchers)::bigint, sum(attention_sum), sum(attention_n)::bigint
FROM (
    SELECT * FROM stats_hourly
    WHERE bucket >= (SELECT watermark FROM rollup_watermarks WHERE name = 'stats_daily')
    UNION ALL
    SELECT r.bucket, r.device_id, r.camera_id, r.gender, r.age_band, r.direction,
           r.events, r.visitors, r.age_sum, r.age_n, r.dwell_sum, r.watchers,
           r.attention_sum, r.attention_n
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
