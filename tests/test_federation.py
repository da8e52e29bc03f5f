"""A real four-tier federation (city → county → township → village) started with ``tongban federation up``.

One federation per module, on a free port range; the last test stops it with Ctrl-C (SIGINT) and
starts it again over the same data.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from node import __version__
from node.adapters.mqtt import MqttLink, heartbeat, status_topic, wake_topic
from node.config import NodeConfig
from node.runtime.services import PROJECT_ROOT, port_is_free
from tests.conftest import wait_for
from tiers import yiyang
from tiers.demo import CITY, HESHAN, HESHAN_TOWN, HESHAN_VILLAGE

pytestmark = pytest.mark.slow

COUNTY, TOWNSHIP, VILLAGE = HESHAN, HESHAN_TOWN, HESHAN_VILLAGE
CODES = [CITY, COUNTY, TOWNSHIP, VILLAGE]
TIERS = ["city", "county", "township", "village"]
READY_TIMEOUT_S = 90.0
SPAN = 60


# --------------------------------------------------------------------------------------------- helpers


def free_base_port(span: int = SPAN) -> int:
    """A base port with ``span`` free ports above it, below the kernel's ephemeral range (no client will take them)."""
    for _ in range(200):
        base = random.randrange(20_000, 32_000 - span)
        if all(port_is_free(port) for port in range(base, base + span)):
            return base
    raise RuntimeError("no free port range")


