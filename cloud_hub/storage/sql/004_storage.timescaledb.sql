-- TimescaleDB storage: person_events becomes a hypertable on last_seen, with continuous
-- aggregates per hour and per day. Policies (refresh, compression, retention) follow the
-- HUB_* settings and are (re)applied at every start by cloud_hub.storage.db.configure_storage.
CREATE EXTENSION IF NOT EXISTS timescaledb;

-- A hypertable's unique keys must contain its time column. A redelivered event carries
-- the same last_seen, so (event_id, last_seen) keeps ingest idempotent.
ALTER TABLE person_events DROP CONSTRAINT person_events_pkey;
ALTER TABLE person_events ADD PRIMARY KEY (event_id, last_seen);
SELECT create_hypertable(
    'person_events',
    by_range('last_seen', coalesce(nullif(current_setting('hub.chunk_interval', true), ''),
                                   '7 days')::interval),
    create_default_indexes => false,
    migrate_data => true
);
ALTER TABLE person_events SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'device_id, camera_id',
    timescaledb.compress_orderby = 'last_seen DESC, event_id'
);

-- Real-time aggregation on (materialized_only = false, off by default since 2.13): the
-- span not materialized yet (the newest hour or so, or a cagg never refreshed) is
-- aggregated from person_events at query time, so the newest events are always counted.
-- Dimensions: device, camera (site comes from cameras), gender, age band, direction;
-- measures: events, first visits (return_of IS NULL; returns = events - visitors), and
-- the sums behind average age and dwell.
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
       sum(age::double precision) AS age_sum,
       count(age) AS age_n,
       sum(dwell_s::double precision) AS dwell_sum
FROM person_events
GROUP BY 1, 2, 3, 4, 5, 6
WITH NO DATA;

-- Days from hours (a hierarchical continuous aggregate): UTC days.
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
       sum(dwell_sum) AS dwell_sum
FROM stats_hourly
GROUP BY 1, 2, 3, 4, 5, 6
WITH NO DATA;
