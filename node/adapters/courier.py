"""The courier adapter: create waybills, poll tracking, and accept tracking callbacks only when genuine.

Speaks the protocol of the sandbox courier (sandboxes/courier/server.py), shaped like the courier
open APIs: HMAC-SHA256-signed requests and callbacks, waybill numbers, tracking events with a
sequence number per waybill. A callback is checked in this order and refused with a reason at the
first failure, before anything of it is used: signature over the raw body → timestamp freshness →
JSON shape and bounds → the waybill is one this node created → it belongs to the case it names.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import re
import sqlite3
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import requests

from node.domain.errors import DomainError, ErrorKind

MAX_SKEW_S = 300
MAX_CALLBACK_BYTES = 16 * 1024
EVENT_CODES = frozenset(
    {"created", "picked_up", "in_transit", "out_for_delivery", "delivered", "delivery_failed", "returned", "cancelled"}
)
OUTCOMES = {"delivered": "delivered", "delivery_failed": "failed", "returned": "returned"}
_WAYBILL = re.compile(r"^[A-Z]{2}[0-9]{10,20}$")


def _refused(code: str, zh: str, en: str, kind: ErrorKind = ErrorKind.UNAUTHENTICATED) -> DomainError:
    return DomainError(code, f"快递回调被拒绝：{zh}", f"courier callback refused: {en}", kind)


def _sign(secret: bytes, timestamp: str, message: bytes) -> str:
    return hmac.new(secret, timestamp.encode("ascii") + b"\n" + message, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Party:
    name: str
    phone: str
    address: str

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "phone": self.phone, "address": self.address}


@dataclass(frozen=True)
class TrackingEvent:
    waybill_no: str
    order_ref: str  # the case number the waybill was created for
    seq: int  # per waybill, from 1: receivers de-duplicate and order by it
    code: str
    at: datetime
    description: str
    location: str

    @property
    def outcome(self) -> str | None:
        """delivered / failed / returned once the parcel's journey ended, else None."""
        return OUTCOMES.get(self.code)


@dataclass(frozen=True)
class Waybill:
    waybill_no: str
    order_ref: str
    status: str
    events: tuple[TrackingEvent, ...]


def _event(waybill_no: str, order_ref: str, raw: Any) -> TrackingEvent:
    if not isinstance(raw, Mapping):
        raise ValueError("event is not an object")
    seq, code = raw.get("seq"), raw.get("code")
    if isinstance(seq, bool) or not isinstance(seq, int) or not 1 <= seq <= 1000 or code not in EVENT_CODES:
        raise ValueError("event seq or code invalid")
    texts = [raw.get(key) for key in ("description", "location", "at")]
    if not all(isinstance(t, str) and len(t) <= 200 for t in texts):
        raise ValueError("event text invalid")
    return TrackingEvent(waybill_no, order_ref, seq, code, datetime.fromisoformat(texts[2]), texts[0], texts[1])


def _waybill(raw: Any) -> Waybill:
    if not isinstance(raw, Mapping):
        raise ValueError("waybill is not an object")
    number, order_ref, status = raw.get("waybill_no"), raw.get("order_ref"), raw.get("status")
    if not isinstance(number, str) or not _WAYBILL.match(number) or not isinstance(order_ref, str):
        raise ValueError("waybill number or order invalid")
    events = raw.get("events") or []
    if not isinstance(events, list) or len(events) > 100 or status not in EVENT_CODES:
        raise ValueError("waybill events or status invalid")
    return Waybill(number, order_ref, status, tuple(_event(number, order_ref, e) for e in events))


