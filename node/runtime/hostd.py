"""The project's own supervisor as a host daemon, for machines where systemd is not PID 1.

Ansible writes one JSON file per process into a directory (the same processes it would give systemd
as units, see ``ansible/roles/service``); ``run`` starts them in ``order`` groups with
:class:`~node.runtime.supervisor.Supervisor`, waits until each group is healthy and keeps them
running. ``ensure`` starts the daemon detached unless it already runs (it prints ``started`` or
``running`` so that Ansible can report a change honestly); ``restart`` and ``stop`` act on the pid
file. A process file is validated before anything starts: a bad one is refused with a reason.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from node.runtime.services import ServiceSpec, http_ok, tcp_open
from node.runtime.supervisor import StartError, Supervisor, kill_group, log_tail, pid_alive, signals_set

READY = "hostd.ready"
PID = "hostd.pid"
FAILED = "hostd.failed"


class ProcessFileError(ValueError):
    """A process file that cannot be used; the message names the file and the field."""


def _health(raw: Any, where: str) -> tuple[Any, tuple[int, ...]]:
    if not isinstance(raw, dict) or len(raw) != 1:
        raise ProcessFileError(
            f"{where}: 'health' must be one of {{'tcp': [host, port]}}, {{'http': url}}, {{'file': path}}"
        )
    ((kind, value),) = raw.items()
    if kind == "tcp" and isinstance(value, list) and len(value) == 2 and isinstance(value[1], int):
        host, port = str(value[0]), int(value[1])
        return (lambda: tcp_open(port, host)), (port,) if host == "127.0.0.1" else ()
    if kind == "http" and isinstance(value, str) and value.startswith(("http://", "https://")):
        return (lambda: http_ok(value)), ()
    if kind == "file" and isinstance(value, str) and value.startswith("/"):
        # Processes that say themselves when they are ready (Celery, the agent) touch this file.
        return Path(value).exists, ()
    raise ProcessFileError(f"{where}: unusable health check {raw!r}")


def load_specs(process_dir: Path, log_dir: Path) -> list[tuple[int, ServiceSpec]]:
    """(order, spec) of every ``*.json`` process file in ``process_dir``."""
    specs = []
    for path in sorted(process_dir.glob("*.json")):
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ProcessFileError(f"{path}: not readable JSON ({exc})") from None
        if not isinstance(raw, dict):
            raise ProcessFileError(f"{path}: not a JSON object")
        name, argv = raw.get("name"), raw.get("argv")
        if not isinstance(name, str) or not name.replace("-", "").replace("_", "").isalnum():
            raise ProcessFileError(f"{path}: 'name' must be letters, digits, '-' or '_'")
        if not isinstance(argv, list) or not argv or not all(isinstance(a, str) and a for a in argv):
            raise ProcessFileError(f"{path}: 'argv' must be a non-empty list of strings")
        env = raw.get("env") or {}
        if not isinstance(env, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
            raise ProcessFileError(f"{path}: 'env' must map strings to strings")
        order = raw.get("order", 0)
        if isinstance(order, bool) or not isinstance(order, int):
            raise ProcessFileError(f"{path}: 'order' must be an integer")
        healthy, ports = _health(raw.get("health"), str(path))
        health_file = raw["health"].get("file")
        cwd = raw.get("cwd")
        specs.append(
            (
                order,
                ServiceSpec(
                    name=name,
                    argv=argv,
                    healthy=healthy,
                    log_path=log_dir / f"{name}.log",
                    env=env,
                    cwd=Path(cwd) if isinstance(cwd, str) else None,
                    ports=ports,
                    start_timeout_s=float(raw.get("start_timeout_s", 90.0)),
                    # A ready file left from the last run must not count: the supervisor removes it first.
                    ready_file=Path(health_file) if health_file else None,
                ),
            )
        )
    return specs


def run(process_dir: Path, run_dir: Path, log_dir: Path) -> int:
    stop = threading.Event()
    (run_dir / READY).unlink(missing_ok=True)
    (run_dir / FAILED).unlink(missing_ok=True)
    supervisor = Supervisor(run_dir, progress=lambda line: print(line, flush=True), stop=stop)
    try:
        with signals_set(stop):
            try:
                specs = load_specs(process_dir, log_dir)
                for order in sorted({o for o, _ in specs}):
                    supervisor.start([spec for o, spec in specs if o == order])
            except (ProcessFileError, StartError) as exc:
                (run_dir / FAILED).write_text(str(exc), encoding="utf-8")
                print(exc, file=sys.stderr, flush=True)
                return 1
            (run_dir / READY).write_text(str(len(specs)))
            supervisor.watch(stop)
    finally:
        supervisor.stop_all()
        (run_dir / READY).unlink(missing_ok=True)
    return 0


def _daemon_pid(run_dir: Path) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        pid = int((run_dir / PID).read_text().strip())
        if pid_alive(pid):
            return pid
    return None


def ensure(process_dir: Path, run_dir: Path, log_dir: Path, timeout: float) -> int:
    if _daemon_pid(run_dir) is not None:
        print("running")
        return 0
    run_dir.mkdir(parents=True, exist_ok=True)
    log_dir.mkdir(parents=True, exist_ok=True)
    for stale in (READY, FAILED):
        (run_dir / stale).unlink(missing_ok=True)
    with (log_dir / "hostd.log").open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "node.runtime.hostd", "run", "--processes", str(process_dir),
             "--run-dir", str(run_dir), "--log-dir", str(log_dir)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    (run_dir / PID).write_text(str(process.pid))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (run_dir / READY).exists():
            print("started")
            return 0
        if process.poll() is not None or (run_dir / FAILED).exists():
            break
        time.sleep(0.2)
    print(
        f"hostd did not become ready; log {log_dir / 'hostd.log'}:\n{log_tail(log_dir / 'hostd.log')}", file=sys.stderr
    )
    return 1


def stop(run_dir: Path, timeout: float = 30.0) -> bool:
    """Stop the daemon (and with it every process it supervises); True if one was running."""
    pid = _daemon_pid(run_dir)
    if pid is None:
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and pid_alive(pid):
        time.sleep(0.1)
    if pid_alive(pid):
        kill_group(pid, leader_alive=True)
    (run_dir / PID).unlink(missing_ok=True)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m node.runtime.hostd", description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["run", "ensure", "restart", "stop"])
    parser.add_argument("--processes", type=Path, required=True, help="directory of the process JSON files")
    parser.add_argument("--run-dir", type=Path, required=True)
    parser.add_argument("--log-dir", type=Path, required=True)
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds ensure/restart wait for health")
    args = parser.parse_args(argv)
    if args.action == "run":
        return run(args.processes, args.run_dir, args.log_dir)
    if args.action == "stop":
        print("stopped" if stop(args.run_dir) else "not running")
        return 0
    if args.action == "restart":
        stop(args.run_dir)
    return ensure(args.processes, args.run_dir, args.log_dir, args.timeout)


if __name__ == "__main__":
    sys.exit(main())
