"""1,000 payments through the sandbox gateway with faulty notifies: every order settled exactly once.

Starts the sandbox payment gateway as its own process on a free loopback port, told to duplicate
30 % of its notifies, reorder 10 % and lose 5 % (retry and hold-back delays compressed by
``--time-scale``), and a merchant notify endpoint (Flask, threaded) in front of ``PaymentService``
with a SQLAlchemy/sqlite repository. Creates N orders (one per case), opens each pay page and pays
it, waits until the gateway has no notify left to send, then runs reconciliation once. Checks that
every order is ``succeeded``, entered that state exactly once and was reported settled exactly once,
that the gateway's daily statement lists each payment once with the right amount, and that no
anomaly was recorded. The anchor, measured in the same run, is the same N payments with no faults.

    .venv/bin/python bench/bench_payments.py [--payments 1000] [--no-anchor] [--json]

Exit status 1 when any order is not settled exactly once.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import requests
from flask import Flask, Response, request
from werkzeug.serving import make_server

from node.adapters.payment_gateway import HttpPaymentGateway, ensure_merchant_key, load_public_key
from node.adapters.payment_store import SqlPaymentRepository
from node.adapters.sqlite import sqlite_engine
from node.domain.payment import FeeItem, PaymentOrder, PaymentState
from node.runtime.services import PROJECT_ROOT, free_port, http_ok
from node.service_layer.payments import PaymentService

MERCHANT_ID = "tongban-bench"
PAYER = "ef" * 32
BEIJING = timezone(timedelta(hours=8))
FAULTS = ("--duplicate", "0.3", "--reorder", "0.1", "--lose", "0.05")


def wait_for(condition: Any, timeout: float, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return bool(condition())


def run(payments: int, faults: tuple[str, ...], time_scale: float, workers: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-payments-") as tmp:
        root = Path(tmp)
        merchant_key = ensure_merchant_key(root / "merchant.pem")
        settled: Counter[str] = Counter()
        settled_lock = threading.Lock()
        answers: Counter[str] = Counter()

        def on_settled(order: PaymentOrder) -> None:
            with settled_lock:
                settled[order.order_id] += 1

        # The merchant's notify endpoint, as a node would mount it.
        app = Flask("merchant")
        holder: dict[str, PaymentService] = {}

        @app.post("/payments/notify")
        def notify() -> Response:
            answer = holder["service"].handle_notify(request.headers, request.get_data())
            with settled_lock:
                answers[f"{answer.status} {answer.outcome}"] += 1
            return Response(answer.body, status=answer.status)

        merchant = make_server("127.0.0.1", free_port(), app, threaded=True)
        threading.Thread(target=merchant.serve_forever, daemon=True).start()
        notify_url = f"http://127.0.0.1:{merchant.server_port}/payments/notify"

        port = free_port()
        state_dir = root / "gateway"
        argv = [
            sys.executable,
            "-m",
            "sandboxes.payment_gateway",
            "--port",
            str(port),
            "--state-dir",
            str(state_dir),
            "--merchant-id",
            MERCHANT_ID,
            "--merchant-public-key",
            str(root / "merchant.pub.pem"),
            "--notify-url",
            notify_url,
            "--time-scale",
            str(time_scale),
            "--seed",
            "2026",
            *faults,
        ]
        log = (root / "gateway.log").open("wb")
        env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            base = f"http://127.0.0.1:{port}"
            if not wait_for(lambda: http_ok(f"{base}/healthz"), timeout=30):
                raise SystemExit("the sandbox gateway did not start:\n" + (root / "gateway.log").read_text())
            gateway = HttpPaymentGateway(
                base, MERCHANT_ID, merchant_key, load_public_key((state_dir / "gateway_public.pem").read_bytes())
            )
            repository = SqlPaymentRepository(sqlite_engine(root / "payments.sqlite3"))
            service = PaymentService(repository, gateway, region_code="430903", on_settled=on_settled)
            holder["service"] = service
            items = (FeeItem("430900-QR-0003", "证照工本费", 2000),)
            session = requests.Session()

            def create(i: int) -> tuple[str, str]:
                order, url = service.create_for_case(f"B{i:08d}", items, PAYER, "hall", "bench")
                return order.order_id, url

            def pay(url: str) -> None:
                assert session.get(url, timeout=30).status_code == 200
                assert session.post(url, data={"action": "pay"}, timeout=30).status_code == 200

            started = time.perf_counter()
            with ThreadPoolExecutor(workers) as pool:
                created = list(pool.map(create, range(payments)))
            created_s = time.perf_counter() - started
            with ThreadPoolExecutor(workers) as pool:
                list(pool.map(pay, [url for _, url in created]))
            paid_s = time.perf_counter() - started

            def drained() -> bool:
                states = session.get(f"{base}/sandbox/notifies", timeout=30).json()["states"]
                return states.get("pending", 0) + states.get("sending", 0) == 0

            if not wait_for(drained, timeout=600, interval=0.2):
                raise SystemExit("notifies did not drain")
            drained_s = time.perf_counter() - started
            by_notify = sum(1 for order_id, _ in created if settled[order_id])
            report = service.reconcile(older_than=timedelta(0))
            total_s = time.perf_counter() - started

            orders = [repository.get(order_id) for order_id, _ in created]
            wrong = [
                o.order_id for o in orders if o is None or o.state is not PaymentState.SUCCEEDED or o.times_settled != 1
            ]
            not_once = [order_id for order_id, _ in created if settled[order_id] != 1]
            statement = gateway.statement(datetime.now(BEIJING).date())
            in_statement = Counter(line.order_id for line in statement if line.kind == "payment")
            statement_ok = in_statement == Counter(order_id for order_id, _ in created) and all(
                line.amount_fen == 2000 for line in statement
            )
            counts = session.get(f"{base}/sandbox/notifies", timeout=30).json()
            return {
                "payments": payments,
                "faults": " ".join(faults) or "none",
                "notifies": counts,
                "merchant_answers": dict(answers),
                "create_s": round(created_s, 2),
                "create_and_pay_s": round(paid_s, 2),
                "notifies_drained_s": round(drained_s, 2),
                "settled_by_notify": by_notify,
                "settled_by_reconciliation": len(report.settled),
                "reconcile_checked": report.checked,
                "reconcile_s": round(total_s - drained_s, 2),
                "total_s": round(total_s, 2),
                "not_succeeded_once": len(wrong),
                "not_reported_once": len(not_once),
                "statement_ok": statement_ok,
                "anomalies": len(repository.anomalies()),
            }
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)
            merchant.shutdown()
            log.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--payments", type=int, default=1000)
    parser.add_argument("--time-scale", type=float, default=0.01, help="compresses retry and hold-back delays")
    parser.add_argument("--workers", type=int, default=8, help="concurrent payers")
    parser.add_argument("--no-anchor", action="store_true", help="skip the fault-free run")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per notify would drown the result
    results = {"faulty": run(args.payments, FAULTS, args.time_scale, args.workers)}
    if not args.no_anchor:
        results["anchor_no_faults"] = run(args.payments, (), args.time_scale, args.workers)
        results["ratio_total"] = round(results["faulty"]["total_s"] / results["anchor_no_faults"]["total_s"], 2)
    results["date"] = datetime.now(BEIJING).date().isoformat()
    results["cpus"] = os.cpu_count()
    print(json.dumps(results, ensure_ascii=False, indent=None if args.json else 2))
    faulty = results["faulty"]
    ok = (
        faulty["not_succeeded_once"] == 0
        and faulty["not_reported_once"] == 0
        and faulty["statement_ok"]
        and faulty["anomalies"] == 0
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
