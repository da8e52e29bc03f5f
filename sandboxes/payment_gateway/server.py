"""The sandbox payment gateway: a separate process that behaves like a real third-party payment provider.

It owns its RSA key pair (exporting the public key for the merchant), the merchant's orders, a pay
page, asynchronous notifies signed RSA2 (RSA-SHA256, PKCS#1 v1.5) retried on a schedule until the
merchant answers ``success``, a query API (the source of truth), refunds and a daily statement (CSV).
Every piece of state lives in sqlite under ``--state-dir``, so a restart loses nothing, not even a
notify that was due. Faults are injected by configuration: fractions of notifies duplicated,
reordered, delayed or lost. The wire protocol is described in docs/payments.md; the signing code
is deliberately the sandbox's own (a real provider shares no code with its merchants).
"""

from __future__ import annotations

import argparse
import base64
import csv
import html
import io
import json
import logging
import random
import re
import secrets
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import requests
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from flask import Flask, Response, request
from werkzeug.serving import make_server

from sandboxes.serving import serve_until_stopped

log = logging.getLogger("sandbox.payment_gateway")

CHINA = timezone(timedelta(hours=8))  # the statement day is the Beijing day
RETRY_SCHEDULE_S = (0, 15, 60, 300, 900, 1800, 3600, 7200, 21600)  # then the notify is given up
MAX_BODY = 16 * 1024
MAX_SKEW_S = 300
STATUSES = (
    "created",
    "paying",
    "succeeded",
    "failed",
    "cancelled",
    "closed",
    "refunding",
    "partially_refunded",
    "refunded",
)
FAIL_REASONS = {"insufficient_funds": "余额不足", "payer_declined": "付款人放弃", "risk_control": "风控拦截"}
_ID = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
_NONCE = re.compile(r"^[A-Za-z0-9]{16,64}$")


@dataclass(frozen=True)
class Faults:
    duplicate: float = 0.0
    reorder: float = 0.0
    delay: float = 0.0
    lose: float = 0.0
    reorder_hold_s: float = 20.0  # before scaling: long enough for the next notify of the order to overtake
    delay_s: float = 120.0


# ---------------------------------------------------------------------------------------------------------------------
# Keys and signatures
# ---------------------------------------------------------------------------------------------------------------------


def load_or_create_key(state_dir: Path) -> rsa.RSAPrivateKey:
    path = state_dir / "gateway_private.pem"
    if not path.exists():
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        tmp.chmod(0o600)
        tmp.replace(path)
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (state_dir / "gateway_public.pem").write_bytes(public_pem)
    return key


def sign_headers(key: rsa.RSAPrivateKey, body: bytes) -> dict[str, str]:
    """Headers signing a response or notify body: RSA-SHA256 over ``timestamp\\nnonce\\nbody\\n``."""
    timestamp = str(int(time.time()))
    nonce = secrets.token_hex(16)
    message = f"{timestamp}\n{nonce}\n".encode() + body + b"\n"
    signature = key.sign(message, padding.PKCS1v15(), hashes.SHA256())
    return {
        "Tb-Timestamp": timestamp,
        "Tb-Nonce": nonce,
        "Tb-Signature": base64.b64encode(signature).decode(),
        "Tb-Sign-Type": "RSA2",
    }


def verify_merchant_request(public_key: rsa.RSAPublicKey, method: str, path: str, headers: Any, body: bytes) -> str:
    """Why a merchant request is refused, or "" when its signature and timestamp hold."""
    timestamp = headers.get("Tb-Timestamp", "")
    nonce = headers.get("Tb-Nonce", "")
    try:
        signature = base64.b64decode(headers.get("Tb-Signature", ""), validate=True)
        skew = abs(time.time() - int(timestamp))
    except ValueError:
        return "malformed signature headers"
    if not _NONCE.fullmatch(nonce) or not signature:
        return "malformed signature headers"
    message = f"{method}\n{path}\n{timestamp}\n{nonce}\n".encode() + body + b"\n"
    try:
        public_key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        return "bad signature"
    if skew > MAX_SKEW_S:
        return "timestamp out of range"
    return ""


