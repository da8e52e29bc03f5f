"""100 concurrent bookings for the last 10 places of one slot: exactly 10 must succeed.

Against ``SqliteAppointmentStore`` on a real file: a slot of 40 places is filled to 30, then 100
bookers (threads, each with its own connection as separate web workers have; or ``--processes``)
wait at a barrier and book the same slot at once. The script counts successes and ``slot_full``
refusals, checks the rows in the database, and times each booking. The anchor, in the same run:
the same 100 attempts made one after another by a single booker on a fresh file.

    .venv/bin/python bench/bench_appointments.py [--bookers 100] [--last 10] [--processes] [--json]

Exit status 1 unless exactly ``--last`` bookings succeeded and the rest were refused as full.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import sys
import tempfile
import threading
import time
from datetime import date, datetime
from datetime import time as clock
from pathlib import Path

from node.adapters.appointments_store import SqliteAppointmentStore
from node.domain.appointments import WorkingPlan, check_booking
from node.domain.errors import DomainError
from node.domain.workdays import WorkingDayCalendar

NODE = "430902101201"
MATTER = "430900-QR-0001"
CAPACITY = 40
NOW = datetime(2026, 12, 3, 10, 0)
START = datetime.combine(date(2026, 12, 7), clock(10, 0))
CALENDAR = WorkingDayCalendar()
PLAN = WorkingPlan.from_dict(
    {
        "node": NODE,
        "opens": "09:00",
        "closes": "17:00",
        "slot_minutes": 30,
        "groups": [
            {"code": "general", "name_zh": "综合窗口", "name_en": "General", "capacity": CAPACITY, "prefix": "A"}
        ],
    }
)


def attempt(path: Path, applicant: str) -> tuple[str, float]:
    store = SqliteAppointmentStore(path)
    try:
        slot = check_booking(PLAN, CALENDAR, MATTER, START, NOW)
        started = time.perf_counter()
        try:
            store.book(slot, MATTER, applicant, NODE, CAPACITY, NOW)
            outcome = "ok"
        except DomainError as exc:
            outcome = exc.code
        return outcome, (time.perf_counter() - started) * 1000
    finally:
        store.close()


def _process_worker(path: str, applicant: str, barrier, results) -> None:  # type: ignore[no-untyped-def]
    barrier.wait()
    results.put(attempt(Path(path), applicant))


def prepare(path: Path, last: int) -> None:
    store = SqliteAppointmentStore(path)
    slot = check_booking(PLAN, CALENDAR, MATTER, START, NOW)
    for i in range(CAPACITY - last):
        store.book(slot, MATTER, f"earlier-{i}", NODE, CAPACITY, NOW)
    store.close()


def race(path: Path, bookers: int, processes: bool) -> list[tuple[str, float]]:
    if processes:
        context = multiprocessing.get_context("fork")
        barrier, results = context.Barrier(bookers), context.Queue()
        workers = [
            context.Process(target=_process_worker, args=(str(path), f"racer-{i}", barrier, results))
            for i in range(bookers)
        ]
        for worker in workers:
            worker.start()
        outcomes = [results.get(timeout=120) for _ in workers]
        for worker in workers:
            worker.join()
        return outcomes
    barrier = threading.Barrier(bookers)
    outcomes: list[tuple[str, float]] = []
    lock = threading.Lock()

    def run(i: int) -> None:
        barrier.wait()
        result = attempt(path, f"racer-{i}")
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(bookers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bookers", type=int, default=100)
    parser.add_argument("--last", type=int, default=10)
    parser.add_argument("--processes", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "race.sqlite3"
        prepare(path, args.last)
        started = time.perf_counter()
        outcomes = race(path, args.bookers, args.processes)
        race_s = time.perf_counter() - started
        check = SqliteAppointmentStore(path)
        rows = check.taken(NODE, START.date()).get(("general", START), 0)
        check.close()

        anchor_path = Path(tmp) / "anchor.sqlite3"
        prepare(anchor_path, args.last)
        started = time.perf_counter()
        sequential = [attempt(anchor_path, f"racer-{i}") for i in range(args.bookers)]
        anchor_s = time.perf_counter() - started
    codes = [code for code, _ in outcomes]
    timings = [ms for _, ms in outcomes]
    result = {
        "bookers": args.bookers,
        "mode": "processes" if args.processes else "threads",
        "free_places": args.last,
        "succeeded": codes.count("ok"),
        "slot_full": codes.count("slot_full"),
        "other": sorted(set(codes) - {"ok", "slot_full"}),
        "rows_in_slot": rows,
        "capacity": CAPACITY,
        "race_s": round(race_s, 3),
        "booking_p50_ms": round(statistics.median(timings), 2),
        "booking_p95_ms": round(percentile(timings, 0.95), 2),
        "anchor_sequential_s": round(anchor_s, 3),
        "anchor_succeeded": [code for code, _ in sequential].count("ok"),
        "ratio_race_to_anchor": round(race_s / anchor_s, 2),
    }
    print(json.dumps(result) if args.json else "\n".join(f"{k}: {v}" for k, v in result.items()))
    exact = result["succeeded"] == args.last and result["slot_full"] == args.bookers - args.last
    return 0 if exact and rows == CAPACITY else 1


if __name__ == "__main__":
    sys.exit(main())
