-- Fleet-wide rollups (plain backend): the per-camera rollups summed over devices and
-- cameras, a row per bucket, gender, age band and direction. A statistics query with no
-- device, camera or site filter and no per-camera grouping reads these instead of
-- summing every camera's rows at query time (10 million events over 90 days from 500
-- cameras make about 3 million daily and 8 million hourly per-camera rows; the fleet
-- tables hold 81 rows a bucket at most: docs/hub.md, "Query performance").
CREATE TABLE stats_daily_fleet_rollup (
    bucket     timestamptz      NOT NULL,
    gender     text             NOT NULL,
    age_band   text             NOT NULL,
    direction  text             NOT NULL,
    events     bigint           NOT NULL,
    visitors   bigint           NOT NULL,
    age_sum    double precision NULL,
    age_n      bigint           NOT NULL,
    dwell_sum  double precision NULL,
    PRIMARY KEY (bucket, gender, age_band, direction)
);
CREATE TABLE stats_hourly_fleet_rollup (LIKE stats_daily_fleet_rollup INCLUDING ALL);

-- Kept by statement triggers on the per-camera rollups, in the same transaction as
-- whatever changed them (materialisation, re-aggregation of late events, retention): the
-- buckets a statement touched are summed again from the per-camera table, so the fleet
-- rows are exact sums (no running additions and subtractions of floating point sums).
CREATE FUNCTION stats_fleet_refresh() RETURNS trigger LANGUAGE plpgsql AS $$
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
                sum(age_sum), sum(age_n), sum(dwell_sum)
         FROM %I WHERE bucket = ANY ($1) GROUP BY 1, 2, 3, 4',
        fleet, TG_TABLE_NAME) USING buckets;
    RETURN NULL;
END $$;

CREATE TRIGGER stats_hourly_fleet_insert AFTER INSERT ON stats_hourly_rollup
REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION stats_fleet_refresh();
CREATE TRIGGER stats_hourly_fleet_delete AFTER DELETE ON stats_hourly_rollup
REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION stats_fleet_refresh();
CREATE TRIGGER stats_daily_fleet_insert AFTER INSERT ON stats_daily_rollup
REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION stats_fleet_refresh();
CREATE TRIGGER stats_daily_fleet_delete AFTER DELETE ON stats_daily_rollup
REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION stats_fleet_refresh();

-- What is materialised already.
INSERT INTO stats_hourly_fleet_rollup
SELECT bucket, gender, age_band, direction, sum(events), sum(visitors), sum(age_sum),
       sum(age_n), sum(dwell_sum)
FROM stats_hourly_rollup GROUP BY 1, 2, 3, 4;
INSERT INTO stats_daily_fleet_rollup
SELECT bucket, gender, age_band, direction, sum(events), sum(visitors), sum(age_sum),
       sum(age_n), sum(dwell_sum)
FROM stats_daily_rollup GROUP BY 1, 2, 3, 4;