class CourierClient:
    """One client account at the courier (its id and shared secret)."""

    def __init__(self, base_url: str, client_id: str, secret: str, *, timeout: float = 5.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.client_id = client_id
        self._secret = secret.encode("utf-8")
        self.timeout = timeout
        self._session = requests.Session()

    def __repr__(self) -> str:
        return f"CourierClient({self.base_url!r}, {self.client_id!r})"

    def _call(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> tuple[int, Any]:
        raw = b"" if body is None else json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "X-Courier-Client": self.client_id,
            "X-Courier-Timestamp": timestamp,
            "X-Courier-Signature": _sign(self._secret, timestamp, f"{method} {path}\n".encode() + raw),
        }
        try:
            response = self._session.request(
                method, self.base_url + path, data=raw or None, headers=headers, timeout=self.timeout
            )
            return response.status_code, response.json()
        except (requests.RequestException, ValueError) as exc:
            raise DomainError(
                "courier_unavailable",
                "快递服务暂时无法访问",
                f"the courier service is unavailable: {type(exc).__name__}",
                ErrorKind.CONFLICT,
            ) from exc

    def _checked(self, status: int, payload: Any, what: str) -> Waybill:
        if status == 404:
            raise DomainError("waybill_not_found", "运单不存在", "no such waybill", ErrorKind.NOT_FOUND)
        if status >= 400:
            error = payload.get("error") if isinstance(payload, Mapping) else None
            raise DomainError(
                "courier_refused", f"快递服务拒绝了{what}（{error}）", f"the courier refused {what} ({error})"
            )
        try:
            return _waybill(payload)
        except ValueError as exc:
            raise DomainError(
                "courier_reply_invalid", "快递服务的应答无效", f"the courier's reply is invalid: {exc}"
            ) from exc

    def create_waybill(self, order_ref: str, sender: Party, recipient: Party, callback_url: str) -> Waybill:
        """A waybill for ``order_ref`` (the case number); asking again for the same case returns the same one."""
        body = {
            "order_ref": order_ref,
            "sender": sender.to_dict(),
            "recipient": recipient.to_dict(),
            "callback_url": callback_url,
        }
        return self._checked(*self._call("POST", "/api/waybills", body), "下单 / the order")

    def poll(self, waybill_no: str) -> Waybill:
        if not isinstance(waybill_no, str) or not _WAYBILL.match(waybill_no):
            raise DomainError("waybill_invalid", "运单号格式不正确", "the waybill number is malformed")
        return self._checked(*self._call("GET", f"/api/waybills/{waybill_no}"), "查询 / the query")

    def cancel(self, waybill_no: str) -> Waybill:
        return self._checked(*self._call("POST", f"/api/waybills/{waybill_no}/cancel"), "取消 / the cancellation")

    def parse_callback(
        self,
        headers: Mapping[str, str],
        raw_body: bytes,
        case_of_waybill: Callable[[str], str | None],
        *,
        now: float | None = None,
    ) -> TrackingEvent:
        """The tracking event of a genuine callback; raises DomainError with the reason otherwise.

        ``case_of_waybill(waybill_no)`` gives the case number this node created the waybill for, or
        None for a waybill it does not know. Nothing of the body is read before the signature holds.
        """
        lowered = {k.lower(): v for k, v in headers.items()}
        timestamp = lowered.get("x-courier-timestamp", "")
        given = lowered.get("x-courier-signature", "")
        if len(raw_body) > MAX_CALLBACK_BYTES:
            raise _refused("callback_too_large", "回调内容过大", "the body is too large", ErrorKind.INVALID)
        if lowered.get("x-courier-client") != self.client_id or not timestamp.isdigit():
            raise _refused("callback_signature_invalid", "缺少签名信息", "missing client or timestamp")
        if not hmac.compare_digest(_sign(self._secret, timestamp, raw_body), given):
            raise _refused("callback_signature_invalid", "签名无效", "the signature does not match the body")
        if abs((now or time.time()) - int(timestamp)) > MAX_SKEW_S:
            raise _refused("callback_stale", "回调时间戳过期（可能是重放）", "the timestamp is stale (a replay?)")
        try:
            body = json.loads(raw_body.decode("utf-8"))
            number, order_ref = body["waybill_no"], body["order_ref"]
            if not isinstance(number, str) or not _WAYBILL.match(number) or not isinstance(order_ref, str):
                raise ValueError("waybill")
            event = _event(number, order_ref, body["event"])
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
            raise _refused(
                "callback_invalid", "回调内容格式不正确", f"malformed body ({exc})", ErrorKind.INVALID
            ) from exc
        case_no = case_of_waybill(number)
        if case_no is None:
            raise _refused("callback_unknown_waybill", "本节点没有这个运单", "unknown waybill", ErrorKind.NOT_FOUND)
        if case_no != order_ref:
            raise _refused(
                "callback_wrong_case",
                "运单不属于回调所称的办件",
                "the waybill belongs to another case",
                ErrorKind.CONFLICT,
            )
        return event


# ---------------------------------------------------------------------------------------------------------------------
# Where a node finds its courier, and which waybills it created
# ---------------------------------------------------------------------------------------------------------------------

COURIER_FILE = "courier.json"  # in the node's data directory, beside node.json
WAYBILLS_DB = "waybills.sqlite3"


@dataclass(frozen=True)
class CourierSettings:
    """``<data_dir>/courier.json``: the courier's URL, our client id and secret, our callback URL, the sender."""

    url: str
    client_id: str
    secret: str
    callback_url: str
    sender: Party

    def __repr__(self) -> str:  # the secret stays out of reprs, hence out of logs
        return f"CourierSettings({self.url!r}, {self.client_id!r})"

    @classmethod
    def load(cls, data_dir: Path) -> CourierSettings | None:
        path = Path(data_dir) / COURIER_FILE
        if not path.exists():
            return None
        raw = json.loads(path.read_text(encoding="utf-8"))
        sender = raw["sender"]
        return cls(
            str(raw["url"]),
            str(raw["client_id"]),
            str(raw["secret"]),
            str(raw["callback_url"]),
            Party(str(sender["name"]), str(sender["phone"]), str(sender["address"])),
        )

    def save(self, data_dir: Path) -> Path:
        path = Path(data_dir) / COURIER_FILE
        data = {
            "url": self.url,
            "client_id": self.client_id,
            "secret": self.secret,
            "callback_url": self.callback_url,
            "sender": self.sender.to_dict(),
        }
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, ensure_ascii=False, indent=1)
        tmp.replace(path)
        return path

    def client(self) -> CourierClient:
        return CourierClient(self.url, self.client_id, self.secret)


class WaybillBook:
    """The waybills this node created and the case each is for: what a callback is checked against."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        with contextlib.closing(self._connect()) as conn, conn:
            conn.execute("CREATE TABLE IF NOT EXISTS waybills (waybill_no TEXT PRIMARY KEY, case_no TEXT NOT NULL)")

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=30)

    def add(self, waybill_no: str, case_no: str) -> None:
        with contextlib.closing(self._connect()) as conn, conn:
            conn.execute("INSERT OR IGNORE INTO waybills VALUES (?, ?)", (waybill_no, case_no))

    def all(self) -> list[tuple[str, str]]:
        """Every (waybill, case) this node created, oldest first."""
        with contextlib.closing(self._connect()) as conn:
            rows = conn.execute("SELECT waybill_no, case_no FROM waybills ORDER BY rowid").fetchall()
        return [(str(w), str(c)) for w, c in rows]

    def case_of(self, waybill_no: str) -> str | None:
        with contextlib.closing(self._connect()) as conn:
            row = conn.execute("SELECT case_no FROM waybills WHERE waybill_no = ?", (waybill_no,)).fetchone()
        return str(row[0]) if row else None