# ---------------------------------------------------------------------------------------------------------------------
# Storage
# ---------------------------------------------------------------------------------------------------------------------

SCHEMA = """
CREATE TABLE IF NOT EXISTS orders (
    merchant_order_id TEXT PRIMARY KEY,
    trade_no TEXT UNIQUE NOT NULL,
    amount_fen INTEGER NOT NULL,
    description TEXT NOT NULL,
    notify_url TEXT NOT NULL,
    status TEXT NOT NULL,
    refunded_fen INTEGER NOT NULL DEFAULT 0,
    version INTEGER NOT NULL,
    reason_code TEXT NOT NULL DEFAULT '',
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    paid_at TEXT,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS refunds (
    refund_id TEXT PRIMARY KEY,
    merchant_order_id TEXT NOT NULL,
    amount_fen INTEGER NOT NULL,
    reason TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at TEXT NOT NULL,
    done_at TEXT,
    due_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS notifies (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    merchant_order_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    body TEXT NOT NULL,
    notify_url TEXT NOT NULL,
    attempt INTEGER NOT NULL DEFAULT 0,
    next_at REAL NOT NULL,
    state TEXT NOT NULL,
    fault TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS notifies_due ON notifies(state, next_at);
"""


def _now() -> datetime:
    return datetime.now(UTC)


