"""A slow, lossy link as a TCP proxy: one-way latency, loss as retransmission stalls, connection resets.

Bandwidth is not this proxy's job: it is shaped by the kernel (``tc qdisc tbf`` on a veth pair into a
network namespace, see bench/bench_slow_link.py), because a user-space proxy cannot pace bytes the way
a link does. ``netem`` is not available on this machine, so delay and loss are modelled here.

The model, per direction of every proxied connection:

- **Latency**: each chunk read from one side is written to the other ``delay_s`` later (order kept), so
  a request/response round trip costs ``2 × delay_s`` more; 150 ms each way makes the issue's 300 ms RTT.
- **Loss**: TCP never loses bytes; a lost segment shows up as a stall until the sender retransmits. A
  chunk of ``n`` bytes spans ``ceil(n / MSS)`` segments; with segment loss probability ``loss``, the chunk
  is held back one retransmission timeout (``rto_s``, default 200 ms + the RTT, Linux's minimum RTO plus
  the path) with probability ``1 - (1 - loss)^segments`` — and everything behind it waits, as in TCP.
- **Resets**: with ``resets_per_min`` > 0 a connection is cut (both sides closed abruptly) at exponential
  intervals: what a flapping village uplink does to a request in flight. The client must retry.

Counts bytes in each direction and stalls/resets (:class:`LinkStats`). Deterministic with ``seed``.

    python bench/netproxy.py --listen 127.0.0.1:9000 --upstream 127.0.0.1:8000 --delay-ms 150 --loss 0.01
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import random
import signal
import sys
import time
from dataclasses import asdict, dataclass

MSS = 1448  # bytes of payload per TCP segment with timestamps on a 1500-byte MTU
CHUNK = 16 * 1024


@dataclass
class LinkModel:
    delay_s: float = 0.150
    loss: float = 0.0
    rto_s: float | None = None  # default: 0.2 + 2 * delay_s
    resets_per_min: float = 0.0
    seed: int = 1

    @property
    def stall_s(self) -> float:
        return self.rto_s if self.rto_s is not None else 0.2 + 2 * self.delay_s


@dataclass
class LinkStats:
    connections: int = 0
    bytes_up: int = 0  # client → upstream
    bytes_down: int = 0  # upstream → client
    stalls: int = 0
    resets: int = 0


class SlowLinkProxy:
    def __init__(self, listen: tuple[str, int], upstream: tuple[str, int], model: LinkModel) -> None:
        self.listen = listen
        self.upstream = upstream
        self.model = model
        self.stats = LinkStats()
        self._rng = random.Random(model.seed)
        self._server: asyncio.base_events.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, *self.listen)

    @property
    def port(self) -> int:
        """The port it listens on (useful with port 0)."""
        assert self._server is not None, "start() first"
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def _stalled(self, size: int) -> bool:
        if self.model.loss <= 0:
            return False
        segments = max(1, math.ceil(size / MSS))
        return self._rng.random() < 1 - (1 - self.model.loss) ** segments

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, up: bool) -> None:
        """Copy with the delay applied per chunk; a stalled chunk delays itself and all that follows."""
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        released_at = 0.0

        async def deliver() -> None:
            while True:
                due, data = await queue.get()
                if not data:
                    break
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                writer.write(data)
                await writer.drain()
            with contextlib.suppress(OSError, RuntimeError):
                writer.write_eof()

        sender = asyncio.create_task(deliver())
        try:
            while True:
                data = await reader.read(CHUNK)
                now = time.monotonic()
                if data:
                    due = now + self.model.delay_s
                    if self._stalled(len(data)):
                        self.stats.stalls += 1
                        due += self.model.stall_s
                    released_at = max(released_at, due)  # in order: never before what came earlier
                    if up:
                        self.stats.bytes_up += len(data)
                    else:
                        self.stats.bytes_down += len(data)
                await queue.put((released_at, data))
                if not data:
                    break
            await sender
        except (ConnectionError, asyncio.CancelledError):
            sender.cancel()
            raise

    async def _reset_after(self, tasks: list[asyncio.Task[None]], writers: list[asyncio.StreamWriter]) -> None:
        rate = self.model.resets_per_min / 60.0
        await asyncio.sleep(self._rng.expovariate(rate))
        self.stats.resets += 1
        for task in tasks:
            task.cancel()
        for writer in writers:
            transport = writer.transport
            if transport is not None:
                transport.abort()

    async def _handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        self.stats.connections += 1
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            client_writer.transport.abort()
            return
        tasks = [
            asyncio.create_task(self._pipe(client_reader, upstream_writer, up=True)),
            asyncio.create_task(self._pipe(upstream_reader, client_writer, up=False)),
        ]
        killer = None
        if self.model.resets_per_min > 0:
            killer = asyncio.create_task(self._reset_after(tasks, [client_writer, upstream_writer]))
        try:
            await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            if killer is not None:
                killer.cancel()
            for writer in (client_writer, upstream_writer):
                with contextlib.suppress(OSError, RuntimeError):
                    writer.close()


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host or "127.0.0.1", int(port)


async def _serve(args: argparse.Namespace) -> None:
    model = LinkModel(
        delay_s=args.delay_ms / 1000,
        loss=args.loss,
        rto_s=args.rto_ms / 1000 if args.rto_ms else None,
        resets_per_min=args.resets_per_min,
        seed=args.seed,
    )
    proxy = SlowLinkProxy(_address(args.listen), _address(args.upstream), model)
    await proxy.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    print(json.dumps({"listening": args.listen, "model": asdict(model)}), flush=True)
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=1.0)
        if args.stats_file:
            with open(args.stats_file, "w") as handle:
                json.dump(asdict(proxy.stats), handle)
    await proxy.close()
    if args.stats_file:
        with open(args.stats_file, "w") as handle:
            json.dump(asdict(proxy.stats), handle)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", required=True, help="host:port to listen on")
    parser.add_argument("--upstream", required=True, help="host:port to forward to")
    parser.add_argument("--delay-ms", type=float, default=150.0, help="one-way delay")
    parser.add_argument("--loss", type=float, default=0.0, help="segment loss probability (modelled as stalls)")
    parser.add_argument("--rto-ms", type=float, default=0.0, help="stall per loss (default 200 + RTT)")
    parser.add_argument("--resets-per-min", type=float, default=0.0, help="connection resets per minute")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--stats-file", help="JSON byte and stall counts, rewritten every second and at exit")
    asyncio.run(_serve(parser.parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
