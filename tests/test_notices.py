"""Notices reach open inbox pages: MQTT notice → the web process's board → a server-sent event."""

from __future__ import annotations

import threading
import time

from node.adapters.mqtt import notice_topic
from node.bootstrap import NodeContext
from node.entrypoints.web import create_app
from node.entrypoints.web.notices import NoticeBoard
from tests.conftest import Services, wait_for
from tiers.demo import HESHAN


def test_a_posted_notice_is_streamed_as_an_event() -> None:
    board = NoticeBoard()
    stream = board.stream(lifetime_s=5, keepalive_s=5)
    assert next(stream).startswith("retry:")
    threading.Timer(0.2, board.post, args=("t", {"case_no": "X-1", "state": "accepted"})).start()
    event = next(stream)
    assert event.startswith("data: ") and '"case_no": "X-1"' in event


def test_an_mqtt_notice_reaches_the_web_process(county_node: NodeContext, services: Services) -> None:
    county_node.mqtt = services.mqtt_link("t-county-web")
    app = create_app(county_node)
    assert county_node.mqtt.start(wait_s=10)
    board: NoticeBoard = app.extensions["tongban.notices"]
    publisher = services.mqtt_link("t-agent")
    try:
        assert publisher.start(wait_s=10)
        before = board.version
        assert publisher.publish(notice_topic(county_node.config.code), {"case_no": f"{HESHAN}-20261127-9"})
        assert wait_for(lambda: board.version != before, 5)
        assert board.version == before + 1
    finally:
        publisher.stop()
        county_node.mqtt.stop()


def test_a_burst_of_signals_is_folded_but_its_last_always_arrives(services: Services) -> None:
    topic = notice_topic(HESHAN)
    heard: list[dict] = []
    listener = services.mqtt_link("t-listener")
    listener.subscribe(topic, lambda _topic, payload: heard.append(payload))
    sender = services.mqtt_link("t-sender")
    try:
        assert listener.start(wait_s=10) and sender.start(wait_s=10)
        for n in range(200):
            sender.signal(topic, {"n": n})
        assert wait_for(lambda: bool(heard) and heard[-1] == {"n": 199}, 5), heard  # the last is never swallowed
        assert heard[0] == {"n": 0}  # the first goes at once (held, it would have been replaced)
        assert len(heard) < 20  # the burst in between is folded
        time.sleep(0.1)
        # After a quiet window a signal goes at once again: had it been held, the next would replace it.
        sender.signal(topic, {"n": "after a pause"})
        sender.signal(topic, {"n": "right after"})
        assert wait_for(lambda: heard[-1] == {"n": "right after"}, 5)
        assert heard[-2] == {"n": "after a pause"}
    finally:
        sender.stop()
        listener.stop()