def processes_mentioning(path: Path) -> dict[int, str]:
    """Live processes with ``path`` in their command line or environment (gunicorn gets its config via the env)."""
    needle = str(path).encode()
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            environ = (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and (needle in cmdline or needle in environ):
            found[int(entry.name)] = cmdline.replace(b"\0", b" ").decode(errors="replace")
    return found


def http_json(method: str, url: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


@dataclass
class RunningFederation:
    var: Path
    base: int
    process: subprocess.Popen[bytes] | None = None
    outputs: list[Path] = field(default_factory=list)

    def http_port(self, code: str) -> int:
        return self.base + 10 + 10 * CODES.index(code)

    def docstore_port(self, code: str) -> int:
        return self.http_port(code) + 1

    def mqtt_port(self, code: str) -> int:
        return self.http_port(code) + 2

    def mqtt_link(self, code: str) -> MqttLink:
        """A client on ``code``'s broker signed in as the node (no broker takes anonymous clients)."""
        credentials = NodeConfig.load(self.var / "nodes" / code / "node.json").mqtt_credentials()
        return MqttLink(
            "127.0.0.1", self.mqtt_port(code), client_id=f"test-{uuid.uuid4().hex[:10]}", credentials=credentials
        )

    @property
    def output(self) -> str:
        return self.outputs[-1].read_text(errors="replace")

    def start(self) -> None:
        out = self.var.parent / f"federation-{len(self.outputs) + 1}.out"
        self.outputs.append(out)
        with out.open("wb") as sink:
            self.process = subprocess.Popen(
                [
                    sys.executable, "-m", "node.entrypoints.cli", "federation", "up",
                    "--var", str(self.var), "--base-port", str(self.base), "--nodes", ",".join(CODES),
                ],
                cwd=PROJECT_ROOT,
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        process = self.process

        def ready() -> bool:
            if process.poll() is not None:
                pytest.fail(f"federation up exited with {process.returncode}:\n{self.output}")
            return "press Ctrl-C" in self.output

        if not wait_for(ready, READY_TIMEOUT_S, interval=0.2):
            pytest.fail(f"federation not ready after {READY_TIMEOUT_S:.0f}s:\n{self.output}")

    def interrupt(self, timeout: float = 30.0) -> int:
        """Ctrl-C: SIGINT to the federation process; returns its exit code."""
        assert self.process is not None
        self.process.send_signal(signal.SIGINT)
        try:
            return self.process.wait(timeout=timeout)
        finally:
            self.process = None

    def tongban(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "node.entrypoints.cli", *args],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )


@contextlib.contextmanager
def federation_in(root: Path) -> Iterator[RunningFederation]:
    """A started federation under ``root``; afterwards nothing of it is left running."""
    running = RunningFederation(root / "var", free_base_port())
    try:
        running.start()
        yield running
    finally:
        process = running.process
        if process is not None:
            try:
                running.interrupt()
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        # Whatever a failed test left behind: only processes working in this test's own directory.
        for pid in processes_mentioning(root):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningFederation]:
    with federation_in(tmp_path_factory.mktemp("federation")) as running:
        yield running


class Inbox:
    """An MQTT subscriber on one broker that collects every message matching ``topic``."""

    def __init__(self, federation: RunningFederation, code: str, topic: str) -> None:
        self.messages: list[tuple[str, dict[str, Any]]] = []
        self.lock = threading.Lock()
        self.link = federation.mqtt_link(code)
        self.link.subscribe(topic, self._receive)

    def _receive(self, topic: str, payload: dict[str, Any]) -> None:
        with self.lock:
            self.messages.append((topic, payload))

    def __enter__(self) -> Inbox:
        assert self.link.start(wait_s=10), f"cannot subscribe on broker port {self.link.port}"
        return self

    def __exit__(self, *exc: object) -> None:
        self.link.stop()

    def has(self, predicate: Callable[[str, dict[str, Any]], bool]) -> bool:
        with self.lock:
            return any(predicate(topic, payload) for topic, payload in self.messages)


class Publisher:
    def __init__(self, federation: RunningFederation, code: str) -> None:
        self.link = federation.mqtt_link(code)

    def __enter__(self) -> MqttLink:
        assert self.link.start(wait_s=10), f"cannot connect to broker port {self.link.port}"
        return self.link

    def __exit__(self, *exc: object) -> None:
        self.link.stop()


# --------------------------------------------------------------------------------------------- while running


def test_status_lists_every_node_healthy(federation: RunningFederation) -> None:
    result = federation.tongban("federation", "status", "--var", str(federation.var), "--json")
    assert result.returncode == 0, (result.stdout, result.stderr)
    rows = json.loads(result.stdout)
    assert isinstance(rows, list)
    assert [row["code"] for row in rows] == CODES
    for row, tier, code in zip(rows, TIERS, CODES, strict=True):
        assert set(row) == {"code", "name", "tier", "url", "healthy"}, row
        assert row["tier"] == tier
        assert row["name"] == yiyang().get(code).name
        assert row["url"] == f"http://127.0.0.1:{federation.http_port(code)}"
        assert row["healthy"] is True, row


@pytest.mark.parametrize("code", CODES)
def test_healthz_says_who_the_node_is(federation: RunningFederation, code: str) -> None:
    url = f"http://127.0.0.1:{federation.http_port(code)}/healthz"
    status, body = http_json("GET", url)
    assert status == 200, body
    division = yiyang().get(code)
    assert body["code"] == code
    assert body["name"] == division.name
    assert body["tier"] == TIERS[CODES.index(code)]
    assert body["parent"] == (None if code == CITY else CODES[CODES.index(code) - 1])
    assert body["docstore"]["reachable"] is True
    assert body["mqtt"]["connected"] is True
    assert body["version"] == __version__


def test_village_parent_is_its_township(federation: RunningFederation) -> None:
    _, body = http_json("GET", f"http://127.0.0.1:{federation.http_port(VILLAGE)}/healthz")
    assert body["parent"] == TOWNSHIP == yiyang().parent(VILLAGE)


@pytest.mark.parametrize("code", CODES)
def test_each_node_announces_itself_online_on_its_broker(federation: RunningFederation, code: str) -> None:
    with Inbox(federation, code, status_topic(code)) as inbox:
        assert wait_for(lambda: inbox.has(lambda _t, p: p.get("node") == code and p.get("status") == "online"), 10), (
            inbox.messages
        )


def test_city_wake_reaches_the_village_through_the_bridges(federation: RunningFederation) -> None:
    nonce = uuid.uuid4().hex
    topic = wake_topic(VILLAGE)
    with Inbox(federation, VILLAGE, topic) as village, Publisher(federation, CITY) as city:
        # Bridges (re)connect with a back-off; keep sending until the chain city → county → township → village holds.
        def arrived() -> bool:
            assert city.publish(topic, {"wake": True, "nonce": nonce})
            return village.has(lambda t, p: t == topic and p.get("nonce") == nonce)

        assert wait_for(arrived, 30, interval=0.5), "a wake-up from the city never reached the village broker"


def test_village_status_reaches_the_city_through_the_bridges(federation: RunningFederation) -> None:
    topic = status_topic(VILLAGE)
    with Inbox(federation, CITY, topic) as city, Publisher(federation, VILLAGE) as village:
        # The agent's retained heartbeat travelled up by itself …
        assert wait_for(lambda: city.has(lambda _t, p: p.get("node") == VILLAGE and p.get("status") == "online"), 30)
        # … and so does a fresh message published at the village now.
        nonce = uuid.uuid4().hex

        def arrived() -> bool:
            assert village.publish(topic, heartbeat(VILLAGE, __version__, {"probe": nonce}))
            return city.has(lambda t, p: t == topic and p.get("probe") == nonce)

        assert wait_for(arrived, 30, interval=0.5), "a message published at the village never reached the city"


def test_village_hears_nothing_meant_for_another_village(federation: RunningFederation) -> None:
    """The bridge subscribes to the village's own subtree only."""
    sibling = next(c for c in yiyang().children(TOWNSHIP) if c != VILLAGE)
    with (
        Inbox(federation, VILLAGE, "tongban/down/#") as village,
        Publisher(federation, CITY) as city,
    ):
        nonce = uuid.uuid4().hex

        def own_arrived() -> bool:
            assert city.publish(wake_topic(sibling), {"nonce": nonce, "for": sibling})
            assert city.publish(wake_topic(VILLAGE), {"nonce": nonce, "for": VILLAGE})
            return village.has(lambda _t, p: p.get("for") == VILLAGE)

        assert wait_for(own_arrived, 30, interval=0.5)
        time.sleep(0.5)
        assert not village.has(lambda _t, p: p.get("for") == sibling)


def second_up(federation: RunningFederation) -> subprocess.CompletedProcess[str]:
    return federation.tongban(
        "federation", "up", "--var", str(federation.var), "--base-port", str(federation.base), "--nodes", CITY
    )


def test_a_second_federation_up_on_the_same_var_is_refused(federation: RunningFederation) -> None:
    assert federation.process is not None
    result = second_up(federation)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "already running" in lines[0], result.stderr
    assert str(federation.process.pid) in lines[0]
    assert federation.process.poll() is None
    assert json.loads((federation.var / "federation.json").read_text())["nodes"] == CODES, "the refusal rewrote it"
    assert federation.tongban("federation", "status", "--var", str(federation.var)).returncode == 0


def test_refusal_names_the_pid_to_kill(federation: RunningFederation) -> None:
    assert federation.process is not None
    assert f"kill {federation.process.pid}" in second_up(federation).stderr


# --------------------------------------------------------------------------------------------- stop and restart


def test_ctrl_c_stops_everything_and_data_survives_a_restart(federation: RunningFederation) -> None:
    store = f"http://127.0.0.1:{federation.docstore_port(CITY)}/tongban"
    status, body = http_json("PUT", store)
    assert status in (201, 412), body  # created now, or already by the node itself
    doc_id = f"survivor-{uuid.uuid4().hex[:8]}"
    status, body = http_json("PUT", f"{store}/{doc_id}", {"kind": "probe", "text": "通办"})
    assert status == 201, body
    secret = NodeConfig.load(federation.var / "nodes" / CITY / "node.json").secret_key

    started = time.monotonic()
    assert federation.interrupt(timeout=30) == 0, federation.output
    assert time.monotonic() - started < 30
    assert "stopped" in federation.output
    gone = wait_for(lambda: not processes_mentioning(federation.var), 5, interval=0.2)
    assert gone, processes_mentioning(federation.var)
    ports = [federation.base] + [federation.http_port(code) + k for code in CODES for k in range(3)]
    assert all(port_is_free(port) for port in ports), [port for port in ports if not port_is_free(port)]
    assert not (federation.var / "run" / "federation.pid").exists()
    assert not list((federation.var / "run").glob("*.pid")), "pid files outlived their processes"

    stopped = federation.tongban("federation", "status", "--var", str(federation.var), "--json")
    assert stopped.returncode == 1, (stopped.stdout, stopped.stderr)
    assert [row["healthy"] for row in json.loads(stopped.stdout)] == [False] * len(CODES)

    federation.start()
    status, body = http_json("GET", f"{store}/{doc_id}")
    assert status == 200, body
    assert body["text"] == "通办"
    assert NodeConfig.load(federation.var / "nodes" / CITY / "node.json").secret_key == secret
    again = federation.tongban("federation", "status", "--var", str(federation.var), "--json")
    assert again.returncode == 0, again.stdout

    assert federation.interrupt(timeout=30) == 0, federation.output
    gone = wait_for(lambda: not processes_mentioning(federation.var), 5, interval=0.2)
    assert gone, processes_mentioning(federation.var)
