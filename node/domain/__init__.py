"""The domain: matters, cases, events and rules. It knows nothing of Flask, CouchDB or MQTT."""
