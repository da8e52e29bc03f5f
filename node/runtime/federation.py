"""A local federation: several nodes of the tier tree on one machine, each with all its processes.

Layout under ``var/``: ``federation.json`` (which nodes, which ports), ``nodes/<code>/`` (each
node's config, document store, broker and read model), ``redis/``, ``run/`` (pid files) and
``logs/``. Data survives a restart; configs are reused so keys and secrets stay stable.
"""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from node.adapters.mqtt import down_subtree_pattern, private_client_id, up_pattern
from node.config import ConfigError, NodeConfig
from node.runtime.broker_auth import broker_acl, ensure_mqtt_password
from node.runtime.outside_services import configure_nodes, outside_service_specs
from node.runtime.provisioning import provision_federation
from node.runtime.services import (
    BrokerAuth,
    ServiceSpec,
    agent_spec,
    celery_spec,
    collector_spec,
    docstore_spec,
    gunicorn_spec,
    mosquitto_spec,
    redis_spec,
)
from node.runtime.supervisor import StartError, Supervisor, pid_alive, signals_set
from tiers import DivisionTree, Tier, yiyang
from tiers.demo import HESHAN, ZIYANG

DEFAULT_BASE_PORT = 18000


def demo_node_codes(tree: DivisionTree) -> list[str]:
    """City, 资阳区 and 赫山区, one town in each, two villages in the first town and one in the second.

    Two counties so that cross-county routing can be shown; two villages under one town so that
    "no other village ever receives the case" can be checked.
    """
    city = tree.root
    county_a, county_b = ZIYANG, HESHAN
    town_a = next(c for c in tree.children(county_a) if c[6] == "1")
    town_b = next(c for c in tree.children(county_b) if c[6] == "1")
    villages_a = [c for c in tree.children(town_a) if c[9] == "2"][:2]
    village_b = next(c for c in tree.children(town_b) if c[9] == "2")
    return [city, county_a, county_b, town_a, town_b, *villages_a, village_b]


@dataclass
class Federation:
    var_dir: Path
    base_port: int
    codes: list[str]
    sync_interval_s: float = 10.0
    wakeups: bool = True

    @property
    def redis_port(self) -> int:
        return self.base_port

    @property
    def manifest(self) -> Path:
        return self.var_dir / "federation.json"

    @property
    def lock_file(self) -> Path:
        return self.var_dir / "run" / "federation.pid"

    def node_dir(self, code: str) -> Path:
        return self.var_dir / "nodes" / code

    def node_config(self, code: str) -> NodeConfig:
        index = self.codes.index(code)
        http_port = self.base_port + 10 + 10 * index
        tree = yiyang()
        parent = tree.parent(code)
        parent_config = self.node_config(parent) if parent in self.codes else None
        path = self.node_dir(code) / "node.json"
        fresh = NodeConfig(
            code=code,
            data_dir=self.node_dir(code),
            http_port=http_port,
            docstore_port=http_port + 1,
            mqtt_port=http_port + 2,
            # Redis keeps 64 databases here; one per node keeps the nodes' Celery queues apart.
            redis_url=f"redis://127.0.0.1:{self.redis_port}/{index % 64}",
            parent_url=parent_config.url if parent_config else None,
            parent_mqtt_port=parent_config.mqtt_port if parent_config else None,
            ca_dir=self.var_dir / "ca",
            demo_accounts=True,
            sync_interval_s=self.sync_interval_s,
            wakeups=self.wakeups,
        )
        if path.exists():
            saved = NodeConfig.load(path)
            # Keep the saved secret; ports follow the plan.
            fresh = NodeConfig(**{**fresh.__dict__, "secret_key": saved.secret_key})
        return fresh

    def save(self) -> None:
        self.var_dir.mkdir(parents=True, exist_ok=True)
        manifest = {
            "base_port": self.base_port,
            "nodes": self.codes,
            "sync_interval_s": self.sync_interval_s,
            "wakeups": self.wakeups,
        }
        self.manifest.write_text(json.dumps(manifest, indent=2))
        for code in self.codes:
            self.node_config(code).save()

    @classmethod
    def load(cls, var_dir: Path) -> Federation:
        manifest = var_dir / "federation.json"
        try:
            raw = json.loads(manifest.read_text())
            nodes = raw["nodes"]
            if not isinstance(nodes, list) or not nodes or not all(isinstance(code, str) for code in nodes):
                raise ValueError("'nodes' must be a non-empty list of division codes")
            return cls(
                var_dir,
                int(raw["base_port"]),
                list(raw["nodes"]),
                float(raw.get("sync_interval_s", 10.0)),
                bool(raw.get("wakeups", True)),
            )
        except FileNotFoundError:
            raise ConfigError(
                f"没有本地联邦 / no local federation in {var_dir}: start one with `tongban federation up`"
            ) from None
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"联邦配置已损坏 / {manifest} is corrupt ({exc}): delete it and start again") from None


def bridges_for(config: NodeConfig) -> list[dict[str, str | int]]:
    """The child → parent bridge of a node's broker: up/# goes out, the node's own subtree comes in.

    Up and down trees are separate and each bridge carries one direction of each, so nothing loops.
    The bridge signs in at the parent's broker as this node (its code and password); the parent's
    ACL lets it carry only the reports of this node's subtree (:func:`broker_auth_for`).
    """
    if not config.parent_mqtt_port:
        return []
    name = f"bridge-{config.code}"
    password = ensure_mqtt_password(config)
    return [
        {
            "name": name,
            "port": config.parent_mqtt_port,
            "up_topic": up_pattern(),
            "down_topic": down_subtree_pattern(config.code),
            "username": config.code,
            "password": password,
            "clientid": private_client_id(name, password),
        }
    ]


