"""MQTT between nodes trusts nobody (issue 10): sign-in, ACLs on real bridged brokers, sealed reports at the collector.

- Every broker the project starts refuses anonymous clients and wrong passwords.
- A node signed in at a broker cannot publish under another node's topics; a compromised child that
  opens its own broker's ACL and widens its bridge still gets nothing outside its subtree through its
  parent's broker (up or down).
- The city's collector believes a status only when it is sealed by the node its topic names: a
  correctly sealed heartbeat is attributed; unsigned, forged (another node's key, another CA, altered
  body), replayed and oversized ones are dropped, counted and raise an ``mqtt_rejected`` alert naming
  the claimed node and the real signer.
"""

from __future__ import annotations

import json
import os
import stat
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion

from node.adapters.mqtt import MqttLink, status_topic, wake_topic
from node.adapters.opsmodel import OpsModel, RejectionReport
from node.adapters.signed_reports import MAX_REPORT_BYTES, ReportSigner
from node.bootstrap import CollectorContext, NodeContext
from node.config import Thresholds
from node.entrypoints.collector import Collector
from node.entrypoints.ops_reports import Admitted, ReportGate
from node.runtime.provisioning import ensure_city_authority
from node.service_layer.alerts import evaluate_alerts
from tests.conftest import Services, make_node, report_signer, wait_for
from tests.test_mqtt_bridges import Brokers, Inbox, chain_of_brokers
from tiers import yiyang
from tiers.demo import CITY, HESHAN, HESHAN_TOWN, HESHAN_VILLAGE

TOWN, VILLAGE = HESHAN_TOWN, HESHAN_VILLAGE
SIBLING = next(code for code in yiyang().children(HESHAN_TOWN) if code != HESHAN_VILLAGE)


def connack(port: int, credentials: tuple[str, str] | None) -> str:
    """The broker's answer to a CONNECT (``Success``, ``Not authorized`` …), with a raw paho client."""
    answer: list[str] = []
    done = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"t-{uuid.uuid4().hex[:8]}", protocol=mqtt.MQTTv311)
    if credentials:
        client.username_pw_set(*credentials)

    def on_connect(_c: Any, _u: Any, _f: Any, reason_code: Any, _p: Any) -> None:
        answer.append(str(reason_code))
        done.set()

    client.on_connect = on_connect
    client.connect("127.0.0.1", port, keepalive=5)
    client.loop_start()
    try:
        assert done.wait(10), "the broker never answered"
    finally:
        client.disconnect()
        client.loop_stop()
    return answer[0]


# --------------------------------------------------------------------------------------------- sign-in


def test_the_session_broker_refuses_anonymous_clients_and_wrong_passwords(services: Services) -> None:
    assert connack(services.mqtt_port, None) == "Not authorized"
    assert connack(services.mqtt_port, (VILLAGE, "not-the-password")) == "Not authorized"
    assert connack(services.mqtt_port, (VILLAGE, services.mqtt_password(VILLAGE))) == "Success"


@pytest.fixture
def chain(tmp_path: Path) -> Iterator[Brokers]:
    """Township ← village, configured and started as the local federation does it."""
    running = chain_of_brokers(tmp_path, [TOWN, VILLAGE])
    yield running
    running.supervisor.stop_all()


def start(brokers: Brokers) -> None:
    brokers.supervisor.start(list(brokers.specs.values()))  # type: ignore[arg-type]


def signed_in(
    brokers: Brokers, at: str, as_node: str, topic: str | None = None, inbox: Inbox | None = None
) -> MqttLink:
    """A client on ``at``'s broker signed in with ``as_node``'s credentials."""
    link = MqttLink(
        "127.0.0.1",
        brokers.ports[at],
        client_id=f"t-{uuid.uuid4().hex[:8]}",
        credentials=brokers.configs[as_node].mqtt_credentials(),
    )
    if topic and inbox:
        link.subscribe(topic, inbox)
    assert link.start(wait_s=10), f"{as_node} cannot sign in at {at}'s broker"
    return link


