"""Cloud hub: collects person events from the fleet over MQTT, stores them, serves stats."""

__version__ = "0.1.0"
