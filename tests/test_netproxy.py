"""bench/netproxy.py: the slow-link proxy really delays, stalls, counts and resets."""

from __future__ import annotations

import asyncio
import time

from bench.netproxy import LinkModel, SlowLinkProxy


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()


async def _round_trip(model: LinkModel, payload: bytes) -> tuple[float, bytes, SlowLinkProxy]:
    server = await asyncio.start_server(_echo, "127.0.0.1", 0)
    upstream = server.sockets[0].getsockname()[:2]
    proxy = SlowLinkProxy(("127.0.0.1", 0), upstream, model)
    await proxy.start()
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    started = time.monotonic()
    writer.write(payload)
    await writer.drain()
    echoed = await reader.readexactly(len(payload))
    elapsed = time.monotonic() - started
    writer.close()
    await proxy.close()
    server.close()
    return elapsed, echoed, proxy


def test_each_direction_is_delayed_and_every_byte_arrives_and_is_counted() -> None:
    payload = bytes(range(256)) * 200
    elapsed, echoed, proxy = asyncio.run(_round_trip(LinkModel(delay_s=0.1), payload))
    assert echoed == payload
    assert 0.2 <= elapsed < 1.5  # one delay each way
    assert proxy.stats.bytes_up == len(payload) and proxy.stats.bytes_down == len(payload)
    assert proxy.stats.stalls == 0


def test_a_lost_segment_stalls_the_stream_for_a_retransmission_timeout() -> None:
    elapsed, echoed, proxy = asyncio.run(_round_trip(LinkModel(delay_s=0.01, loss=1.0, rto_s=0.3), b"x" * 100))
    assert echoed == b"x" * 100
    assert proxy.stats.stalls >= 2  # one each way
    assert elapsed >= 0.6


def test_resets_cut_a_connection_in_flight() -> None:
    async def scenario() -> bool:
        server = await asyncio.start_server(_echo, "127.0.0.1", 0)
        upstream = server.sockets[0].getsockname()[:2]
        proxy = SlowLinkProxy(("127.0.0.1", 0), upstream, LinkModel(0.01, resets_per_min=600))
        await proxy.start()
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        cut = False
        try:
            for _ in range(200):  # ~10 resets a second on average: one comes within a few seconds
                writer.write(b"ping")
                await writer.drain()
                if not await asyncio.wait_for(reader.read(4), timeout=2):
                    cut = True
                    break
                await asyncio.sleep(0.02)
        except (ConnectionError, TimeoutError):
            cut = True
        await proxy.close()
        server.close()
        return cut and proxy.stats.resets >= 1

    assert asyncio.run(scenario())
