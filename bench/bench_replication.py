"""Replication throughput: pouchdb-server's native ``_replicate`` against ``sync.replicator``.

Starts two pouchdb-server processes on free loopback ports, loads event-like documents (~500 bytes)
into a source database on the first, then replicates it into fresh databases on the second with:
native ``POST /_replicate`` (sent to the target's server, then to the source's), ``sync.replicator``
(pipelined, bodies of one-revision docs taken from the changes feed), the same without that
shortcut or without pipelining, and the plain protocol loop run sequentially with batch 1,000 for
reference. The measurements are interleaved and repeated; the table shows the median of the repeats.

    .venv/bin/python bench/bench_replication.py [--docs 20000] [--batch 1000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from node.adapters.docstore import DocStore
from node.runtime.services import docstore_spec, free_port
from node.runtime.supervisor import Supervisor
from sync.replicator import StorePeer, replicate

HEADLINE = "sync.replicator (pipelined, docs in feed), batch {batch}"
KINDS = ["accepted", "prereviewed", "routed", "received", "approved", "delivered"]


def event_doc(i: int, rng: random.Random) -> dict:
    node = f"4309{rng.randrange(2, 23):02d}{rng.randrange(100, 120):03d}{rng.randrange(200, 230):03d}"
    case = f"{node}-20240{rng.randrange(1, 10)}{rng.randrange(10, 28)}-{i // 4}"
    return {
        "_id": f"event:{case}:{i:07d}",
        "type": rng.choice(KINDS),
        "case": case,
        "matter": f"430900-JF-{rng.randrange(1, 200):04d}",
        "actor": {"staff": f"{node}-s{rng.randrange(1, 40):02d}", "role": "acceptor"},
        "node": node,
        "hlc": f"2024-03-{rng.randrange(1, 29):02d}T{rng.randrange(8, 18):02d}:{rng.randrange(60):02d}:00.000Z/{i % 7}",
        "prev": uuid.UUID(int=rng.getrandbits(128)).hex * 2,
        "signature": {"alg": "ecdsa-p256", "key": node, "value": uuid.UUID(int=rng.getrandbits(128)).hex * 2},
        "payload": {"note": "材料齐全，予以受理" * rng.randrange(1, 3), "window": rng.randrange(1, 9)},
    }


def load(session: requests.Session, db_url: str, count: int) -> None:
    session.put(db_url).raise_for_status()
    rng = random.Random(7)
    for start in range(0, count, 1000):
        docs = [event_doc(i, rng) for i in range(start, min(count, start + 1000))]
        session.post(f"{db_url}/_bulk_docs", json={"docs": docs}).raise_for_status()


def doc_count(session: requests.Session, db_url: str) -> int:
    return int(session.get(db_url).json()["doc_count"])


def native(session: requests.Session, via: str, source: str, target: str) -> None:
    response = session.post(f"{via}/_replicate", json={"source": source, "target": target}, timeout=600)
    response.raise_for_status()
    if not response.json().get("ok"):
        raise RuntimeError(f"native replication failed: {response.text[:300]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=1000, help="batch size for sync.replicator (pipelined)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="bench-replication-"))
    supervisor = Supervisor(root / "run", progress=lambda _line: None)
    source_port, target_port = free_port(), free_port()
    source_url, target_url = f"http://127.0.0.1:{source_port}", f"http://127.0.0.1:{target_port}"
    session = requests.Session()
    try:
        supervisor.start(
            [
                docstore_spec("source-store", root / "source", source_port),
                docstore_spec("target-store", root / "target", target_port),
            ]
        )
        source_db = f"{source_url}/events"
        started = time.perf_counter()
        load(session, source_db, args.docs)
        print(f"loaded {args.docs} docs into the source in {time.perf_counter() - started:.1f}s")
        sample = [event_doc(i, random.Random(i)) for i in range(200)]
        size = statistics.mean(len(json.dumps(doc, ensure_ascii=False).encode()) for doc in sample)
        print(f"mean doc size {size:.0f} bytes (UTF-8 JSON)")

        def sync_run(batch: int, pipelined: bool, include_docs: bool) -> Callable[[str], None]:
            def run(name: str) -> None:
                result = replicate(
                    StorePeer(DocStore(source_url, "events", timeout=120), include_docs=include_docs),
                    StorePeer(DocStore(target_url, name, timeout=120)),
                    batch_size=batch,
                    pipelined=pipelined,
                )
                if result.errors:
                    raise RuntimeError(f"replication errors: {result.errors[:3]}")

            return run

        methods: dict[str, Callable[[str], None]] = {
            "native _replicate (sent to target)": lambda name: native(
                session, target_url, source_db, f"{target_url}/{name}"
            ),
            "native _replicate (sent to source)": lambda name: native(
                session, source_url, source_db, f"{target_url}/{name}"
            ),
            HEADLINE.format(batch=args.batch): sync_run(args.batch, True, True),
            f"  same, bulk_get for every doc, batch {args.batch}": sync_run(args.batch, True, False),
            "  same, sequential, batch 1000": sync_run(1000, False, True),
            "plain sequential protocol loop, batch 1000": sync_run(1000, False, False),
        }
        timings: dict[str, list[float]] = {label: [] for label in methods}
        for round_ in range(args.repeat):
            for label, run in methods.items():
                name = f"t{round_}-{uuid.uuid4().hex[:8]}"
                session.put(f"{target_url}/{name}").raise_for_status()
                started = time.perf_counter()
                run(name)
                timings[label].append(time.perf_counter() - started)
                copied = doc_count(session, f"{target_url}/{name}")
                if copied != args.docs:
                    raise RuntimeError(f"{label}: target holds {copied} docs, expected {args.docs}")

        rates = {label: args.docs / statistics.median(seconds) for label, seconds in timings.items()}
        print(f"\n{args.docs} docs, median of {args.repeat} interleaved runs (every target verified complete)\n")
        print(f"{'method':<56} {'median s':>9} {'docs/s':>8} {'runs docs/s':>20}")
        for label, seconds in timings.items():
            runs = " ".join(f"{args.docs / s:.0f}" for s in seconds)
            print(f"{label:<56} {statistics.median(seconds):>9.2f} {rates[label]:>8.0f} {runs:>20}")
        best_native = max(rate for label, rate in rates.items() if label.startswith("native"))
        ours = rates[HEADLINE.format(batch=args.batch)]
        print(f"\nratio sync.replicator / best native: {ours / best_native:.2f}x")
    finally:
        supervisor.stop_all()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
