"""Starts local processes, waits until each is healthy, restarts any that die, and stops them all.

Every child runs in its own process group (so gunicorn's and Celery's own children stop with it)
and gets SIGKILL from the kernel if the supervisor itself dies (``PR_SET_PDEATHSIG``). That signal
reaches the direct children only; what they forked themselves (a Celery beat, say) is left in the
dead child's process group and is killed by the next start. Pid files under ``run_dir`` record what
is running; a pid file whose process is gone is stale and simply replaced.

A service that dies is restarted, within a budget that recovers over time: at most ``max_restarts``
restarts in any ``restart_window_s`` (a sliding window). A service that spends its budget stays down
until its oldest restart in the window has aged out, then is tried again — a crash loop costs a few
restarts per window, and a fault that passes (a store back, a disk freed) never stops the federation.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from node.runtime.services import ServiceSpec, port_is_free

_PR_SET_PDEATHSIG = 1


class StartError(Exception):
    """A service that would not start; carries the tail of its log."""


class Interrupted(Exception):
    """Ctrl-C or SIGTERM arrived while services were still starting."""


# Loaded once here: loading a library between fork and exec (in ``preexec_fn``) can deadlock.
_LIBC = ctypes.CDLL("libc.so.6", use_errno=True)


def _die_with_parent(parent_pid: int) -> None:
    _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    # The parent may have died between fork and prctl; then the signal will never come.
    if os.getppid() != parent_pid:
        os.kill(os.getpid(), signal.SIGKILL)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie has exited already; only its parent has not reaped it yet.
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z"):
            return False
    return True


def _state(stat_path: Path) -> str | None:
    try:
        return stat_path.read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def group_alive(pgid: int) -> bool:
    """Whether any process of process group ``pgid`` still runs.

    A zombie leader of a multi-threaded process counts as running while any of its threads has
    not exited yet: until the last one has, the process still holds its files (and its ports).
    """
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) != pgid:
            continue
        if fields[0] not in ("Z", "X"):
            return True
        with contextlib.suppress(OSError):
            if any(_state(task / "stat") not in (None, "Z", "X") for task in (entry / "task").iterdir()):
                return True
    return False


def kill_group(pgid: int, leader_alive: bool = False, ports: Iterable[int] = (), timeout: float = 5.0) -> None:
    """SIGKILL process group ``pgid`` (and, if ``leader_alive``, process ``pgid`` itself) and wait until
    all of it is gone and ``ports`` are free again, for at most ``timeout`` seconds."""
    if leader_alive:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pgid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
    ports = list(ports)

    def lingering() -> bool:
        return group_alive(pgid) or (leader_alive and pid_alive(pgid)) or not all(port_is_free(port) for port in ports)

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and lingering():
        time.sleep(0.02)


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@dataclass
class Running:
    spec: ServiceSpec
    process: subprocess.Popen[bytes]
    started_at: float
    restarts: int = 0  # since the supervisor started
    recent: deque[float] = field(default_factory=deque)  # when the restarts within the window happened
    held: bool = False  # its restart budget is spent: it waits for the window to move on


class Supervisor:
    """Owns a set of processes. Spawn and stop only from the thread that created it."""

    def __init__(
        self, run_dir: Path, progress: Callable[[str], None] = print, stop: threading.Event | None = None
    ) -> None:
        self.run_dir = run_dir
        self.stop_requested = stop
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.progress = progress
        self.running: dict[str, Running] = {}
        self.groups: list[list[str]] = []  # in start order; stopped in reverse so apps go before their stores
        # The restart budget per service: this many restarts in any window of this many seconds.
        self.max_restarts = 5
        self.restart_window_s = 300.0

    def _pid_file(self, name: str) -> Path:
        return self.run_dir / f"{name}.pid"

    def _clear_stale(self, spec: ServiceSpec) -> None:
        pid_file = self._pid_file(spec.name)
        if not pid_file.exists():
            return
        try:
            pid = int(pid_file.read_text().strip())
        except ValueError:
            pid = -1
        if pid > 0 and pid_alive(pid):
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                cmdline = []
            if [part.decode(errors="replace") for part in cmdline if part] == spec.argv:
                # Ours, orphaned by a supervisor that was killed before PDEATHSIG could act.
                self.progress(f"  stopping leftover {spec.name} (pid {pid})")
                kill_group(pid, leader_alive=True, ports=spec.ports)
        elif pid > 0 and group_alive(pid):
            # The leader is gone (PDEATHSIG) but PDEATHSIG does not reach its own children (a Celery
            # beat, gunicorn workers): they are still in its group. A pid that is some group's id is
            # never handed out again while the group lives, so the group can only be ours.
            self.progress(f"  stopping leftovers of {spec.name} (process group {pid})")
            kill_group(pid, ports=spec.ports)
        pid_file.unlink(missing_ok=True)

    def _check_ports(self, spec: ServiceSpec) -> None:
        busy = [port for port in spec.ports if not port_is_free(port)]
        if busy:
            raise StartError(
                f"端口 {busy} 已被占用 / port {busy} already in use, needed by {spec.name}: "
                "stop whatever uses it or choose other ports (e.g. --base-port)"
            )

    def spawn(self, spec: ServiceSpec) -> Running:
        self._clear_stale(spec)
        self._check_ports(spec)
        if spec.ready_file is not None:
            spec.ready_file.parent.mkdir(parents=True, exist_ok=True)
            spec.ready_file.unlink(missing_ok=True)
        spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        with spec.log_path.open("ab") as log:
            process = subprocess.Popen(
                spec.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=spec.cwd,
                env={**os.environ, **spec.env},
                start_new_session=True,
                preexec_fn=functools.partial(_die_with_parent, os.getpid()),
            )
        self._pid_file(spec.name).write_text(str(process.pid))
        previous = self.running.get(spec.name)
        running = Running(spec, process, time.monotonic())
        if previous is not None:
            running.restarts, running.recent = previous.restarts, previous.recent
        self.running[spec.name] = running
        return running

    def wait_healthy(self, names: Iterable[str]) -> None:
        pending = set(names)
        while pending:
            if self.stop_requested is not None and self.stop_requested.is_set():
                raise Interrupted("stopped while starting")
            for name in sorted(pending):
                entry = self.running[name]
                if entry.process.poll() is not None:
                    raise StartError(
                        f"{name} 启动失败 / {name} exited with code {entry.process.returncode} while starting. "
                        f"Log {entry.spec.log_path}:\n{log_tail(entry.spec.log_path)}"
                    )
                if entry.spec.healthy():
                    pending.discard(name)
                    self.progress(f"  {name} healthy ({time.monotonic() - entry.started_at:.1f}s)")
                elif time.monotonic() - entry.started_at > entry.spec.start_timeout_s:
                    raise StartError(
                        f"{name} 未能在 {entry.spec.start_timeout_s:.0f}s 内就绪 / {name} not healthy after "
                        f"{entry.spec.start_timeout_s:.0f}s. Log {entry.spec.log_path}:\n"
                        f"{log_tail(entry.spec.log_path)}"
                    )
            time.sleep(0.2)

    def start(self, specs: list[ServiceSpec]) -> None:
        """Spawn a group of services together and wait until all are healthy."""
        self.groups.append([spec.name for spec in specs])
        # Every port of the group is checked before any process starts, so a busy port starts nothing.
        for spec in specs:
            self._clear_stale(spec)
        for spec in specs:
            self._check_ports(spec)
        for spec in specs:
            self.spawn(spec)
        self.wait_healthy(spec.name for spec in specs)

    def restart_dead(self) -> list[str]:
        """Restart every service that exited and still has restart budget; returns their names.

        Never gives up for good: a service whose budget is spent (``max_restarts`` in the last
        ``restart_window_s``) is left down, said once, and restarted once the window has moved on.
        """
        restarted = []
        now = time.monotonic()
        for name, entry in list(self.running.items()):
            code = entry.process.poll()
            if code is None:
                continue
            while entry.recent and now - entry.recent[0] >= self.restart_window_s:
                entry.recent.popleft()
            if len(entry.recent) >= self.max_restarts:
                if not entry.held:
                    entry.held = True
                    wait = self.restart_window_s - (now - entry.recent[0])
                    self.progress(
                        f"  {name} 反复退出 / {name} keeps dying (exit {code}, {len(entry.recent)} restarts in "
                        f"{self.restart_window_s:.0f}s); next try in {wait:.0f}s; see {entry.spec.log_path}"
                    )
                continue
            self.progress(f"  {name} exited with {code}; restarting")
            entry.held = False
            entry.restarts += 1
            entry.recent.append(now)
            # The leader is gone, but children it forked (workers holding its port) may not be.
            kill_group(entry.process.pid, ports=entry.spec.ports)
            try:
                self.spawn(entry.spec)
            except (StartError, OSError) as exc:  # a busy port, a missing binary: tried again within the budget
                self.progress(f"  {name} could not be restarted: {exc}")
                continue
            restarted.append(name)
        return restarted

    def stop(self, name: str, timeout: float = 10.0) -> None:
        self.stop_many([name], timeout)

    def stop_many(self, names: list[str], timeout: float = 10.0) -> None:
        """SIGTERM every group at once, wait up to ``timeout`` for them together, then SIGKILL the rest."""
        entries = [self.running.pop(name) for name in names if name in self.running]
        for entry in entries:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(entry.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for entry in entries:
            with contextlib.suppress(subprocess.TimeoutExpired):
                entry.process.wait(timeout=max(0.0, deadline - time.monotonic()))
        for entry in entries:
            # The group may still hold children (gunicorn workers, celery pool) after its leader exits.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(entry.process.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                entry.process.wait(timeout=5)
            self._pid_file(entry.spec.name).unlink(missing_ok=True)

    def stop_all(self) -> None:
        for group in reversed(self.groups):
            self.stop_many(group)
        self.groups.clear()
        self.stop_many(list(self.running))

    def watch(self, stop: threading.Event, interval: float = 1.0) -> None:
        """Keep everything running until ``stop`` is set."""
        while not stop.wait(interval):
            self.restart_dead()


@contextlib.contextmanager
def signals_set(stop: threading.Event) -> Iterable[None]:
    """Turn SIGINT and SIGTERM into ``stop`` being set, for the duration of the block."""

    def handler(signum: int, frame: object) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
