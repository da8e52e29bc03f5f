"""The run loop every sandbox shares: serve HTTP and run one background thread until SIGTERM or SIGINT."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from typing import Protocol


class Server(Protocol):
    def serve_forever(self, poll_interval: float = ...) -> None: ...
    def shutdown(self) -> None: ...
    def server_close(self) -> None: ...


def serve_until_stopped(
    server: Server, stopping: threading.Event, background: Callable[[], None], name: str, join_s: float = 2.0
) -> None:
    """Serve until a signal sets ``stopping``; ``background`` (the sandbox's clock) runs beside and is joined."""
    worker = threading.Thread(target=background, name=name, daemon=True)
    worker.start()

    def stop(*_: object) -> None:
        stopping.set()
        threading.Thread(target=server.shutdown, daemon=True).start()  # shutdown() waits for serve_forever

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        server.serve_forever(poll_interval=0.1)
    finally:
        server.server_close()
        stopping.set()
        worker.join(timeout=join_s)
