"""Real bridged Mosquitto brokers (city ← county ← township ← village) as the federation generates them.

Every client and bridge signs in (no anonymous clients). A message crosses them both ways, a QoS 1
message published while the middle broker is down is delivered once it is back (persistent bridge
sessions, persistence on disk), and nothing loops.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from node.adapters.mqtt import MqttLink, status_topic, wake_topic
from node.config import NodeConfig
from node.runtime.federation import bridges_for, broker_auth_for, children_in
from node.runtime.services import free_port, mosquitto_spec
from node.runtime.supervisor import Supervisor
from tests.conftest import wait_for
from tiers.demo import CITY, HESHAN, HESHAN_TOWN, HESHAN_VILLAGE

COUNTY, TOWN, VILLAGE = HESHAN, HESHAN_TOWN, HESHAN_VILLAGE


@dataclass
class Inbox:
    messages: list[tuple[str, dict]] = field(default_factory=list)
    arrived: threading.Event = field(default_factory=threading.Event)

    def __call__(self, topic: str, payload: dict) -> None:
        self.messages.append((topic, payload))
        self.arrived.set()

    def wait_for(self, count: int, timeout: float = 15) -> bool:
        return wait_for(lambda: len(self.messages) >= count, timeout)


@dataclass
class Brokers:
    supervisor: Supervisor
    ports: dict[str, int]
    specs: dict[str, object]
    configs: dict[str, NodeConfig]


def chain_of_brokers(tmp_path: Path, chain: list[str]) -> Brokers:
    """Each broker bridged to its parent's (the one before it), configured as the federation does it."""
    ports = {code: free_port() for code in chain}
    configs = {
        code: NodeConfig(
            code=code,
            data_dir=tmp_path / code,
            http_port=0,
            docstore_port=0,
            mqtt_port=ports[code],
            redis_url="",
            parent_mqtt_port=ports[parent] if parent else None,
        )
        for parent, code in zip([None, *chain], chain, strict=False)
    }
    specs: dict[str, object] = {}
    for code, config in configs.items():
        children = children_in(list(configs.values()), config)
        specs[code] = mosquitto_spec(
            f"{code}-mosquitto",
            tmp_path / code / "mosquitto",
            ports[code],
            bridges_for(config),
            broker_auth_for(config, children),
        )
    return Brokers(Supervisor(tmp_path / "run", progress=lambda _line: None), ports, specs, configs)


@pytest.fixture
def brokers(tmp_path: Path) -> Iterator[Brokers]:
    """City ← county ← township ← village, each broker bridged to its parent's."""
    running = chain_of_brokers(tmp_path, [CITY, COUNTY, TOWN, VILLAGE])
    try:
        running.supervisor.start(list(running.specs.values()))  # type: ignore[arg-type]
        time.sleep(1.5)  # let the bridges connect
        yield running
    finally:
        running.supervisor.stop_all()


def link(
    brokers: Brokers, code: str, client_id: str, topic: str | None = None, inbox: Inbox | None = None
) -> MqttLink:
    """A client on ``code``'s broker signed in as that node."""
    config = brokers.configs[code]
    mqtt = MqttLink(
        "127.0.0.1", brokers.ports[code], client_id=client_id, clean_start=False, credentials=config.mqtt_credentials()
    )
    if topic and inbox:
        mqtt.subscribe(topic, inbox)
    assert mqtt.start(wait_s=10)
    return mqtt


def test_messages_cross_three_bridges_both_ways_and_never_loop(brokers: Brokers) -> None:
    down, up, village_up = Inbox(), Inbox(), Inbox()
    at_village = link(brokers, VILLAGE, "t-village", wake_topic(VILLAGE), down)
    at_city = link(brokers, CITY, "t-city", "tongban/up/#", up)
    echo = link(brokers, VILLAGE, "t-village-up", "tongban/up/#", village_up)
    publisher_city = link(brokers, CITY, "t-pub-city")
    publisher_village = link(brokers, VILLAGE, "t-pub-village")
    try:
        assert publisher_city.publish(wake_topic(VILLAGE), {"n": 1})
        assert down.wait_for(1), "a wake published at the city must reach the village"
        assert publisher_village.publish(status_topic(VILLAGE), {"node": VILLAGE, "status": "online"})
        assert up.wait_for(1), "a village status must reach the city"
        time.sleep(2)
        # Exactly once each: no copy came back around through a bridge.
        assert [t for t, _ in down.messages] == [wake_topic(VILLAGE)]
        assert [t for t, _ in up.messages] == [status_topic(VILLAGE)]
        assert [t for t, _ in village_up.messages] == [status_topic(VILLAGE)]
    finally:
        for mqtt in (at_village, at_city, echo, publisher_city, publisher_village):
            mqtt.stop()


def test_a_qos1_message_survives_a_restart_of_the_middle_broker(brokers: Brokers) -> None:
    down = Inbox()
    at_village = link(brokers, VILLAGE, "t-village-persistent", wake_topic(VILLAGE), down)
    publisher = link(brokers, CITY, "t-pub-city-2")
    try:
        brokers.supervisor.stop(f"{COUNTY}-mosquitto")
        # The city keeps it for the county's bridge, whose session is persistent (cleansession false).
        assert publisher.publish(wake_topic(VILLAGE), {"while": "county down"})
        time.sleep(1)
        assert not down.messages
        brokers.supervisor.start([brokers.specs[COUNTY]])  # type: ignore[list-item]
        assert down.wait_for(1, timeout=30), "the queued message must arrive once the county is back"
        assert down.messages[0][1] == {"while": "county down"}
        time.sleep(2)
        assert len(down.messages) == 1
    finally:
        at_village.stop()
        publisher.stop()
