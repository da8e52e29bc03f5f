"""The supervisor with real processes: health waits, start failures, restarts, clean stops and orphans.

Every service here is a real process on a free loopback port (``free_port``); nothing is mocked.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

from node.runtime.services import (
    PROJECT_ROOT,
    ServiceSpec,
    free_port,
    http_ok,
    mosquitto_spec,
    port_is_free,
    redis_spec,
    tcp_open,
)
from node.runtime.supervisor import StartError, Supervisor
from tests.conftest import wait_for

# --------------------------------------------------------------------------------------------- helpers


def alive(pid: int) -> bool:
    """Independent of the supervisor's own ``pid_alive``: the process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return not stat.rsplit(")", 1)[1].split()[0].startswith("Z")


def group_members(pgid: int) -> set[int]:
    """Live processes whose process group is ``pgid`` (the leader and everything it forked)."""
    members = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.add(int(entry.name))
    return members


def pids_with(marker: str) -> set[int]:
    """Live processes whose command line contains ``marker``."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmdline and alive(int(entry.name)):
            found.add(int(entry.name))
    return found


def all_gone(pids: Iterable[int], timeout: float = 5.0) -> bool:
    pids = list(pids)
    return wait_for(lambda: not any(alive(pid) for pid in pids), timeout)


def http_service(
    name: str,
    tmp_path: Path,
    port: int | None = None,
    delay_s: float = 0.0,
    start_timeout_s: float = 15.0,
) -> ServiceSpec:
    """A tiny HTTP server that binds ``port`` after ``delay_s`` seconds; healthy once it answers ``GET /``."""
    port = port or free_port()
    code = (
        "import http.server, time\n"
        f"time.sleep({delay_s})\n"
        f"http.server.ThreadingHTTPServer(('127.0.0.1', {port}), http.server.SimpleHTTPRequestHandler)"
        ".serve_forever()\n"
        f"# {name}-{uuid.uuid4().hex}\n"
    )
    return ServiceSpec(
        name=name,
        argv=[sys.executable, "-c", code],
        healthy=lambda: http_ok(f"http://127.0.0.1:{port}/", timeout=0.5),
        log_path=tmp_path / "logs" / f"{name}.log",
        cwd=tmp_path,
        ports=(port,),
        start_timeout_s=start_timeout_s,
    )


def sleeper(name: str, tmp_path: Path, shell: str = "exec sleep 1000") -> ServiceSpec:
    """A process (tree) that does nothing; healthy as soon as it is spawned."""
    return ServiceSpec(
        name=name,
        argv=["sh", "-c", f"{shell} # {name}-{uuid.uuid4().hex}"],
        healthy=lambda: True,
        log_path=tmp_path / "logs" / f"{name}.log",
    )


@pytest.fixture
def supervisor(tmp_path: Path) -> Iterator[Supervisor]:
    lines: list[str] = []
    sup = Supervisor(tmp_path / "run", progress=lines.append)
    try:
        yield sup
    finally:
        sup.stop_all()


# --------------------------------------------------------------------------------------------- start


def test_start_waits_until_healthy(supervisor: Supervisor, tmp_path: Path) -> None:
    spec = http_service("web", tmp_path, delay_s=1.0)
    started = time.monotonic()
    supervisor.start([spec])
    assert time.monotonic() - started >= 1.0, "start returned before the service could have been healthy"
    assert spec.healthy(), "start returned but the service does not answer"
    pid = supervisor.running["web"].process.pid
    assert (tmp_path / "run" / "web.pid").read_text().strip() == str(pid)
    assert alive(pid)


def test_service_that_exits_while_starting_raises_with_its_log_tail(supervisor: Supervisor, tmp_path: Path) -> None:
    code = "import sys\nfor i in range(40): print(f'line {i}')\nprint('fatal: no frobnicator')\nsys.exit(3)"
    spec = ServiceSpec(
        name="crasher",
        argv=[sys.executable, "-c", code],
        healthy=lambda: False,
        log_path=tmp_path / "logs" / "crasher.log",
        start_timeout_s=30.0,
    )
    started = time.monotonic()
    with pytest.raises(StartError) as caught:
        supervisor.start([spec])
    message = str(caught.value)
    assert time.monotonic() - started < 10, "a dead process must be noticed at once, not after start_timeout_s"
    assert "crasher" in message
    assert "code 3" in message
    assert "fatal: no frobnicator" in message, message
    assert "line 39" in message
    assert "line 0\n" not in message, "only the tail of the log belongs in the message"


def test_service_never_healthy_raises_after_its_timeout(supervisor: Supervisor, tmp_path: Path) -> None:
    spec = ServiceSpec(
        name="mute",
        argv=["sh", "-c", "echo still warming up; exec sleep 1000"],
        healthy=lambda: False,
        log_path=tmp_path / "logs" / "mute.log",
        start_timeout_s=1.0,
    )
    started = time.monotonic()
    with pytest.raises(StartError) as caught:
        supervisor.start([spec])
    elapsed = time.monotonic() - started
    assert 1.0 <= elapsed < 5.0, elapsed
    assert "not healthy after" in str(caught.value)
    assert "still warming up" in str(caught.value)
    pid = supervisor.running["mute"].process.pid
    supervisor.stop_all()
    assert all_gone([pid])


def test_real_broker_and_redis_start_and_stop(supervisor: Supervisor, tmp_path: Path) -> None:
    mqtt_port, redis_port = free_port(), free_port()
    supervisor.start(
        [
            mosquitto_spec("mosquitto", tmp_path / "mosquitto", mqtt_port),
            redis_spec("redis", tmp_path / "redis", redis_port),
        ]
    )
    assert tcp_open(mqtt_port) and tcp_open(redis_port)
    pids = [entry.process.pid for entry in supervisor.running.values()]
    supervisor.stop_all()
    assert all_gone(pids)
    assert port_is_free(mqtt_port) and port_is_free(redis_port)
    assert not list((tmp_path / "run").glob("*.pid"))
    # Same directories again: a second start over the first one's data works.
    supervisor.start([redis_spec("redis", tmp_path / "redis", redis_port)])
    assert tcp_open(redis_port)


# --------------------------------------------------------------------------------------------- restarts


def kill_and_restart(supervisor: Supervisor, name: str) -> int:
    """SIGKILL the service and let ``restart_dead`` bring it back; returns the new pid."""
    old = supervisor.running[name].process.pid
    os.kill(old, signal.SIGKILL)
    restarted: list[str] = []
    assert wait_for(lambda: bool(restarted.extend(supervisor.restart_dead()) or restarted), 5.0)
    assert restarted == [name]
    new = supervisor.running[name].process.pid
    assert new != old
    return new


def test_restart_dead_brings_back_a_killed_service(supervisor: Supervisor, tmp_path: Path) -> None:
    spec = http_service("web", tmp_path)
    supervisor.start([spec])
    assert supervisor.restart_dead() == []
    new_pid = kill_and_restart(supervisor, "web")
    assert wait_for(spec.healthy, 10.0), "the restarted service never became healthy again"
    assert alive(new_pid)
    assert (tmp_path / "run" / "web.pid").read_text().strip() == str(new_pid)
    assert supervisor.restart_dead() == []


def test_a_spent_restart_budget_holds_the_service_until_the_window_moves_on(
    supervisor: Supervisor, tmp_path: Path
) -> None:
    supervisor.max_restarts = 2
    supervisor.restart_window_s = 2.0
    supervisor.start([sleeper("flaky", tmp_path)])
    kill_and_restart(supervisor, "flaky")
    kill_and_restart(supervisor, "flaky")
    os.kill(supervisor.running["flaky"].process.pid, signal.SIGKILL)
    # The budget is spent: no restart, and no exception that would stop everything else.
    assert not wait_for(lambda: bool(supervisor.restart_dead()), 0.5)
    assert supervisor.running["flaky"].held
    # Once the window has moved past the first restart, it is tried again.
    restarted: list[str] = []
    assert wait_for(lambda: bool(restarted.extend(supervisor.restart_dead()) or restarted), 5.0)
    assert restarted == ["flaky"] and alive(supervisor.running["flaky"].process.pid)
    assert supervisor.running["flaky"].restarts == 3


def test_restart_dead_clears_what_the_dead_leader_left_in_its_group(supervisor: Supervisor, tmp_path: Path) -> None:
    """A leader that dies leaves its children (workers holding the port); the restart must not trip on them."""
    port = free_port()
    server = tmp_path / "server.py"
    server.write_text(
        "import http.server, sys\n"
        "http.server.ThreadingHTTPServer(('127.0.0.1', int(sys.argv[1])), http.server.SimpleHTTPRequestHandler)"
        ".serve_forever()\n"
    )
    spec = ServiceSpec(
        name="forking",
        argv=["sh", "-c", f"'{sys.executable}' '{server}' {port} & wait"],
        healthy=lambda: http_ok(f"http://127.0.0.1:{port}/", timeout=0.5),
        log_path=tmp_path / "logs" / "forking.log",
        cwd=tmp_path,
        ports=(port,),
        start_timeout_s=15.0,
    )
    supervisor.start([spec])
    old_group = group_members(supervisor.running["forking"].process.pid)
    assert len(old_group) == 2
    kill_and_restart(supervisor, "forking")
    assert all_gone(old_group), "the dead leader's children survived the restart"
    assert wait_for(spec.healthy, 10.0)


# --------------------------------------------------------------------------------------------- stopping


def test_stop_all_leaves_no_process_behind_including_grandchildren(supervisor: Supervisor, tmp_path: Path) -> None:
    supervisor.start(
        [
            sleeper("forks", tmp_path, "sleep 1000 & sleep 1000 & wait"),
            http_service("web", tmp_path),
        ]
    )
    supervisor.start([sleeper("nested", tmp_path, "sh -c 'sleep 1000 & wait' & sleep 1000")])
    pids: set[int] = set()
    for entry in supervisor.running.values():
        pids |= group_members(entry.process.pid)
    assert len(pids) >= 2 + 1 + 3, pids  # forks: sh + 2 sleeps, web, nested: sh + sh + 2 sleeps
    supervisor.stop_all()
    assert all_gone(pids), [pid for pid in pids if alive(pid)]
    assert supervisor.running == {}
    assert not list((tmp_path / "run").glob("*.pid"))


def test_stop_kills_what_ignores_sigterm(supervisor: Supervisor, tmp_path: Path) -> None:
    spec = sleeper("stubborn", tmp_path, "trap '' TERM; sleep 1000 & sleep 1000 & wait; wait")
    supervisor.start([spec])
    pids = group_members(supervisor.running["stubborn"].process.pid)
    started = time.monotonic()
    supervisor.stop_many(["stubborn"], timeout=1.0)
    assert time.monotonic() - started < 5.0
    assert all_gone(pids)


def test_stop_all_stops_later_groups_first(supervisor: Supervisor, tmp_path: Path) -> None:
    """Applications (started last) must be gone before the stores they write to get SIGTERM."""
    record = tmp_path / "stopped.txt"

    def recorder(name: str) -> ServiceSpec:
        ready = tmp_path / f"{name}.ready"
        code = (
            "import signal, sys, time\n"
            "def bye(*_):\n"
            # Apps take a while to shut down: stopped together with the stores, they would finish last.
            f"    time.sleep({0.5 if name.startswith('app') else 0.0})\n"
            f"    with open({str(record)!r}, 'a') as f: f.write({name!r} + '\\n')\n"
            "    sys.exit(0)\n"
            "signal.signal(signal.SIGTERM, bye)\n"
            f"open({str(ready)!r}, 'w').close()\n"
            "while True: time.sleep(1)\n"
        )
        return ServiceSpec(
            name=name,
            argv=[sys.executable, "-c", code],
            healthy=ready.exists,  # the handler is installed
            log_path=tmp_path / f"{name}.log",
            ready_file=ready,
        )

    supervisor.start([recorder("store-a"), recorder("store-b")])
    supervisor.start([recorder("app-a"), recorder("app-b")])
    supervisor.stop_all()
    order = record.read_text().split()
    assert sorted(order[:2]) == ["app-a", "app-b"], order
    assert sorted(order[2:]) == ["store-a", "store-b"], order


# --------------------------------------------------------------------------------------------- pid files


@pytest.mark.parametrize("content", ["dead", "not a pid\n", ""])
def test_stale_pid_file_does_not_block_start(supervisor: Supervisor, tmp_path: Path, content: str) -> None:
    if content == "dead":
        gone = subprocess.Popen(["true"])
        gone.wait()
        content = str(gone.pid)
    run_dir = tmp_path / "run"
    (run_dir / "web.pid").write_text(content)
    spec = http_service("web", tmp_path)
    supervisor.start([spec])
    assert spec.healthy()
    assert (run_dir / "web.pid").read_text().strip() == str(supervisor.running["web"].process.pid)


def test_pid_file_of_a_foreign_live_process_is_not_killed(supervisor: Supervisor, tmp_path: Path) -> None:
    stranger = subprocess.Popen(["sleep", "1000"], start_new_session=True)
    try:
        (tmp_path / "run" / "web.pid").write_text(str(stranger.pid))
        supervisor.start([http_service("web", tmp_path)])
        assert stranger.poll() is None, "the supervisor killed a process that was not its own"
    finally:
        stranger.kill()
        stranger.wait()


def test_leftover_process_of_ours_is_killed_and_replaced(supervisor: Supervisor, tmp_path: Path) -> None:
    """A supervisor killed before PDEATHSIG acted left its service running, holding the port."""
    spec = http_service("web", tmp_path)
    leftover = subprocess.Popen(
        spec.argv, cwd=tmp_path, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        assert wait_for(spec.healthy, 10.0)
        (tmp_path / "run" / "web.pid").write_text(str(leftover.pid))
        supervisor.start([spec])
        assert leftover.wait(timeout=5) == -signal.SIGKILL
        assert supervisor.running["web"].process.pid != leftover.pid
        assert spec.healthy()
    finally:
        if leftover.poll() is None:
            leftover.kill()
            leftover.wait()


# --------------------------------------------------------------------------------------------- busy ports


def test_busy_port_fails_before_anything_starts(supervisor: Supervisor, tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        fine = http_service("fine", tmp_path)
        blocked = http_service("blocked", tmp_path, port=port)
        marker = "# fine-"
        assert fine.argv[-1].count(marker) == 1
        fine_marker = fine.argv[-1].split(marker)[1].strip()
        blocked_marker = blocked.argv[-1].split("# blocked-")[1].strip()
        with pytest.raises(StartError) as caught:
            supervisor.start([fine, blocked])
        message = str(caught.value)
        assert "already in use" in message
        assert str(port) in message
        assert "blocked" in message
        assert supervisor.running == {}, "a group with a busy port must start none of its services"
        assert not pids_with(fine_marker) and not pids_with(blocked_marker)
        assert not list((tmp_path / "run").glob("*.pid"))


# --------------------------------------------------------------------------------------------- supervisor death

SUPERVISOR_SCRIPT = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from node.runtime.services import ServiceSpec
    from node.runtime.supervisor import Supervisor

    run_dir, shell = Path(sys.argv[1]), sys.argv[2]
    supervisor = Supervisor(run_dir, progress=lambda _line: None)
    spec = ServiceSpec(name="sleeper", argv=["sh", "-c", shell], healthy=lambda: True, log_path=run_dir / "s.log")
    supervisor.start([spec])
    print(supervisor.running["sleeper"].process.pid, flush=True)
    time.sleep(1000)
    """
)


