"""One timed replication for bench/bench_replication.py ``--link``, run in a child process under a given checkout.

Run by path with ``PYTHONPATH=<checkout>`` so that ``node``, ``sync`` and ``tiers`` come from that checkout
(the current tree or the anchor commit's); this file imports nothing of the project at module level and
only what both code versions have. Prints one JSON line.

    PYTHONPATH=<checkout> python bench/link_run.py catchup <node.json>
    PYTHONPATH=<checkout> python bench/link_run.py push <node.json>
    PYTHONPATH=<checkout> python bench/link_run.py store <source url> <source db> <target url> <target db>
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any


def catchup(config_path: str) -> dict[str, Any]:
    """Bring a village's read model up to date (untimed by the bench: a village projects what it writes)."""
    from node.bootstrap import bootstrap
    from node.config import NodeConfig

    context = bootstrap(NodeConfig.load(Path(config_path)), connect_mqtt=False)
    started = time.perf_counter()
    cases = context.projector.catch_up()
    return {"cases": cases, "seconds": time.perf_counter() - started}


def push(config_path: str) -> dict[str, Any]:
    """The agent's own push: ``sync.link.Link.sync(push=True, pull=False)``, timed from the first request."""
    from node.bootstrap import bootstrap
    from node.config import NodeConfig
    from sync.link import Link

    context = bootstrap(NodeConfig.load(Path(config_path)), connect_mqtt=False)
    context.projector.catch_up()  # nothing left to project: the set-up did it
    link = Link(context)
    started, cpu = time.perf_counter(), time.process_time()
    written = link.sync(push=True, pull=False)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    stats = link.stats()["push"]
    return {
        "seconds": seconds,
        "process_cpu_s": cpu,
        "written": written,
        "errors": stats["errors"],
        "last_error": stats["last_error"],
    }


def store(source_url: str, source_db: str, target_url: str, target_db: str) -> dict[str, Any]:
    """Store to store through the project's replicator, as the link's own loop runs it (batch 500, pipelined)."""
    from node.adapters.docstore import DocStore
    from sync.replicator import StorePeer, replicate

    source = StorePeer(DocStore(source_url, source_db, timeout=120))
    target = StorePeer(DocStore(target_url, target_db, timeout=120))
    started, cpu = time.perf_counter(), time.process_time()
    result = replicate(source, target)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    return {
        "seconds": seconds,
        "process_cpu_s": cpu,
        "written": result.docs_written,
        "errors": len(result.errors),
        "last_error": None,
    }


def main(argv: list[str]) -> int:
    modes = {"catchup": catchup, "push": push, "store": store}
    if not argv or argv[0] not in modes:
        print(__doc__, file=sys.stderr)
        return 2
    print(json.dumps(modes[argv[0]](*argv[1:])), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
