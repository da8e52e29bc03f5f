"""Slow village link: cases accepted offline at a village converge to its parent over a throttled, lossy link.

The link (needs root, for ``ip netns`` and ``tc``):

    root namespace                                     namespace tbscale<pid>
    parent node (pouchdb-server, gunicorn on 0.0.0.0)  village store (pouchdb-server), village replicator
            10.213.x.1  <── veth, tc tbf RATE each way ──>  10.213.x.2
                                                        bench/netproxy.py on the namespace's loopback:
                                                        DELAY each way, loss as retransmission stalls

Bandwidth is the kernel's token bucket (``tc qdisc tbf``, ``netem`` is not available here) on both ends of
the veth pair, so upload and download are each limited to the rate (a duplex link). Delay and loss come
from the proxy (see its docstring for the model). The village store is loaded before the shaping starts,
its read model is brought up to date (untimed: a village projects what it writes), then one real push
(``sync.link.Link.sync(push=True, pull=False)`` — the agent's own call, signed node API requests, the
trust filter, the replicator) runs inside the namespace and is timed; a push cut by a reset is run again
at once, as the agent's next cycle would (at most 10), and the time runs until one completes. The
parent's store is then checked for every event (zero lost).

Reported: the push time, the bytes through the proxy each way (HTTP payload; TCP/IP headers add ~4 %), the
bandwidth bound ``max(bytes up, bytes down) × 8 / rate`` (each direction has its own bucket), the ratio
time / bound (goal ≤ 1.5), and bytes per case. Ends with one JSON line
``{"bench": "slow_link", "figures": {…}, "goals_met": …}``.

    .venv/bin/python bench/bench_slow_link.py --quick          # 100 cases, 1 Mbit/s, 150 ms each way, 1 % loss
    .venv/bin/python bench/bench_slow_link.py --cases 1000
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.record import append_result
from bench.yeargen import Signers, Stats, YearGenerator
from node.config import NodeConfig
from node.runtime.federation import Federation, node_service_specs
from node.runtime.services import ServiceSpec, docstore_spec, free_port, http_ok, port_is_free, redis_spec
from node.runtime.supervisor import Supervisor
from tiers import yiyang

ROOT = Path(__file__).resolve().parents[1]
VILLAGE = "430903101201"
GOAL_RATIO = 1.5
QUICK_CASES = 100


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, text=True)


class ShapedLink:
    """A network namespace joined to this one by a veth pair with a token bucket on each end."""

    def __init__(self, rate_kbit: int) -> None:
        tag = os.getpid() % 100_000
        self.ns = f"tbscale{tag}"
        self.outer, self.inner = f"tsa{tag}", f"tsb{tag}"
        subnet = 16 + tag % 200
        self.outer_ip, self.inner_ip = f"10.213.{subnet}.1", f"10.213.{subnet}.2"
        self.rate_kbit = rate_kbit

    def __enter__(self) -> ShapedLink:
        sh("ip", "netns", "add", self.ns)
        sh("ip", "link", "add", self.outer, "type", "veth", "peer", "name", self.inner)
        sh("ip", "link", "set", self.inner, "netns", self.ns)
        sh("ip", "addr", "add", f"{self.outer_ip}/30", "dev", self.outer)
        sh("ip", "link", "set", self.outer, "up")
        self.run_in("ip", "addr", "add", f"{self.inner_ip}/30", "dev", self.inner)
        self.run_in("ip", "link", "set", self.inner, "up")
        self.run_in("ip", "link", "set", "lo", "up")
        return self

    def shape(self) -> None:
        # burst: a few full packets; latency: how long a packet may queue before it is dropped (TCP backs off).
        qdisc = ["root", "tbf", "rate", f"{self.rate_kbit}kbit", "burst", "16kb", "latency", "800ms"]
        sh("tc", "qdisc", "add", "dev", self.outer, *qdisc)
        self.run_in("tc", "qdisc", "add", "dev", self.inner, *qdisc)

    def run_in(self, *argv: str) -> None:
        sh("ip", "netns", "exec", self.ns, *argv)

    def prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.ns]

    def __exit__(self, *_exc: object) -> None:
        subprocess.run(["ip", "link", "del", self.outer], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True, check=False)


def in_namespace(spec: ServiceSpec, link: ShapedLink, host: str, healthy_url: str) -> ServiceSpec:
    argv = [host if arg == "127.0.0.1" else arg for arg in spec.argv]
    return ServiceSpec(
        name=spec.name,
        argv=[*link.prefix(), *argv],
        healthy=lambda: http_ok(healthy_url),
        log_path=spec.log_path,
        env=spec.env,
        cwd=spec.cwd,
        start_timeout_s=spec.start_timeout_s,
    )


def child_sync(config_path: str, max_cycles: int = 10) -> int:
    """Run inside the namespace: bring the village's read model up to date, then time the pushes.

    A push that fails (a reset mid-request) is tried again at once, as the agent's next cycle would, up to
    ``max_cycles`` pushes: the time is until the first push that completes.
    """
    from node.bootstrap import bootstrap
    from sync.link import Link

    context = bootstrap(NodeConfig.load(Path(config_path)), connect_mqtt=False)
    context.projector.catch_up()
    link = Link(context)
    started = time.perf_counter()
    written, cycles = 0, 0
    while cycles < max_cycles:
        cycles += 1
        errors = link.push.errors
        written += link.sync(push=True, pull=False)
        if link.push.errors == errors:
            break
    seconds = time.perf_counter() - started
    print(
        json.dumps({"seconds": seconds, "written": written, "cycles": cycles, "push": link.stats()["push"]}),
        flush=True,
    )
    return 0


def event_ids_at(store_url: str, prefix: str) -> set[str]:
    response = requests.get(
        f"{store_url}/_all_docs",
        params={"startkey": json.dumps(prefix), "endkey": json.dumps(prefix + "\ufff0")},
        timeout=120,
    )
    response.raise_for_status()
    return {row["id"] for row in response.json()["rows"]}


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=1000)
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_CASES} cases")
    parser.add_argument("--rate-kbit", type=int, default=1000)
    parser.add_argument("--delay-ms", type=float, default=150.0, help="one way (300 ms round trips)")
    parser.add_argument("--loss", type=float, default=0.01, help="segment loss, modelled as retransmission stalls")
    parser.add_argument("--resets-per-min", type=float, default=0.0, help="connection resets (the client retries)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--record", action="store_true", help="append the result to docs/benchmarks.md")
    parser.add_argument("--child-sync", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child_sync:
        return child_sync(args.child_sync)
    signal.signal(signal.SIGTERM, _interrupt)  # clean up (finally) when stopped from a script too
    count = QUICK_CASES if args.quick else args.cases
    tree = yiyang()
    township = tree.parent(VILLAGE)
    assert township is not None
    var = Path(tempfile.mkdtemp(prefix="bench-slow-link-"))
    start = random.Random(os.getpid() ^ time.time_ns()).randrange(24000, 58000, 100)
    candidates = [*range(start, 60000, 100), *range(24000, start, 100)]
    base = next(b for b in candidates if all(port_is_free(p) for p in range(b, b + 20)))
    parent_fed = Federation(var / "parent", base, [township])
    parent = parent_fed.node_config(township)
    figures: dict[str, Any] = {
        "cases": count,
        "rate_kbit": args.rate_kbit,
        "delay_ms_each_way": args.delay_ms,
        "loss": args.loss,
        "resets_per_min": args.resets_per_min,
        "link": f"{VILLAGE} → {township}",
    }
    supervisor = Supervisor(var / "run", progress=lambda _line: None)
    proxy: subprocess.Popen[bytes] | None = None
    try:
        with ShapedLink(args.rate_kbit) as link:
            signers = Signers(var / "ca", tree)
            parent_fed.save()
            infra, app = node_service_specs(parent, var / "logs")
            web = next(spec for spec in app if spec.name.endswith("-web"))
            web.argv = [f"0.0.0.0:{parent.http_port}" if a == f"127.0.0.1:{parent.http_port}" else a for a in web.argv]
            supervisor.start([redis_spec("redis", var / "redis", parent_fed.redis_port), *infra])
            from node.runtime.provisioning import provision_node

            provision_node(parent, signers.ca)
            supervisor.start([web])

            child_port = free_port()
            child_store = f"http://{link.inner_ip}:{child_port}"
            supervisor.start(
                [
                    in_namespace(
                        docstore_spec("village-docstore", var / "village" / "docstore", child_port),
                        link,
                        "0.0.0.0",
                        child_store + "/",
                    )
                ]
            )
            proxy_port = free_port()
            child = NodeConfig(
                code=VILLAGE,
                data_dir=var / "village",
                http_port=0,
                docstore_port=child_port,
                mqtt_port=0,
                redis_url="redis://127.0.0.1:1/0",
                parent_url=f"http://127.0.0.1:{proxy_port}",
                ca_dir=var / "ca",
            )
            child.save()
            identity = provision_node(child, signers.ca)
            # The offline day lies in the past: its events are signed with the generator's backdated village key
            # (its certificate travels with them), since the key provisioned just now was not valid on that day.
            stats = Stats()
            generator = YearGenerator(max(count, 1000), args.seed, signers)
            docs = [_cert_doc(identity.certificate_pem), *generator.offline_at(VILLAGE, count, date(2025, 6, 3), stats)]
            requests.put(f"{child_store}/tongban", timeout=30).raise_for_status()
            for start in range(0, len(docs), 500):
                body = {"docs": docs[start : start + 500], "new_edits": False}
                requests.post(f"{child_store}/tongban/_bulk_docs", json=body, timeout=120).raise_for_status()
            figures["events"] = stats.events
            link.shape()
            stats_file = var / "proxy-stats.json"
            proxy = subprocess.Popen(
                [
                    *link.prefix(),
                    sys.executable,
                    str(ROOT / "bench" / "netproxy.py"),
                    "--listen",
                    f"127.0.0.1:{proxy_port}",
                    "--upstream",
                    f"{link.outer_ip}:{parent.http_port}",
                    "--delay-ms",
                    str(args.delay_ms),
                    "--loss",
                    str(args.loss),
                    "--resets-per-min",
                    str(args.resets_per_min),
                    "--seed",
                    str(args.seed),
                    "--stats-file",
                    str(stats_file),
                ],
                stdout=subprocess.PIPE,
                cwd=ROOT,
            )
            assert proxy.stdout is not None
            proxy.stdout.readline()  # listening
            result = subprocess.run(
                [*link.prefix(), sys.executable, str(Path(__file__).resolve()), "--child-sync", str(child.config_path)],
                cwd=ROOT,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
                capture_output=True,
                text=True,
                check=False,
                timeout=3600,
            )
            if result.returncode != 0:
                raise RuntimeError(f"the village's push failed: {result.stderr[-3000:]}")
            pushed = json.loads(result.stdout.strip().splitlines()[-1])
            proxy.terminate()
            proxy.wait(timeout=10)
            proxy = None
            wire = json.loads(stats_file.read_text())
            arrived = event_ids_at(f"{parent.docstore_url}/{parent.docstore_db}", f"event:{VILLAGE}-")
            expected = {doc["_id"] for doc in docs if doc["_id"].startswith("event:")}
            bound_s = max(wire["bytes_up"], wire["bytes_down"]) * 8 / (args.rate_kbit * 1000)
            figures.update(
                {
                    "push_s": round(pushed["seconds"], 2),
                    "docs_written": pushed["written"],
                    "push_cycles": pushed["cycles"],
                    "push_errors": pushed["push"]["errors"],
                    "last_push_error": pushed["push"]["last_error"],
                    "bytes_up": wire["bytes_up"],
                    "bytes_down": wire["bytes_down"],
                    "connections": wire["connections"],
                    "stalls": wire["stalls"],
                    "resets": wire["resets"],
                    "bytes_per_case": round((wire["bytes_up"] + wire["bytes_down"]) / count),
                    "bandwidth_bound_s": round(bound_s, 2),
                    "ratio_to_bound": round(pushed["seconds"] / bound_s, 2) if bound_s else None,
                    "events_missing_at_parent": len(expected - arrived),
                }
            )
    finally:
        if proxy is not None:
            proxy.terminate()
        supervisor.stop_all()
        shutil.rmtree(var, ignore_errors=True)
    goals = {
        "within_1_5x_bound": figures["events_missing_at_parent"] == 0
        and figures["ratio_to_bound"] is not None
        and figures["ratio_to_bound"] <= GOAL_RATIO,
        "zero_lost": figures["events_missing_at_parent"] == 0,
    }
    figures["goals"] = {"ratio_to_bound_max": GOAL_RATIO, "checks": goals}
    line = {"bench": "slow_link", "figures": figures, "goals_met": all(goals.values())}
    print(json.dumps(line, ensure_ascii=False))
    if args.record:
        append_result(line)
    return 0


def _cert_doc(pem: bytes) -> dict[str, Any]:
    import hashlib

    from node.adapters.pki import certificate_doc

    doc = certificate_doc(pem)
    return {**doc, "_rev": "1-" + hashlib.md5(doc["pem"].encode()).hexdigest()}


if __name__ == "__main__":
    sys.exit(main())