def run_doomed_supervisor(tmp_path: Path, shell: str) -> tuple[int, set[int]]:
    """Start a supervisor in its own process, SIGKILL it; returns (its service's pid, the service's group)."""
    script = tmp_path / "supervise.py"
    script.write_text(SUPERVISOR_SCRIPT)
    process = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path / "run"), shell],
        cwd=PROJECT_ROOT,
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        child = int(process.stdout.readline())
        assert wait_for(lambda: len(group_members(child)) >= shell.count("sleep"), 5.0)
        group = group_members(child)
        assert alive(child)
    finally:
        process.kill()
        process.wait()
    return child, group


def test_children_die_with_a_killed_supervisor(tmp_path: Path) -> None:
    child, _ = run_doomed_supervisor(tmp_path, f"exec sleep 1000 # {uuid.uuid4().hex}")
    assert all_gone([child]), "the service outlived its SIGKILLed supervisor (PDEATHSIG not set?)"


def test_next_start_clears_grandchildren_orphaned_by_a_killed_supervisor(tmp_path: Path) -> None:
    """PDEATHSIG reaches only the direct child; its own children (a Celery beat, say) are left over.

    The next supervisor on the same run directory must get rid of them before it starts the service again.
    """
    shell = f"sleep 1000 & sleep 1000 # {uuid.uuid4().hex}"
    child, group = run_doomed_supervisor(tmp_path, shell)
    assert all_gone([child])
    orphans = group - {child}
    assert orphans
    successor = Supervisor(tmp_path / "run", progress=lambda _line: None)
    try:
        successor.start(
            [ServiceSpec(name="sleeper", argv=["sh", "-c", shell], healthy=lambda: True, log_path=tmp_path / "s.log")]
        )
        assert all_gone(orphans), "processes orphaned by the killed supervisor survived the next start"
    finally:
        successor.stop_all()
        for pid in orphans:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
