"""Retries never duplicate (issue 11): ``Idempotency-Key`` and no 5xx after a store write, on a real gunicorn node.

Before: a retried ``POST /api/v1/cases`` created a second case, and when the read model failed
after the store write the node answered 500 — which invited exactly that retry.
"""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from node.adapters.idempotency import IdempotencyStore
from node.adapters.readmodel import READMODEL_DB
from node.adapters.sessions import SessionStore
from node.bootstrap import NodeContext
from node.runtime.services import free_port, gunicorn_spec
from node.runtime.supervisor import Supervisor
from tests.conftest import TEST_PASSWORD, Services, make_node, wait_for
from tests.test_api_cases import accept_body

COUNTY = "430903000000"
ACCOUNTS = {
    "acceptor": ("acceptor", None),
    "acceptor2": ("acceptor", None),
    "approver": ("approver", "civil_affairs"),
    "admin": ("admin", None),
    "ops": ("ops", None),
    "supervisor": ("supervisor", None),
}


class LiveNode:
    """A node served by gunicorn (one worker, its threads), with the test's own context on the same data."""

    def __init__(self, node: NodeContext, supervisor: Supervisor, tmp: Path) -> None:
        self.node = node
        self.supervisor = supervisor
        self.tmp = tmp
        self.port = free_port()
        self.tokens: dict[str, dict[str, str]] = {}

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.tokens.clear()
        spec = gunicorn_spec("web", self.node.config.config_path, self.port, self.tmp / "logs", workers=1)
        self.supervisor.start([spec])

    def stop(self) -> None:
        self.supervisor.stop_all()

    def headers(self, username: str, key: str | None = None) -> dict[str, str]:
        if username not in self.tokens:
            answer = requests.post(
                f"{self.base}/api/v1/auth/token", json={"username": username, "password": TEST_PASSWORD}, timeout=30
            )
            assert answer.status_code == 200, answer.text
            self.tokens[username] = {"Authorization": f"Bearer {answer.json()['token']}"}
        return {**self.tokens[username], **({"Idempotency-Key": key} if key else {})}

    def post(self, path: str, username: str, body: Any, key: str | None = None) -> requests.Response:
        return requests.post(f"{self.base}{path}", json=body, headers=self.headers(username, key), timeout=30)

    def get(self, path: str, username: str) -> requests.Response:
        return requests.get(f"{self.base}{path}", headers=self.headers(username), timeout=30)

    def case_numbers(self) -> set[str]:
        """Every case number the store holds (the truth, whatever the read model shows)."""
        rows = self.node.store.changes(since=0)["results"]
        return {row["id"].split(":")[1] for row in rows if row["id"].startswith("event:")}


def start_live_node(services: Services, ca: Path, tmp: Path, code: str = COUNTY) -> LiveNode:
    node = make_node(services, ca, tmp / "node", code)
    for username, (role, department) in ACCOUNTS.items():
        node.state.add_account(username, TEST_PASSWORD, role, department)
    live = LiveNode(node, Supervisor(tmp / "run", progress=lambda _line: None), tmp)
    live.start()
    return live


@pytest.fixture
def live_node(services: Services, city_ca: Path, tmp_path: Path) -> Iterator[LiveNode]:
    live = start_live_node(services, city_ca, tmp_path)
    try:
        yield live
    finally:
        live.stop()


def assert_bilingual(answer: requests.Response, status: int, code: str) -> None:
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert body["error"] == code and body["message_zh"] and body["message_en"]


def test_a_retried_acceptance_returns_the_first_answer_and_creates_one_case(live_node: LiveNode) -> None:
    key = str(uuid.uuid4())
    first = live_node.post("/api/v1/cases", "acceptor", accept_body(), key)
    assert first.status_code == 201, first.text
    case_no = first.json()["case_no"]
    assert first.json()["view_catching_up"] is False

    # The same body with its keys in another order is the same request.
    again = live_node.post("/api/v1/cases", "acceptor", dict(reversed(list(accept_body().items()))), key)
    assert again.status_code == 201 and again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert live_node.case_numbers() == {case_no}

    other = live_node.post("/api/v1/cases", "acceptor", accept_body(materials=["M001", "M002", "M013"]), key)
    assert_bilingual(other, 422, "idempotency_key_reused")
    assert live_node.case_numbers() == {case_no}

    # Keys belong to an account: another acceptor's same key is another request.
    theirs = live_node.post("/api/v1/cases", "acceptor2", accept_body(), key)
    assert theirs.status_code == 201 and theirs.json()["case_no"] != case_no
    # Without a key, every request runs.
    assert live_node.post("/api/v1/cases", "acceptor", accept_body()).status_code == 201
    assert len(live_node.case_numbers()) == 3

    for bad in ("", "x" * 101, "has space", "键"):
        answer = requests.post(
            f"{live_node.base}/api/v1/cases",
            json=accept_body(),
            headers={**live_node.headers("acceptor"), "Idempotency-Key": bad.encode().decode("latin-1")},
            timeout=30,
        )
        assert_bilingual(answer, 400, "invalid_idempotency_key")
    assert len(live_node.case_numbers()) == 3