def test_federation_brokers_admit_only_their_node_and_its_childrens_bridges(chain: Brokers) -> None:
    start(chain)
    town, village = chain.configs[TOWN], chain.configs[VILLAGE]
    for config in (town, village):
        mode = stat.S_IMODE(os.stat(config.mqtt_password_path).st_mode)
        assert mode == 0o600, f"{config.mqtt_password_path} is {oct(mode)}"
        broker_dir = config.data_dir / "mosquitto"
        for name in ("passwords", "mosquitto.conf"):
            assert stat.S_IMODE(os.stat(broker_dir / name).st_mode) == 0o600
        conf = (broker_dir / "mosquitto.conf").read_text()
        assert "allow_anonymous false" in conf and "allow_anonymous true" not in conf
        assert connack(config.mqtt_port, None) == "Not authorized"
        assert connack(config.mqtt_port, (config.code, "guess")) == "Not authorized"
    assert connack(town.mqtt_port, village.mqtt_credentials()) == "Success", "the village's bridge signs in"
    assert connack(village.mqtt_port, town.mqtt_credentials()) == "Not authorized", "a parent is no user below"
    users = (town.data_dir / "mosquitto" / "passwords").read_text()
    assert sorted(line.split(":")[0] for line in users.splitlines()) == sorted([TOWN, VILLAGE])
    assert all(line.split(":", 1)[1].startswith("$7$") for line in users.splitlines())


# --------------------------------------------------------------------------------------------- ACLs


def test_a_node_cannot_publish_under_another_nodes_topic(services: Services) -> None:
    heard = Inbox()
    listener = services.mqtt_link(f"t-{uuid.uuid4().hex[:8]}")
    listener.subscribe("tongban/#", heard)
    village = MqttLink(
        "127.0.0.1",
        services.mqtt_port,
        client_id=f"t-{uuid.uuid4().hex[:8]}",
        credentials=(VILLAGE, services.mqtt_password(VILLAGE)),
    )
    try:
        assert listener.start(wait_s=10) and village.start(wait_s=10)
        probe = uuid.uuid4().hex
        for topic in (status_topic(SIBLING), status_topic(TOWN), wake_topic(SIBLING), "tongban/up/x"):
            village.publish(topic, {"node": SIBLING, "status": "online", "probe": probe})
        assert village.publish(status_topic(VILLAGE), {"node": VILLAGE, "status": "online", "probe": probe})
        assert village.publish(wake_topic(VILLAGE), {"probe": probe})
        assert heard.wait_for(2), "the village's own topics arrive"
        time.sleep(1.0)
        assert sorted(t for t, p in heard.messages if p.get("probe") == probe) == sorted(
            [status_topic(VILLAGE), wake_topic(VILLAGE)]
        ), "nothing under another node's topics arrived"
    finally:
        listener.stop()
        village.stop()


def compromise(brokers: Brokers, code: str) -> None:
    """What a village that owns its machine can do: open its own broker's ACL and widen its bridge."""
    broker_dir = brokers.configs[code].data_dir / "mosquitto"
    (broker_dir / "acl").write_text(f"user {code}\ntopic readwrite #\n")
    conf = (broker_dir / "mosquitto.conf").read_text()
    widened = [
        "topic tongban/down/# in 1" if line.startswith("topic tongban/down/") else line for line in conf.splitlines()
    ]
    (broker_dir / "mosquitto.conf").write_text("\n".join(widened) + "\n")


def test_a_bridge_carries_only_its_own_subtree_even_from_a_compromised_child(chain: Brokers) -> None:
    compromise(chain, VILLAGE)
    start(chain)
    up, down, local = Inbox(), Inbox(), Inbox()
    at_town = signed_in(chain, TOWN, TOWN, "tongban/up/#", up)
    at_village = signed_in(chain, VILLAGE, VILLAGE, "tongban/down/#", down)
    village_up = signed_in(chain, VILLAGE, VILLAGE, "tongban/up/#", local)
    village_publisher = signed_in(chain, VILLAGE, VILLAGE)
    town_publisher = signed_in(chain, TOWN, TOWN)
    try:
        probe = uuid.uuid4().hex
        # Up: the village's broker now lets it publish anything, and its bridge sends all of up/# …
        for code in (SIBLING, TOWN, HESHAN, CITY):
            assert village_publisher.publish(status_topic(code), {"node": code, "status": "online", "probe": probe})

        # … but the township's broker takes from the village's bridge only the village's own reports.
        def own_arrived() -> bool:
            assert village_publisher.publish(status_topic(VILLAGE), {"node": VILLAGE, "probe": probe})
            return any(t == status_topic(VILLAGE) for t, _ in up.messages)

        assert wait_for(own_arrived, 20, interval=0.5), "the bridge carries the village's own reports"
        assert any(t == status_topic(SIBLING) for t, _ in local.messages), "the village's own broker took anything"
        # Down: the widened bridge subscribes to every down topic at the township; only its own arrive.
        def wake_arrived() -> bool:
            assert town_publisher.publish(wake_topic(SIBLING), {"for": SIBLING, "probe": probe})
            assert town_publisher.publish(wake_topic(VILLAGE), {"for": VILLAGE, "probe": probe})
            return any(p.get("for") == VILLAGE for _, p in down.messages)

        assert wait_for(wake_arrived, 20, interval=0.5), "the village's own wake-ups still come down"
        time.sleep(1.0)
        assert {t for t, p in up.messages if p.get("probe") == probe} == {status_topic(VILLAGE)}
        assert not any(p.get("for") == SIBLING for _, p in down.messages), "a sibling's wake-up reached the village"
    finally:
        for link in (at_town, at_village, village_up, village_publisher, town_publisher):
            link.stop()


