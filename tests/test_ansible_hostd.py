"""The host supervisor the Ansible ``service`` role uses where systemd is not PID 1 (node.runtime.hostd)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from node.runtime.hostd import ProcessFileError, load_specs
from node.runtime.services import free_port, http_ok, tcp_open

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def hostd(action: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "node.runtime.hostd", action, "--processes", str(tmp_path / "processes"),
         "--run-dir", str(tmp_path / "run"), "--log-dir", str(tmp_path / "logs"), "--timeout", "60"],
        capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
    )  # fmt: skip


def write_process(directory: Path, name: str, **fields: object) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{name}.json").write_text(json.dumps({"name": name, **fields}))


def test_ensure_starts_once_restart_replaces_and_stop_ends_every_process(tmp_path: Path) -> None:
    web, side = free_port(), free_port()
    serve = [sys.executable, "-m", "http.server", "-b", "127.0.0.1"]
    processes = tmp_path / "processes"
    write_process(processes, "web", order=1, argv=[*serve, str(web)], health={"http": f"http://127.0.0.1:{web}/"})
    write_process(processes, "side", order=0, argv=[*serve, str(side)], health={"tcp": ["127.0.0.1", side]})
    try:
        first = hostd("ensure", tmp_path)
        assert (first.returncode, first.stdout.strip()) == (0, "started"), first.stderr
        assert http_ok(f"http://127.0.0.1:{web}/") and tcp_open(side)
        web_pid = (tmp_path / "run/web.pid").read_text()
        again = hostd("ensure", tmp_path)
        assert (again.returncode, again.stdout.strip()) == (0, "running")
        assert (tmp_path / "run/web.pid").read_text() == web_pid
        restarted = hostd("restart", tmp_path)
        assert restarted.stdout.strip() == "started", restarted.stderr
        assert (tmp_path / "run/web.pid").read_text() != web_pid
        assert http_ok(f"http://127.0.0.1:{web}/")
    finally:
        stopped = hostd("stop", tmp_path)
    assert stopped.stdout.strip() == "stopped"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (tcp_open(web) or tcp_open(side)):
        time.sleep(0.1)
    assert not tcp_open(web) and not tcp_open(side)
    assert hostd("stop", tmp_path).stdout.strip() == "not running"


def test_a_process_that_never_gets_healthy_fails_ensure_with_its_log(tmp_path: Path) -> None:
    write_process(
        tmp_path / "processes", "broken", argv=[sys.executable, "-c", "import sys; print('no config'); sys.exit(3)"],
        health={"tcp": ["127.0.0.1", free_port()]},
    )  # fmt: skip
    try:
        result = hostd("ensure", tmp_path)
        assert result.returncode == 1
        assert "broken" in result.stderr and "exited with code 3" in result.stderr
    finally:
        hostd("stop", tmp_path)


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"argv": []}, "'argv' must be a non-empty list"),
        ({"argv": ["x"], "health": {"exec": "true"}}, "unusable health check"),
        ({"argv": ["x"], "health": {"tcp": ["127.0.0.1", 1]}, "env": {"A": 1}}, "'env' must map strings"),
        ({"argv": ["x"], "health": {"file": "relative/path"}}, "unusable health check"),
        ({"argv": ["x"], "health": {"http": "http://x/"}, "order": "1"}, "'order' must be an integer"),
    ],
)
def test_bad_process_files_are_refused_with_a_reason(tmp_path: Path, fields: dict, reason: str) -> None:
    write_process(tmp_path, "p", **fields)
    with pytest.raises(ProcessFileError, match=reason):
        load_specs(tmp_path, tmp_path / "logs")
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "p.json").unlink()
    with pytest.raises(ProcessFileError, match="not readable JSON"):
        load_specs(tmp_path, tmp_path / "logs")
