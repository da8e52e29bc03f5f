"""The SMS adapter: send a registered template to a phone, poll its status, accept delivery receipts.

Speaks the protocol of the sandbox SMS gateway (sandboxes/sms/server.py, docs/sms.md), shaped like
the SMS open APIs of the big providers: HMAC-SHA256-signed requests with a timestamp and a nonce,
registered template codes with bounded params, delivery receipts pushed by signed callback.

Sending is idempotent: every message carries a ``client_ref`` the gateway de-duplicates on, so the
retries after a provider 5xx, a timeout or a lost reply never send twice. A receipt is checked in
this order and refused at the first failure, before anything of it is used: size → signature over
the raw body → timestamp freshness → nonce not seen before → JSON shape and bounds.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import requests

from node.domain.errors import DomainError, ErrorKind
from node.domain.notifications import RenderedMessage

__all__ = ["DeliveryReceipt", "MessageStatus", "ReceiptPush", "SmsClient", "SmsSender"]

MAX_SKEW_S = 300
MAX_RECEIPT_BYTES = 8 * 1024
DEFAULT_BACKOFF_S = (0.2, 0.5, 1.0, 2.0)  # waits before each retry; len + 1 attempts in all
STATUSES = frozenset({"accepted", "delivered", "undeliverable"})
_MOBILE = re.compile(r"^1[3-9][0-9]{9}$", re.ASCII)
_TEMPLATE = re.compile(r"^[A-Z][A-Z0-9_]{2,63}$", re.ASCII)
_CLIENT_REF = re.compile(r"^[A-Za-z0-9_.:-]{8,64}$", re.ASCII)
_MESSAGE_ID = re.compile(r"^[A-Za-z0-9]{8,40}$", re.ASCII)
_NONCE = re.compile(r"^[A-Za-z0-9]{16,64}$", re.ASCII)
_ERROR_CODE = re.compile(r"^[A-Z_]{1,40}$", re.ASCII)
MAX_PARAM = 150


class SmsSender(Protocol):
    """The port the service layer sends through; the sandbox client and a real provider's client fit it."""

    def send(
        self, template_id: str, phone: str, params: Mapping[str, str], *, idempotency_key: str | None = None
    ) -> str:
        """The provider's message id. The same ``idempotency_key`` again never sends a second message."""
        ...


@dataclass(frozen=True)
class DeliveryReceipt:
    message_id: str
    client_ref: str
    status: str  # delivered or undeliverable
    error_code: str | None
    reported_at: datetime

    @property
    def delivered(self) -> bool:
        return self.status == "delivered"


@dataclass(frozen=True)
class ReceiptPush:
    attempt: int
    acked: bool  # the receiver answered 2xx


@dataclass(frozen=True)
class MessageStatus:
    message_id: str
    client_ref: str
    status: str  # accepted, delivered or undeliverable
    error_code: str | None
    pushes: tuple[ReceiptPush, ...] = ()  # the gateway's tries to deliver the receipt, in order


def _refused(code: str, zh: str, en: str, kind: ErrorKind = ErrorKind.UNAUTHENTICATED) -> DomainError:
    return DomainError(code, f"短信回执被拒绝：{zh}", f"SMS receipt refused: {en}", kind)


def _request_signature(secret: bytes, method: str, path: str, timestamp: str, nonce: str, body: bytes) -> str:
    return hmac.new(secret, f"{method}\n{path}\n{timestamp}\n{nonce}\n".encode() + body, hashlib.sha256).hexdigest()


def _callback_signature(secret: bytes, timestamp: str, nonce: str, body: bytes) -> str:
    return hmac.new(secret, f"{timestamp}\n{nonce}\n".encode() + body, hashlib.sha256).hexdigest()


class _SeenNonces:
    """Receipt nonces seen within the freshness window (older ones fail the timestamp check anyway)."""

    def __init__(self, limit: int = 100_000) -> None:
        self._seen: dict[str, float] = {}
        self._limit = limit
        self._lock = threading.Lock()

    def first_time(self, nonce: str, now: float) -> bool:
        with self._lock:
            if nonce in self._seen:
                return False
            if len(self._seen) >= self._limit:
                self._seen = {n: t for n, t in self._seen.items() if t >= now - 2 * MAX_SKEW_S}
            if len(self._seen) >= self._limit:  # a flood of fresh nonces: refuse rather than grow without bound
                return False
            self._seen[nonce] = now
            return True


def _unavailable(detail: str) -> DomainError:
    return DomainError(
        "sms_unavailable",
        "短信服务暂时无法访问，消息未发出",
        f"the SMS gateway is unavailable; the message was not sent ({detail})",
        ErrorKind.CONFLICT,
    )


