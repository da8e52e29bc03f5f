"""Acceptance throughput through gunicorn, and read-model lag, on one node against pouchdb-server.

Starts a county node for real (pouchdb-server, Mosquitto, gunicorn, agent) on free loopback ports,
drives ``POST /api/v1/cases`` with wrk at concurrency 16, then measures how long documents written
into the store (as replication writes them) take to show in the approver's inbox.

    .venv/bin/python bench/bench_acceptance.py [--seconds 20] [--workers 2] [--connections 16] [--cpus 1.1]

``--cpus`` confines the whole run (node, load generator) to that many cores' worth of CPU time
with a CPU cgroup, to see how the latency tail holds on a slower or busier machine (needs root).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import date
from pathlib import Path

from node.config import NodeConfig
from node.domain.identifiers import make_id_number
from node.runtime.federation import node_service_specs
from node.runtime.provisioning import ensure_city_authority, provision_node
from node.runtime.services import free_port, redis_spec
from node.runtime.supervisor import Supervisor
from tiers.demo import HESHAN, HESHAN_VILLAGE

COUNTY = HESHAN
BODY = {
    "matter_code": "430900-JF-0001",
    "applicant": {"kind": "person", "id_number": make_id_number("430903", date(1985, 3, 15), 124), "name": "李秀英"},
    "materials": ["M001", "M002", "M013", "M003"],
    "residence_code": HESHAN_VILLAGE,
}


def post(url: str, body: dict, token: str | None = None) -> dict:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def get(url: str, token: str) -> dict:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def run_wrk(url: str, token: str, seconds: int, connections: int, workdir: Path) -> dict[str, float]:
    script = workdir / "post.lua"
    script.write_text(
        'wrk.method = "POST"\n'
        f"wrk.body = {json.dumps(json.dumps(BODY))}\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
        f'wrk.headers["Authorization"] = "Bearer {token}"\n'
        "done = function(summary, latency, requests)\n"
        '  io.write(string.format("RESULT %d %d %d %d %d\\n", summary.requests, summary.errors.status,'
        " latency:percentile(50), latency:percentile(99), summary.duration))\n"
        "end\n",
        encoding="utf-8",
    )
    output = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    match = re.search(r"RESULT (\d+) (\d+) (\d+) (\d+) (\d+)", output)
    if not match:
        raise RuntimeError(f"wrk printed no result:\n{output}")
    requests, errors, p50_us, p99_us, duration_us = map(int, match.groups())
    return {
        "requests": requests,
        "non_2xx": errors,
        "per_s": requests / (duration_us / 1e6),
        "p50_ms": p50_us / 1000,
        "p99_ms": p99_us / 1000,
    }


def confine_cpu(cpus: float) -> None:
    """Move this process (and so everything it starts) into a CPU cgroup limited to ``cpus`` cores.

    A 10 ms period keeps each throttling pause short, so the limit slows the run evenly instead of
    freezing it for tens of milliseconds at a time.
    """
    period_us = 10_000
    quota_us = int(cpus * period_us)
    v2, v1 = Path("/sys/fs/cgroup/cgroup.controllers"), Path("/sys/fs/cgroup/cpu")
    try:
        if v2.exists():
            if "cpu" not in (v2.parent / "cgroup.subtree_control").read_text().split():
                (v2.parent / "cgroup.subtree_control").write_text("+cpu")
            group = Path("/sys/fs/cgroup/tongban-bench")
            group.mkdir(exist_ok=True)
            (group / "cpu.max").write_text(f"{quota_us} {period_us}")
        elif v1.is_dir():
            group = v1 / "tongban-bench"
            group.mkdir(exist_ok=True)
            (group / "cpu.cfs_period_us").write_text(str(period_us))
            (group / "cpu.cfs_quota_us").write_text(str(quota_us))
        else:
            sys.exit("--cpus: this machine has no CPU cgroup controller")
        (group / "cgroup.procs").write_text(str(os.getpid()))
    except OSError as exc:
        sys.exit(f"--cpus needs a writable CPU cgroup (run as root): {exc}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--lag-samples", type=int, default=50)
    parser.add_argument("--cpus", type=float, help="confine the run to this many cores (CPU cgroup)")
    args = parser.parse_args()
    if args.cpus:
        confine_cpu(args.cpus)
    if shutil.which("wrk") is None:
        sys.exit("wrk not found: run `bash deploy/setup-system.sh wrk`")

    workdir = Path(tempfile.mkdtemp(prefix="tongban-bench-"))
    supervisor = Supervisor(workdir / "run", progress=lambda _line: None)
    try:
        http_port = free_port()
        config = NodeConfig(
            code=COUNTY,
            data_dir=workdir / "node",
            http_port=http_port,
            docstore_port=free_port(),
            mqtt_port=free_port(),
            redis_url=f"redis://127.0.0.1:{free_port()}/0",
            ca_dir=workdir / "ca",
            web_workers=args.workers,
        )
        config.save()
        provision_node(config, ensure_city_authority(workdir / "ca"))
        from node.adapters.nodestate import NodeState

        NodeState(config.data_dir / "state.sqlite3").add_account("bench.acceptor", "bench-pass", "acceptor")
        NodeState(config.data_dir / "state.sqlite3").add_account(
            "bench.approver", "bench-pass", "approver", "civil_affairs"
        )
        infrastructure, application = node_service_specs(config, workdir / "logs")
        redis_port = int(config.redis_url.rsplit(":", 1)[1].split("/")[0])
        supervisor.start([redis_spec("redis", workdir / "redis", redis_port), *infrastructure])
        supervisor.start([spec for spec in application if spec.name.endswith(("-web", "-agent"))])
        base = config.url
        token = post(f"{base}/api/v1/auth/token", {"username": "bench.acceptor", "password": "bench-pass"})["token"]
        approver = post(f"{base}/api/v1/auth/token", {"username": "bench.approver", "password": "bench-pass"})["token"]
        for _ in range(20):  # warm-up: imports, connections, SQLite pages
            post(f"{base}/api/v1/cases", BODY, token)

        result = run_wrk(f"{base}/api/v1/cases", token, args.seconds, args.connections, workdir)

        # Read-model lag for documents arriving by replication: a child township accepts cases and
        # pushes them through the county's sync API, as its agent would; the county's agent is woken
        # by the push and projects them. Measured until the case shows in the county's case search.
        from node.bootstrap import bootstrap
        from node.service_layer.cases import Actor
        from sync.node_peer import NodeApiPeer
        from sync.replicator import StorePeer, replicate

        township = NodeConfig(
            **{**config.__dict__, "code": "430903101000", "data_dir": workdir / "township", "docstore_db": "township"}
        )
        township.save()
        provision_node(township, ensure_city_authority(workdir / "ca"))
        child = bootstrap(township, connect_mqtt=False)
        child.cases.events.publish_certificate(child.identity.certificate_pem)
        uplink = NodeApiPeer(base, child.identity)
        lags = []
        for _ in range(args.lag_samples):
            outcome = child.cases.accept(Actor("acceptor", "acceptor", None), BODY)
            started = time.perf_counter()
            replicate(StorePeer(child.store), uplink)
            while not get(f"{base}/api/v1/cases?q={outcome.case_no}", approver)["cases"]:
                time.sleep(0.005)
            lags.append(time.perf_counter() - started)
        lags.sort()
        print(
            json.dumps(
                {
                    "acceptance": result,
                    "workers": args.workers,
                    "connections": args.connections,
                    "cpus": args.cpus or os.cpu_count(),
                    "readmodel_lag_s": {
                        "samples": len(lags),
                        "p50": statistics.median(lags),
                        "p99": lags[min(len(lags) - 1, int(len(lags) * 0.99))],
                    },
                },
                indent=2,
            )
        )
    finally:
        supervisor.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
