"""A node's configuration: which division it serves, where its data lives, which ports it uses.

Saved as ``node.json`` in the node's data directory so every process of the node (web, worker,
agent, collector) reads the same settings. Also the layout of the data directory that more than
one module needs (the identity directory and the data key in it).
"""

from __future__ import annotations

import json
import os
import secrets
import tempfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from tiers import Capability, capabilities, yiyang

DOCSTORE_DB = "tongban"
IDENTITY_DIR = "identity"  # the node's key, certificate and copy of the data key
DATA_KEY = "data.key"  # the federation's key for personal data (in the CA's and every node's identity directory)
MQTT_PASSWORD = "mqtt.password"  # the node's password at its own broker and its parent's (identity directory, 0600)
LOCAL_KEY = "local.key"  # the node's own keyring for personal data that never leaves it (read model, demo passwords)


def task_queue(node_code: str) -> str:
    """The node's Celery queue in Redis: the worker consumes it, ``/metrics`` reports its length."""
    return f"node-{node_code}"


class ConfigError(Exception):
    """A configuration that cannot be used; the message says what to do (zh / en)."""


@dataclass(frozen=True)
class NodeConfig:
    code: str
    data_dir: Path
    http_port: int
    docstore_port: int
    mqtt_port: int
    redis_url: str
    parent_url: str | None = None
    parent_mqtt_port: int | None = None
    secret_key: str = field(default_factory=lambda: secrets.token_hex(32))
    ca_dir: Path | None = None
    demo_accounts: bool = False
    sync_interval_s: float = 10.0
    docstore_db: str = DOCSTORE_DB
    web_workers: int = 1
    wakeups: bool = True  # MQTT wake-ups; off, replication runs on the timer alone (for comparison)
    # Whether this node monitors the federation's operations (collector, alert rules, /ops): the one
    # place that decides it. Left out, it follows the tier's role (the city's ops-monitoring capability).
    monitors_operations: bool | None = None
    # Days the security audit trail (sign-ins, lockouts, citizen look-ups) is kept; the worker prunes older lines.
    # 180: the Cybersecurity Law (网络安全法 §21) asks for network logs of at least six months.
    audit_retention_days: int = 180

    def __post_init__(self) -> None:
        if self.monitors_operations is None:
            tree = yiyang()
            monitors = self.code in tree and Capability.OPS_MONITORING in capabilities(tree.tier(self.code))
            object.__setattr__(self, "monitors_operations", monitors)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def docstore_url(self) -> str:
        return f"http://127.0.0.1:{self.docstore_port}"

    @property
    def mqtt_host(self) -> str:
        return "127.0.0.1"

    @property
    def identity_dir(self) -> Path:
        return self.data_dir / IDENTITY_DIR

    @property
    def data_key_path(self) -> Path:
        return self.identity_dir / DATA_KEY

    @property
    def mqtt_password_path(self) -> Path:
        return self.identity_dir / MQTT_PASSWORD

    def mqtt_credentials(self) -> tuple[str, str] | None:
        """(user, password) the node's processes and its bridge sign in with: its code and its MQTT password.

        None when the node has no password file (a broker that refuses anonymous clients then refuses it).
        """
        try:
            password = self.mqtt_password_path.read_text(encoding="utf-8").strip()
        except (FileNotFoundError, NotADirectoryError):
            return None
        return (self.code, password) if password else None

    @property
    def local_key_path(self) -> Path:
        return self.identity_dir / LOCAL_KEY

    @property
    def config_path(self) -> Path:
        return self.data_dir / "node.json"

    def save(self) -> Path:
        """Write ``node.json`` (0600: it holds the web's secret key) in the data directory (0700)."""
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.data_dir, 0o700)  # the node's data, keys and personal data: its user's alone
        data = asdict(self)
        data["data_dir"] = str(self.data_dir)
        data["ca_dir"] = str(self.ca_dir) if self.ca_dir else None
        fd, tmp = tempfile.mkstemp(dir=self.data_dir, prefix=".node.json.", suffix=".tmp")  # created 0600
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(json.dumps(data, ensure_ascii=False, indent=2))
        os.replace(tmp, self.config_path)
        return self.config_path

    @classmethod
    def load(cls, path: Path) -> NodeConfig:
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"配置文件不存在 / config file not found: {path}") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(
                f"配置文件已损坏 / config file is corrupt: {path} ({exc}); "
                "delete it (or the whole var/ directory) and start again"
            ) from None
        if not isinstance(raw, dict):
            raise ConfigError(f"配置文件已损坏 / config file is corrupt: {path} (not a JSON object)")
        known = {f.name for f in fields(cls)}
        missing = [f.name for f in fields(cls) if f.name in {"code", "data_dir", "http_port"} and f.name not in raw]
        if missing:
            raise ConfigError(f"配置文件缺少字段 / config file lacks fields {missing}: {path}")
        try:
            values = {k: v for k, v in raw.items() if k in known}
            values["data_dir"] = Path(values["data_dir"])
            if values.get("ca_dir"):
                values["ca_dir"] = Path(values["ca_dir"])
            return cls(**values)
        except TypeError as exc:
            raise ConfigError(f"配置文件格式错误 / config file is malformed: {path} ({exc})") from None


@dataclass(frozen=True)
class Thresholds:
    """City operations: when a node counts as dark and when an alert opens. Override in ``<data_dir>/ops.json``."""

    # Agents heartbeat every 10 s: three missed beats and the node is offline even without a last will
    # (its broker or its uplink may be down, so no will can reach the city).
    stale_after_s: float = 35.0
    # "Within a minute": offline this long (since its last heartbeat) and the beat job, every 15 s, alerts.
    offline_alert_s: float = 45.0
    # Heartbeat documents cross up to three links, each synced at least every 10 s: ~40 s is normal.
    lag_alert_s: float = 300.0
    # Changes pending at the node while its push checkpoint has not moved for this long.
    stuck_alert_s: float = 120.0
    # A link report older than this says nothing about the link any more.
    report_fresh_s: float = 60.0
    # Cases with a gap in their history for this long (re-requested from the parent meanwhile: 30 s, 60 s, …).
    incomplete_alert_s: float = 600.0

    @classmethod
    def load(cls, data_dir: Path) -> Thresholds:
        path = data_dir / "ops.json"
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return cls()
        if not isinstance(raw, dict):
            return cls()
        known = {k: float(v) for k, v in raw.items() if k in cls.__dataclass_fields__ and isinstance(v, int | float)}
        return cls(**known)
