"""The agent survives any store error: it counts and logs it, backs off, and carries on when the store recovers.

A real agent (its MQTT link on the session's Mosquitto) talks to its real pouchdb-server store through
a front that, while broken, answers like a store gone wrong: a 500 with an HTML page, or a 200 whose
body is not JSON — errors that are not ``StoreUnavailable``. The agent keeps running, counts the
errors by type, logs them without their text, waits longer after each failed cycle (never longer than
the cap), and once the front forwards again it completes a cycle: its heartbeat document is written.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from node.bootstrap import ProcessKind, bootstrap
from node.config import NodeConfig
from node.entrypoints.agent import Agent
from node.runtime.services import free_port
from sync.replicator import Backoff
from tests.conftest import Services, make_node, wait_for
from tiers.demo import HESHAN_VILLAGE

# What a broken store might echo back; it must never reach the agent's log.
SECRET = "李秀英 430902199001011234"


class FlakyStore:
    """An HTTP front of the real store: ``mode`` is ``ok`` (forward), ``html`` (500 page) or ``garbage`` (not JSON)."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.mode = "ok"
        self.answered: dict[str, int] = {}
        session = requests.Session()
        session.trust_env = False

        @Request.application
        def app(request: Request) -> Response:
            mode = self.mode
            self.answered[mode] = self.answered.get(mode, 0) + 1
            if mode == "html":
                return Response(f"<html><body>Internal error near {SECRET}</body></html>", 500, mimetype="text/html")
            if mode == "garbage":
                return Response(f'{{"ok": tru {SECRET}', 200, mimetype="application/json")
            upstream = session.request(
                request.method,
                self.upstream + request.full_path.rstrip("?"),
                data=request.get_data(),
                headers={k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")},
                timeout=30,
            )
            excluded = ("content-encoding", "transfer-encoding", "connection", "content-length")
            headers = [(k, v) for k, v in upstream.headers.items() if k.lower() not in excluded]
            return Response(upstream.content, upstream.status_code, headers=headers)

        self.port = free_port()
        self.server = make_server("127.0.0.1", self.port, app, threaded=True)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


@dataclass(frozen=True)
class RecordedBackoff(Backoff):
    """The agent's backoff, remembering every pause it chose."""

    pauses: list[float] = field(default_factory=list)

    def pause(self, failures: int, rng: Callable[[float, float], float] = random.uniform) -> float:
        self.pauses.append(super().pause(failures, rng))
        return self.pauses[-1]


@pytest.fixture
def front(services: Services) -> Iterator[FlakyStore]:
    store = FlakyStore(services.docstore_url)
    yield store
    store.close()


def test_the_agent_survives_unexpected_store_errors_and_recovers(
    services: Services, city_ca: Path, tmp_path: Path, front: FlakyStore, caplog: pytest.LogCaptureFixture
) -> None:
    node = make_node(services, city_ca, tmp_path / "village", HESHAN_VILLAGE)
    config = NodeConfig(**{**node.config.__dict__, "docstore_port": front.port})
    context = bootstrap(config, ProcessKind.AGENT, mqtt_client_id=f"agent-survives-{time.time_ns()}")
    agent = Agent(context, threading.Event())
    agent.backoff = RecordedBackoff(initial_s=0.05, max_s=0.4)
    pauses = agent.backoff.pauses
    heartbeat_id = f"heartbeat:{HESHAN_VILLAGE}"
    assert node.store.get(heartbeat_id) is None
    front.mode = "html"
    caplog.set_level(logging.WARNING, logger="tongban.agent")
    thread = threading.Thread(target=agent.run, daemon=True)
    thread.start()
    try:
        # Failing at start-up and then cycle after cycle, with both kinds of error.
        assert wait_for(lambda: len(pauses) >= 4, 20.0)
        front.mode = "garbage"
        seen = len(pauses)
        assert wait_for(lambda: len(pauses) >= seen + 4, 20.0)
        assert thread.is_alive()
        assert sum(agent.errors.values()) >= 8
        assert "StoreUnavailable" not in agent.errors
        assert any("JSON" in kind or kind == "ValueError" for kind in agent.errors), agent.errors
        # Exponential with jitter, never past the cap.
        assert max(pauses) <= 0.4
        assert pauses[3] > pauses[0]
        assert node.store.get(heartbeat_id) is None
        # The store recovers: the next cycle completes and the failures are behind it.
        front.mode = "ok"
        assert wait_for(lambda: node.store.get(heartbeat_id) is not None, 20.0)
        assert wait_for(lambda: agent.failures == 0, 10.0)
        assert thread.is_alive()
    finally:
        agent.stop.set()
        thread.join(timeout=20)
    assert not thread.is_alive()
    logged = "\n".join(record.getMessage() for record in caplog.records if record.name == "tongban.agent")
    assert "failed" in logged and SECRET not in logged and "李秀英" not in logged
    assert front.answered.get("html", 0) > 0 and front.answered.get("garbage", 0) > 0
