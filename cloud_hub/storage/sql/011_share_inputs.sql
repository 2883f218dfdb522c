-- What population shares corrected for the models' known errors start from (agent 0.3,
-- person event fields p_female and age_bands): the calibrated probability that a
-- watcher is female, and their age distribution's probability per age band (the
-- contract's AGE_BAND_NAMES order). NULL for people without a face, and for events of
-- agents that do not send them. Both backends: adding NULL columns without a default
-- changes no stored row and no chunk, compressed ones included.
ALTER TABLE person_events
    ADD COLUMN p_female  real   NULL,
    ADD COLUMN age_bands real[] NULL;
