"""Federation benchmarks on a real local federation (the 8 demo nodes, every process real).

1. Village acceptance → visible in county B's approver inbox, four hops (village → township →
   county A → city → county B): p50/p95, with MQTT wake-ups and with the timer alone.
2. Convergence after 1,000 cases accepted at a village whose uplink is cut (agent and broker
   stopped with SIGSTOP): time from reconnecting until county B and the city hold all of them.

    .venv/bin/python bench/bench_federation.py [--samples 30] [--offline 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

from node.domain.identifiers import make_id_number
from node.runtime.demo import call, login
from node.runtime.federation import Federation
from node.runtime.services import port_is_free
from tiers.demo import CITY, HESHAN, HESHAN_VILLAGE, ZIYANG_VILLAGE

ROOT = Path(__file__).resolve().parents[1]
VILLAGE_A, COUNTY_B, VILLAGE_B = ZIYANG_VILLAGE, HESHAN, HESHAN_VILLAGE


def application(serial: int) -> dict:
    return {
        "matter_code": "430900-JF-0001",
        "applicant": {
            "kind": "person",
            "id_number": make_id_number("430903", date(1970, 1, 1), serial % 999),
            "name": "测试",
        },
        "materials": ["M001", "M002", "M013", "M003"],
        "residence_code": VILLAGE_B,
    }


def start(var: Path, base: int, extra: list[str]) -> subprocess.Popen[bytes]:
    log = (var / "up.log").open("w")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "node.entrypoints.cli",
            "federation",
            "up",
            "--var",
            str(var),
            "--base-port",
            str(base),
            *extra,
        ],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 240
    while "press Ctrl-C" not in (var / "up.log").read_text():
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError((var / "up.log").read_text()[-2000:])
        time.sleep(0.5)
    return process


def stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGINT)
    process.wait(timeout=60)


def four_hop_latency(federation: Federation, samples: int) -> list[float]:
    village = federation.node_config(VILLAGE_A).url
    county = federation.node_config(COUNTY_B).url
    acceptor, approver = login(federation, VILLAGE_A, "acceptor"), login(federation, COUNTY_B, "approver.civil_affairs")
    call(f"{village}/api/v1/cases", application(0), acceptor)  # warm-up
    time.sleep(2)
    latencies = []
    for i in range(samples):
        case_no = call(f"{village}/api/v1/cases", application(i), acceptor)["case_no"]
        started = time.perf_counter()
        while not call(f"{county}/api/v1/cases?q={case_no}", token=approver)["cases"]:
            time.sleep(0.02)
        latencies.append(time.perf_counter() - started)
        time.sleep(0.5)
    return latencies


def offline_convergence(federation: Federation, count: int) -> dict[str, float]:
    village = federation.node_config(VILLAGE_B).url
    acceptor = login(federation, VILLAGE_B, "acceptor")
    pids = [
        int((federation.var_dir / "run" / f"{VILLAGE_B}-{name}.pid").read_text()) for name in ("agent", "mosquitto")
    ]
    for pid in pids:
        os.killpg(pid, signal.SIGSTOP)
    try:
        numbers = {call(f"{village}/api/v1/cases", application(i), acceptor)["case_no"] for i in range(count)}
    finally:
        reconnected = time.perf_counter()
        for pid in pids:
            os.killpg(pid, signal.SIGCONT)
    day = next(iter(numbers)).rsplit("-", 1)[0]
    result = {}
    for code in (COUNTY_B, CITY):
        store = f"http://127.0.0.1:{federation.node_config(code).docstore_port}/tongban"
        start_key, end_key = json.dumps(f"event:{day}"), json.dumps(f"event:{day}\ufff0")
        while True:
            rows = call(f"{store}/_all_docs?startkey={start_key}&endkey={end_key}".replace(" ", ""))["rows"]
            if numbers <= {row["id"].split(":")[1] for row in rows}:
                break
            time.sleep(0.2)
        result[code] = time.perf_counter() - reconnected
    return result


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "n": len(values),
        "p50_s": round(statistics.median(ordered), 3),
        "p95_s": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))], 3),
        "max_s": round(ordered[-1], 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=30)
    parser.add_argument(
        "--timer-samples", type=int, default=8, help="timer-only runs are slow: fewer samples (0 skips them)"
    )
    parser.add_argument("--offline", type=int, default=1000)
    args = parser.parse_args()
    base = next(b for b in range(23000, 40000, 100) if all(port_is_free(p) for p in range(b, b + 100)))
    report: dict[str, object] = {}
    runs = [("wakeups", [])] + ([("timer_only", ["--no-wakeups"])] if args.timer_samples > 0 else [])
    for label, extra in runs:
        var = Path(tempfile.mkdtemp(prefix=f"tongban-bench-{label}-"))
        process = start(var, base, extra)
        try:
            federation = Federation.load(var)
            samples = args.samples if label == "wakeups" else args.timer_samples
            report[f"four_hops_{label}"] = summary(four_hop_latency(federation, samples))
            if label == "wakeups":
                report["offline_convergence_s"] = {
                    "cases": args.offline,
                    **{code: round(s, 2) for code, s in offline_convergence(federation, args.offline).items()},
                }
        finally:
            stop(process)
        print(json.dumps(report, indent=2), flush=True)


if __name__ == "__main__":
    main()
