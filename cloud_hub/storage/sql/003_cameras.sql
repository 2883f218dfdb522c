-- Cameras as the operator registers them: the site each (device, camera) stands in, where
-- it is and its counting line. The contract does not carry a site, so statistics by site
-- join this table at query time (docs/hub.md: a camera moved to another site, or
-- registered after it started publishing, counts for its current site, history included).
CREATE TABLE cameras (
    device_id     text        NOT NULL,
    camera_id     text        NOT NULL,
    name          text        NULL,
    site          text        NULL,
    location      text        NULL,
    -- As the agent's [[cameras]] line/in_side: {"line": [[x1, y1], [x2, y2]], "in_side": "left"}.
    counting_line jsonb       NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (device_id, camera_id)
);
CREATE INDEX cameras_site ON cameras (site, device_id, camera_id);
