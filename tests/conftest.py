"""Test harness: real pouchdb-server, Mosquitto and Redis on free loopback ports, one set per session.

Nothing here talks to the machine's pre-started services on standard ports. The broker refuses
anonymous clients like every broker the project starts: nodes made here sign in as themselves, and
tests' own clients as the harness (:meth:`Services.mqtt_link`).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from node.adapters.docstore import DocStore
from node.adapters.mqtt import MqttLink
from node.adapters.signed_reports import ReportSigner
from node.bootstrap import NodeContext
from node.config import NodeConfig
from node.runtime.broker_auth import broker_acl, write_mqtt_password
from node.runtime.services import BrokerAuth, docstore_spec, free_port, mosquitto_spec, redis_spec
from node.runtime.supervisor import Supervisor
from tiers import yiyang
from tiers.demo import HESHAN, HESHAN_VILLAGE

HARNESS_MQTT_USER = "harness"  # the tests' own MQTT user on the session's broker: may read and write anything


@dataclass
class Services:
    supervisor: Supervisor
    docstore_url: str
    mqtt_port: int
    redis_url: str
    mqtt_secret: str = field(default_factory=lambda: secrets.token_hex(16))

    def mqtt_password(self, user: str) -> str:
        """The password of ``user`` (a node code, or the harness) on the session's broker."""
        return hmac.new(self.mqtt_secret.encode(), user.encode(), hashlib.sha256).hexdigest()

    def mqtt_link(self, client_id: str, **kwargs: Any) -> MqttLink:
        """A client on the session's broker signed in as the harness (tests' listeners and publishers)."""
        credentials = (HARNESS_MQTT_USER, self.mqtt_password(HARNESS_MQTT_USER))
        return MqttLink("127.0.0.1", self.mqtt_port, client_id=client_id, credentials=credentials, **kwargs)


def harness_broker_auth(services: Services) -> BrokerAuth:
    """Like a node's broker, for every node of the tree at once (nodes made by :func:`make_node` share it)."""
    tree = yiyang()
    users = [HARNESS_MQTT_USER, *(division.code for division in tree)]
    acl = broker_acl([division.code for division in tree], [], tree)
    acl += f"\nuser {HARNESS_MQTT_USER}\ntopic readwrite #\n"
    return BrokerAuth({user: services.mqtt_password(user) for user in users}, acl)


@pytest.fixture(scope="session")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    root = tmp_path_factory.mktemp("services")
    supervisor = Supervisor(root / "run", progress=lambda _line: None)
    docstore_port, mqtt_port, redis_port = free_port(), free_port(), free_port()
    running = Services(supervisor, f"http://127.0.0.1:{docstore_port}", mqtt_port, f"redis://127.0.0.1:{redis_port}/0")
    try:
        supervisor.start(
            [
                docstore_spec("docstore", root / "docstore", docstore_port),
                mosquitto_spec("mosquitto", root / "mosquitto", mqtt_port, auth=harness_broker_auth(running)),
                redis_spec("redis", root / "redis", redis_port),
            ]
        )
        yield running
    finally:
        supervisor.stop_all()


@pytest.fixture
def store(services: Services) -> DocStore:
    """A fresh, empty database on the session's pouchdb-server."""
    return DocStore(services.docstore_url, f"test-{uuid.uuid4().hex[:12]}")


@pytest.fixture(scope="session")
def city_ca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from node.runtime.provisioning import ensure_city_authority

    ca_dir = tmp_path_factory.mktemp("ca")
    ensure_city_authority(ca_dir)
    return ca_dir


def make_node(services: Services, ca_dir: Path, data_dir: Path, code: str, demo_accounts: bool = False) -> NodeContext:
    """A provisioned node whose store is a fresh database on the session's pouchdb-server."""
    from node.adapters.pki import CertificateAuthority
    from node.bootstrap import bootstrap, publish_own_documents
    from node.runtime.provisioning import provision_node

    config = NodeConfig(
        code=code,
        data_dir=data_dir,
        http_port=0,
        docstore_port=int(services.docstore_url.rsplit(":", 1)[1]),
        mqtt_port=services.mqtt_port,
        redis_url=services.redis_url,
        ca_dir=ca_dir,
        demo_accounts=demo_accounts,
        docstore_db=f"node-{code}-{uuid.uuid4().hex[:8]}",
    )
    config.save()
    write_mqtt_password(config.mqtt_password_path, services.mqtt_password(code))
    provision_node(config, CertificateAuthority.load(ca_dir))
    context = bootstrap(config, connect_mqtt=False)
    publish_own_documents(context)
    return context


def report_signer(ca_dir: Path, directory: Path, code: str) -> ReportSigner:
    """A node key and certificate of the city CA (no node around it), to seal MQTT reports as ``code``."""
    from node.adapters.pki import CertificateAuthority, NodeIdentity

    division = yiyang().get(code)
    ca = CertificateAuthority.load(ca_dir)
    return ReportSigner(NodeIdentity.ensure(directory, code, division.name, division.tier.name.lower(), ca))


@pytest.fixture
def county_node(services: Services, city_ca: Path, tmp_path: Path) -> NodeContext:
    """赫山区 (county) — holds authority for county-level matters of its residents."""
    return make_node(services, city_ca, tmp_path / "county", HESHAN)


@pytest.fixture
def village_node(services: Services, city_ca: Path, tmp_path: Path) -> NodeContext:
    """八字哨第1村, a village of 赫山区."""
    return make_node(services, city_ca, tmp_path / "village", HESHAN_VILLAGE)


def client_for(context: NodeContext) -> FlaskClient:
    from node.entrypoints.web import create_app

    app = create_app(context)
    app.testing = True
    return app.test_client()


TEST_PASSWORD = "test-password-1"


_tokens: dict[tuple[str, str], dict[str, str]] = {}


def token_for(client: FlaskClient, context: NodeContext, username: str) -> dict[str, str]:
    """Sign in as ``role`` or ``approver.<department>``, creating the account on first use."""
    key = (str(context.config.data_dir), username)
    if key in _tokens:
        return _tokens[key]
    if context.state.account(username) is None:
        role, _, department = username.partition(".")
        context.state.add_account(username, TEST_PASSWORD, role, department or None)
    response = client.post("/api/v1/auth/token", json={"username": username, "password": TEST_PASSWORD})
    assert response.status_code == 200, response.get_json()
    _tokens[key] = {"Authorization": f"Bearer {response.get_json()['token']}"}
    return _tokens[key]


def wait_for(condition: Callable[[], bool], timeout: float = 10.0, interval: float = 0.05) -> bool:
    """Poll ``condition`` until it holds or ``timeout`` seconds pass; whether it held at the end."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return condition()
