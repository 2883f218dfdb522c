"""The device's own state: health and occupancy telemetry, metrics, status, live config."""
