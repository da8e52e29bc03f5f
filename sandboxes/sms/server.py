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
- ``GET /sandbox/inbox/<phone>`` (unsigned, the sandbox's "phone"): the texts delivered to a number.

Test numbers: 13900000001 undeliverable (空号), 13900000002 delivered after ``delay_seconds``,
13900000003 503 on every send, 13900000004 503 on the first two sends of a ``client_ref``,
13900000005 the first send of a ``client_ref`` is accepted but its reply is lost (connection closed);
any other valid mobile (e.g. 13800000000) is delivered after ``deliver_seconds``.

State (messages, receipts due, nonces, attempt counts) is kept in ``<data>/sms.json``, written
atomically after every change and reloaded on start: a restarted gateway carries on where it stopped.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import re
import secrets
import signal
import tempfile
import threading
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

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


class Gateway:
    """The sandbox's state and its clock: deliveries happen and receipts go out from one thread."""

    def __init__(self, data_dir: Path, config: dict[str, Any]) -> None:
        self.data_dir = data_dir
        self.apps = {key: str(secret).encode() for key, secret in config.get("apps", DEFAULT_APPS).items()}
        self.app_callbacks: dict[str, str] = dict(config.get("callbacks", {}))
        self.templates = load_templates(Path(config.get("templates_file") or DEFAULT_TEMPLATES))
        self.deliver_seconds = float(config.get("deliver_seconds", 0.2))
        self.delay_seconds = float(config.get("delay_seconds", 5.0))
        self.retry_schedule = tuple(float(s) for s in config.get("retry_schedule", DEFAULT_RETRY_SCHEDULE))
        self.lock = threading.RLock()
        self.stopping = threading.Event()
        self.state: dict[str, Any] = {
            "next_seq": 1,
            "messages": {},
            "by_ref": {},
            "attempts": {},
            "nonces": {},
            "outbox": [],
        }
        path = data_dir / "sms.json"
        if path.exists():
            self.state = json.loads(path.read_text("utf-8"))

    # -- persistence ------------------------------------------------------------------------------

    def save(self) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.data_dir, prefix=".sms.", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(self.state, fh, ensure_ascii=False)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.data_dir / "sms.json")

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
            nonces: dict[str, float] = self.state["nonces"]
            key = f"{app}:{nonce}"
            if key in nonces:
                return None, "nonce_replayed"
            # A nonce older than the skew window can never come back fresh, so it need not be remembered.
            for old in [k for k, seen in nonces.items() if seen < now - 2 * MAX_SKEW_S]:
                del nonces[old]
            nonces[key] = now
            self.save()
        return app, ""

    # -- operations -------------------------------------------------------------------------------

    def _message_id(self) -> str:
        seq = self.state["next_seq"]
        self.state["next_seq"] = seq + 1
        return f"SM{datetime.now(UTC):%Y%m%d%H%M%S}{seq:08d}"

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
        ref_key = f"{app}:{client_ref}"
        fingerprint = hashlib.sha256(
            json.dumps([phone, code, params], ensure_ascii=False, sort_keys=True).encode()
        ).hexdigest()
        with self.lock:
            existing = self.state["by_ref"].get(ref_key)
            if existing:
                message = self.state["messages"][existing]
                if message["fingerprint"] != fingerprint:
                    return 409, {"error": "client_ref_conflict"}
                return 200, {**self._accepted(message), "duplicate": True}
            attempt = self.state["attempts"].get(ref_key, 0) + 1
            self.state["attempts"][ref_key] = attempt
            if phone == PROVIDER_ERROR or (phone == FLAKY and attempt <= FLAKY_FAILURES):
                self.save()
                return 503, {"error": "provider_error"}
            now = time.time()
            wait = self.delay_seconds if phone == DELAYED else self.deliver_seconds
            message = {
                "message_id": self._message_id(),
                "app": app,
                "client_ref": client_ref,
                "phone": phone,
                "template_code": code,
                "text": _PLACEHOLDER.sub(lambda m: params[m.group(1)], template["text"]),
                "fingerprint": fingerprint,
                "callback_url": callback,
                "status": "accepted",
                "error_code": None,
                "submitted_at": _now(),
                "reported_at": None,
                "deliver_at": now + wait,
                "receipts": [],
            }
            self.state["messages"][message["message_id"]] = message
            self.state["by_ref"][ref_key] = message["message_id"]
            self.save()
            if phone == REPLY_LOST and attempt == 1:
                raise DropReply
            return 200, {**self._accepted(message), "duplicate": False}

    @staticmethod
    def _accepted(message: dict[str, Any]) -> dict[str, Any]:
        return {"message_id": message["message_id"], "client_ref": message["client_ref"], "status": "accepted"}

    def get(self, app: str, message_id: str) -> tuple[int, dict[str, Any]]:
        with self.lock:
            message = self.state["messages"].get(message_id)
            if message is None or message["app"] != app:
                return 404, {"error": "message_not_found"}
            return 200, {
                key: message[key]
                for key in (
                    "message_id",
                    "client_ref",
                    "template_code",
                    "status",
                    "error_code",
                    "submitted_at",
                    "reported_at",
                    "receipts",
                )
            }

    def inbox(self, phone: str) -> tuple[int, dict[str, Any]]:
        if not _MOBILE.fullmatch(phone):
            return 400, {"error": "phone_invalid"}
        with self.lock:
            received = [
                {
                    "message_id": m["message_id"],
                    "template_code": m["template_code"],
                    "text": m["text"],
                    "received_at": m["reported_at"],
                }
                for m in self.state["messages"].values()
                if m["phone"] == phone and m["status"] == "delivered"
            ]
        received.sort(key=lambda m: (m["received_at"], m["message_id"]))
        return 200, {"phone": phone, "messages": received}

    # -- the clock --------------------------------------------------------------------------------

    def tick(self) -> None:
        now = time.time()
        with self.lock:
            changed = False
            for message in self.state["messages"].values():
                if message["status"] != "accepted" or now < message["deliver_at"]:
                    continue
                undeliverable = message["phone"] == UNDELIVERABLE
                message["status"] = "undeliverable" if undeliverable else "delivered"
                message["error_code"] = "UNDELIVERABLE" if undeliverable else None
                message["reported_at"] = _now()
                changed = True
                if message["callback_url"]:
                    self.state["outbox"].append(
                        {
                            "id": f"{message['message_id']}-{message['status']}",
                            "app": message["app"],
                            "url": message["callback_url"],
                            "message_id": message["message_id"],
                            "body": {
                                "message_id": message["message_id"],
                                "client_ref": message["client_ref"],
                                "phone": message["phone"][:3] + "****" + message["phone"][-4:],
                                "status": message["status"],
                                "error_code": message["error_code"],
                                "submitted_at": message["submitted_at"],
                                "reported_at": message["reported_at"],
                            },
                            "attempts": 0,
                            "due": now,
                        }
                    )
            due = [dict(item) for item in self.state["outbox"] if item["due"] <= now]
            if changed:
                self.save()
        for item in due:
            answered = self._push(item)
            with self.lock:
                live = next((o for o in self.state["outbox"] if o["id"] == item["id"]), None)
                if live is None:
                    continue
                live["attempts"] += 1
                message = self.state["messages"][live["message_id"]]
                message["receipts"].append({"at": _now(), "attempt": live["attempts"], "acked": answered})
                if answered or live["attempts"] > len(self.retry_schedule):
                    self.state["outbox"].remove(live)
                else:
                    live["due"] = time.time() + self.retry_schedule[live["attempts"] - 1]
                self.save()

    def _push(self, item: dict[str, Any]) -> bool:
        raw = json.dumps(item["body"], ensure_ascii=False, separators=(",", ":")).encode("utf-8")
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
    clock = threading.Thread(target=gateway.run_clock, name="sms-clock", daemon=True)
    clock.start()

    def stop(*_: object) -> None:
        gateway.stopping.set()
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        server.serve_forever(poll_interval=0.1)
    finally:
        server.server_close()
        gateway.stopping.set()
        clock.join(timeout=2)
    return 0
