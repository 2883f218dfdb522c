-- One event_id is one row, whatever its last_seen, device or partition says. The
-- partitioned person_events cannot have a unique key on event_id alone (the partition
-- key must be part of it), so the insert first claims the id here and writes the row only
-- when the claim succeeds (cloud_hub/storage/event_writes.py). last_seen lets the hub forget ids
-- whose events retention has dropped (cloud_hub/storage/rollups.py).
CREATE TABLE event_ids (
    event_id  uuid        PRIMARY KEY,
    last_seen timestamptz NOT NULL
);
CREATE INDEX event_ids_last_seen ON event_ids (last_seen);

-- Rows stored before event times were bounded (a device that booted at 1970, a hostile
-- year 1 that asyncpg wrote as -infinity) become dead letters, whole, with reason
-- bad_time: the same fate such an event meets now (HUB_EARLIEST_EVENT).
CREATE TEMP TABLE hub_out_of_bounds ON COMMIT DROP AS
SELECT * FROM person_events
WHERE NOT isfinite(last_seen) OR NOT isfinite(first_seen)
   OR first_seen < coalesce(nullif(current_setting('hub.earliest_event', true), ''),
                            '2020-01-01T00:00:00Z')::timestamptz;
DELETE FROM person_events p USING hub_out_of_bounds o
WHERE p.event_id = o.event_id AND p.last_seen = o.last_seen;
INSERT INTO rejected_messages (topic, reason, detail, payload)
SELECT 'hub-migration/person_events', 'bad_time',
       'stored before event times were bounded: first_seen ' || o.first_seen::text,
       convert_to(row_to_json(o)::text, 'UTF8')
FROM hub_out_of_bounds o;
-- Their hours left the rollups too (the late-event path only re-aggregates hours after
-- the earliest time); the fleet rollups follow through their triggers.
DELETE FROM stats_hourly_rollup
WHERE bucket < coalesce(nullif(current_setting('hub.earliest_event', true), ''),
                        '2020-01-01T00:00:00Z')::timestamptz;
DELETE FROM stats_daily_rollup
WHERE bucket < coalesce(nullif(current_setting('hub.earliest_event', true), ''),
                        '2020-01-01T00:00:00Z')::timestamptz;
UPDATE devices d SET first_seen = coalesce(
    (SELECT min(last_seen) FROM person_events p WHERE p.device_id = d.device_id), d.last_seen)
WHERE d.device_id IN (SELECT device_id FROM hub_out_of_bounds);

-- Ids stored more than once before this migration: keep the row received first, and
-- have the next rollup round re-aggregate the hours the removed copies counted in.
WITH ranked AS (
    SELECT event_id, last_seen,
           row_number() OVER (PARTITION BY event_id ORDER BY received_at, last_seen) AS n
    FROM person_events
), gone AS (
    DELETE FROM person_events p USING ranked r
    WHERE r.n > 1 AND p.event_id = r.event_id AND p.last_seen = r.last_seen
    RETURNING p.device_id, p.last_seen
)
INSERT INTO rollup_invalidations (device_id, low, high)
SELECT device_id, min(last_seen), max(last_seen) FROM gone GROUP BY device_id;

INSERT INTO event_ids (event_id, last_seen)
SELECT event_id, min(last_seen) FROM person_events GROUP BY event_id;

-- The pending-hours view turns logged spans into hours; a span that reached -infinity
-- or infinity (a row stored before times were bounded) made it run for ever. Clamp the
-- spans to what a rollup can hold: hours below the watermark and after 1970.
DELETE FROM rollup_invalidations WHERE NOT isfinite(low) OR NOT isfinite(high);
CREATE OR REPLACE VIEW rollup_pending_hours AS
SELECT DISTINCT device_id, hour
FROM rollup_invalidations,
     generate_series(
         date_trunc('hour', greatest(low, '1970-01-01 00:00:00+00'::timestamptz), 'UTC'),
         date_trunc('hour', least(high, (SELECT watermark FROM rollup_watermarks
                                         WHERE name = 'stats_hourly'),
                                  greatest(low, '1970-01-01 00:00:00+00'::timestamptz)
                                  + interval '10 years'), 'UTC'),
         interval '1 hour') AS hour
WHERE hour < (SELECT watermark FROM rollup_watermarks WHERE name = 'stats_hourly')
  AND isfinite(high) AND isfinite(low);
