"""A sandbox (``python -m sandboxes.<name>``) run as its own process for a test, with its data and config."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from node.runtime.services import PROJECT_ROOT, free_port, http_ok
from tests.conftest import wait_for


def spawn(module: str, port: int, data_dir: Path, config_path: Path) -> subprocess.Popen[bytes]:
    """Start ``module`` on ``port`` and wait until its ``/healthz`` answers."""
    command = [sys.executable, "-m", module, "--port", str(port), "--data", str(data_dir), "--config", str(config_path)]
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if not wait_for(lambda: http_ok(f"http://127.0.0.1:{port}/healthz"), timeout=15):
        process.kill()
        raise RuntimeError(f"{module} did not start: {process.stderr.read() if process.stderr else ''}")
    return process


@dataclass
class SandboxProcess:
    module: str
    url: str
    data_dir: Path
    config_path: Path
    port: int
    process: subprocess.Popen[bytes]

    @classmethod
    def started(cls, module: str, data_dir: Path, config_path: Path) -> SandboxProcess:
        port = free_port()
        process = spawn(module, port, data_dir, config_path)
        return cls(module, f"http://127.0.0.1:{port}", data_dir, config_path, port, process)

    def start(self) -> None:
        """Start it again on the same port and data (after a stop or a kill)."""
        self.process = spawn(self.module, self.port, self.data_dir, self.config_path)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(timeout=10)
