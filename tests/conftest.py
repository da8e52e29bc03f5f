"""Test harness: real pouchdb-server, Mosquitto and Redis on free loopback ports, one set per session.

Nothing here talks to the machine's pre-started services on standard ports.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from node.adapters.docstore import DocStore
from node.runtime.services import docstore_spec, free_port, mosquitto_spec, redis_spec
from node.runtime.supervisor import Supervisor

SHARED = Path(__file__).resolve().parents[2] / "shared"


@dataclass
class Services:
    supervisor: Supervisor
    docstore_url: str
    mqtt_port: int
    redis_url: str


@pytest.fixture(scope="session")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    root = tmp_path_factory.mktemp("services")
    supervisor = Supervisor(root / "run", progress=lambda _line: None)
    docstore_port, mqtt_port, redis_port = free_port(), free_port(), free_port()
    try:
        supervisor.start(
            [
                docstore_spec("docstore", root / "docstore", docstore_port),
                mosquitto_spec("mosquitto", root / "mosquitto", mqtt_port),
                redis_spec("redis", root / "redis", redis_port),
            ]
        )
        yield Services(supervisor, f"http://127.0.0.1:{docstore_port}", mqtt_port, f"redis://127.0.0.1:{redis_port}/0")
    finally:
        supervisor.stop_all()


@pytest.fixture
def store(services: Services) -> DocStore:
    """A fresh, empty database on the session's pouchdb-server."""
    return DocStore(services.docstore_url, f"test-{uuid.uuid4().hex[:12]}")


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.exists():
        pytest.fail(f"shared material not found at {SHARED} (CI lays it beside the clone)")
    return SHARED
