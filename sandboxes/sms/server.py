"""A sandbox SMS gateway (短信平台) that runs as its own process and speaks a provider's open-API protocol.

Run: ``python -m sandboxes.sms --port 8700 --data DIR [--config sms.json]``.

Protocol (JSON over HTTP, described for callers in docs/sms.md):

- Every request to ``/v1/`` is signed: ``X-Sms-App-Key``, ``X-Sms-Timestamp`` (unix seconds),
  ``X-Sms-Nonce`` (16-64 letters/digits) and ``X-Sms-Signature`` = hex HMAC-SHA256(app secret,
  ``METHOD\\npath\\ntimestamp\\nnonce\\n`` + body). A bad signature is refused (401
  ``signature_invalid``), a timestamp more than 300 s off too (401 ``timestamp_stale``), and a nonce
  the app already used (401 ``nonce_replayed``; nonces are remembered across restarts).
- ``POST /v1/sms/send`` ``{phone, template_code, params, client_ref, callback_url?}`` →
  ``200 {message_id, client_ref, status: "accepted", duplicate}``. ``template_code`` is one registered
  with the gateway (the templates of node/data/notifications.json, or ``templates_file``), ``params``
  exactly its placeholders, each a string of at most 150 characters. ``client_ref`` is the caller's
  idempotency key: the same key again answers the same message (``duplicate: true``) and sends
  nothing; the same key with other content is refused (409 ``client_ref_conflict``).
- ``GET /v1/sms/messages/<message_id>`` → the message's status (accepted, delivered, undeliverable),
  error code and receipts pushed so far: the source of truth.
- Delivery receipts go to the message's ``callback_url`` (or the app's configured one) as
  ``POST {message_id, client_ref, phone, status, error_code, submitted_at, reported_at}``, signed
  ``X-Sms-Signature`` = hex HMAC-SHA256(secret, ``timestamp\\nnonce\\n`` + body) with the same
  headers; retried on ``retry_schedule`` until the receiver answers 2xx, dropped after the last try.
- ``GET /sandbox/inbox/<phone>`` (unsigned, the sandbox's "phone"): the texts delivered to a number,
  with their template code and params (so a test or the demo can read a one-time code).

Test numbers: 13900000001 undeliverable (空号), 13900000002 delivered after ``delay_seconds``,
13900000003 503 on every send, 13900000004 503 on the first two sends of a ``client_ref``,
13900000005 the first send of a ``client_ref`` is accepted but its reply is lost (connection closed);
any other valid mobile (e.g. 13800000000) is delivered after ``deliver_seconds``.

State (messages, receipts due, nonces, attempt counts) is kept in ``<data>/sms.sqlite3``; every
change is committed before it is answered, so a restarted (even killed) gateway carries on where it
stopped.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import re
import secrets
import sqlite3
import threading
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from sandboxes.serving import serve_until_stopped

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_TEMPLATES = PROJECT_ROOT / "node" / "data" / "notifications.json"
DEFAULT_APPS = {"tongban-sandbox": "tongban-sandbox-secret"}
MAX_BODY = 16 * 1024
MAX_SKEW_S = 300
MAX_PARAM = 150
DEFAULT_RETRY_SCHEDULE = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)

UNDELIVERABLE = "13900000001"
DELAYED = "13900000002"
PROVIDER_ERROR = "13900000003"
FLAKY = "13900000004"
REPLY_LOST = "13900000005"
FLAKY_FAILURES = 2

_MOBILE = re.compile(r"^1[3-9][0-9]{9}$", re.ASCII)
_NONCE = re.compile(r"^[A-Za-z0-9]{16,64}$", re.ASCII)
_CLIENT_REF = re.compile(r"^[A-Za-z0-9_.:-]{8,64}$", re.ASCII)
_MESSAGE_ID = re.compile(r"^[A-Za-z0-9]{8,40}$", re.ASCII)
_PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")


class DropReply(Exception):
    """The gateway acted on the request but the reply never reaches the caller."""


def request_signature(secret: bytes, method: str, path: str, timestamp: str, nonce: str, body: bytes) -> str:
    message = f"{method}\n{path}\n{timestamp}\n{nonce}\n".encode() + body
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def callback_signature(secret: bytes, timestamp: str, nonce: str, body: bytes) -> str:
    return hmac.new(secret, f"{timestamp}\n{nonce}\n".encode() + body, hashlib.sha256).hexdigest()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def load_templates(path: Path) -> dict[str, dict[str, Any]]:
    """The gateway's registered templates: code → {text, params}, read from a notifications file."""
    raw = json.loads(path.read_text("utf-8"))
    registered: dict[str, dict[str, Any]] = {}
    for entry in raw["templates"].values():
        for language, code in entry["sms_code"].items():
            text = entry["text"][language]
            registered[code] = {"text": text, "params": sorted(set(_PLACEHOLDER.findall(text)))}
    return registered


