-- Person events schema 2 (agent 0.2): one event per person in view, face or not, with
-- whether they faced the camera (watcher) and for how long (attention_s). Rows stored
-- before this migration are schema 1 events (a 0.1 hub refused schema 2), each a person
-- who showed a face: watchers with unknown attention.
--
-- A continuous aggregate cannot gain columns, so stats_hourly and stats_daily are
-- dropped and created again with the new measures, empty (WITH NO DATA: a refresh cannot
-- run inside the migration's transaction). Until the hub's next upkeep round refreshes
-- them (cloud_hub.storage.rollups: it materialises an empty aggregate in full), real-time
-- aggregation answers every bucket from person_events, so nothing reads as zero.
--
-- Buckets person_events can no longer rebuild (raw chunks dropped by retention, before
-- the oldest stored event) would be lost with the old aggregates: they are kept aside in
-- stats_hourly_archive / stats_daily_archive, with the new measures filled in (every
-- stored event was a watcher, attention unknown), and the hub copies them into the new
-- aggregates right after their first refresh, then drops the archive tables.
CREATE TABLE stats_hourly_archive AS
SELECT bucket, device_id, camera_id, gender, age_band, direction, events, visitors,
       age_sum, age_n, dwell_sum, events AS watchers,
       NULL::double precision AS attention_sum, 0::bigint AS attention_n
FROM stats_hourly
WHERE bucket < coalesce((SELECT time_bucket('1 hour'::interval, min(last_seen))
                         FROM person_events), 'infinity')
  AND bucket >= coalesce(nullif(current_setting('hub.earliest_event', true), ''),
                         '2020-01-01T00:00:00Z')::timestamptz;
CREATE TABLE stats_daily_archive AS
SELECT bucket, device_id, camera_id, gender, age_band, direction, events, visitors,
       age_sum, age_n, dwell_sum, events AS watchers,
       NULL::double precision AS attention_sum, 0::bigint AS attention_n
FROM stats_daily
WHERE bucket < coalesce((SELECT time_bucket('1 day'::interval, min(last_seen))
                         FROM person_events), 'infinity')
  AND bucket >= coalesce(nullif(current_setting('hub.earliest_event', true), ''),
                         '2020-01-01T00:00:00Z')::timestamptz;

-- Their policies go with them; cloud_hub.storage.db.configure_storage adds them again
-- after the migrations, at every start.
DROP MATERIALIZED VIEW stats_daily;
DROP MATERIALIZED VIEW stats_hourly;

ALTER TABLE person_events
    ADD COLUMN watcher     boolean NOT NULL DEFAULT true,
    ADD COLUMN attention_s real    NULL;

-- As in 004, with the measures behind the new figures: passers-by are `events` and their
-- dwell `dwell_sum`, as before; watchers; the attention of watchers whose attention is
-- known (mean attention = attention_sum / attention_n). Gender and age describe
-- watchers, so age_sum and age_n count watchers' ages.
CREATE MATERIALIZED VIEW stats_hourly
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT time_bucket('1 hour'::interval, last_seen) AS bucket,
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
GROUP BY 1, 2, 3, 4, 5, 6
WITH NO DATA;

CREATE MATERIALIZED VIEW stats_daily
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT time_bucket('1 day'::interval, bucket) AS bucket,
       device_id,
       camera_id,
       gender,
       age_band,
       direction,
       sum(events)::bigint AS events,
       sum(visitors)::bigint AS visitors,
       sum(age_sum) AS age_sum,
       sum(age_n)::bigint AS age_n,
       sum(dwell_sum) AS dwell_sum,
       sum(watchers)::bigint AS watchers,
       sum(attention_sum) AS attention_sum,
       sum(attention_n)::bigint AS attention_n
FROM stats_hourly
GROUP BY 1, 2, 3, 4, 5, 6
WITH NO DATA;