def test_a_retried_action_is_not_refused_as_a_second_one(live_node: LiveNode) -> None:
    case_no = live_node.post("/api/v1/cases", "acceptor", accept_body()).json()["case_no"]
    actions = f"/api/v1/cases/{case_no}/actions"
    key = "approve-" + case_no
    approved = live_node.post(actions, "approver", {"action": "approve"}, key)
    assert approved.status_code == 200 and approved.json()["state"] == "approved"
    # Before: the retry ran again and answered 409 invalid_transition, though the first had worked.
    again = live_node.post(actions, "approver", {"action": "approve"}, key)
    assert again.status_code == 200 and again.json() == approved.json()
    shown = live_node.get(f"/api/v1/cases/{case_no}", "approver").json()
    assert [entry["type"] for entry in shown["timeline"]].count("approved") == 1

    # An answer with an error is not kept: the key is free for the corrected request.
    refused = live_node.post(actions, "acceptor", {"action": "deliver", "method": "pigeon"}, "deliver-1")
    assert_bilingual(refused, 400, "invalid_method")
    delivered = live_node.post(actions, "acceptor", {"action": "deliver", "method": "post"}, "deliver-1")
    assert delivered.status_code == 200 and delivered.json()["state"] == "delivered"


def test_concurrent_retries_with_one_key_create_one_case(live_node: LiveNode) -> None:
    live_node.headers("acceptor")  # sign in first, so the requests below start together
    key = str(uuid.uuid4())
    answers: list[requests.Response] = []

    def send() -> None:
        answers.append(live_node.post("/api/v1/cases", "acceptor", accept_body(), key))

    threads = [threading.Thread(target=send) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(live_node.case_numbers()) == 1
    created = [a for a in answers if a.status_code == 201]
    assert created and all(a.json() == created[0].json() for a in created)
    for waiting in (a for a in answers if a.status_code != 201):
        assert_bilingual(waiting, 409, "idempotency_key_in_use")
        assert waiting.headers["Retry-After"] == "1"


def break_read_model(node: NodeContext) -> sqlite3.Connection:
    db = sqlite3.connect(node.config.data_dir / READMODEL_DB, timeout=30)
    db.execute("ALTER TABLE cases RENAME TO cases_away")
    db.commit()
    return db


def test_projection_failing_after_the_write_answers_success_not_500(live_node: LiveNode) -> None:
    node = live_node.node
    db = break_read_model(node)
    try:
        key = str(uuid.uuid4())
        created = live_node.post("/api/v1/cases", "acceptor", accept_body(), key)
        # Before: 500, and the client's retry created a second case.
        assert created.status_code == 201, created.text
        body = created.json()
        assert body["view_catching_up"] is True and body["outcome"] == "accepted"
        case_no = body["case_no"]
        assert live_node.case_numbers() == {case_no}
        retried = live_node.post("/api/v1/cases", "acceptor", accept_body(), key)
        assert retried.status_code == 201 and retried.json()["case_no"] == case_no
        assert live_node.case_numbers() == {case_no}

        acted = live_node.post(f"/api/v1/cases/{case_no}/actions", "approver", {"action": "approve"})
        assert acted.status_code == 200 and acted.json()["state"] == "approved"
        assert acted.json()["view_catching_up"] is True
    finally:
        db.execute("ALTER TABLE cases_away RENAME TO cases")
        db.commit()
        db.close()

    # The agent's catch-up follows the store: the inbox and the search show the case again.
    node.projector.catch_up()
    found = live_node.get(f"/api/v1/cases?q={case_no}", "acceptor").json()["cases"]
    assert [(row["case_no"], row["state"]) for row in found] == [(case_no, "approved")]
    delivered = live_node.post(f"/api/v1/cases/{case_no}/actions", "acceptor", {"action": "deliver"})
    assert delivered.status_code == 200 and delivered.json()["view_catching_up"] is False


def test_keys_and_audit_lines_are_pruned_after_their_retention(
    live_node: LiveNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    from node.entrypoints import tasks

    node = live_node.node
    key = "retention-1"
    first = live_node.post("/api/v1/cases", "acceptor", accept_body(), key)
    assert first.status_code == 201
    state = node.config.data_dir / "state.sqlite3"
    audit = SessionStore(state)
    audit.record("test.old", "subject", "client", "ok", now=time.time() - 200 * 86400)
    assert "test.old" in {row["event"] for row in audit.audit_trail()}

    monkeypatch.setenv("TONGBAN_NODE_CONFIG", str(node.config.config_path))
    monkeypatch.setattr(tasks, "_context", None)
    # A day and an hour later the beat job drops the key; the audit line older than 180 days goes too.
    pruned = tasks.prune_retention(now=time.time() + 25 * 3600)
    assert pruned["idempotency_keys"] >= 1 and pruned["audit"] == 1
    assert "test.old" not in {row["event"] for row in audit.audit_trail()}
    assert audit.audit_trail(), "recent audit lines are kept"
    assert IdempotencyStore(state, node.config.secret_key).count() == 0

    # The key is free again: the same key now makes a new case (the old answer is gone).
    again = live_node.post("/api/v1/cases", "acceptor", accept_body(), key)
    assert again.status_code == 201 and again.json()["case_no"] != first.json()["case_no"]
    assert wait_for(lambda: len(live_node.case_numbers()) == 2)
