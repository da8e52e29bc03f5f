"""The ``tongban`` command as a user meets it: real subprocesses, exit codes, one clear line on errors.

Every failure here must end with exit code 2, a single bilingual line on stderr, no traceback and
no process left behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from node.config import ConfigError, NodeConfig
from node.runtime.services import PROJECT_ROOT, free_port, port_is_free
from tests.test_federation import processes_mentioning

UNKNOWN_CODE = "999999999999"
CITY = "430900000000"


def tongban(*args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "node.entrypoints.cli", *args],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def assert_one_clear_error(result: subprocess.CompletedProcess[str], *phrases: str) -> str:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert line.startswith("tongban: "), line
    for phrase in phrases:
        assert phrase in line, (phrase, line)
    return line


@pytest.fixture
def var(tmp_path: Path) -> Iterator[Path]:
    var_dir = tmp_path / "var"
    yield var_dir
    leftovers = processes_mentioning(tmp_path)
    for pid in leftovers:  # ours: they work in this test's own directory
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert not leftovers, f"processes left running: {leftovers}"


# --------------------------------------------------------------------------------------------- unknown codes


def test_federation_up_with_an_unknown_code_fails_cleanly(var: Path) -> None:
    result = tongban(
        "federation", "up", "--nodes", f"{CITY},{UNKNOWN_CODE}", "--var", str(var), "--base-port", str(free_port())
    )
    assert_one_clear_error(result, "未知的区划代码", "unknown division code", UNKNOWN_CODE)
    assert not (var / "federation.json").exists(), "a rejected command must not leave a federation behind"


def test_node_run_with_an_unknown_code_fails_cleanly(var: Path) -> None:
    result = tongban("node", "run", UNKNOWN_CODE, "--data-dir", str(var), "--base-port", str(free_port()))
    assert_one_clear_error(result, "未知的区划代码", "unknown division code", UNKNOWN_CODE)
    assert not (var / "federation.json").exists()


def test_tiers_show_with_an_unknown_code_fails_cleanly() -> None:
    assert_one_clear_error(tongban("tiers", "show", UNKNOWN_CODE), "unknown division code")


# --------------------------------------------------------------------------------------------- busy ports


@contextlib.contextmanager
def blocked_port(offset: int, span: int = 20) -> Iterator[tuple[int, int]]:
    """Listen on a free port P such that ``P - offset .. P - offset + span`` is otherwise free; yields (P, base)."""
    for _ in range(50):
        port = free_port()
        base = port - offset
        if base < 1024 or not all(port_is_free(p) for p in range(base, base + span) if p != port):
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            sock.listen()
            yield port, base
            return
    raise RuntimeError("no free port range found")


@pytest.mark.parametrize(
    ("offset", "who"),
    [
        (0, "redis"),  # redis listens on the base port itself
        (11, f"{CITY}-docstore"),  # the first node's document store: redis is already up by then
    ],
)
def test_federation_up_on_a_busy_port_fails_cleanly(var: Path, offset: int, who: str) -> None:
    with blocked_port(offset) as (port, base):
        result = tongban("federation", "up", "--nodes", CITY, "--var", str(var), "--base-port", str(base))
        assert_one_clear_error(result, "already in use", str(port), who)
        assert "stopped" in result.stdout
        assert not processes_mentioning(var)
        assert not (var / "run" / "federation.pid").exists(), "the lock of a failed start must be released"


def test_node_run_on_a_busy_web_port_stops_what_it_had_started(var: Path) -> None:
    # base + 10 is the node's web port: redis, the store and the broker are all running when it fails.
    with blocked_port(10) as (port, base):
        result = tongban("node", "run", CITY, "--data-dir", str(var), "--base-port", str(base))
        assert_one_clear_error(result, "already in use", str(port), f"{CITY}-web")
        assert f"{CITY}-docstore healthy" in result.stdout and f"{CITY}-mosquitto healthy" in result.stdout
        assert not processes_mentioning(var)
        assert all(port_is_free(p) for p in (base, base + 11, base + 12)), "ports still held after the failure"


# --------------------------------------------------------------------------------------------- federation files


def test_status_without_a_federation_says_how_to_start_one(var: Path) -> None:
    line = assert_one_clear_error(tongban("federation", "status", "--var", str(var)), "no local federation")
    assert "tongban federation up" in line


@pytest.mark.parametrize(
    "content",
    [
        b'{"base_port": 18000, "nodes": ["4309',  # truncated by a crash mid-write
        b"",
        b"null",
        b"[]",
        b'{"nodes": ["430900000000"]}',
        b'{"base_port": "many", "nodes": ["430900000000"]}',
        b"\xff\xfe\x00garbage",
        b'{"base_port": 18000, "nodes": "430900000000"}',
    ],
)
def test_status_of_a_corrupt_federation_file_says_corrupt(var: Path, content: bytes) -> None:
    var.mkdir()
    (var / "federation.json").write_bytes(content)
    assert_one_clear_error(tongban("federation", "status", "--var", str(var)), "corrupt", "federation.json")


def test_status_with_a_corrupt_node_config_says_corrupt(var: Path) -> None:
    var.mkdir()
    (var / "federation.json").write_text(json.dumps({"base_port": 1, "nodes": [CITY]}))
    node_json = var / "nodes" / CITY / "node.json"
    node_json.parent.mkdir(parents=True)
    node_json.write_text('{"code": "430900000000", "data_')
    assert_one_clear_error(tongban("federation", "status", "--var", str(var)), "corrupt", str(node_json))


def test_agent_with_a_corrupt_config_says_corrupt(tmp_path: Path) -> None:
    config = tmp_path / "node.json"
    config.write_text("{")
    assert_one_clear_error(tongban("node", "agent", "--config", str(config)), "corrupt", str(config))


# --------------------------------------------------------------------------------------------- NodeConfig.load


def sample_config(tmp_path: Path) -> NodeConfig:
    return NodeConfig(
        code=CITY,
        data_dir=tmp_path / "node",
        http_port=free_port(),
        docstore_port=free_port(),
        mqtt_port=free_port(),
        redis_url="redis://127.0.0.1:1/0",
        ca_dir=tmp_path / "ca",
    )


def test_node_config_round_trips(tmp_path: Path) -> None:
    config = sample_config(tmp_path)
    assert NodeConfig.load(config.save()) == config


@pytest.mark.parametrize(
    "content",
    [b'{"code": "430900000000", "data_dir": "/x", "http_', b"", b"{]", b"\xff\xfe\x00\x01", b"code=430900000000"],
)
def test_corrupt_node_config_raises_config_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "node.json"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match="corrupt") as caught:
        NodeConfig.load(path)
    assert str(path) in str(caught.value)


@pytest.mark.parametrize(
    "content",
    [
        b"[]",
        b'"430900000000"',
        b'{"code": "430900000000"}',
        b'{"code": "430900000000", "data_dir": null, "http_port": 1}',
        b"null",
        b"42",
    ],
)
def test_unusable_node_config_raises_config_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "node.json"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as caught:
        NodeConfig.load(path)
    assert str(path) in str(caught.value)


def test_missing_node_config_raises_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        NodeConfig.load(tmp_path / "absent.json")


def test_ctrl_c_while_starting_stops_at_once_and_leaves_nothing(var: Path) -> None:
    base = next(b for b in range(32000, 40000, 100) if all(port_is_free(p) for p in range(b, b + 60)))
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "node.entrypoints.cli",
            "federation",
            "up",
            "--var",
            str(var),
            "--base-port",
            str(base),
            "--nodes",
            f"{CITY},430903000000",
        ],
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    for line in process.stdout:
        if "document stores and brokers" in line:
            break
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=30)
    assert process.returncode == 130, output
    assert "stopped" in output
    assert processes_mentioning(var.parent) == {}
