"""How each local service is started and how we know it is healthy.

One place defines the command line, the generated configuration and the health probe of every
process a node runs — the document store (pouchdb-server), Mosquitto, Redis, gunicorn, the
Celery worker and the node agent. The supervisor, the local federation and the test harness
all build their processes from here.
"""

from __future__ import annotations

import getpass
import json
import os
import shutil
import socket
import sys
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from node.runtime.broker_auth import password_file

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEPLOY_DIR = PROJECT_ROOT / "deploy"
POUCHDB_SERVER_JS = DEPLOY_DIR / "docstore" / "node_modules" / "pouchdb-server" / "bin" / "pouchdb-server"


class SetupError(Exception):
    """Something the machine lacks; the message says what is wrong and what to do (zh / en)."""


@dataclass
class ServiceSpec:
    name: str
    argv: list[str]
    healthy: Callable[[], bool]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    ports: tuple[int, ...] = ()
    start_timeout_s: float = 60.0
    # Processes that say themselves when they are ready touch this file; it is removed before each start.
    ready_file: Path | None = None


def require_executable(name: str, hint: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise SetupError(f"找不到 {name} / {name} not found: {hint}")
    return path


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_ok(url: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return 200 <= response.status < 300
    except OSError:
        return False


def tcp_open(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def docstore_spec(name: str, data_dir: Path, port: int) -> ServiceSpec:
    """pouchdb-server 4.2.0 on loopback with its databases under ``data_dir``."""
    node_bin = require_executable("node", "请安装 Node.js 20 / install Node.js 20 (make setup does it)")
    if not POUCHDB_SERVER_JS.exists():
        raise SetupError(
            f"文档库未安装 / pouchdb-server is not installed at {POUCHDB_SERVER_JS}: run `make setup` "
            "(npm ci in deploy/docstore)"
        )
    data_dir.mkdir(parents=True, exist_ok=True)
    config = data_dir / "config.json"
    if not config.exists():
        config.write_text(json.dumps({"log": {"file": str(data_dir / "log.txt"), "level": "warning"}}))
    return ServiceSpec(
        name=name,
        argv=[
            node_bin,
            str(POUCHDB_SERVER_JS),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--dir",
            str(data_dir),
            "--config",
            str(config),
            "--no-stdout-logs",
        ],
        healthy=lambda: http_ok(f"http://127.0.0.1:{port}/"),
        log_path=data_dir / "stdout.log",
        cwd=data_dir,
        ports=(port,),
    )


@dataclass(frozen=True)
class BrokerAuth:
    """Who may sign in at a broker (user → password) and what each may do (the ACL file's text).

    Built by :mod:`node.runtime.broker_auth`; without one, a broker admits nobody.
    """

    passwords: dict[str, str]
    acl: str


# Reports are ~1.5 KiB (see node.adapters.signed_reports); a client sending a packet past this is
# disconnected by the broker before anything reads it.
MQTT_MAX_PACKET_BYTES = 65_536


def _write_private(path: Path, text: str) -> None:
    """Files with passwords (the password file, a config naming the bridge's password) are 0600."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    tmp.replace(path)


def mosquitto_config(data_dir: Path, port: int, bridges: list[dict[str, str | int]] | None = None) -> str:
    """Persistence on with a short autosave and a raised queue limit (ARCHITECTURE §5); no anonymous clients.

    ``user`` is the current user: started as root, Mosquitto would otherwise drop to the
    ``mosquitto`` user and silently stop persisting into a directory it cannot write. Users, their
    passwords and ACLs are files beside the config (:func:`mosquitto_spec` writes them); each bridge signs in at the
    parent as its node, with its own password and a client id only it knows.
    """
    lines = [
        f"user {getpass.getuser()}",
        f"listener {port} 127.0.0.1",
        "allow_anonymous false",
        f"password_file {data_dir / 'passwords'}",
        f"acl_file {data_dir / 'acl'}",
        f"max_packet_size {MQTT_MAX_PACKET_BYTES}",
        "persistence true",
        f"persistence_location {data_dir}/",
        "autosave_interval 5",
        "autosave_on_changes false",
        "max_queued_messages 100000",
        "max_inflight_messages 100",
        "persistent_client_expiration 14d",
        f"log_dest file {data_dir / 'mosquitto.log'}",
        "log_type error",
        "log_type warning",
        "log_type notice",
    ]
    for bridge in bridges or []:
        lines += [
            "",
            f"connection {bridge['name']}",
            f"address 127.0.0.1:{bridge['port']}",
            f"topic {bridge['up_topic']} out 1",
            f"topic {bridge['down_topic']} in 1",
            "cleansession false",
            f"remote_clientid {bridge['clientid']}",
            f"remote_username {bridge['username']}",
            f"remote_password {bridge['password']}",
            "notifications false",
            "restart_timeout 1 10",
            "bridge_protocol_version mqttv311",
            "try_private true",
        ]
    return "\n".join(lines) + "\n"


def mosquitto_spec(
    name: str,
    data_dir: Path,
    port: int,
    bridges: list[dict[str, str | int]] | None = None,
    auth: BrokerAuth | None = None,
) -> ServiceSpec:
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(binary).exists():
        raise SetupError("找不到 mosquitto / mosquitto not found: run `make setup` (apt-get install mosquitto)")
    data_dir.mkdir(parents=True, exist_ok=True)
    _write_private(data_dir / "passwords", password_file(auth.passwords if auth else {}))
    _write_private(data_dir / "acl", auth.acl if auth else "")
    config = data_dir / "mosquitto.conf"
    _write_private(config, mosquitto_config(data_dir, port, bridges))
    return ServiceSpec(
        name=name,
        argv=[binary, "-c", str(config)],
        healthy=lambda: tcp_open(port),
        log_path=data_dir / "stdout.log",
        ports=(port,),
    )


def redis_spec(name: str, data_dir: Path, port: int) -> ServiceSpec:
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not Path(binary).exists():
        raise SetupError(
            "找不到 redis-server / redis-server not found: run `make setup` (apt-get install redis-server)"
        )
    data_dir.mkdir(parents=True, exist_ok=True)

    def healthy() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    return ServiceSpec(
        name=name,
        argv=[
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(data_dir),
            "--appendonly",
            "yes",
            "--save",
            "60 1",
            "--databases",
            "64",
            "--daemonize",
            "no",
            "--logfile",
            str(data_dir / "redis.log"),
        ],
        healthy=healthy,
        log_path=data_dir / "stdout.log",
        ports=(port,),
    )


def _python_env(config_path: Path) -> dict[str, str]:
    return {"TONGBAN_NODE_CONFIG": str(config_path), "PYTHONPATH": str(PROJECT_ROOT)}


def gunicorn_spec(name: str, config_path: Path, port: int, log_dir: Path, workers: int = 1) -> ServiceSpec:
    return ServiceSpec(
        name=name,
        argv=[
            sys.executable,
            "-m",
            "gunicorn",
            "--config",
            str(DEPLOY_DIR / "gunicorn.conf.py"),
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            str(workers),
            "node.entrypoints.web.wsgi:app",
        ],
        healthy=lambda: http_ok(f"http://127.0.0.1:{port}/healthz"),
        log_path=log_dir / f"{name}.log",
        env=_python_env(config_path),
        cwd=PROJECT_ROOT,
        ports=(port,),
        start_timeout_s=90.0,
    )


def celery_spec(name: str, config_path: Path, data_dir: Path, log_dir: Path) -> ServiceSpec:
    """One worker with an embedded beat: exactly one beat per node (ARCHITECTURE §6)."""
    ready_file = data_dir / "run" / f"{name}.ready"
    return ServiceSpec(
        name=name,
        argv=[
            sys.executable,
            "-m",
            "celery",
            "--app",
            "node.entrypoints.tasks:celery_app",
            "worker",
            "--beat",
            "--pool",
            "threads",
            "--concurrency",
            "2",
            "--schedule",
            str(data_dir / "celerybeat-schedule"),
            "--loglevel",
            "WARNING",
            "--without-mingle",
            "--without-gossip",
        ],
        healthy=ready_file.exists,
        log_path=log_dir / f"{name}.log",
        env={**_python_env(config_path), "TONGBAN_READY_FILE": str(ready_file)},
        cwd=PROJECT_ROOT,
        start_timeout_s=90.0,
        ready_file=ready_file,
    )


def _node_process_spec(name: str, subcommand: str, config_path: Path, data_dir: Path, log_dir: Path) -> ServiceSpec:
    """A ``tongban node <subcommand>`` process that touches its ready file once it is working."""
    ready_file = data_dir / "run" / f"{name}.ready"
    return ServiceSpec(
        name=name,
        argv=[sys.executable, "-m", "node.entrypoints.cli", "node", subcommand, "--config", str(config_path)],
        healthy=ready_file.exists,
        log_path=log_dir / f"{name}.log",
        env={**_python_env(config_path), "TONGBAN_READY_FILE": str(ready_file)},
        cwd=PROJECT_ROOT,
        start_timeout_s=90.0,
        ready_file=ready_file,
    )


def agent_spec(name: str, config_path: Path, data_dir: Path, log_dir: Path) -> ServiceSpec:
    """The node agent: MQTT heartbeat with last will, wake-ups and the replication loop."""
    return _node_process_spec(name, "agent", config_path, data_dir, log_dir)


def collector_spec(name: str, config_path: Path, data_dir: Path, log_dir: Path) -> ServiceSpec:
    """The ops collector (nodes with ops monitoring): records every node's status and link reports."""
    return _node_process_spec(name, "collector", config_path, data_dir, log_dir)