# --------------------------------------------------------------------------------------------- the gate


@pytest.fixture(scope="module")
def keys(city_ca: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, ReportSigner]:
    """The village's and the township's keys of the city CA, and an impostor's key for the village's code."""
    root = tmp_path_factory.mktemp("keys")
    found = {code: report_signer(city_ca, root / code, code) for code in (VILLAGE, TOWN)}
    other_ca = ensure_city_authority(root / "other-ca").directory
    found["impostor"] = report_signer(other_ca, root / "impostor", VILLAGE)
    return found


def raw(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, ensure_ascii=False).encode()


def online(code: str) -> dict[str, Any]:
    return {"node": code, "status": "online", "version": "0.1.0", "at": time.time()}


def reason(result: Admitted | RejectionReport) -> str:
    return result.reason if isinstance(result, RejectionReport) else "admitted"


def test_the_gate_admits_a_sealed_report_once_and_dates_late_ones_by_their_own_time(
    city_ca: Path, keys: dict[str, ReportSigner]
) -> None:
    gate = ReportGate((city_ca / "ca.pem").read_bytes(), yiyang())
    # The collector's clock two hours on: the keys' certificates (issued just now) cover every time used.
    topic, now = status_topic(VILLAGE), time.time() + 7200
    sealed = keys[VILLAGE].seal(topic, online(VILLAGE), at=now - 20)
    first = gate.admit(topic, raw(sealed), False, now)
    assert isinstance(first, Admitted) and first.body["status"] == "online" and not first.own_time
    assert reason(gate.admit(topic, raw(sealed), False, now + 1)) == "replayed"
    assert reason(gate.admit(topic, raw(sealed), True, now + 1)) == "duplicate", "a retained copy is harmless"
    # A captured report from a minute before the newest one, replayed while still fresh.
    earlier = keys[VILLAGE].seal(topic, online(VILLAGE), at=now - 80)
    assert reason(gate.admit(topic, raw(earlier), False, now + 1)) == "replayed"
    retained_earlier = keys[VILLAGE].seal(topic, online(VILLAGE), at=now - 80)
    assert reason(gate.admit(topic, raw(retained_earlier), True, now + 1)) == "outdated", "older, retained: harmless"
    # Late (queued during an outage) but newer than anything taken: believed, dated by its own time.
    late = gate.admit(topic, raw(keys[VILLAGE].seal(topic, online(VILLAGE), at=now + 10)), False, now + 900)
    assert isinstance(late, Admitted) and late.own_time
    # Old and older than what was taken: a replay of a captured report.
    old = keys[VILLAGE].seal(topic, online(VILLAGE), at=now - 3600)
    assert reason(gate.admit(topic, raw(old), False, now + 901)) == "replayed"
    future = keys[VILLAGE].seal(topic, online(VILLAGE), at=now + 3600)
    assert reason(gate.admit(topic, raw(future), False, now + 2)) == "future"
    assert gate.refused["replayed"] == 3 and gate.refused["future"] == 1


