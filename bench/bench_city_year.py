"""A year at the city: ingest a generated year of 益阳 cases into a real city node and measure what it costs.

Steps, all against real processes on free loopback ports:

1. A pouchdb-server for the city (the node's own document store directory) receives the year from
   :mod:`bench.yeargen` — signed events in ``_bulk_docs new_edits:false`` batches of 500, as replication
   delivers them. Ingest rate (cases/s, documents/s) and the store's size on disk.
2. The city node is provisioned with the same throw-away CA and its read model is rebuilt from scratch with
   the real projection path, ``tongban readmodel rebuild --config …`` in a child process: wall time, the
   rebuild's peak memory, the read model's size, and that every case arrived (none quarantined, none lost).
3. The whole node is started with ``tongban node run`` (redis, pouchdb-server, mosquitto, gunicorn, celery,
   agent, ops collector): start-up time and the memory (RSS) of each process once it is up and after the
   requests, then p50/p99 over HTTP of the approver's inbox, the acceptor's inbox, case search by number and
   by matter name (``GET /api/v1/cases?q=``), the case page (``GET /api/v1/cases/<no>``) and ``/metrics``.
   The HTTP API has no search by applicant or by matter and date: those are timed as the read-model queries
   such an endpoint would run (``ReadModel.search(applicant_key=…)`` and matter + accepted-date range),
   in this process against the node's live read model, and labelled so.

Ends with one JSON line ``{"bench": "city_year", "figures": {…}, "goals_met": …}``; the goals are the
issue's (inbox and search p99 ≤ 300 ms, case page p99 ≤ 200 ms, rebuild ≤ 30 min), applied at the size run.
Anchor measured in the same run: the store handing over every document once through its changes feed
(``include_docs``, 5,000 a page) — the floor under any rebuild; ``rebuild_ratio_to_anchor`` is the rest.

    .venv/bin/python bench/bench_city_year.py --quick            # 5,000 cases
    .venv/bin/python bench/bench_city_year.py --cases 100000
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests
from sqlalchemy import func, literal_column, select

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.record import append_result
from bench.yeargen import Signers, Stats, YearGenerator, write_year
from node.adapters.readmodel import ReadModel, cases
from node.runtime.federation import Federation
from node.runtime.provisioning import seed_demo_accounts
from node.runtime.services import docstore_spec, port_is_free
from node.runtime.supervisor import Supervisor
from tiers import yiyang

ROOT = Path(__file__).resolve().parents[1]
CITY = "430900000000"
QUICK_CASES = 5_000
GOALS = {"inbox_p99_ms": 300, "search_p99_ms": 300, "case_page_p99_ms": 200, "rebuild_s": 30 * 60}
OPEN_STATES = ("accepted", "in_review", "supplement_requested")


def free_base_port() -> int:
    """A block of free ports (the node takes base … base+15), from a random start: runs side by side differ."""
    start = random.Random(os.getpid() ^ time.time_ns()).randrange(24000, 58000, 100)
    candidates = [*range(start, 60000, 100), *range(24000, start, 100)]
    return next(b for b in candidates if all(port_is_free(p) for p in range(b, b + 20)))


def du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def percentiles(samples_s: list[float]) -> dict[str, float]:
    ordered = sorted(samples_s)

    def rank(q: float) -> float:  # nearest rank
        return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]

    return {"n": len(ordered), "p50_ms": round(rank(0.50) * 1000, 1), "p99_ms": round(rank(0.99) * 1000, 1)}


def timed(call: Callable[[], Any], samples: int) -> dict[str, float]:
    call()  # warm-up: first-use costs (connections, caches) are not what the percentiles are about
    seconds = []
    for _ in range(samples):
        started = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - started)
    return percentiles(seconds)


def rss_by_process(run_dir: Path) -> dict[str, int]:
    """RSS in MiB of every supervised process, summed over its process group (gunicorn workers, celery pool)."""
    groups: dict[int, str] = {}
    for pid_file in run_dir.glob("*.pid"):
        try:
            groups[int(pid_file.read_text().strip())] = pid_file.stem
        except ValueError:
            continue
    totals: dict[str, int] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text().rsplit(") ", 1)[1].split()
            rss_kib = next(
                int(line.split()[1]) for line in (proc / "status").read_text().splitlines() if line.startswith("VmRSS")
            )
        except (OSError, StopIteration, IndexError, ValueError):
            continue
        name = groups.get(int(stat[2]))  # field 5 of /proc/pid/stat: the process group
        if name is not None:
            totals[name] = totals.get(name, 0) + rss_kib
    return {name: round(kib / 1024) for name, kib in sorted(totals.items())}


def read_everything(db_url: str) -> float:
    """Anchor: seconds for the store to hand over every document once (changes feed with bodies, 5,000 a page)."""
    session = requests.Session()
    session.trust_env = False
    started, since = time.perf_counter(), 0
    while True:
        page = session.get(
            f"{db_url}/_changes", params={"since": since, "limit": 5000, "include_docs": "true"}, timeout=600
        ).json()
        if not page["results"]:
            return time.perf_counter() - started
        since = page["last_seq"]


def provision_city(federation: Federation, signers: Signers) -> Path:
    """The city node's config, key and demo accounts, issued by the same CA that signed the year."""
    from node.runtime.provisioning import provision_node

    federation.save()
    config = federation.node_config(CITY)
    provision_node(config, signers.ca)
    return config.config_path


