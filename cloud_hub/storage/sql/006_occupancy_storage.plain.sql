-- Occupancy minutes stay one plain table (a row per camera and minute, a sixth of the
-- samples); fleet-wide ranges read it by time.
CREATE INDEX occupancy_minutely_bucket ON occupancy_minutely (bucket);