_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    seq INTEGER PRIMARY KEY,
    message_id TEXT NOT NULL UNIQUE,
    app TEXT NOT NULL,
    client_ref TEXT NOT NULL,
    phone TEXT NOT NULL,
    template_code TEXT NOT NULL,
    params TEXT NOT NULL,
    text TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    callback_url TEXT,
    status TEXT NOT NULL,
    error_code TEXT,
    submitted_at TEXT NOT NULL,
    reported_at TEXT,
    deliver_at REAL NOT NULL,
    UNIQUE (app, client_ref)
);
CREATE INDEX IF NOT EXISTS messages_due ON messages (status, deliver_at);
CREATE INDEX IF NOT EXISTS messages_phone ON messages (phone, status);
CREATE TABLE IF NOT EXISTS pushes (message_id TEXT NOT NULL, attempt INTEGER NOT NULL, at TEXT NOT NULL,
                                   acked INTEGER NOT NULL, PRIMARY KEY (message_id, attempt));
CREATE TABLE IF NOT EXISTS outbox (message_id TEXT PRIMARY KEY, app TEXT NOT NULL, url TEXT NOT NULL,
                                   body TEXT NOT NULL, attempts INTEGER NOT NULL, due REAL NOT NULL);
CREATE TABLE IF NOT EXISTS send_attempts (app TEXT NOT NULL, client_ref TEXT NOT NULL, count INTEGER NOT NULL,
                                          PRIMARY KEY (app, client_ref));
CREATE TABLE IF NOT EXISTS nonces (app TEXT NOT NULL, nonce TEXT NOT NULL, seen REAL NOT NULL,
                                   PRIMARY KEY (app, nonce));