class SmsClient:
    """One application account at the SMS gateway (its app key and secret)."""

    def __init__(
        self,
        base_url: str,
        app_key: str,
        secret: str,
        *,
        callback_url: str | None = None,
        timeout: float = 5.0,
        backoff: Sequence[float] = DEFAULT_BACKOFF_S,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.app_key = app_key
        self._secret = secret.encode("utf-8")
        self.callback_url = callback_url
        self.timeout = timeout
        self.backoff = tuple(backoff)
        self._sleep = sleep
        self._session = requests.Session()
        self._nonces = _SeenNonces()

    def __repr__(self) -> str:
        return f"SmsClient({self.base_url!r}, {self.app_key!r})"

    def _call(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> requests.Response:
        raw = b"" if body is None else json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        timestamp, nonce = str(int(time.time())), secrets.token_hex(16)
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "X-Sms-App-Key": self.app_key,
            "X-Sms-Timestamp": timestamp,
            "X-Sms-Nonce": nonce,
            "X-Sms-Signature": _request_signature(self._secret, method, path, timestamp, nonce, raw),
        }
        return self._session.request(method, self.base_url + path, data=raw or None, headers=headers,
                                     timeout=self.timeout)  # fmt: skip

    def send(
        self, template_id: str, phone: str, params: Mapping[str, str], *, idempotency_key: str | None = None
    ) -> str:
        """Send template ``template_id`` (its registered code) to ``phone``; the gateway's message id.

        Retries after a 5xx, a timeout or a broken connection, waiting ``backoff`` between tries, always
        with the same ``idempotency_key`` (a fresh random one when none is given). Raises DomainError
        ``sms_invalid`` before sending anything malformed, ``sms_refused`` on a 4xx, ``sms_unavailable``
        once the retries are spent.
        """
        key = idempotency_key if idempotency_key is not None else secrets.token_hex(16)
        if not isinstance(phone, str) or not _MOBILE.fullmatch(phone):
            raise DomainError("sms_invalid", "手机号码格式不正确", "the phone number is malformed")
        if not isinstance(template_id, str) or not _TEMPLATE.fullmatch(template_id):
            raise DomainError("sms_invalid", "短信模板编号格式不正确", "the template code is malformed")
        if not isinstance(key, str) or not _CLIENT_REF.fullmatch(key):
            raise DomainError("sms_invalid", "消息幂等键格式不正确", "the idempotency key is malformed")
        if (
            not isinstance(params, Mapping)
            or len(params) > 10
            or not all(isinstance(k, str) and isinstance(v, str) and 0 < len(v) <= MAX_PARAM for k, v in params.items())
        ):
            raise DomainError("sms_invalid", "短信参数不符合要求", "the template params are malformed")
        body: dict[str, Any] = {"phone": phone, "template_code": template_id, "params": dict(params),
                                "client_ref": key}  # fmt: skip
        if self.callback_url:
            body["callback_url"] = self.callback_url
        detail = ""
        for attempt in range(len(self.backoff) + 1):
            if attempt:
                self._sleep(self.backoff[attempt - 1])
            try:
                response = self._call("POST", "/v1/sms/send", body)
            except requests.RequestException as exc:  # timeout, refused, reply lost: the key makes retrying safe
                detail = type(exc).__name__
                continue
            if response.status_code >= 500:
                detail = f"HTTP {response.status_code}"
                continue
            payload = _json(response)
            if response.status_code != 200:
                error = payload.get("error") if isinstance(payload, Mapping) else None
                raise DomainError(
                    "sms_refused",
                    f"短信平台拒绝发送（{error}）",
                    f"the SMS gateway refused the message ({error})",
                    ErrorKind.CONFLICT,
                )
            message_id = payload.get("message_id") if isinstance(payload, Mapping) else None
            if not isinstance(message_id, str) or not _MESSAGE_ID.fullmatch(message_id):
                raise DomainError("sms_reply_invalid", "短信平台的应答无效", "the SMS gateway's reply is invalid")
            return message_id
        raise _unavailable(detail)

    def send_rendered(self, message: RenderedMessage, phone: str, *, idempotency_key: str | None = None) -> str:
        """Send a message rendered by node.domain.notifications (its registered code and shaped params)."""
        return self.send(message.sms_code, phone, message.params, idempotency_key=idempotency_key)

    def status(self, message_id: str) -> MessageStatus:
        """The gateway's word on a message (the source of truth when a receipt is late or lost)."""
        if not isinstance(message_id, str) or not _MESSAGE_ID.fullmatch(message_id):
            raise DomainError("sms_invalid", "消息编号格式不正确", "the message id is malformed")
        try:
            response = self._call("GET", f"/v1/sms/messages/{message_id}")
        except requests.RequestException as exc:
            raise _unavailable(type(exc).__name__) from exc
        if response.status_code == 404:
            raise DomainError("sms_message_not_found", "没有这条短信", "no such message", ErrorKind.NOT_FOUND)
        payload = _json(response)
        if response.status_code != 200 or not isinstance(payload, Mapping):
            raise DomainError("sms_reply_invalid", "短信平台的应答无效", "the SMS gateway's reply is invalid")
        try:
            return MessageStatus(*_status_fields(payload), _pushes(payload.get("receipts")))
        except ValueError as exc:
            raise DomainError(
                "sms_reply_invalid", "短信平台的应答无效", f"the SMS gateway's reply is invalid: {exc}"
            ) from exc

    def parse_receipt(
        self, headers: Mapping[str, str], raw_body: bytes, *, now: float | None = None
    ) -> DeliveryReceipt:
        """The delivery receipt of a genuine callback; raises DomainError with the reason otherwise.

        Nothing of the body is read before the signature holds; a nonce is accepted once.
        """
        lowered = {k.lower(): v for k, v in headers.items()}
        timestamp = lowered.get("x-sms-timestamp", "")
        nonce = lowered.get("x-sms-nonce", "")
        given = lowered.get("x-sms-signature", "")
        if len(raw_body) > MAX_RECEIPT_BYTES:
            raise _refused("receipt_too_large", "回执内容过大", "the body is too large", ErrorKind.INVALID)
        if lowered.get("x-sms-app-key") != self.app_key or not timestamp.isdigit() or not _NONCE.fullmatch(nonce):
            raise _refused("receipt_signature_invalid", "缺少签名信息", "missing app key, timestamp or nonce")
        if not hmac.compare_digest(_callback_signature(self._secret, timestamp, nonce, raw_body), given):
            raise _refused("receipt_signature_invalid", "签名无效", "the signature does not match the body")
        moment = now if now is not None else time.time()
        if abs(moment - int(timestamp)) > MAX_SKEW_S:
            raise _refused("receipt_stale", "回执时间戳过期（可能是重放）", "the timestamp is stale (a replay?)")
        if not self._nonces.first_time(nonce, moment):
            raise _refused("receipt_replayed", "回执重复（重放）", "this receipt was already received (a replay)",
                           ErrorKind.CONFLICT)  # fmt: skip
        try:
            body = json.loads(raw_body.decode("utf-8"))
            if not isinstance(body, Mapping):
                raise ValueError("not an object")
            message_id, client_ref, status, error_code = _status_fields(body)
            if status == "accepted":
                raise ValueError("a receipt reports a final status")
            reported = body.get("reported_at")
            if not isinstance(reported, str) or len(reported) > 40:
                raise ValueError("reported_at")
            receipt = DeliveryReceipt(message_id, client_ref, status, error_code, datetime.fromisoformat(reported))
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
            raise _refused(
                "receipt_invalid", "回执内容格式不正确", f"malformed body ({exc})", ErrorKind.INVALID
            ) from exc
        return receipt


def _json(response: requests.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _pushes(raw: Any) -> tuple[ReceiptPush, ...]:
    if not isinstance(raw, list) or len(raw) > 1000:
        raise ValueError("receipts")
    pushes = []
    for item in raw:
        attempt = item.get("attempt") if isinstance(item, Mapping) else None
        acked = item.get("acked") if isinstance(item, Mapping) else None
        if isinstance(attempt, bool) or not isinstance(attempt, int) or not isinstance(acked, bool):
            raise ValueError("receipts")
        pushes.append(ReceiptPush(attempt, acked))
    return tuple(pushes)


def _status_fields(raw: Mapping[str, Any]) -> tuple[str, str, str, str | None]:
    message_id, client_ref = raw.get("message_id"), raw.get("client_ref")
    status, error_code = raw.get("status"), raw.get("error_code")
    if not isinstance(message_id, str) or not _MESSAGE_ID.fullmatch(message_id):
        raise ValueError("message_id")
    if not isinstance(client_ref, str) or not _CLIENT_REF.fullmatch(client_ref):
        raise ValueError("client_ref")
    if status not in STATUSES:
        raise ValueError("status")
    if error_code is not None and (not isinstance(error_code, str) or not _ERROR_CODE.fullmatch(error_code)):
        raise ValueError("error_code")
    return message_id, client_ref, status, error_code
