-- Occupancy minutes as a hypertable on their minute, chunked like person_events.
SELECT create_hypertable(
    'occupancy_minutely',
    by_range('bucket', coalesce(nullif(current_setting('hub.chunk_interval', true), ''),
                                '7 days')::interval),
    create_default_indexes => false,
    migrate_data => true
);
CREATE INDEX occupancy_minutely_bucket ON occupancy_minutely (bucket);
