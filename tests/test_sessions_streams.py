"""Inbox event streams against a real gunicorn node: 200 open streams do not starve the node (issue 11).

Each stream holds a gunicorn thread while open; the node bounds them, answers 503 with Retry-After
beyond the bound (the page keeps polling), and ordinary requests still get a thread.
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from node.bootstrap import NodeContext
from node.runtime.services import free_port, gunicorn_spec
from node.runtime.supervisor import Supervisor
from tests.conftest import TEST_PASSWORD, Services, make_node

STREAMS = 200
PER_WORKER = 4  # pages.INBOX_STREAMS


@pytest.fixture
def served_node(services: Services, city_ca: Path, tmp_path: Path) -> Iterator[tuple[NodeContext, str]]:
    node = make_node(services, city_ca, tmp_path / "county", "430903000000")
    node.state.add_account("acceptor", TEST_PASSWORD, "acceptor")
    port = free_port()
    supervisor = Supervisor(tmp_path / "run", progress=lambda _line: None)
    try:
        supervisor.start([gunicorn_spec("web", node.config.config_path, port, tmp_path / "logs", workers=1)])
        yield node, f"http://127.0.0.1:{port}"
    finally:
        supervisor.stop_all()


def signed_in_cookie(base: str) -> str:
    browser = requests.Session()
    page = browser.get(f"{base}/login", timeout=10).text
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
    answer = browser.post(
        f"{base}/login",
        data={"username": "acceptor", "password": TEST_PASSWORD, "csrf_token": token},
        allow_redirects=False,
        timeout=30,
    )
    assert answer.status_code == 302, answer.text
    return str(browser.cookies["session"])


def open_stream(port: int, cookie: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    request = f"GET /inbox/events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nCookie: session={cookie}\r\n\r\n"
    sock.sendall(request.encode())
    return sock


def read_head(sock: socket.socket) -> str:
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            break
        head += chunk
    return head.decode("latin-1")


def test_two_hundred_open_streams_leave_the_node_answering(served_node: tuple[NodeContext, str]) -> None:
    _node, base = served_node
    port = int(base.rsplit(":", 1)[1])
    cookie = signed_in_cookie(base)
    sockets = [open_stream(port, cookie) for _ in range(STREAMS)]
    try:
        heads = [read_head(sock) for sock in sockets]
        statuses = [head.split(" ", 2)[1] for head in heads]
        streaming = statuses.count("200")
        refused = [head for head in heads if head.split(" ", 2)[1] == "503"]
        assert 1 <= streaming <= PER_WORKER, statuses
        assert len(refused) == STREAMS - streaming
        assert all("Retry-After: 30" in head for head in refused)

        # With the streams still open, ordinary requests get a thread at once (the old code held a
        # thread per stream for 60 s: 16 streams and the node stopped answering).
        started = time.monotonic()
        health = requests.get(f"{base}/healthz", timeout=10)
        inbox = requests.get(f"{base}/inbox.json", cookies={"session": cookie}, timeout=10)
        assert health.status_code == 200 and inbox.status_code == 200
        assert time.monotonic() - started < 5.0
    finally:
        for sock in sockets:
            sock.close()

    # Closed streams give their slots back: a new page gets a stream again.
    def streams_again() -> bool:
        sock = open_stream(port, cookie)
        try:
            return read_head(sock).split(" ", 2)[1] == "200"
        finally:
            sock.close()

    deadline = time.monotonic() + 40
    while not streams_again():
        assert time.monotonic() < deadline, "slots never came back"
        time.sleep(1)
