"""MQTT signals (paho-mqtt 2.x, Mosquitto): every topic name, a connected client, the node heartbeat.

MQTT carries signals only; data travels through the document stores. A message counts as sent
once the broker acknowledged it (paho keeps its session in memory only). Brokers refuse anonymous
clients: a node's processes sign in as the node (its code and the password in its data directory,
:meth:`node.config.NodeConfig.mqtt_credentials`), and what they publish under the node's own
``up`` topics is sealed with its node key (:mod:`node.adapters.signed_reports`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from node.adapters.signed_reports import ReportSigner
from tiers.tree import is_well_formed

TOPIC_ROOT = "tongban"
# Signals on one topic closer together than this are folded into one (see MqttLink.signal).
SIGNAL_WINDOW_S = 0.05
log = logging.getLogger("tongban.mqtt")


def node_path(node: str) -> str:
    """The code as topic levels: city ``4309``, county ``4309/02``, township ``4309/02/005``, village ``…/001``.

    Down topics use it so that one wildcard (``…/4309/02/#``) covers a node and its whole subtree,
    which is what a child's bridge subscribes to at its parent.
    """
    segments = [node[0:4], node[4:6], node[6:9], node[9:12]]
    while len(segments) > 1 and set(segments[-1]) == {"0"}:
        segments.pop()
    return "/".join(segments)


def status_topic(node: str) -> str:
    return f"{TOPIC_ROOT}/up/{node}/status"


def ops_topic(node: str) -> str:
    return f"{TOPIC_ROOT}/up/{node}/ops"


def alerts_topic(node: str) -> str:
    """City operations announce alert openings and closings here (``node`` is the city)."""
    return f"{TOPIC_ROOT}/up/{node}/alerts"


def up_pattern() -> str:
    return f"{TOPIC_ROOT}/up/#"


def status_pattern() -> str:
    """Every node's status topic, as the city's collector subscribes to it."""
    return f"{TOPIC_ROOT}/up/+/status"


def ops_pattern() -> str:
    """Every node's ops topic (link statistics, quarantine reports)."""
    return f"{TOPIC_ROOT}/up/+/ops"


def topic_node(topic: str) -> str | None:
    """``tongban/up/<node>/<kind>`` → ``<node>`` when it is a well-formed division code."""
    parts = topic.split("/")
    if len(parts) != 4 or parts[0] != TOPIC_ROOT or parts[1] != "up" or not is_well_formed(parts[2]):
        return None
    return parts[2]


def wake_topic(node: str) -> str:
    return f"{TOPIC_ROOT}/down/{node_path(node)}/wake"


def notice_topic(node: str) -> str:
    return f"{TOPIC_ROOT}/down/{node_path(node)}/notice"


def down_subtree_pattern(node: str) -> str:
    return f"{TOPIC_ROOT}/down/{node_path(node)}/#"


MessageHandler = Callable[[str, dict[str, Any]], None]


def private_client_id(client_id: str, password: str | None) -> str:
    """``client_id`` with a suffix only the password's holder can compute.

    Mosquitto hands a session to whoever connects with its client id; a child signed in at its
    parent's broker could otherwise take over the parent's own agent session (firing its last will)
    or a sibling's bridge session just by naming them.
    """
    if not password:
        return client_id
    return f"{client_id}-{hashlib.sha256(f'{password}:{client_id}'.encode()).hexdigest()[:12]}"


class MqttLink:
    """One client connection with automatic reconnect; optionally a last will on the status topic.

    ``credentials`` (user, password) sign in at the broker; with a ``signer``, every message published
    under the signer's own ``tongban/up/<node>/…`` topics (and the last will) is sealed with its key.
    """

    def __init__(
        self,
        host: str,
        port: int,
        client_id: str,
        will_node: str | None = None,
        clean_start: bool = True,
        credentials: tuple[str, str] | None = None,
        signer: ReportSigner | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.signer = signer
        password = credentials[1] if credentials else None
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=private_client_id(client_id, password),
            clean_session=clean_start,
            protocol=mqtt.MQTTv311,
        )
        if credentials is not None:
            self.client.username_pw_set(*credentials)
        self.client.reconnect_delay_set(min_delay=1, max_delay=10)
        self._connected = threading.Event()
        self._ready = threading.Event()  # connected and every subscription acknowledged
        self._pending_subacks: set[int] = set()
        self._subscriptions: dict[str, MessageHandler] = {}
        self._signal_ready = threading.Condition()
        self._last_signal: dict[str, float] = {}  # when each topic's last signal went out
        self._held: dict[str, dict[str, Any]] = {}  # folded signals waiting for their window to end
        self._signal_sender: threading.Thread | None = None
        if will_node is not None:
            topic = status_topic(will_node)
            will = self._sealed(topic, {"node": will_node, "status": "offline"}, will=True)
            self.client.will_set(topic, json.dumps(will, ensure_ascii=False), qos=1, retain=True)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def ready(self) -> bool:
        """Connected, and the broker acknowledged every subscription."""
        return self._ready.is_set()

    def start(self, wait_s: float = 0.0) -> bool:
        """Connect in the background; returns whether the link is up (and subscribed) after ``wait_s`` seconds."""
        self.client.connect_async(self.host, self.port, keepalive=15)
        self.client.loop_start()
        return self._ready.wait(wait_s) if wait_s else self.connected

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def subscribe(self, topic: str, handler: MessageHandler) -> None:
        self._subscriptions[topic] = handler
        if self.connected:
            self.client.subscribe(topic, qos=1)

    def publish(self, topic: str, payload: dict[str, Any], retain: bool = False, timeout: float = 5.0) -> bool:
        """Publish at QoS 1 and wait for the broker's acknowledgement."""
        payload = self._sealed(topic, payload)
        info = self.client.publish(topic, json.dumps(payload, ensure_ascii=False), qos=1, retain=retain)
        try:
            info.wait_for_publish(timeout)
        except (RuntimeError, ValueError):
            return False
        return info.is_published()

    def signal(self, topic: str, payload: dict[str, Any]) -> None:
        """Fire-and-forget QoS 1: for wake-ups and notices, which a timer or a poll backs up when lost.

        A signal is a hint that something changed, so a burst needs only its first and its last:
        the first goes at once; later ones within SIGNAL_WINDOW_S are folded into one message (the
        latest payload) that a background thread sends at the window's end. Under load that spares
        every request two publishes and every subscriber hundreds of messages a second.
        """
        with self._signal_ready:
            now = time.monotonic()
            last = self._last_signal.get(topic)
            if topic not in self._held and (last is None or now - last >= SIGNAL_WINDOW_S):
                self._last_signal[topic] = now
            else:
                self._held[topic] = payload
                if self._signal_sender is None:
                    self._signal_sender = threading.Thread(target=self._send_held, name="mqtt-signals", daemon=True)
                    self._signal_sender.start()
                self._signal_ready.notify()
                return
        self._send_signal(topic, payload)

    def _send_held(self) -> None:
        while True:
            with self._signal_ready:
                self._signal_ready.wait_for(lambda: bool(self._held))
                topic = min(self._held, key=lambda t: self._last_signal.get(t, 0.0))
                wait_s = self._last_signal.get(topic, 0.0) + SIGNAL_WINDOW_S - time.monotonic()
                if wait_s > 0:
                    self._signal_ready.wait(wait_s)
                    continue
                payload = self._held.pop(topic)
                self._last_signal[topic] = time.monotonic()
            self._send_signal(topic, payload)

    def _send_signal(self, topic: str, payload: dict[str, Any]) -> None:
        if self.connected:
            self.client.publish(topic, json.dumps(self._sealed(topic, payload), ensure_ascii=False), qos=1)

    def _sealed(self, topic: str, payload: dict[str, Any], will: bool = False) -> dict[str, Any]:
        """The payload, sealed when it goes out under the signer's own up topics (sealed when sent, so fresh)."""
        if self.signer is not None and topic_node(topic) == self.signer.node:
            try:
                return self.signer.seal(topic, payload, will=will)
            except ValueError as exc:  # NaN or infinity: no canonical form. Sent as it is, the city refuses it.
                log.warning("report on %s cannot be sealed: %s", topic, exc)
        return payload

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            return
        self._connected.set()
        for topic in self._subscriptions:
            _, mid = client.subscribe(topic, qos=1)
            self._pending_subacks.add(mid)
        if not self._pending_subacks:
            self._ready.set()

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reason_codes: Any, properties: Any) -> None:
        self._pending_subacks.discard(mid)
        if not self._pending_subacks:
            self._ready.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        self._connected.clear()
        self._ready.clear()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        try:
            payload = json.loads(message.payload or b"{}")
        except ValueError:
            return
        for pattern, handler in self._subscriptions.items():
            if mqtt.topic_matches_sub(pattern, message.topic):
                handler(message.topic, payload)


def heartbeat(node: str, version: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"node": node, "status": "online", "version": version, "at": time.time(), **(extra or {})}
