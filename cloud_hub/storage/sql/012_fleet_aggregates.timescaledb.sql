-- Fleet-wide continuous aggregates (TimescaleDB), the counterpart of the plain backend's
-- fleet rollups (007): the per-camera aggregates summed over devices and cameras, a row
-- per bucket, gender, age band and direction. A statistics query with no device, camera
-- or site filter and no per-camera grouping reads these instead of summing every
-- camera's rows (bench/hub_query.py on 10 million events from 500 cameras: 30 days by
-- day 671 ms -> a few ms at p95; docs/hub.md, "Query performance").
--
-- Hierarchical: each sums its per-camera parent (hourly from stats_hourly, daily from
-- stats_daily, which retention never thins), so its refresh reads at most 500 times
-- fewer rows than the events, and changes to the parent's materialisation invalidate it.
-- Real-time aggregation answers above its own watermark from the parent, so a query
-- reads the same sums whichever part is materialised. Policies, first refresh and the
-- hub's job order: cloud_hub.storage.db.configure_storage and cloud_hub.storage.rollups.
CREATE MATERIALIZED VIEW stats_hourly_fleet
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT time_bucket('1 hour'::interval, bucket) AS bucket,
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
GROUP BY 1, 2, 3, 4
WITH NO DATA;

CREATE MATERIALIZED VIEW stats_daily_fleet
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT time_bucket('1 day'::interval, bucket) AS bucket,
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
FROM stats_daily
GROUP BY 1, 2, 3, 4
WITH NO DATA;
