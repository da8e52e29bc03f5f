"""Adapters: everything that does I/O (document store, read model, MQTT, keys and certificates)."""
