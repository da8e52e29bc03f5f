"""The one place that wires a node: configuration → tree, store, MQTT link and services."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from node import __version__
from node.adapters.docstore import DocStore
from node.adapters.mqtt import MqttLink
from node.config import DOCSTORE_DB, ConfigError, NodeConfig
from tiers import Division, DivisionTree, yiyang


@dataclass
class NodeContext:
    config: NodeConfig
    tree: DivisionTree
    division: Division
    store: DocStore
    mqtt: MqttLink | None
    version: str = __version__


def config_from_env() -> NodeConfig:
    path = os.environ.get("TONGBAN_NODE_CONFIG")
    if not path:
        raise ConfigError("TONGBAN_NODE_CONFIG 未设置 / TONGBAN_NODE_CONFIG is not set: point it at a node.json")
    return NodeConfig.load(Path(path))


def bootstrap(config: NodeConfig, connect_mqtt: bool = True, mqtt_client_id: str | None = None) -> NodeContext:
    tree = yiyang()
    division = tree.get(config.code)
    mqtt = None
    if connect_mqtt:
        mqtt = MqttLink(config.mqtt_host, config.mqtt_port, client_id=mqtt_client_id or f"{config.code}-{os.getpid()}")
        mqtt.start()
    return NodeContext(
        config=config,
        tree=tree,
        division=division,
        store=DocStore(config.docstore_url, DOCSTORE_DB),
        mqtt=mqtt,
    )
