"""The harness's services are real: the store keeps documents, the broker relays, Redis answers."""

from __future__ import annotations

import socket
import threading

from node.adapters.docstore import DocStore
from tests.conftest import Services


def test_docstore_keeps_documents_and_reports_changes(store: DocStore) -> None:
    store.put({"_id": "a", "value": 1})
    store.bulk_docs([{"_id": "b", "value": 2}, {"_id": "c", "value": 3}])
    assert store.get("b")["value"] == 2
    changes = store.changes(since=0, include_docs=True)
    assert sorted(row["id"] for row in changes["results"]) == ["a", "b", "c"]
    store.put_local("checkpoint", {"seq": changes["last_seq"]})
    assert store.get_local("checkpoint")["seq"] == changes["last_seq"]


def test_mqtt_broker_relays_a_qos1_message(services: Services) -> None:
    received: list[dict] = []
    arrived = threading.Event()
    subscriber = services.mqtt_link("t-sub")
    subscriber.subscribe("tongban/test/#", lambda topic, payload: (received.append(payload), arrived.set()))
    publisher = services.mqtt_link("t-pub")
    try:
        assert subscriber.start(wait_s=5) and publisher.start(wait_s=5)
        assert publisher.publish("tongban/test/x", {"n": 1})
        assert arrived.wait(5)
        assert received == [{"n": 1}]
    finally:
        subscriber.stop()
        publisher.stop()


def test_redis_answers_ping(services: Services) -> None:
    port = int(services.redis_url.rsplit(":", 1)[1].split("/")[0])
    with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
        sock.sendall(b"PING\r\n")
        assert sock.recv(16) == b"+PONG\r\n"
