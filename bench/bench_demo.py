"""How long `make demo` takes to all-healthy, and the memory each node uses.

Run it in a checkout (a fresh clone for a cold measurement: no .venv, no node_modules):

    git clone <repo> /tmp/cold && .venv/bin/python bench/bench_demo.py --checkout /tmp/cold

It runs `make demo` there, times set-up and start-up separately (set-up ends at the federation's
first line), sums the RSS of every process of each node (web, worker, agent, document store,
broker) once all are healthy, then presses Ctrl-C and checks that no process is left behind.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import time
from pathlib import Path


def processes_of(var: Path) -> dict[int, str]:
    """pid → command line of every process whose command line mentions the federation's directory."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(var) in cmdline:
            found[int(entry.name)] = cmdline
    return found


def rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--checkout", required=True, type=Path)
    args = parser.parse_args()
    checkout = args.checkout.resolve()
    var = checkout / "var"
    started = time.monotonic()
    demo = subprocess.Popen(
        ["make", "demo"],
        cwd=checkout,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    assert demo.stdout is not None
    setup_done = None
    lines = []
    for line in demo.stdout:
        lines.append(line.rstrip())
        if setup_done is None and line.startswith("starting redis"):
            setup_done = time.monotonic()
        if "press Ctrl-C" in line:
            break
    else:
        raise SystemExit("make demo ended early:\n" + "\n".join(lines[-30:]))
    healthy = time.monotonic()
    time.sleep(5)
    per_node: dict[str, int] = {}
    for pid, cmdline in processes_of(var).items():
        node = next((part.split("/")[0] for part in cmdline.split("nodes/")[1:]), None) if "nodes/" in cmdline else None
        if node:
            per_node[node] = per_node.get(node, 0) + rss_kib(pid)
    shared = sum(rss_kib(pid) for pid, cmd in processes_of(var).items() if "redis" in cmd)
    os.killpg(demo.pid, signal.SIGINT)
    demo.wait(timeout=60)
    time.sleep(1)
    leftovers = processes_of(var)
    print(
        json.dumps(
            {
                "setup_s": round((setup_done or healthy) - started, 1),
                "start_to_all_healthy_s": round(healthy - (setup_done or started), 1),
                "total_s": round(healthy - started, 1),
                "rss_mib_per_node": {code: round(kib / 1024, 1) for code, kib in sorted(per_node.items())},
                "redis_shared_mib": round(shared / 1024, 1),
                "processes_left_after_ctrl_c": len(leftovers),
            },
            ensure_ascii=False,
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
