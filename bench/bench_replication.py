"""Replication throughput: pouchdb-server's native ``_replicate`` against ``sync.replicator``.

Starts two pouchdb-server processes on free loopback ports, loads event-like documents (~500 bytes)
into a source database on the first, then replicates it into fresh databases on the second with:
native ``POST /_replicate`` (sent to the target's server, then to the source's), ``sync.replicator``
(pipelined, bodies of one-revision docs taken from the changes feed), the same without that
shortcut or without pipelining, and the plain protocol loop run sequentially with batch 1,000 for
reference. The measurements are interleaved and repeated; the table shows the median of the repeats.

    .venv/bin/python bench/bench_replication.py [--docs 20000] [--batch 1000] [--repeat 3]

``--link`` (issue 10) measures what a link really does beside the store-to-store copy of the same documents:
a village's store holds N signed events as the village wrote them (``bench.yeargen``: applications accepted
at 八字哨第1村 on one day, signed with its key, its certificate documents before them) and its read model is
brought up to date (untimed: a village projects what it writes). Each round then runs, in an order that
rotates from round to round:

- **store to store**: ``sync.replicator.replicate`` from the village's pouchdb-server into a fresh
  pouchdb-server (batch 500, pipelined — the link's own settings);
- **link**: the village agent's own push, ``sync.link.Link.sync(push=True, pull=False)``, into a fresh parent
  (its township: pouchdb-server, Mosquitto and the node's web under gunicorn, as ``tongban node run`` starts
  it) through ``/sync/v1``: signed requests, the trust filter on the village side, the parent's
  authentication and authority checks, signed answers;
- **link, anchor** (with ``--anchor DIR``, a checkout of another commit, e.g. ``git worktree add
  /tmp/bench-anchor <sha>``): the same push with the village's process and the parent's web running that
  checkout's code (``PYTHONPATH``), from its own copy of the same documents and its own read model.

The timed runs happen in child processes (``bench/link_run.py``, run under the checkout being measured);
every target is checked to hold every event. Reported: docs/s of each run, link / store-to-store and
link / anchor per round and on the medians, and the goals (checks cost the link ≤ 15 %, link ≥ 70 % of
store to store). Ends with one JSON line.

    PYTHONPATH=$PWD .venv/bin/python bench/bench_replication.py --link --events 10000 --rounds 4 \\
        --anchor /tmp/bench-anchor
    PYTHONPATH=$PWD .venv/bin/python bench/bench_replication.py --link --quick   # 200 events, 1 round
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from node.adapters.docstore import DocStore
from node.config import NodeConfig
from node.runtime.services import docstore_spec, free_port, gunicorn_spec, mosquitto_spec, port_is_free, redis_spec
from node.runtime.supervisor import Supervisor
from sync.replicator import StorePeer, replicate

ROOT = Path(__file__).resolve().parents[1]
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


# --- --link: the link through a real parent's node API beside store to store (issue 10) -------------------

LINK_VILLAGE = "430903101201"  # 八字哨第1村, under 八字哨镇 (as bench_slow_link)
LINK_DAY = date(2025, 6, 3)
LINK_HELPER = ROOT / "bench" / "link_run.py"
STORE = "store to store"
GOAL_CHECKS_COST = 0.15  # the checks may cost the link at most 15 % against the anchor
GOAL_LINK_SHARE = 0.70  # the link should reach at least 70 % of store to store


class Ports:
    """Loopback ports from a random block no other bench on this machine is using (as bench_slow_link)."""

    def __init__(self) -> None:
        start = random.Random(os.getpid() ^ time.time_ns()).randrange(24000, 58000, 100)
        self.next = start
        self.end = start + 2000

    def take(self) -> int:
        while self.next < self.end:
            port, self.next = self.next, self.next + 1
            if port_is_free(port):
                return port
        raise RuntimeError("no free loopback port left in the bench's block")


def group_cpu_s(pgid: int) -> float:
    """CPU seconds (user + system) used so far by the live processes of a process group (from /proc)."""
    ticks = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue  # the process ended meanwhile
        fields = text[text.rindex(")") + 2 :].split()  # from field 3 (state) on: pgrp is 5, utime 14, stime 15
        if int(fields[2]) == pgid:
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def helper(checkout: Path, *argv: str) -> dict[str, Any]:
    """Run bench/link_run.py under ``checkout``'s code (see its docstring); its JSON line."""
    env = {k: v for k, v in os.environ.items() if k != "TONGBAN_NODE_CONFIG"}
    env["PYTHONPATH"] = str(checkout)
    result = subprocess.run(
        [sys.executable, str(LINK_HELPER), *argv],
        cwd=checkout,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=3600,
    )
    if result.returncode != 0:
        raise RuntimeError(f"{argv[0]} under {checkout} failed: {result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def cert_doc_with_rev(pem: bytes) -> dict[str, Any]:
    from node.adapters.pki import certificate_doc

    doc = certificate_doc(pem)
    return {**doc, "_rev": "1-" + hashlib.md5(doc["pem"].encode()).hexdigest()}


def event_count(store_url: str, db: str) -> int:
    prefix = f"event:{LINK_VILLAGE}-"
    response = requests.get(
        f"{store_url}/{db}/_all_docs",
        params={"startkey": json.dumps(prefix), "endkey": json.dumps(prefix + "\ufff0")},
        timeout=300,
    )
    response.raise_for_status()
    return len(response.json()["rows"])


class LinkBench:
    """The village's store and read models (one per checkout), and a fresh parent or target for each run."""

    def __init__(self, var: Path, supervisor: Supervisor, ports: Ports, checkouts: dict[str, Path]) -> None:
        from bench.yeargen import Signers
        from tiers import yiyang

        self.var = var
        self.supervisor = supervisor
        self.ports = ports
        self.checkouts = checkouts
        self.tree = yiyang()
        township = self.tree.parent(LINK_VILLAGE)
        assert township is not None
        self.township = township
        self.signers = Signers(var / "ca", self.tree)
        self.redis_port = ports.take()
        self.village_port = ports.take()
        self.villages: dict[str, NodeConfig] = {}
        self.runs = 0

    @property
    def village_url(self) -> str:
        return f"http://127.0.0.1:{self.village_port}"

    def set_up(self, events: int, seed: int) -> dict[str, Any]:
        from bench.yeargen import Stats, YearGenerator
        from node.runtime.provisioning import provision_node

        self.supervisor.start(
            [
                redis_spec("redis", self.var / "redis", self.redis_port),
                docstore_spec("village-docstore", self.var / "village-docstore", self.village_port),
            ]
        )
        stats = Stats()
        cases = max(1, events // 2)  # each application the village writes: accepted, then routed or received
        generator = YearGenerator(max(cases, 1000), seed, self.signers)
        written = list(generator.offline_at(LINK_VILLAGE, cases, LINK_DAY, stats))
        info: dict[str, Any] = {"events": stats.events, "certificates": stats.certificates, "catch_up_s": {}}
        for name, checkout in self.checkouts.items():
            db = f"village_{name}"
            config = NodeConfig(
                code=LINK_VILLAGE,
                data_dir=self.var / f"village-{name}",
                http_port=0,
                docstore_port=self.village_port,
                mqtt_port=0,
                redis_url="redis://127.0.0.1:1/0",
                parent_url="http://127.0.0.1:1",
                ca_dir=self.var / "ca",
                docstore_db=db,
            )
            config.save()
            identity = provision_node(config, self.signers.ca)
            # The village's own certificate (as its node publishes it), then what it wrote that day.
            docs = [cert_doc_with_rev(identity.certificate_pem), *written]
            requests.put(f"{self.village_url}/{db}", timeout=30).raise_for_status()
            for start in range(0, len(docs), 500):
                body = {"docs": docs[start : start + 500], "new_edits": False}
                requests.post(f"{self.village_url}/{db}/_bulk_docs", json=body, timeout=300).raise_for_status()
            caught = helper(checkout, "catchup", str(config.config_path))
            info["catch_up_s"][name] = round(caught["seconds"], 1)
            self.villages[name] = config
        info["docs_per_village_store"] = len(written) + 1
        return info

    def _fresh_store(self, tag: str) -> tuple[str, int]:
        port = self.ports.take()
        self.supervisor.start([docstore_spec(f"{tag}-docstore", self.var / tag / "docstore", port)])
        return f"{tag}-docstore", port

    def run_store(self) -> dict[str, Any]:
        self.runs += 1
        tag = f"target{self.runs}"
        name, port = self._fresh_store(tag)
        try:
            first = next(iter(self.checkouts))
            groups = {"village_store": "village-docstore", "parent_store": name}
            before = self._cpu(groups)
            result = helper(
                self.checkouts["new"],
                "store",
                self.village_url,
                f"village_{first}",
                f"http://127.0.0.1:{port}",
                "tongban",
            )
            result["cpu_s"] = self._cpu_used(groups, before, result, parent=0.0)
            result["arrived"] = event_count(f"http://127.0.0.1:{port}", "tongban")
            return result
        finally:
            self.supervisor.stop(name)
            shutil.rmtree(self.var / tag, ignore_errors=True)

    def _cpu(self, groups: dict[str, str]) -> dict[str, float]:
        return {label: group_cpu_s(self.supervisor.running[name].process.pid) for label, name in groups.items()}

    def _cpu_used(
        self, groups: dict[str, str], before: dict[str, float], result: dict[str, Any], **fixed: float
    ) -> dict[str, float]:
        """CPU seconds of each process of the run: the replicating process itself (its own count) and the stores."""
        after = self._cpu(groups)
        used = {"village": result.pop("process_cpu_s"), **fixed}
        used.update({label: after[label] - before[label] for label in groups})
        return {label: round(seconds, 2) for label, seconds in used.items()}

    def run_link(self, name: str) -> dict[str, Any]:
        """A fresh parent (its own store, broker and web under ``name``'s code), then the village's push to it."""
        from node.runtime.federation import broker_auth_for
        from node.runtime.provisioning import provision_node

        self.runs += 1
        tag = f"parent{self.runs}"
        checkout = self.checkouts[name]
        parent = NodeConfig(
            code=self.township,
            data_dir=self.var / tag,
            http_port=self.ports.take(),
            docstore_port=self.ports.take(),
            mqtt_port=self.ports.take(),
            redis_url=f"redis://127.0.0.1:{self.redis_port}/{self.runs % 16}",
            ca_dir=self.var / "ca",
        )
        parent.save()
        names = [f"{tag}-docstore", f"{tag}-mosquitto", f"{tag}-web"]
        try:
            self.supervisor.start(
                [
                    docstore_spec(names[0], parent.data_dir / "docstore", parent.docstore_port),
                    # Brokers refuse anonymous clients: the parent's processes sign in with its password.
                    mosquitto_spec(
                        names[1], parent.data_dir / "mosquitto", parent.mqtt_port, auth=broker_auth_for(parent)
                    ),
                ]
            )
            provision_node(parent, self.signers.ca)
            web = gunicorn_spec(names[2], parent.config_path, parent.http_port, self.var / "logs", parent.web_workers)
            web.env = {**web.env, "PYTHONPATH": str(checkout)}
            web.cwd = checkout
            self.supervisor.start([web])
            village = self.villages[name]
            NodeConfig(**{**village.__dict__, "parent_url": parent.url}).save()
            groups = {"village_store": "village-docstore", "parent": names[2], "parent_store": names[0]}
            before = self._cpu(groups)
            result = helper(checkout, "push", str(village.config_path))
            result["cpu_s"] = self._cpu_used(groups, before, result)
            result["arrived"] = event_count(parent.docstore_url, parent.docstore_db)
            return result
        finally:
            self.supervisor.stop_many(names)
            shutil.rmtree(self.var / tag, ignore_errors=True)


def link_main(args: argparse.Namespace) -> int:
    events = 200 if args.quick else args.events
    rounds = 1 if args.quick else args.rounds
    checkouts = {"new": ROOT}
    if args.anchor:
        anchor = Path(args.anchor).resolve()
        if not (anchor / "sync" / "link.py").exists():
            raise SystemExit(f"--anchor {anchor}: not a checkout of this project")
        checkouts["anchor"] = anchor
    var = Path(tempfile.mkdtemp(prefix="bench-link-"))
    supervisor = Supervisor(var / "run", progress=lambda _line: None)
    bench = LinkBench(var, supervisor, Ports(), checkouts)
    methods = [STORE, *checkouts]
    runs: list[dict[str, Any]] = []
    try:
        started = time.perf_counter()
        setup = bench.set_up(events, args.seed)
        print(
            f"village store: {setup['events']} events + {setup['certificates'] + 1} certificates; "
            f"read models caught up {setup['catch_up_s']} s; set-up {time.perf_counter() - started:.0f} s",
            flush=True,
        )
        for round_ in range(rounds):
            shift = round_ % len(methods)
            for method in methods[shift:] + methods[:shift]:
                result = bench.run_store() if method == STORE else bench.run_link(method)
                if result["arrived"] != setup["events"] or result["errors"]:
                    raise RuntimeError(f"round {round_ + 1} {method}: {result}")
                rate = result["written"] / result["seconds"]
                cpu_us = {k: round(v / result["written"] * 1e6) for k, v in result["cpu_s"].items()}
                cpu_us["total"] = sum(cpu_us.values())
                row = {"round": round_ + 1, "method": method, "docs_s": round(rate, 1), "cpu_us_per_doc": cpu_us}
                runs.append({**row, **result})
                print(
                    f"round {round_ + 1}  {method:<16} {result['written']:>7} docs "
                    f"{result['seconds']:>7.2f} s {rate:>8.0f} docs/s  CPU µs/doc {cpu_us}  "
                    f"(load {os.getloadavg()[0]:.1f})",
                    flush=True,
                )
    finally:
        supervisor.stop_all()
        shutil.rmtree(var, ignore_errors=True)
    figures = link_figures(runs, methods, rounds)
    figures.update({"events": setup["events"], "rounds": rounds, "catch_up_s": setup["catch_up_s"]})
    print_link_table(figures, methods, rounds)
    goals: dict[str, bool] = {"link_share_ge_70pct": figures["median"]["link_over_store"] >= GOAL_LINK_SHARE}
    if "anchor" in checkouts:
        goals["checks_cost_le_15pct"] = figures["median"]["checks_cost"] <= GOAL_CHECKS_COST
    figures["goals"] = {"checks_cost_max": GOAL_CHECKS_COST, "link_over_store_min": GOAL_LINK_SHARE, "checks": goals}
    line = {"bench": "replication_link", "figures": figures, "goals_met": all(goals.values())}
    print(json.dumps(line, ensure_ascii=False))
    return 0


def link_figures(runs: list[dict[str, Any]], methods: list[str], rounds: int) -> dict[str, Any]:
    rate = {(run["round"], run["method"]): run["docs_s"] for run in runs}
    per_round = []
    for r in range(1, rounds + 1):
        row: dict[str, Any] = {"round": r, **{m: rate[r, m] for m in methods}}
        row["link_over_store"] = round(rate[r, "new"] / rate[r, STORE], 3)
        if "anchor" in methods:
            row["link_over_anchor"] = round(rate[r, "new"] / rate[r, "anchor"], 3)
        per_round.append(row)
    median = {m: round(statistics.median(rate[r, m] for r in range(1, rounds + 1)), 1) for m in methods}
    summary: dict[str, Any] = {**median, "link_over_store": round(median["new"] / median[STORE], 3)}
    # CPU per document summed over the processes of a run: what the run costs, whatever else the machine does.
    cpu = {
        m: {
            part: round(statistics.median(run["cpu_us_per_doc"].get(part, 0) for run in runs if run["method"] == m))
            for part in ("village", "village_store", "parent", "parent_store", "total")
        }
        for m in methods
    }
    summary["cpu_us_per_doc"] = cpu
    summary["cpu_link_over_store"] = round(cpu["new"]["total"] / cpu[STORE]["total"], 3)
    if "anchor" in methods:
        summary["link_over_anchor"] = round(median["new"] / median["anchor"], 3)
        summary["checks_cost"] = round(1 - median["new"] / median["anchor"], 3)
        summary["anchor_over_store"] = round(median["anchor"] / median[STORE], 3)
        summary["cpu_link_over_anchor"] = round(cpu["new"]["total"] / cpu["anchor"]["total"], 3)
    return {"per_round": per_round, "median": summary}


def print_link_table(figures: dict[str, Any], methods: list[str], rounds: int) -> None:
    labels = {STORE: "store→store", "new": "link (new)", "anchor": "link (anchor)"}
    print(f"\ndocs/s per round (order rotates each round); median of {rounds}")
    header = "".join(f"{labels[m]:>15}" for m in methods) + f"{'link/store':>12}"
    header += f"{'link/anchor':>13}" if "anchor" in methods else ""
    print(f"{'round':<8}{header}")
    for row in [*figures["per_round"], {**figures["median"], "round": "median"}]:
        line = f"{row['round']!s:<8}" + "".join(f"{row[m]:>15.0f}" for m in methods)
        line += f"{row['link_over_store']:>12.2f}"
        line += f"{row['link_over_anchor']:>13.2f}" if "anchor" in methods else ""
        print(line)
    print("\nCPU µs per document (median; village = the replicating process, parent = the parent's web)")
    for m in methods:
        print(f"  {labels[m]:<14} {figures['median']['cpu_us_per_doc'][m]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=1000, help="batch size for sync.replicator (pipelined)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--link", action="store_true", help="the link through a parent's node API (see above)")
    parser.add_argument("--events", type=int, default=10_000, help="--link: events in the village's store")
    parser.add_argument("--rounds", type=int, default=3, help="--link: rounds (each runs every method once)")
    parser.add_argument("--anchor", help="--link: a checkout of the commit to compare with (its code runs too)")
    parser.add_argument("--quick", action="store_true", help="--link: 200 events, one round (a smoke test)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    if args.link:
        sys.exit(link_main(args))

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
