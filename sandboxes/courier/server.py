"""A sandbox courier (邮政专递) that runs as its own process and speaks a courier open-API protocol.

Run: ``python -m sandboxes.courier --port 8600 --data DIR --config courier.json``.

Protocol (JSON over HTTP; every request and callback is signed with HMAC-SHA256):

- Requests carry ``X-Courier-Client: <client id>``, ``X-Courier-Timestamp: <unix seconds>`` and
  ``X-Courier-Signature: hex(HMAC-SHA256(secret, timestamp + "\\n" + method + " " + path + "\\n" + body))``.
  A bad signature or a timestamp more than 300 s off is refused (401).
- ``POST /api/waybills`` ``{order_ref, sender{name,phone,address}, recipient{...}, callback_url}`` →
  ``201 {waybill_no, order_ref, status}``; the same ``order_ref`` again returns the same waybill (200).
- ``GET /api/waybills/<no>`` → the waybill with all its tracking events (the source of truth).
- ``POST /api/waybills/<no>/cancel`` → cancelled, only before pick-up (409 afterwards).
- Tracking events are pushed to ``callback_url`` as ``POST {waybill_no, order_ref, event}`` signed
  the same way (``X-Courier-Signature`` over ``timestamp + "\\n" + body``); a callback is retried on
  the configured schedule until the receiver answers 2xx, then dropped after the last try.

Lifecycle, one step every ``step_seconds``: created → picked_up → in_transit → out_for_delivery →
delivered, or → delivery_failed, or → delivery_failed → returned. The outcome is chosen by the
recipient address: it contains ``FAIL`` / ``无法投递`` → failed, ``RETURN`` / ``拒收`` → returned, else
delivered; ``outcomes`` in the config maps further address substrings to an outcome.

State (waybills, events, pending callbacks) is kept in ``<data>/courier.json``, written atomically
after every change, and reloaded on start: a restarted sandbox carries on where it stopped.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import tempfile
import threading
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from sandboxes.serving import serve_until_stopped

MAX_BODY = 64 * 1024
MAX_SKEW_S = 300
DEFAULT_RETRY_SCHEDULE = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
PATHS = {
    "delivered": ("picked_up", "in_transit", "out_for_delivery", "delivered"),
    "failed": ("picked_up", "in_transit", "out_for_delivery", "delivery_failed"),
    "returned": ("picked_up", "in_transit", "out_for_delivery", "delivery_failed", "returned"),
}
DESCRIPTIONS = {
    "created": "已下单，等待揽收",
    "picked_up": "快递员已揽收",
    "in_transit": "运输中",
    "out_for_delivery": "派送中",
    "delivered": "已签收",
    "delivery_failed": "投递失败",
    "returned": "已退回寄件人",
    "cancelled": "已取消",
}
_FIELD_LIMIT = 200


def sign(secret: bytes, timestamp: str, message: bytes) -> str:
    return hmac.new(secret, timestamp.encode("ascii") + b"\n" + message, hashlib.sha256).hexdigest()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _party(value: Any) -> dict[str, str] | None:
    if not isinstance(value, dict):
        return None
    fields = {}
    for key in ("name", "phone", "address"):
        item = value.get(key)
        if not isinstance(item, str) or not item.strip() or len(item) > _FIELD_LIMIT:
            return None
        fields[key] = item
    return fields


class Courier:
    """The sandbox's state and its clock: waybills advance and callbacks go out from one thread."""

    def __init__(self, data_dir: Path, config: dict[str, Any]) -> None:
        self.data_dir = data_dir
        self.clients = {cid: secret.encode("utf-8") for cid, secret in config["clients"].items()}
        self.step_seconds = float(config.get("step_seconds", 1.0))
        self.retry_schedule = tuple(config.get("retry_schedule", DEFAULT_RETRY_SCHEDULE))
        self.outcomes = {
            "FAIL": "failed",
            "无法投递": "failed",
            "RETURN": "returned",
            "拒收": "returned",
            **config.get("outcomes", {}),
        }
        self.lock = threading.RLock()
        self.stopping = threading.Event()
        self.state: dict[str, Any] = {"next_seq": 1, "waybills": {}, "by_order": {}, "outbox": []}
        path = data_dir / "courier.json"
        if path.exists():
            self.state = json.loads(path.read_text("utf-8"))

    # -- persistence --------------------------------------------------------------------------

    def save(self) -> None:
        path = self.data_dir / "courier.json"
        fd, tmp = tempfile.mkstemp(dir=self.data_dir, prefix=".courier.", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(self.state, fh, ensure_ascii=False)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)

    # -- operations -----------------------------------------------------------------------

    def _waybill_no(self) -> str:
        seq = self.state["next_seq"]
        self.state["next_seq"] = seq + 1
        digits = f"{datetime.now(UTC):%y%m%d}{seq:06d}"
        check = sum(int(d) * (3 if i % 2 else 1) for i, d in enumerate(digits)) % 10
        return f"SX{digits}{check}"

    def _outcome(self, address: str) -> str:
        for needle, outcome in self.outcomes.items():
            if needle in address and outcome in PATHS:
                return str(outcome)
        return "delivered"

    def create(self, client: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        order_ref = body.get("order_ref")
        sender, recipient = _party(body.get("sender")), _party(body.get("recipient"))
        callback = body.get("callback_url")
        if not isinstance(order_ref, str) or not 1 <= len(order_ref) <= 64:
            return 400, {"error": "order_ref_invalid"}
        if sender is None or recipient is None:
            return 400, {"error": "party_invalid"}
        if not isinstance(callback, str) or not callback.startswith(("http://", "https://")) or len(callback) > 500:
            return 400, {"error": "callback_url_invalid"}
        with self.lock:
            existing = self.state["by_order"].get(f"{client}:{order_ref}")
            if existing:
                return 200, self.public(self.state["waybills"][existing])
            number = self._waybill_no()
            waybill = {
                "waybill_no": number,
                "client": client,
                "order_ref": order_ref,
                "sender": sender,
                "recipient": recipient,
                "callback_url": callback,
                "outcome": self._outcome(recipient["address"]),
                "status": "created",
                "events": [],
                "next_step_at": time.time() + self.step_seconds,
            }
            self.state["waybills"][number] = waybill
            self.state["by_order"][f"{client}:{order_ref}"] = number
            self._event(waybill, "created")
            self.save()
            return 201, self.public(waybill)

    def cancel(self, client: str, number: str) -> tuple[int, dict[str, Any]]:
        with self.lock:
            waybill = self.state["waybills"].get(number)
            if waybill is None or waybill["client"] != client:
                return 404, {"error": "waybill_not_found"}
            if waybill["status"] != "created":
                return 409, {"error": "already_picked_up", "status": waybill["status"]}
            self._event(waybill, "cancelled")
            self.save()
            return 200, self.public(waybill)

    def get(self, client: str, number: str) -> tuple[int, dict[str, Any]]:
        with self.lock:
            waybill = self.state["waybills"].get(number)
            if waybill is None or waybill["client"] != client:
                return 404, {"error": "waybill_not_found"}
            return 200, self.public(waybill)

    @staticmethod
    def public(waybill: dict[str, Any]) -> dict[str, Any]:
        return {key: waybill[key] for key in ("waybill_no", "order_ref", "status", "events")}

    def _event(self, waybill: dict[str, Any], code: str) -> None:
        event = {
            "seq": len(waybill["events"]) + 1,
            "code": code,
            "at": _now(),
            "description": DESCRIPTIONS[code],
            "location": "益阳市邮政分拣中心" if code == "in_transit" else waybill["recipient"]["address"][:40],
        }
        waybill["events"].append(event)
        waybill["status"] = code
        body = {"waybill_no": waybill["waybill_no"], "order_ref": waybill["order_ref"], "event": event}
        self.state["outbox"].append(
            {
                "id": f"{waybill['waybill_no']}-{event['seq']}",
                "client": waybill["client"],
                "url": waybill["callback_url"],
                "body": body,
                "attempts": 0,
                "due": time.time(),
            }
        )

    # -- the clock ------------------------------------------------------------------------

    def tick(self) -> None:
        now = time.time()
        with self.lock:
            changed = False
            for waybill in self.state["waybills"].values():
                path = PATHS[waybill["outcome"]]
                done = [e["code"] for e in waybill["events"] if e["code"] in path]
                if waybill["status"] == "cancelled" or len(done) == len(path) or now < waybill["next_step_at"]:
                    continue
                self._event(waybill, path[len(done)])
                waybill["next_step_at"] = now + self.step_seconds
                changed = True
            due = [item for item in self.state["outbox"] if item["due"] <= now]
            if changed:
                self.save()
        for item in due:
            delivered = self._push(item)
            with self.lock:
                item["attempts"] += 1
                if delivered or item["attempts"] > len(self.retry_schedule):
                    self.state["outbox"] = [o for o in self.state["outbox"] if o["id"] != item["id"]]
                else:
                    item["due"] = time.time() + self.retry_schedule[item["attempts"] - 1]
                self.save()

    def _push(self, item: dict[str, Any]) -> bool:
        raw = json.dumps(item["body"], ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        timestamp = str(int(time.time()))
        request = urllib.request.Request(
            item["url"],
            data=raw,
            method="POST",
            headers={
                "Content-Type": "application/json; charset=utf-8",
                "X-Courier-Client": item["client"],
                "X-Courier-Timestamp": timestamp,
                "X-Courier-Signature": sign(self.clients[item["client"]], timestamp, raw),
                "X-Courier-Event-Id": item["id"],
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return 200 <= response.status < 300
        except (urllib.error.URLError, OSError, ValueError):
            return False

    def run_clock(self) -> None:
        while not self.stopping.wait(min(0.05, self.step_seconds / 4)):
            self.tick()


class Handler(BaseHTTPRequestHandler):
    courier: Courier
    server_version = "SandboxCourier/1"

    def log_message(self, format: str, *args: Any) -> None:  # no addresses or names in logs
        return

    def _reply(self, status: int, body: dict[str, Any]) -> None:
        raw = json.dumps(body, ensure_ascii=False).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def _authenticated(self, body: bytes) -> str | None:
        client = self.headers.get("X-Courier-Client", "")
        timestamp = self.headers.get("X-Courier-Timestamp", "")
        given = self.headers.get("X-Courier-Signature", "")
        secret = self.courier.clients.get(client)
        if secret is None or not timestamp.isdigit() or abs(time.time() - int(timestamp)) > MAX_SKEW_S:
            return None
        expected = sign(secret, timestamp, f"{self.command} {self.path}\n".encode() + body)
        return client if hmac.compare_digest(expected, given) else None

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self._reply(413, {"error": "body_too_large"})
            return
        body = self.rfile.read(length) if length else b""
        if self.path == "/healthz":
            self._reply(200, {"ok": True})
            return
        client = self._authenticated(body)
        if client is None:
            self._reply(401, {"error": "signature_invalid"})
            return
        parts = self.path.strip("/").split("/")
        if self.command == "POST" and parts == ["api", "waybills"]:
            try:
                payload = json.loads(body.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError):
                self._reply(400, {"error": "json_invalid"})
                return
            if not isinstance(payload, dict):
                self._reply(400, {"error": "json_invalid"})
                return
            self._reply(*self.courier.create(client, payload))
        elif self.command == "GET" and len(parts) == 3 and parts[:2] == ["api", "waybills"]:
            self._reply(*self.courier.get(client, parts[2]))
        elif self.command == "POST" and len(parts) == 4 and parts[:2] == ["api", "waybills"] and parts[3] == "cancel":
            self._reply(*self.courier.cancel(client, parts[2]))
        else:
            self._reply(404, {"error": "not_found"})

    do_GET = _handle
    do_POST = _handle


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sandbox-courier", description="sandbox courier (its own process)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--data", required=True, help="directory of the persisted state")
    parser.add_argument("--config", required=True, help="JSON: clients {id: secret}, step_seconds, retry_schedule")
    args = parser.parse_args(argv)
    data_dir = Path(args.data)
    data_dir.mkdir(parents=True, exist_ok=True)
    courier = Courier(data_dir, json.loads(Path(args.config).read_text("utf-8")))
    handler = type("BoundHandler", (Handler,), {"courier": courier})
    server = ThreadingHTTPServer((args.host, args.port), handler)
    serve_until_stopped(server, courier.stopping, courier.run_clock, "courier-clock")
    return 0