class Gateway:
    """The gateway's state and rules; the HTTP layer (``make_app``) only parses and signs."""

    def __init__(
        self,
        state_dir: Path,
        merchant_id: str,
        merchant_key: rsa.RSAPublicKey,
        default_notify_url: str,
        public_url: str,
        time_scale: float = 1.0,
        faults: Faults | None = None,
        seed: int | None = None,
    ) -> None:
        self.state_dir = state_dir
        self.merchant_id = merchant_id
        self.merchant_key = merchant_key
        self.default_notify_url = default_notify_url
        self.public_url = public_url.rstrip("/")
        self.time_scale = time_scale
        self.faults = faults or Faults()
        self.rng = random.Random(seed)
        self.key = load_or_create_key(state_dir)
        self.lock = threading.RLock()
        self.db = sqlite3.connect(state_dir / "gateway.sqlite3", check_same_thread=False, isolation_level=None)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.executescript(SCHEMA)
        # A notify that was being sent when the process stopped is sent again.
        self.db.execute("UPDATE notifies SET state = 'pending' WHERE state = 'sending'")
        self.stopping = threading.Event()
        self.http = requests.Session()

    # -- orders -------------------------------------------------------------------------------------------------------

    def _order(self, merchant_order_id: str) -> sqlite3.Row | None:
        return self.db.execute("SELECT * FROM orders WHERE merchant_order_id = ?", (merchant_order_id,)).fetchone()

    def _by_trade(self, trade_no: str) -> sqlite3.Row | None:
        return self.db.execute("SELECT * FROM orders WHERE trade_no = ?", (trade_no,)).fetchone()

    def view(self, row: sqlite3.Row) -> dict[str, Any]:
        return {
            "merchant_id": self.merchant_id,
            "merchant_order_id": row["merchant_order_id"],
            "trade_no": row["trade_no"],
            "status": row["status"],
            "amount_fen": row["amount_fen"],
            "refunded_fen": row["refunded_fen"],
            "version": row["version"],
            "reason_code": row["reason_code"],
            "paid_at": row["paid_at"],
            "expires_at": row["expires_at"],
            "occurred_at": row["updated_at"],
            "pay_url": f"{self.public_url}/pay/{row['trade_no']}",
        }

    def create(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        order_id = body.get("merchant_order_id")
        amount = body.get("amount_fen")
        description = body.get("description", "")
        notify_url = body.get("notify_url") or self.default_notify_url
        expires_at = body.get("expires_at")
        if not isinstance(order_id, str) or not _ID.fullmatch(order_id):
            return 400, {"error": "invalid_order_id"}
        if not isinstance(amount, int) or isinstance(amount, bool) or not 1 <= amount <= 10**10:
            return 400, {"error": "invalid_amount"}
        if not isinstance(description, str) or len(description) > 200:
            return 400, {"error": "invalid_description"}
        if not isinstance(notify_url, str) or not re.fullmatch(r"https?://[^\s]{1,500}", notify_url):
            return 400, {"error": "invalid_notify_url"}
        try:
            expiry = datetime.fromisoformat(expires_at) if expires_at else _now() + timedelta(hours=2)
        except (TypeError, ValueError):
            return 400, {"error": "invalid_expires_at"}
        if expiry.tzinfo is None:
            return 400, {"error": "invalid_expires_at"}
        with self.lock:
            existing = self._order(order_id)
            if existing is not None:
                # Idempotent create: the same request again gets the same order; a different one is refused.
                if existing["amount_fen"] != amount or existing["description"] != description:
                    return 409, {"error": "order_conflict", "message": "same merchant_order_id, other content"}
                return 200, self.view(existing)
            now = _now().isoformat()
            trade_no = _now().strftime("%Y%m%d") + secrets.token_hex(8)
            self.db.execute(
                "INSERT INTO orders (merchant_order_id, trade_no, amount_fen, description, notify_url, status,"
                " version, created_at, expires_at, updated_at) VALUES (?, ?, ?, ?, ?, 'created', 1, ?, ?, ?)",
                (order_id, trade_no, amount, description, notify_url, now, expiry.isoformat(), now),
            )
            return 201, self.view(self._order(order_id))

    def _expire_if_due(self, row: sqlite3.Row) -> sqlite3.Row:
        if row["status"] in ("created", "paying") and datetime.fromisoformat(row["expires_at"]) <= _now():
            self._change(row, "closed")
            return self._order(row["merchant_order_id"])  # type: ignore[return-value]
        return row

    def _change(self, row: sqlite3.Row, status: str, *, notify: bool = False, **fields: Any) -> None:
        now = _now().isoformat()
        assignments = ", ".join(f"{name} = ?" for name in fields)
        sql = "UPDATE orders SET status = ?, version = version + 1, updated_at = ?"
        sql += f", {assignments}" if assignments else ""
        self.db.execute(sql + " WHERE merchant_order_id = ?", (status, now, *fields.values(), row["merchant_order_id"]))
        if notify:
            self._enqueue_notify(self._order(row["merchant_order_id"]))

    def query(self, merchant_order_id: str) -> tuple[int, dict[str, Any]]:
        with self.lock:
            row = self._order(merchant_order_id)
            if row is None:
                return 404, {"error": "order_not_found"}
            return 200, self.view(self._expire_if_due(row))

    def close(self, merchant_order_id: str, reason: str) -> tuple[int, dict[str, Any]]:
        if reason not in ("cancelled", "closed"):
            return 400, {"error": "invalid_reason"}
        with self.lock:
            row = self._order(merchant_order_id)
            if row is None:
                return 404, {"error": "order_not_found"}
            row = self._expire_if_due(row)
            if row["status"] in ("created", "paying"):
                self._change(row, reason)
                row = self._order(merchant_order_id)
            elif row["status"] not in ("cancelled", "closed"):
                return 409, {"error": "order_not_open", **self.view(row)}
            return 200, self.view(row)

    # -- the payer ----------------------------------------------------------------------------------------------------

    def open_pay_page(self, trade_no: str) -> tuple[int, sqlite3.Row | None]:
        with self.lock:
            row = self._by_trade(trade_no)
            if row is None:
                return 404, None
            row = self._expire_if_due(row)
            if row["status"] == "created":
                self._change(row, "paying", notify=True)
                row = self._by_trade(trade_no)
            return (200 if row["status"] in ("paying", "succeeded") else 409), row

    def pay(self, trade_no: str, action: str, reason: str) -> tuple[int, sqlite3.Row | None]:
        with self.lock:
            row = self._by_trade(trade_no)
            if row is None:
                return 404, None
            row = self._expire_if_due(row)
            if row["status"] == "succeeded" and action == "pay":
                return 200, row  # the payer pressed twice: paid once
            if row["status"] not in ("created", "paying"):
                return 409, row
            if action == "pay":
                self._change(row, "succeeded", notify=True, paid_at=_now().isoformat())
            elif action == "fail" and reason in FAIL_REASONS:
                self._change(row, "failed", notify=True, reason_code=reason)
            else:
                return 400, row
            return 200, self._by_trade(trade_no)

    # -- refunds ------------------------------------------------------------------------------------------------------

    def refund(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        order_id = body.get("merchant_order_id")
        refund_id = body.get("refund_id")
        amount = body.get("amount_fen")
        reason = body.get("reason", "")
        if not isinstance(order_id, str) or not isinstance(refund_id, str) or not _ID.fullmatch(refund_id):
            return 400, {"error": "invalid_refund_id"}
        if not isinstance(amount, int) or isinstance(amount, bool) or amount < 1:
            return 400, {"error": "invalid_amount"}
        if not isinstance(reason, str) or len(reason) > 200:
            return 400, {"error": "invalid_reason"}
        with self.lock:
            row = self._order(order_id)
            if row is None:
                return 404, {"error": "order_not_found"}
            done = self.db.execute("SELECT * FROM refunds WHERE refund_id = ?", (refund_id,)).fetchone()
            if done is not None:
                if done["merchant_order_id"] != order_id or done["amount_fen"] != amount:
                    return 409, {"error": "refund_conflict"}
                return 200, {"refund_id": refund_id, "status": done["status"], **self.view(row)}
            if row["status"] not in ("succeeded", "partially_refunded"):
                return 409, {"error": "order_not_refundable", **self.view(row)}
            if amount > row["amount_fen"] - row["refunded_fen"]:
                return 409, {"error": "refund_too_large"}
            due = time.time() + 2.0 * self.time_scale
            self.db.execute(
                "INSERT INTO refunds (refund_id, merchant_order_id, amount_fen, reason, status, created_at, due_at)"
                " VALUES (?, ?, ?, ?, 'processing', ?, ?)",
                (refund_id, order_id, amount, reason, _now().isoformat(), due),
            )
            self._change(row, "refunding", notify=True)
            return 201, {"refund_id": refund_id, "status": "processing", **self.view(self._order(order_id))}

    def finish_due_refunds(self) -> None:
        with self.lock:
            due = self.db.execute(
                "SELECT * FROM refunds WHERE status = 'processing' AND due_at <= ?", (time.time(),)
            ).fetchall()
            for refund in due:
                row = self._order(refund["merchant_order_id"])
                refunded = row["refunded_fen"] + refund["amount_fen"]  # type: ignore[index]
                status = "refunded" if refunded == row["amount_fen"] else "partially_refunded"  # type: ignore[index]
                self.db.execute(
                    "UPDATE refunds SET status = 'succeeded', done_at = ? WHERE refund_id = ?",
                    (_now().isoformat(), refund["refund_id"]),
                )
                self._change(row, status, notify=True, refunded_fen=refunded)

    # -- statement ----------------------------------------------------------------------------------------------------

    def statement(self, day: date) -> str:
        """CSV of the money that moved on one Beijing day: payments and refunds, in fen."""
        start = datetime.combine(day, datetime.min.time(), CHINA).astimezone(UTC).isoformat()
        end = datetime.combine(day + timedelta(days=1), datetime.min.time(), CHINA).astimezone(UTC).isoformat()
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["type", "merchant_order_id", "trade_no", "refund_id", "amount_fen", "time"])
        with self.lock:
            paid = self.db.execute(
                "SELECT * FROM orders WHERE paid_at >= ? AND paid_at < ? ORDER BY paid_at", (start, end)
            ).fetchall()
            refunds = self.db.execute(
                "SELECT r.*, o.trade_no FROM refunds r JOIN orders o USING (merchant_order_id)"
                " WHERE r.status = 'succeeded' AND r.done_at >= ? AND r.done_at < ? ORDER BY r.done_at",
                (start, end),
            ).fetchall()
        for row in paid:
            writer.writerow(
                ["payment", row["merchant_order_id"], row["trade_no"], "", row["amount_fen"], row["paid_at"]]
            )
        for row in refunds:
            writer.writerow(
                [
                    "refund",
                    row["merchant_order_id"],
                    row["trade_no"],
                    row["refund_id"],
                    -row["amount_fen"],
                    row["done_at"],
                ]
            )
        return out.getvalue()

    # -- notifies -----------------------------------------------------------------------------------------------------

    def _enqueue_notify(self, row: sqlite3.Row) -> None:
        view = self.view(row)
        view.pop("pay_url")
        view["event_id"] = f"{row['trade_no']}-{row['version']}"
        body = json.dumps(view, ensure_ascii=False, sort_keys=True)
        at = time.time()
        faults = self.faults
        roll = self.rng.random
        fault = ""
        if roll() < faults.lose:
            fault = "lost"
        elif roll() < faults.reorder:
            fault, at = "reordered", at + faults.reorder_hold_s * self.time_scale
        elif roll() < faults.delay:
            fault, at = "delayed", at + faults.delay_s * self.time_scale
        state = "lost" if fault == "lost" else "pending"
        insert = (
            "INSERT INTO notifies (merchant_order_id, version, body, notify_url, next_at, state, fault)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)"
        )
        self.db.execute(insert, (row["merchant_order_id"], row["version"], body, row["notify_url"], at, state, fault))
        if state == "pending" and roll() < faults.duplicate:
            copy_at = at + self.rng.uniform(0.0, 1.0) * self.time_scale
            self.db.execute(
                insert, (row["merchant_order_id"], row["version"], body, row["notify_url"], copy_at, state, "duplicate")
            )

    def _take_due(self, limit: int = 64) -> list[sqlite3.Row]:
        with self.lock:
            rows = self.db.execute(
                "SELECT * FROM notifies WHERE state = 'pending' AND next_at <= ? ORDER BY next_at LIMIT ?",
                (time.time(), limit),
            ).fetchall()
            if rows:
                marks = ",".join("?" * len(rows))
                self.db.execute(f"UPDATE notifies SET state = 'sending' WHERE id IN ({marks})", [r["id"] for r in rows])
            return rows

    def _deliver(self, row: sqlite3.Row) -> None:
        body = row["body"].encode()
        try:
            response = self.http.post(
                row["notify_url"],
                data=body,
                headers={"Content-Type": "application/json; charset=utf-8", **sign_headers(self.key, body)},
                timeout=5,
            )
            acknowledged = response.status_code == 200 and response.text.strip() == "success"
        except requests.RequestException:
            acknowledged = False
        attempt = row["attempt"] + 1
        with self.lock:
            if acknowledged:
                self.db.execute(
                    "UPDATE notifies SET state = 'delivered', attempt = ? WHERE id = ?", (attempt, row["id"])
                )
            elif attempt >= len(RETRY_SCHEDULE_S):
                self.db.execute("UPDATE notifies SET state = 'gave_up', attempt = ? WHERE id = ?", (attempt, row["id"]))
            else:
                next_at = time.time() + RETRY_SCHEDULE_S[attempt] * self.time_scale
                self.db.execute(
                    "UPDATE notifies SET state = 'pending', attempt = ?, next_at = ? WHERE id = ?",
                    (attempt, next_at, row["id"]),
                )

    def run_background(self, workers: int = 8) -> None:
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="notify")
        while not self.stopping.is_set():
            due: list[sqlite3.Row] = []
            try:
                self.finish_due_refunds()
                due = self._take_due()
                list(pool.map(self._deliver, due))
            except Exception:  # the loop must outlive any one bad row; the row stays for the next pass
                log.exception("notify loop")
            if not due:
                self.stopping.wait(0.05)
        pool.shutdown(wait=True)

    def notify_counts(self) -> dict[str, dict[str, int]]:
        """How many notifies are in each delivery state, and how many each injected fault touched."""
        with self.lock:
            rows = self.db.execute("SELECT state, fault, COUNT(*) AS n FROM notifies GROUP BY state, fault").fetchall()
            attempts = self.db.execute("SELECT attempt, COUNT(*) AS n FROM notifies GROUP BY attempt").fetchall()
        counts: dict[str, dict[str, int]] = {"states": {}, "faults": {}, "attempts": {}}
        for row in attempts:
            counts["attempts"][str(row["attempt"])] = row["n"]
        for row in rows:
            counts["states"][row["state"]] = counts["states"].get(row["state"], 0) + row["n"]
            if row["fault"]:
                counts["faults"][row["fault"]] = counts["faults"].get(row["fault"], 0) + row["n"]
        return counts