def rebuild(config_path: Path) -> dict[str, Any]:
    """``tongban readmodel rebuild`` in a child process: wall time and the child's peak RSS."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "node.entrypoints.cli", "readmodel", "rebuild", "--config", str(config_path)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"rebuild failed: {result.stderr[-2000:]}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    peak_mib = round(max(peak, before) / 1024)
    return {"rebuild_s": round(seconds, 2), "rebuild_peak_rss_mib": peak_mib, "out": result.stdout}


def start_node(var: Path, base_port: int) -> tuple[subprocess.Popen[bytes], float]:
    log_path = var / "node-run.log"
    log = log_path.open("w")
    started = time.perf_counter()
    argv = [sys.executable, "-m", "node.entrypoints.cli", "node", "run", CITY]
    process = subprocess.Popen(
        [*argv, "--data-dir", str(var), "--base-port", str(base_port)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 300
    while "press Ctrl-C" not in log_path.read_text():
        if process.poll() is not None or time.monotonic() > deadline:
            stop_node(process)
            raise RuntimeError(log_path.read_text()[-3000:])
        time.sleep(0.25)
    return process, time.perf_counter() - started


def stop_node(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=90)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def login(url: str, accounts: list[dict[str, Any]], username: str) -> dict[str, str]:
    password = next(a["password"] for a in accounts if a["username"] == username)
    response = requests.post(f"{url}/api/v1/auth/token", json={"username": username, "password": password}, timeout=30)
    response.raise_for_status()
    return {"Authorization": f"Bearer {response.json()['token']}"}


def sample_cases(readmodel: ReadModel, count: int, seed: int) -> list[dict[str, Any]]:
    """Cases to ask for, spread over the whole year (read once, untimed)."""
    with readmodel.engine.connect() as conn:
        total = conn.execute(select(func.count()).select_from(cases)).scalar_one()
        step = max(1, total // count)
        rows = conn.execute(
            select(cases.c.case_no, cases.c.applicant_key, cases.c.matter_code, cases.c.matter_name)
            .add_columns(cases.c.accepted_at)
            .where(literal_column("rowid") % step == 0)
            .order_by(cases.c.accepted_at)
        ).all()
    picked = [dict(row._mapping) for row in rows]
    random.Random(seed).shuffle(picked)
    return picked[:count]


def busiest_department(readmodel: ReadModel) -> str:
    with readmodel.engine.connect() as conn:
        row = conn.execute(
            select(cases.c.department, func.count().label("n"))
            .where(cases.c.handling_node == CITY, cases.c.state.in_(OPEN_STATES))
            .group_by(cases.c.department)
            .order_by(func.count().desc())
        ).first()
    return row.department if row else "human_resources"


def measure_requests(url: str, var: Path, readmodel: ReadModel, samples: int, seed: int) -> dict[str, Any]:
    accounts = seed_demo_accounts(Federation.load(var).node_config(CITY))  # the passwords are sealed at rest
    department = busiest_department(readmodel)
    approver = login(url, accounts, f"approver.{department}")
    acceptor = login(url, accounts, "acceptor")
    picked = sample_cases(readmodel, samples, seed)
    session = requests.Session()
    session.trust_env = False
    cycle = iter(range(10**9))

    def pick() -> dict[str, Any]:
        return picked[next(cycle) % len(picked)]

    def get(path: str, headers: dict[str, str] | None = None, params: dict[str, str] | None = None) -> Any:
        response = session.get(f"{url}{path}", headers=headers, params=params, timeout=120)
        if response.status_code != 200:
            raise RuntimeError(f"GET {path} answered {response.status_code}: {response.text[:300]}")
        return response

    def search_by_number() -> None:
        case = pick()
        found = get("/api/v1/cases", approver, {"q": case["case_no"]}).json()["cases"]
        if case["case_no"] not in {row["case_no"] for row in found}:
            raise RuntimeError(f"search by number did not find {case['case_no']}")

    def case_page() -> None:
        case = pick()
        if get(f"/api/v1/cases/{case['case_no']}", approver).json()["case_no"] != case["case_no"]:
            raise RuntimeError("the case page showed another case")

    def by_applicant() -> None:
        case = pick()
        if not readmodel.search(applicant_key=case["applicant_key"]):
            raise RuntimeError("search by applicant found nothing")

    def by_matter_and_date() -> None:
        case = pick()
        day = case["accepted_at"][:10]
        with readmodel.engine.connect() as conn:
            conn.execute(
                select(cases)
                .where(cases.c.matter_code == case["matter_code"], cases.c.accepted_at.between(day, day + "\uffff"))
                .order_by(cases.c.accepted_at.desc())
                .limit(100)
            ).all()

    figures = {
        "inbox_approver": timed(lambda: get("/api/v1/inbox", approver), samples),
        "inbox_acceptor": timed(lambda: get("/api/v1/inbox", acceptor), samples),
        "search_by_number": timed(search_by_number, samples),
        "search_by_matter_name": timed(lambda: get("/api/v1/cases", approver, {"q": pick()["matter_name"]}), samples),
        "search_by_applicant_readmodel": timed(by_applicant, samples),
        "search_by_matter_and_date_readmodel": timed(by_matter_and_date, samples),
        "case_page": timed(case_page, samples),
        "metrics": timed(lambda: get("/metrics"), max(10, samples // 5)),
    }
    figures["inbox_department"] = department  # type: ignore[assignment]
    return figures


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=100_000)
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_CASES:,} cases")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--record", action="store_true", help="append the result to docs/benchmarks.md")
    parser.add_argument("--samples", type=int, default=200, help="requests per measured endpoint")
    parser.add_argument("--keep", action="store_true", help="keep the data directory (printed at the end)")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)  # clean up (finally) when stopped from a script too
    total = QUICK_CASES if args.quick else args.cases
    var = Path(tempfile.mkdtemp(prefix="bench-city-year-"))
    base_port = free_base_port()
    federation = Federation(var, base_port, [CITY])
    config = federation.node_config(CITY)
    figures: dict[str, Any] = {"cases": total, "seed": args.seed, "date": datetime.now(UTC).date().isoformat()}
    say = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731 - progress on stderr, JSON on stdout
    supervisor = Supervisor(var / "bench-run", progress=lambda _line: None)
    node: subprocess.Popen[bytes] | None = None
    try:
        supervisor.start([docstore_spec("city-docstore", config.data_dir / "docstore", config.docstore_port)])
        signers = Signers(var / "ca", yiyang())
        generator = YearGenerator(total, args.seed, signers)
        say(f"writing a year of {total:,} cases into {config.docstore_url}/{config.docstore_db} …")

        def progress(stats: Stats, seconds: float) -> None:
            if stats.batches % 200 == 0:
                say(f"  {stats.cases:,} cases, {stats.events:,} events, {stats.events / seconds:,.0f} events/s")

        stats, seconds = write_year(generator, f"{config.docstore_url}/{config.docstore_db}", 500, progress)
        store_bytes = du(config.data_dir / "docstore")
        figures["ingest"] = {
            "seconds": round(seconds, 1),
            "cases_per_s": round(stats.cases / seconds, 1),
            "docs_per_s": round((stats.events + stats.certificates) / seconds, 1),
            "events": stats.events,
            "events_per_case": round(stats.events / stats.cases, 2),
            "bytes_per_event_on_the_wire": round(stats.bytes_sent / max(1, stats.events)),
            "generator": stats.to_dict(),
            "note": "generation, signing and the store's _bulk_docs share the 2 cores in one pipeline",
        }
        figures["store_bytes"] = store_bytes
        figures["store_bytes_per_case"] = round(store_bytes / stats.cases)
        say(f"ingested in {seconds:.0f}s; store {store_bytes / 2**20:.0f} MiB; provisioning and rebuilding …")
        anchor_s = read_everything(f"{config.docstore_url}/{config.docstore_db}")
        config_path = provision_city(federation, signers)
        rebuilt = rebuild(config_path)
        say(rebuilt.pop("out").strip())
        figures.update(rebuilt)
        figures["anchor_read_all_docs_s"] = round(anchor_s, 2)
        figures["rebuild_ratio_to_anchor"] = round(rebuilt["rebuild_s"] / anchor_s, 1)
        figures["rebuild_cases_per_s"] = round(stats.cases / rebuilt["rebuild_s"], 1)
        readmodel_path = config.data_dir / "readmodel.sqlite3"
        readmodel = ReadModel(readmodel_path)
        figures["readmodel_rows"] = readmodel.count()
        figures["readmodel_bytes"] = sum(p.stat().st_size for p in readmodel_path.parent.glob("readmodel.sqlite3*"))
        figures["quarantined"] = len(readmodel.quarantined())
        figures["cases_lost"] = stats.cases - figures["readmodel_rows"]
        supervisor.stop_all()

        say("starting the whole city node (tongban node run) …")
        node, startup_s = start_node(var, base_port)
        figures["node_startup_s"] = round(startup_s, 1)
        time.sleep(3)
        figures["rss_mib_idle"] = rss_by_process(var / "run")
        say("measuring requests …")
        figures["requests"] = measure_requests(config.url, var, readmodel, args.samples, args.seed)
        figures["rss_mib_after_requests"] = rss_by_process(var / "run")
    finally:
        if node is not None:
            stop_node(node)
        supervisor.stop_all()
        if args.keep:
            say(f"data kept in {var}")
        else:
            shutil.rmtree(var, ignore_errors=True)

    requests_ = figures["requests"]
    checks = {
        "inbox": max(requests_["inbox_approver"]["p99_ms"], requests_["inbox_acceptor"]["p99_ms"])
        <= GOALS["inbox_p99_ms"],
        "search": max(
            requests_[k]["p99_ms"]
            for k in (
                "search_by_number",
                "search_by_matter_name",
                "search_by_applicant_readmodel",
                "search_by_matter_and_date_readmodel",
            )
        )
        <= GOALS["search_p99_ms"],
        "case_page": requests_["case_page"]["p99_ms"] <= GOALS["case_page_p99_ms"],
        "rebuild": figures["rebuild_s"] <= GOALS["rebuild_s"],
        "no_case_lost": figures["cases_lost"] == 0 and figures["quarantined"] == 0,
    }
    figures["goals"] = {**GOALS, "checks": checks}
    line = {"bench": "city_year", "figures": figures, "goals_met": all(checks.values())}
    print(json.dumps(line, ensure_ascii=False))
    if args.record:
        append_result(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
