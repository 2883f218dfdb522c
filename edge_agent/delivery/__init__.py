"""Events out: the on-disk outbox, the MQTT publisher, the clock gate, broker security."""