CREATE INDEX IF NOT EXISTS nonces_seen ON nonces (seen);
"""


class Gateway:
    """The sandbox's state (one sqlite file) and its clock: deliveries happen and receipts go out from one
    thread. Every change is committed before the caller hears of it, so a killed gateway loses nothing."""

    def __init__(self, data_dir: Path, config: dict[str, Any]) -> None:
        self.apps = {key: str(secret).encode() for key, secret in config.get("apps", DEFAULT_APPS).items()}
        self.app_callbacks: dict[str, str] = dict(config.get("callbacks", {}))
        self.templates = load_templates(Path(config.get("templates_file") or DEFAULT_TEMPLATES))
        self.deliver_seconds = float(config.get("deliver_seconds", 0.2))
        self.delay_seconds = float(config.get("delay_seconds", 5.0))
        self.retry_schedule = tuple(float(s) for s in config.get("retry_schedule", DEFAULT_RETRY_SCHEDULE))
        self.lock = threading.RLock()
        self.stopping = threading.Event()
        self.db = sqlite3.connect(data_dir / "sms.sqlite3", check_same_thread=False, isolation_level=None)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: a killed process loses no commit
        self.db.executescript(_SCHEMA)

    def close(self) -> None:
        with self.lock:
            self.db.close()

    # -- authentication ---------------------------------------------------------------------------

    def authenticate(self, method: str, path: str, headers: Any, body: bytes) -> tuple[str | None, str]:
        """The app of a genuine, fresh, first-seen request, or None and the reason."""
        app = headers.get("X-Sms-App-Key", "")
        timestamp = headers.get("X-Sms-Timestamp", "")
        nonce = headers.get("X-Sms-Nonce", "")
        given = headers.get("X-Sms-Signature", "")
        secret = self.apps.get(app)
        if secret is None or not timestamp.isdigit() or len(timestamp) > 12 or not _NONCE.fullmatch(nonce):
            return None, "signature_invalid"
        expected = request_signature(secret, method, path, timestamp, nonce, body)
        if not hmac.compare_digest(expected, given):
            return None, "signature_invalid"
        now = time.time()
        if abs(now - int(timestamp)) > MAX_SKEW_S:
            return None, "timestamp_stale"
        with self.lock:
            # A nonce older than the skew window can never come back fresh, so it need not be remembered.
            self.db.execute("DELETE FROM nonces WHERE seen < ?", (now - 2 * MAX_SKEW_S,))
            try:
                self.db.execute("INSERT INTO nonces (app, nonce, seen) VALUES (?, ?, ?)", (app, nonce, now))
            except sqlite3.IntegrityError:
                return None, "nonce_replayed"
        return app, ""

    # -- operations -------------------------------------------------------------------------------

    def send(self, app: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        phone, code, params = body.get("phone"), body.get("template_code"), body.get("params")
        client_ref, callback = body.get("client_ref"), body.get("callback_url", self.app_callbacks.get(app))
        if not isinstance(phone, str) or not _MOBILE.fullmatch(phone):
            return 400, {"error": "phone_invalid"}
        if not isinstance(client_ref, str) or not _CLIENT_REF.fullmatch(client_ref):
            return 400, {"error": "client_ref_invalid"}
        template = self.templates.get(code) if isinstance(code, str) else None
        if template is None:
            return 400, {"error": "template_unknown"}
        if (
            not isinstance(params, dict)
            or sorted(params) != template["params"]
            or not all(isinstance(v, str) and 0 < len(v) <= MAX_PARAM for v in params.values())
        ):
            return 400, {"error": "template_params_invalid"}
        if callback is not None and (
            not isinstance(callback, str) or not callback.startswith(("http://", "https://")) or len(callback) > 500
        ):
            return 400, {"error": "callback_url_invalid"}
        params_json = json.dumps(params, ensure_ascii=False, sort_keys=True)
        fingerprint = hashlib.sha256(json.dumps([phone, code, params_json], ensure_ascii=False).encode()).hexdigest()
        with self.lock:
            existing = self.db.execute(
                "SELECT message_id, fingerprint FROM messages WHERE app = ? AND client_ref = ?", (app, client_ref)
            ).fetchone()
            if existing:
                if existing["fingerprint"] != fingerprint:
                    return 409, {"error": "client_ref_conflict"}
                return 200, self._accepted(existing["message_id"], client_ref, duplicate=True)
            self.db.execute(
                "INSERT INTO send_attempts (app, client_ref, count) VALUES (?, ?, 1) "
                "ON CONFLICT (app, client_ref) DO UPDATE SET count = count + 1",
                (app, client_ref),
            )
            attempt = self.db.execute(
                "SELECT count FROM send_attempts WHERE app = ? AND client_ref = ?", (app, client_ref)
            ).fetchone()["count"]
            if phone == PROVIDER_ERROR or (phone == FLAKY and attempt <= FLAKY_FAILURES):
                return 503, {"error": "provider_error"}
            seq = self.db.execute("SELECT COALESCE(MAX(seq), 0) + 1 AS next FROM messages").fetchone()["next"]
            message_id = f"SM{datetime.now(UTC):%Y%m%d%H%M%S}{seq:08d}"
            wait = self.delay_seconds if phone == DELAYED else self.deliver_seconds
            text = _PLACEHOLDER.sub(lambda m: params[m.group(1)], template["text"])
            self.db.execute(
                "INSERT INTO messages (seq, message_id, app, client_ref, phone, template_code, params, text,"
                " fingerprint, callback_url, status, submitted_at, deliver_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'accepted', ?, ?)",
                (seq, message_id, app, client_ref, phone, code, params_json, text, fingerprint, callback, _now(),
                 time.time() + wait),
            )  # fmt: skip
            if phone == REPLY_LOST and attempt == 1:
                raise DropReply
            return 200, self._accepted(message_id, client_ref, duplicate=False)

    @staticmethod
    def _accepted(message_id: str, client_ref: str, *, duplicate: bool) -> dict[str, Any]:
        return {"message_id": message_id, "client_ref": client_ref, "status": "accepted", "duplicate": duplicate}

    def get(self, app: str, message_id: str) -> tuple[int, dict[str, Any]]:
        with self.lock:
            row = self.db.execute(
                "SELECT message_id, client_ref, template_code, status, error_code, submitted_at, reported_at"
                " FROM messages WHERE message_id = ? AND app = ?",
                (message_id, app),
            ).fetchone()
            if row is None:
                return 404, {"error": "message_not_found"}
            pushes = self.db.execute(
                "SELECT attempt, at, acked FROM pushes WHERE message_id = ? ORDER BY attempt", (message_id,)
            ).fetchall()
        return 200, {**dict(row), "receipts": [{**dict(p), "acked": bool(p["acked"])} for p in pushes]}

    def inbox(self, phone: str) -> tuple[int, dict[str, Any]]:
        if not _MOBILE.fullmatch(phone):
            return 400, {"error": "phone_invalid"}
        with self.lock:
            rows = self.db.execute(
                "SELECT message_id, template_code, params, text, reported_at FROM messages"
                " WHERE phone = ? AND status = 'delivered' ORDER BY reported_at, seq",
                (phone,),
            ).fetchall()
        received = [
            {
                "message_id": r["message_id"],
                "template_code": r["template_code"],
                "params": json.loads(r["params"]),
                "text": r["text"],
                "received_at": r["reported_at"],
            }
            for r in rows
        ]
        return 200, {"phone": phone, "messages": received}

    # -- the clock --------------------------------------------------------------------------------

    def tick(self) -> None:
        now = time.time()
        with self.lock:
            due_messages = self.db.execute(
                "SELECT message_id, app, client_ref, phone, callback_url, submitted_at FROM messages"
                " WHERE status = 'accepted' AND deliver_at <= ? ORDER BY seq LIMIT 500",
                (now,),
            ).fetchall()
            for message in due_messages:
                undeliverable = message["phone"] == UNDELIVERABLE
                status = "undeliverable" if undeliverable else "delivered"
                error_code = "UNDELIVERABLE" if undeliverable else None
                reported = _now()
                receipt = {
                    "message_id": message["message_id"],
                    "client_ref": message["client_ref"],
                    "phone": message["phone"][:3] + "****" + message["phone"][-4:],
                    "status": status,
                    "error_code": error_code,
                    "submitted_at": message["submitted_at"],
                    "reported_at": reported,
                }
                self.db.execute("BEGIN")
                self.db.execute(
                    "UPDATE messages SET status = ?, error_code = ?, reported_at = ? WHERE message_id = ?",
                    (status, error_code, reported, message["message_id"]),
                )
                if message["callback_url"]:
                    self.db.execute(
                        "INSERT INTO outbox (message_id, app, url, body, attempts, due) VALUES (?, ?, ?, ?, 0, ?)",
                        (message["message_id"], message["app"], message["callback_url"],
                         json.dumps(receipt, ensure_ascii=False, separators=(",", ":")), now),
                    )  # fmt: skip
                self.db.execute("COMMIT")
            due = [dict(r) for r in self.db.execute("SELECT * FROM outbox WHERE due <= ? LIMIT 100", (now,))]
        for item in due:
            answered = self._push(item)
            attempt = item["attempts"] + 1
            with self.lock:
                self.db.execute("BEGIN")
                self.db.execute(
                    "INSERT OR REPLACE INTO pushes (message_id, attempt, at, acked) VALUES (?, ?, ?, ?)",
                    (item["message_id"], attempt, _now(), int(answered)),
                )
                if answered or attempt > len(self.retry_schedule):
                    self.db.execute("DELETE FROM outbox WHERE message_id = ?", (item["message_id"],))
                else:
                    self.db.execute(
                        "UPDATE outbox SET attempts = ?, due = ? WHERE message_id = ?",
                        (attempt, time.time() + self.retry_schedule[attempt - 1], item["message_id"]),
                    )
                self.db.execute("COMMIT")

    def _push(self, item: dict[str, Any]) -> bool:
        raw = item["body"].encode("utf-8")
        timestamp, nonce = str(int(time.time())), secrets.token_hex(16)
        request = urllib.request.Request(
            item["url"],
            data=raw,
            method="POST",
            headers={
                "Content-Type": "application/json; charset=utf-8",
                "X-Sms-App-Key": item["app"],
                "X-Sms-Timestamp": timestamp,
                "X-Sms-Nonce": nonce,
                "X-Sms-Signature": callback_signature(self.apps[item["app"]], timestamp, nonce, raw),
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return 200 <= response.status < 300
        except (urllib.error.URLError, OSError, ValueError):
            return False

    def run_clock(self) -> None:
        while not self.stopping.wait(0.05):
            self.tick()


class Handler(BaseHTTPRequestHandler):
    gateway: Gateway
    server_version = "SandboxSms/1"

    def log_message(self, format: str, *args: Any) -> None:  # no phone numbers in logs
        return

    def _reply(self, status: int, body: dict[str, Any]) -> None:
        raw = json.dumps(body, ensure_ascii=False).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def _handle(self) -> None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY:
            self._reply(413, {"error": "body_too_large"})
            return
        body = self.rfile.read(length) if length else b""
        parts = self.path.strip("/").split("/")
        if self.path == "/healthz":
            self._reply(200, {"ok": True})
            return
        if self.command == "GET" and len(parts) == 3 and parts[:2] == ["sandbox", "inbox"]:
            self._reply(*self.gateway.inbox(parts[2]))
            return
        if parts[0] != "v1":
            self._reply(404, {"error": "not_found"})
            return
        app, reason = self.gateway.authenticate(self.command, self.path, self.headers, body)
        if app is None:
            self._reply(401, {"error": reason})
            return
        if self.command == "POST" and parts == ["v1", "sms", "send"]:
            try:
                payload = json.loads(body.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError):
                payload = None
            if not isinstance(payload, dict):
                self._reply(400, {"error": "json_invalid"})
                return
            try:
                self._reply(*self.gateway.send(app, payload))
            except DropReply:
                self.close_connection = True
        elif self.command == "GET" and len(parts) == 4 and parts[:3] == ["v1", "sms", "messages"]:
            if not _MESSAGE_ID.fullmatch(parts[3]):
                self._reply(404, {"error": "message_not_found"})
                return
            self._reply(*self.gateway.get(app, parts[3]))
        else:
            self._reply(404, {"error": "not_found"})

    do_GET = _handle
    do_POST = _handle


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sandbox-sms", description="sandbox SMS gateway (its own process)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--data", required=True, help="directory of the persisted state")
    parser.add_argument(
        "--config",
        help="JSON: apps {key: secret}, callbacks {key: url}, templates_file, deliver_seconds, delay_seconds, "
        "retry_schedule",
    )
    args = parser.parse_args(argv)
    data_dir = Path(args.data)
    data_dir.mkdir(parents=True, exist_ok=True)
    config = json.loads(Path(args.config).read_text("utf-8")) if args.config else {}
    gateway = Gateway(data_dir, config)
    handler = type("BoundHandler", (Handler,), {"gateway": gateway})
    server = ThreadingHTTPServer((args.host, args.port), handler)
    try:
        serve_until_stopped(server, gateway.stopping, gateway.run_clock, "sms-clock")
    finally:
        gateway.close()
    return 0