# ---------------------------------------------------------------------------------------------------------------------
# HTTP
# ---------------------------------------------------------------------------------------------------------------------

PAGE = """<!doctype html><html lang="zh-CN"><head><meta charset="utf-8">
<title>沙箱收银台 Sandbox checkout</title></head><body><h1>沙箱收银台 / Sandbox checkout</h1>{content}</body></html>"""


def _yuan(fen: int) -> str:
    return f"{fen // 100}.{fen % 100:02d}"


def make_app(gateway: Gateway) -> Flask:
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY

    def signed(status: int, payload: dict[str, Any] | str, content_type: str = "application/json") -> Response:
        body = (payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)).encode()
        return Response(body, status=status, content_type=content_type, headers=sign_headers(gateway.key, body))

    def authenticated() -> str:
        if request.headers.get("Tb-Merchant") != gateway.merchant_id:
            return "unknown merchant"
        path = request.full_path if request.query_string else request.path
        return verify_merchant_request(gateway.merchant_key, request.method, path, request.headers, request.get_data())

    def json_body() -> dict[str, Any] | None:
        try:
            data = json.loads(request.get_data() or b"{}")
        except ValueError:
            return None
        return data if isinstance(data, dict) else None

    @app.before_request
    def check_merchant() -> Response | None:
        if request.path.startswith("/v3/"):
            why = authenticated()
            if why:
                return signed(401, {"error": "unauthenticated", "message": why})
        return None

    @app.get("/healthz")
    def healthz() -> Response:
        return Response("ok", content_type="text/plain")

    @app.get("/public-key.pem")
    def public_key() -> Response:
        return Response((gateway.state_dir / "gateway_public.pem").read_bytes(), content_type="application/x-pem-file")

    @app.post("/v3/orders")
    def create() -> Response:
        body = json_body()
        return signed(*gateway.create(body)) if body is not None else signed(400, {"error": "invalid_json"})

    @app.get("/v3/orders/<order_id>")
    def query(order_id: str) -> Response:
        return signed(*gateway.query(order_id))

    @app.post("/v3/orders/<order_id>/close")
    def close(order_id: str) -> Response:
        body = json_body() or {}
        return signed(*gateway.close(order_id, body.get("reason", "cancelled")))

    @app.post("/v3/refunds")
    def refund() -> Response:
        body = json_body()
        return signed(*gateway.refund(body)) if body is not None else signed(400, {"error": "invalid_json"})

    @app.get("/v3/statements/<day>")
    def statement(day: str) -> Response:
        try:
            parsed = date.fromisoformat(day)
        except ValueError:
            return signed(400, {"error": "invalid_date"})
        return signed(200, gateway.statement(parsed), "text/csv; charset=utf-8")

    @app.get("/sandbox/notifies")
    def notifies() -> Response:
        return Response(json.dumps(gateway.notify_counts()), content_type="application/json")

    def page(status: int, row: sqlite3.Row | None) -> Response:
        if row is None:
            return Response(
                PAGE.format(content="<p>订单不存在 / no such order</p>"), status=404, content_type="text/html"
            )
        amount = _yuan(row["amount_fen"])
        if row["status"] == "succeeded":
            content = f"<p id='result'>已支付 ¥{amount} / paid</p>"
        elif row["status"] == "failed":
            content = f"<p id='result'>支付失败 / payment failed: {html.escape(row['reason_code'])}</p>"
        elif status == 409:
            content = (
                f"<p id='result'>订单{'已取消' if row['status'] == 'cancelled' else '已关闭'}，不能支付 / "
                f"the order is {html.escape(row['status'])} and cannot be paid</p>"
            )
        else:
            reasons = "".join(f"<option value='{k}'>{v} / {k}</option>" for k, v in FAIL_REASONS.items())
            content = (
                f"<p>{html.escape(row['description'])}</p><p>金额 / amount: ¥<span id='amount'>{amount}</span></p>"
                "<form method='post'><button name='action' value='pay' id='pay'>确认支付 / Pay</button>"
                f"<select name='reason'>{reasons}</select>"
                "<button name='action' value='fail' id='fail'>模拟失败 / Fail</button></form>"
            )
        return Response(PAGE.format(content=content), status=status, content_type="text/html; charset=utf-8")

    @app.get("/pay/<trade_no>")
    def pay_page(trade_no: str) -> Response:
        return page(*gateway.open_pay_page(trade_no))

    @app.post("/pay/<trade_no>")
    def pay(trade_no: str) -> Response:
        return page(*gateway.pay(trade_no, request.form.get("action", ""), request.form.get("reason", "")))

    return app


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError("a fraction between 0 and 1")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandboxes.payment_gateway", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--state-dir", type=Path)
    parser.add_argument("--data", type=Path, help="same as --state-dir (the sandboxes' common form)")
    parser.add_argument(
        "--config",
        type=Path,
        help="JSON with merchant_id, merchant_public_key, notify_url and optionally public_url, time_scale, "
        "duplicate, reorder, delay, lose, seed (the options below override it)",
    )
    parser.add_argument("--merchant-id")
    parser.add_argument("--merchant-public-key", type=Path, help="PEM of the merchant's RSA key")
    parser.add_argument("--notify-url", help="default notify URL (an order may name its own)")
    parser.add_argument("--public-url", help="base URL of pay pages (default http://HOST:PORT)")
    parser.add_argument("--time-scale", type=float, help="multiplies retry and refund delays")
    parser.add_argument("--duplicate", type=_fraction, help="fraction of notifies sent twice")
    parser.add_argument("--reorder", type=_fraction, help="fraction held back behind later ones")
    parser.add_argument("--delay", type=_fraction, help="fraction delayed by 120 s (scaled)")
    parser.add_argument("--lose", type=_fraction, help="fraction never sent")
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)
    config = json.loads(args.config.read_text("utf-8")) if args.config else {}
    if not isinstance(config, dict):
        parser.error("the config must be a JSON object")

    def option(name: str, default: Any = None) -> Any:
        given = getattr(args, name)
        return given if given is not None else config.get(name, default)

    state_dir = args.state_dir or args.data
    merchant_id, notify_url = option("merchant_id"), option("notify_url")
    public_key_path = option("merchant_public_key")
    if state_dir is None or not merchant_id or not public_key_path or not notify_url:
        parser.error("needs --state-dir (or --data), a merchant id, the merchant's public key and a notify URL")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    state_dir.mkdir(parents=True, exist_ok=True)
    merchant_key = serialization.load_pem_public_key(Path(str(public_key_path)).read_bytes())
    if not isinstance(merchant_key, rsa.RSAPublicKey):
        parser.error("the merchant key must be an RSA public key")
    faults = Faults(
        duplicate=float(option("duplicate", 0.0)),
        reorder=float(option("reorder", 0.0)),
        delay=float(option("delay", 0.0)),
        lose=float(option("lose", 0.0)),
    )
    seed = option("seed")
    gateway = Gateway(
        state_dir,
        str(merchant_id),
        merchant_key,
        str(notify_url),
        str(option("public_url") or f"http://{args.host}:{args.port}"),
        time_scale=float(option("time_scale", 1.0)),
        faults=faults,
        seed=int(seed) if seed is not None else None,
    )
    server = make_server(args.host, args.port, make_app(gateway), threaded=True)
    log.info("sandbox payment gateway on %s:%s", args.host, args.port)
    serve_until_stopped(server, gateway.stopping, gateway.run_background, "notifier", join_s=10)
    return 0