def test_a_last_will_counts_once_and_only_for_the_agents_current_session(
    city_ca: Path, keys: dict[str, ReportSigner]
) -> None:
    gate = ReportGate((city_ca / "ca.pem").read_bytes(), yiyang())
    topic, now = status_topic(VILLAGE), time.time() + 86_400
    old_agent = keys[VILLAGE]
    # Signed when the agent connected, long before it fires: no freshness asked of a will.
    will = raw(old_agent.seal(topic, {"node": VILLAGE, "status": "offline"}, will=True, at=now - 80_000))
    assert reason(gate.admit(topic, raw(old_agent.seal(topic, online(VILLAGE), at=now)), False, now)) == "admitted"
    assert reason(gate.admit(topic, will, False, now + 1)) == "admitted"
    assert reason(gate.admit(topic, will, False, now + 2)) == "duplicate"
    new_agent = ReportSigner(old_agent.identity)  # a restarted agent: a new session
    heartbeat = raw(new_agent.seal(topic, online(VILLAGE), at=now + 3))
    assert reason(gate.admit(topic, heartbeat, False, now + 3)) == "admitted"
    stale_will = raw(old_agent.seal(topic, {"node": VILLAGE, "status": "offline"}, will=True, at=now - 70_000))
    assert reason(gate.admit(topic, stale_will, False, now + 4)) == "superseded_will"
    lying_will = raw(new_agent.seal(topic, online(VILLAGE), will=True, at=now))
    assert reason(gate.admit(topic, lying_will, False, now + 5)) == "malformed", "a will can only say offline"


@settings(max_examples=150, deadline=None)
@given(
    data=st.data(),
    field=st.sampled_from(["v", "at", "nonce", "session", "will", "cert", "sig", "status", "auth", "node"]),
    value=st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.floats(allow_nan=False),
        st.text(max_size=60),
        st.lists(st.integers(), max_size=3),
        st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=3),
    ),
)
def test_the_gate_never_fails_whatever_a_node_sends(
    city_ca: Path, keys: dict[str, ReportSigner], data: st.DataObject, field: str, value: Any
) -> None:
    gate = ReportGate((city_ca / "ca.pem").read_bytes(), yiyang())
    topic = status_topic(VILLAGE)
    sealed = keys[VILLAGE].seal(topic, online(VILLAGE))
    target = sealed if field in ("status", "auth", "node") else sealed["auth"]
    unchanged = type(target[field]) is type(value) and target[field] == value
    target[field] = value
    result = gate.admit(topic, raw(sealed), data.draw(st.booleans()), time.time())
    if not unchanged:
        assert isinstance(result, RejectionReport) and result.reason in {"malformed", "unsigned", "bad_signature"}
    garbage = data.draw(st.binary(max_size=300))
    refused = gate.admit(data.draw(st.sampled_from([topic, "tongban/up/x/status"])), garbage, False, 0.0)
    assert isinstance(refused, RejectionReport) and refused.reason != "unreadable"


# --------------------------------------------------------------------------------------------- the collector


@pytest.fixture
def city(services: Services, city_ca: Path, tmp_path: Path) -> NodeContext:
    return make_node(services, city_ca, tmp_path / "city", CITY)


@pytest.fixture
def collector(city: NodeContext) -> Iterator[Collector]:
    running = Collector(
        CollectorContext(city.config, OpsModel.for_node(city.config.data_dir), city.store),
        client_id=f"t-collector-{uuid.uuid4().hex[:8]}",
    )
    stop = threading.Event()
    thread = threading.Thread(target=running.run, args=(stop,), daemon=True)
    thread.start()
    assert wait_for(lambda: running.mqtt.ready, 10), "the collector signs in as the city and subscribes"
    yield running
    stop.set()
    thread.join(10)