def broker_auth_for(config: NodeConfig, children: Sequence[NodeConfig] = ()) -> BrokerAuth:
    """A node's broker admits the node itself and the bridges of its ``children``, each with its own password."""
    passwords = {config.code: ensure_mqtt_password(config)}
    passwords.update({child.code: ensure_mqtt_password(child) for child in children})
    return BrokerAuth(passwords, broker_acl([config.code], [child.code for child in children], yiyang()))


def node_service_specs(
    config: NodeConfig, log_dir: Path, children: Sequence[NodeConfig] = ()
) -> tuple[list[ServiceSpec], list[ServiceSpec]]:
    """(infrastructure, application) processes of one node; the second group needs the first.

    ``children``: the nodes whose brokers bridge into this one (their passwords go into its password file).
    """
    code = config.code
    broker = mosquitto_spec(
        f"{code}-mosquitto",
        config.data_dir / "mosquitto",
        config.mqtt_port,
        bridges_for(config),
        broker_auth_for(config, children),
    )
    infrastructure = [docstore_spec(f"{code}-docstore", config.data_dir / "docstore", config.docstore_port), broker]
    application = [
        gunicorn_spec(f"{code}-web", config.config_path, config.http_port, log_dir, workers=config.web_workers),
        celery_spec(f"{code}-worker", config.config_path, config.data_dir, log_dir),
        agent_spec(f"{code}-agent", config.config_path, config.data_dir, log_dir),
    ]
    if config.monitors_operations:
        application.append(collector_spec(f"{code}-collector", config.config_path, config.data_dir, log_dir))
    return infrastructure, application


def children_in(configs: Sequence[NodeConfig], config: NodeConfig) -> list[NodeConfig]:
    """The nodes of ``configs`` whose broker bridges into ``config``'s."""
    return [other for other in configs if other.parent_mqtt_port and other.parent_mqtt_port == config.mqtt_port]


def check_not_running(lock_file: Path) -> None:
    if lock_file.exists():
        try:
            pid = int(lock_file.read_text().strip())
        except ValueError:
            pid = -1
        if pid > 0 and pid != os.getpid() and pid_alive(pid):
            raise StartError(
                f"联邦已在运行 (pid {pid}) / the federation is already running (pid {pid}): "
                f"stop it with Ctrl-C in its terminal or `kill {pid}`"
            )
        lock_file.unlink()


def run(
    federation: Federation,
    progress: Callable[[str], None] = print,
    stop: threading.Event | None = None,
    on_ready: Callable[[Federation], None] | None = None,
) -> None:
    """Start every node, report when all are healthy, keep them running until stopped."""
    stop = stop or threading.Event()
    check_not_running(federation.lock_file)
    federation.save()
    federation.lock_file.parent.mkdir(parents=True, exist_ok=True)
    federation.lock_file.write_text(str(os.getpid()))
    supervisor = Supervisor(federation.var_dir / "run", progress, stop)
    log_dir = federation.var_dir / "logs"
    started = time.monotonic()
    try:
        with signals_set(stop):
            progress("starting redis …")
            supervisor.start([redis_spec("redis", federation.var_dir / "redis", federation.redis_port)])
            configs = [federation.node_config(code) for code in federation.codes]
            groups = [node_service_specs(config, log_dir, children_in(configs, config)) for config in configs]
            progress(f"starting {len(configs)} document stores and brokers …")
            supervisor.start([spec for infra, _ in groups for spec in infra])
            provision_federation(configs, progress)
            # Issue 15: the sandbox payment gateway and courier, each its own process; then each node's settings.
            progress("starting the sandbox payment gateway and courier …")
            supervisor.start(outside_service_specs(federation.var_dir, federation.base_port, configs, log_dir))
            configure_nodes(federation.var_dir, federation.base_port, configs)
            progress(f"starting {len(configs)} nodes (web, worker, agent) …")
            supervisor.start([spec for _, app in groups for spec in app])
            progress(f"all {len(configs)} nodes healthy after {time.monotonic() - started:.1f}s:")
            for config in configs:
                division = yiyang().get(config.code)
                progress(f"  {division.tier.label_zh:<8} {division.name:<16} {config.code}  {config.url}/")
            if on_ready:
                on_ready(federation)
            progress("press Ctrl-C to stop")
            supervisor.watch(stop)
    finally:
        progress("stopping …")
        supervisor.stop_all()
        federation.lock_file.unlink(missing_ok=True)
        progress("stopped")


def node_health(url: str, timeout: float = 3.0) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=timeout) as response:
            return json.loads(response.read())
    except OSError as exc:
        body = getattr(exc, "read", None)
        if body is not None:
            try:
                return json.loads(body())
            except (ValueError, OSError):
                return None
        return None


def status(federation: Federation) -> list[dict[str, Any]]:
    tree = yiyang()
    rows = []
    for code in federation.codes:
        division = tree.get(code)
        config = federation.node_config(code)
        health = node_health(config.url)
        rows.append(
            {
                "code": code,
                "name": division.name,
                "tier": Tier(division.tier).name.lower(),
                "url": config.url,
                "healthy": bool(health and health.get("ok")),
            }
        )
    return rows
