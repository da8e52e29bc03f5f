"""Replication, routing and MQTT signalling between nodes."""