def test_the_collector_attributes_a_sealed_heartbeat_and_refuses_forged_unsigned_and_replayed_ones(
    services: Services, city: NodeContext, collector: Collector, keys: dict[str, ReportSigner]
) -> None:
    ops = collector.ops
    topic = status_topic(VILLAGE)
    publisher = services.mqtt_link(f"t-{uuid.uuid4().hex[:8]}")  # anyone who got onto the city's broker
    assert publisher.start(wait_s=10)
    try:
        # The village's agent: sealed with its key, attributed to it.
        honest = keys[VILLAGE].seal(topic, {"node": VILLAGE, "status": "offline", "reason": "stopped"})
        assert publisher.publish(topic, honest)
        assert wait_for(lambda: ops.statuses().get(VILLAGE, {}).get("status") == "offline", 10)

        altered = keys[VILLAGE].seal(topic, online(VILLAGE))
        altered["version"] = "9.9.9"
        attempts = {
            "unsigned": online(VILLAGE),
            "wrong_signer": keys[TOWN].seal(topic, online(VILLAGE)),  # the township's key under the village's topic
            "bad_signature": keys["impostor"].seal(topic, online(VILLAGE)),  # the village's code, another CA
            "replayed": honest,
        }
        for payload in attempts.values():
            assert publisher.publish(topic, payload)
        assert publisher.publish(topic, altered)
        oversized = {**online(VILLAGE), "padding": "x" * MAX_REPORT_BYTES}
        publisher.client.publish(topic, json.dumps(oversized), qos=1).wait_for_publish(5)

        def all_refused() -> bool:
            return sum(collector.gate.refused.values()) >= 6

        assert wait_for(all_refused, 10), collector.gate.refused
        time.sleep(FLUSHED_S)
        assert collector.gate.refused == {
            "unsigned": 1,
            "wrong_signer": 1,
            "bad_signature": 2,
            "replayed": 1,
            "oversize": 1,
        }
        village = ops.statuses()[VILLAGE]
        assert village["status"] == "offline" and village["reason"] == "stopped", "no forged online was believed"
        assert village["version"] is None

        rows = {row["reason"]: row for row in ops.unacknowledged_rejections()[VILLAGE]}
        assert {name: row["count"] for name, row in rows.items()} == collector.gate.refused
        assert rows["wrong_signer"]["signer"] == TOWN, "the real signer is named"
        assert rows["bad_signature"]["signer"] is None, "an untrusted certificate names nobody"

        now = time.time()
        evaluate_alerts(ops, yiyang(), now, Thresholds(), own_code=CITY, own_store_ok=True)
        [alert] = [a for a in ops.alerts("open") if a["kind"] == "mqtt_rejected"]
        assert alert["node"] == VILLAGE, "the alert names the node the reports claimed to come from"
        # The real signers: the township (under the village's topic), the village (its own report replayed).
        assert alert["detail"]["signers"] == sorted([TOWN, VILLAGE])
        assert alert["detail"]["count"] == 6 and "wrong_signer × 1" in alert["detail"]["reasons"]
        assert alert["detail"]["topics"] == [topic]
        ops.acknowledge(alert["id"], "ops", now + 1)
        evaluate_alerts(ops, yiyang(), now + 2, Thresholds(), own_code=CITY, own_store_ok=True)
        assert not [a for a in ops.alerts("open") if a["kind"] == "mqtt_rejected"], "acknowledged, it closes"

        # And the honest village is still believed afterwards.
        assert publisher.publish(topic, keys[VILLAGE].seal(topic, online(VILLAGE)))
        assert wait_for(lambda: ops.statuses()[VILLAGE]["status"] == "online", 10)
    finally:
        publisher.stop()


FLUSHED_S = 1.2  # the collector writes its queue every half second


# --------------------------------------------------------------------------------------------- a running federation


@pytest.mark.slow
def test_a_running_federation_attributes_sealed_heartbeats_across_three_bridges_and_alerts_on_a_forgery(
    tmp_path: Path,
) -> None:
    from tests.test_federation import CODES, TOWNSHIP, federation_in

    with federation_in(tmp_path) as federation:
        ops = OpsModel.for_node(federation.var / "nodes" / CITY)

        def everyone_online() -> bool:
            statuses = ops.statuses()
            return all(statuses.get(code, {}).get("status") == "online" for code in CODES)

        assert wait_for(everyone_online, 90, interval=1.0), ops.statuses()
        assert ops.unacknowledged_rejections() == {}, "honest agents' reports are all believed"

        heard = Inbox()
        at_city = federation.mqtt_link(CITY)
        at_city.subscribe("tongban/up/#", heard)
        village = federation.mqtt_link(VILLAGE)  # the village's own credentials, as a compromised village has them
        assert at_city.start(wait_s=10) and village.start(wait_s=10)
        try:
            probe = uuid.uuid4().hex
            village.publish(status_topic(TOWNSHIP), {"node": TOWNSHIP, "status": "offline", "probe": probe})
            assert village.publish(status_topic(VILLAGE), {"node": VILLAGE, "status": "offline", "probe": probe})
            assert heard.wait_for(1, 30) and wait_for(lambda: VILLAGE in ops.unacknowledged_rejections(), 30)
            [row] = ops.unacknowledged_rejections()[VILLAGE]
            assert row["reason"] == "unsigned"
            assert not any(t == status_topic(TOWNSHIP) and p.get("probe") == probe for t, p in heard.messages)
            statuses = ops.statuses()
            assert statuses[VILLAGE]["status"] == statuses[TOWNSHIP]["status"] == "online", "nothing forged believed"

            def alerted() -> bool:
                return any(a["kind"] == "mqtt_rejected" and a["node"] == VILLAGE for a in ops.alerts("open"))

            assert wait_for(alerted, 45, interval=1.0), "the city's worker opens the alert on its next beat"
        finally:
            at_city.stop()
            village.stop()
