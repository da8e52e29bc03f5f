"""The payment-gateway port and its HTTP client: signed requests out, verified answers and notifies in.

This module owns the wire protocol with a payment provider (docs/payments.md): every request is
signed RSA2 (RSA-SHA256, PKCS#1 v1.5) with the merchant key; every answer and every asynchronous
notify is verified against the gateway's public key over the RAW body bytes BEFORE a single field
is parsed, then the timestamp is bounded, then the JSON is bounded and validated into a
``GatewayFact``. The sandbox in sandboxes/payment_gateway speaks the same protocol.
"""

from __future__ import annotations

import base64
import binascii
import csv
import io
import json
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

import requests
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from node.domain.errors import DomainError, ErrorKind
from node.domain.payment import GatewayFact, PaymentOrder, PaymentState

MAX_NOTIFY_BYTES = 16 * 1024
MAX_STATEMENT_BYTES = 64 * 1024 * 1024
MAX_SKEW_S = 300  # a signed message older or newer than five minutes is refused (replay bound)
_NONCE = re.compile(r"^[A-Za-z0-9]{16,64}$")
_TIMESTAMP = re.compile(r"^[0-9]{9,11}$")


class GatewayUnavailable(Exception):
    """The gateway could not be reached or answered outside the protocol; try again later."""


@dataclass(frozen=True)
class CreatedOrder:
    trade_no: str
    pay_url: str
    fact: GatewayFact


@dataclass(frozen=True)
class StatementLine:
    kind: str  # payment | refund
    order_id: str
    trade_no: str
    refund_id: str
    amount_fen: int  # negative for a refund
    time: str


class PaymentGateway(Protocol):
    """What the service layer needs from a payment provider."""

    def create_order(self, order: PaymentOrder, description: str) -> CreatedOrder: ...

    def query(self, order_id: str) -> GatewayFact: ...

    def close(self, order_id: str, reason: str) -> GatewayFact: ...

    def refund(self, order_id: str, refund_id: str, amount_fen: int, reason: str) -> GatewayFact: ...

    def statement(self, day: date) -> list[StatementLine]: ...

    def verify_notify(self, headers: Mapping[str, str], raw_body: bytes) -> GatewayFact: ...


def _refused(code: str, zh: str, en: str, kind: ErrorKind = ErrorKind.UNAUTHENTICATED) -> DomainError:
    return DomainError(code, zh, en, kind)


def load_private_key(path: Path) -> rsa.RSAPrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError(f"{path} is not an RSA private key")
    return key


def load_public_key(pem: bytes) -> rsa.RSAPublicKey:
    key = serialization.load_pem_public_key(pem)
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("not an RSA public key")
    return key


def ensure_merchant_key(path: Path) -> rsa.RSAPrivateKey:
    """The merchant's RSA key (created 0600 on first use); its public half sits beside it as ``*.pub.pem``."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        tmp = path.with_suffix(".tmp")
        tmp.touch(mode=0o600)
        tmp.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        tmp.replace(path)
    key = load_private_key(path)
    path.with_suffix(".pub.pem").write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return key


def verify_signed_body(
    public_key: rsa.RSAPublicKey,
    headers: Mapping[str, str],
    raw_body: bytes,
    *,
    now: float | None = None,
    max_bytes: int = MAX_NOTIFY_BYTES,
) -> None:
    """Refuse unless ``raw_body`` carries a good RSA2 signature over ``timestamp\\nnonce\\nbody\\n`` and a fresh
    timestamp. Nothing of the body is parsed before this passes."""
    if len(raw_body) > max_bytes:
        raise _refused(
            "payment_notify_too_large", "网关消息过大", "the gateway message is too large", ErrorKind.INVALID
        )
    lowered = {name.lower(): value for name, value in headers.items()}
    timestamp = lowered.get("tb-timestamp", "")
    nonce = lowered.get("tb-nonce", "")
    sign_type = lowered.get("tb-sign-type", "")
    try:
        signature = base64.b64decode(lowered.get("tb-signature", ""), validate=True)
    except (binascii.Error, ValueError):
        signature = b""
    if sign_type != "RSA2" or not _TIMESTAMP.fullmatch(timestamp) or not _NONCE.fullmatch(nonce) or not signature:
        raise _refused("payment_signature_missing", "网关消息缺少签名", "the gateway message is not signed")
    message = f"{timestamp}\n{nonce}\n".encode() + raw_body + b"\n"
    try:
        public_key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        raise _refused(
            "payment_signature_invalid", "网关消息签名无效", "the gateway message's signature is invalid"
        ) from None
    if abs((time.time() if now is None else now) - int(timestamp)) > MAX_SKEW_S:
        raise _refused(
            "payment_signature_expired", "网关消息时间戳超出允许范围", "the gateway message's timestamp is out of range"
        )


def fact_from_json(raw_body: bytes, merchant_id: str) -> GatewayFact:
    """A verified body about one of ``merchant_id``'s orders as a fact; anything else is refused with a reason."""
    try:
        data = json.loads(raw_body)
    except (ValueError, UnicodeDecodeError):
        data = None
    if not isinstance(data, dict):
        raise DomainError("payment_fact_invalid", "网关消息格式错误", "the gateway message is not a JSON object")
    if data.get("merchant_id") != merchant_id:
        raise DomainError(
            "payment_fact_merchant", "网关消息属于其他商户", "the gateway message is about another merchant's order"
        )
    try:
        occurred = data.get("occurred_at")
        return GatewayFact(
            order_id=data["merchant_order_id"],
            status=PaymentState(data["status"]) if isinstance(data["status"], str) else data["status"],
            amount_fen=data["amount_fen"],
            refunded_fen=data["refunded_fen"],
            version=data["version"],
            trade_no=data.get("trade_no") or "",
            reason_code=data.get("reason_code") or "",
            occurred_at=datetime.fromisoformat(occurred) if isinstance(occurred, str) else None,
        )
    except (KeyError, TypeError, ValueError):
        raise DomainError(
            "payment_fact_invalid", "网关消息字段缺失或格式错误", "the gateway message lacks a field or has a bad one"
        ) from None


class HttpPaymentGateway:
    """The client of a gateway speaking the protocol of docs/payments.md (the sandbox, or a real provider's twin)."""

    def __init__(
        self,
        base_url: str,
        merchant_id: str,
        merchant_key: rsa.RSAPrivateKey,
        gateway_public_key: rsa.RSAPublicKey,
        notify_url: str = "",
        timeout_s: float = 10.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.merchant_id = merchant_id
        self.merchant_key = merchant_key
        self.gateway_public_key = gateway_public_key
        self.notify_url = notify_url
        self.timeout_s = timeout_s
        self.http = requests.Session()

    def _call(self, method: str, path: str, payload: dict[str, Any] | None = None) -> tuple[int, bytes]:
        body = json.dumps(payload, ensure_ascii=False).encode() if payload is not None else b""
        timestamp = str(int(time.time()))
        nonce = secrets.token_hex(16)
        message = f"{method}\n{path}\n{timestamp}\n{nonce}\n".encode() + body + b"\n"
        signature = base64.b64encode(self.merchant_key.sign(message, padding.PKCS1v15(), hashes.SHA256())).decode()
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "Tb-Merchant": self.merchant_id,
            "Tb-Timestamp": timestamp,
            "Tb-Nonce": nonce,
            "Tb-Signature": signature,
            "Tb-Sign-Type": "RSA2",
        }
        try:
            response = self.http.request(
                method, self.base_url + path, data=body, headers=headers, timeout=self.timeout_s
            )
        except requests.RequestException as error:
            raise GatewayUnavailable(f"payment gateway unreachable: {error}") from error
        raw = response.content
        limit = MAX_STATEMENT_BYTES if path.startswith("/v3/statements/") else MAX_NOTIFY_BYTES
        try:
            # The answer is trusted only once its signature holds: a query is the source of truth.
            verify_signed_body(self.gateway_public_key, response.headers, raw, max_bytes=limit)
        except DomainError as error:
            raise GatewayUnavailable(f"payment gateway answer refused: {error.message_en}") from error
        if response.status_code >= 500:
            raise GatewayUnavailable(f"payment gateway error {response.status_code}")
        return response.status_code, raw

    def _fact_or_error(self, status: int, raw: bytes, order_id: str) -> GatewayFact:
        if status == 404:
            raise DomainError(
                "payment_gateway_unknown_order",
                "支付网关无此订单",
                "the gateway knows no such order",
                ErrorKind.NOT_FOUND,
            )
        if status >= 400:
            try:
                detail = json.loads(raw)
            except ValueError:
                detail = {}
            error = str(detail.get("error", status)) if isinstance(detail, dict) else str(status)
            if isinstance(detail, dict) and "status" in detail:
                # A refusal that tells the order's current state (e.g. closing a paid order): the caller applies it.
                raise GatewayRefusal(error, fact_from_json(raw, self.merchant_id))
            raise DomainError(
                "payment_gateway_refused",
                f"支付网关拒绝了请求：{error}",
                f"the payment gateway refused the request: {error}",
                ErrorKind.CONFLICT,
            )
        fact = fact_from_json(raw, self.merchant_id)
        if fact.order_id != order_id:
            raise GatewayUnavailable("payment gateway answered about another order")
        return fact

    def create_order(self, order: PaymentOrder, description: str) -> CreatedOrder:
        payload = {
            "merchant_order_id": order.order_id,
            "amount_fen": order.total_fen,
            "description": description[:200],
            "expires_at": order.expires_at.isoformat(),
        }
        if self.notify_url:
            payload["notify_url"] = self.notify_url
        status, raw = self._call("POST", "/v3/orders", payload)
        fact = self._fact_or_error(status, raw, order.order_id)
        pay_url = json.loads(raw).get("pay_url", "")
        return CreatedOrder(trade_no=fact.trade_no, pay_url=str(pay_url), fact=fact)

    def query(self, order_id: str) -> GatewayFact:
        return self._fact_or_error(*self._call("GET", f"/v3/orders/{quote(order_id, safe='')}"), order_id)

    def close(self, order_id: str, reason: str) -> GatewayFact:
        status, raw = self._call("POST", f"/v3/orders/{quote(order_id, safe='')}/close", {"reason": reason})
        return self._fact_or_error(status, raw, order_id)

    def refund(self, order_id: str, refund_id: str, amount_fen: int, reason: str) -> GatewayFact:
        payload = {"merchant_order_id": order_id, "refund_id": refund_id, "amount_fen": amount_fen, "reason": reason}
        return self._fact_or_error(*self._call("POST", "/v3/refunds", payload), order_id)

    def statement(self, day: date) -> list[StatementLine]:
        status, raw = self._call("GET", f"/v3/statements/{day.isoformat()}")
        if status != 200:
            raise GatewayUnavailable(f"statement for {day} refused ({status})")
        reader = csv.DictReader(io.StringIO(raw.decode("utf-8")))
        return [
            StatementLine(
                kind=row["type"],
                order_id=row["merchant_order_id"],
                trade_no=row["trade_no"],
                refund_id=row["refund_id"],
                amount_fen=int(row["amount_fen"]),
                time=row["time"],
            )
            for row in reader
        ]

    def verify_notify(self, headers: Mapping[str, str], raw_body: bytes) -> GatewayFact:
        verify_signed_body(self.gateway_public_key, headers, raw_body)
        return fact_from_json(raw_body, self.merchant_id)


class GatewayRefusal(DomainError):
    """The gateway refused a command and said why in terms of the order's current state (``fact``)."""

    def __init__(self, error: str, fact: GatewayFact) -> None:
        super().__init__(
            "payment_gateway_refused",
            f"支付网关拒绝了请求：{error}",
            f"the payment gateway refused the request: {error}",
            ErrorKind.CONFLICT,
        )
        self.fact = fact


# ---------------------------------------------------------------------------------------------------------------------
# Where a node finds its gateway
# ---------------------------------------------------------------------------------------------------------------------

PAYMENTS_FILE = "payments.json"  # in the node's data directory, beside node.json
MERCHANT_KEY = "payments/merchant.pem"  # the node's merchant key (0600), relative to the data directory


@dataclass(frozen=True)
class GatewaySettings:
    """``<data_dir>/payments.json``: the gateway's URL and public key, our merchant id and notify URL.

    A node without the file collects no fees online (its cases show the fee, and no payment order).
    """

    url: str
    merchant_id: str
    gateway_public_key: Path  # PEM, as the provider publishes it (the sandbox writes gateway_public.pem)
    notify_url: str
    merchant_key: Path

    @classmethod
    def load(cls, data_dir: Path) -> GatewaySettings | None:
        path = Path(data_dir) / PAYMENTS_FILE
        if not path.exists():
            return None
        raw = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(raw, dict):
            raise ValueError(f"{path} is not a JSON object")
        return cls(
            url=str(raw["url"]),
            merchant_id=str(raw["merchant_id"]),
            gateway_public_key=Path(raw["gateway_public_key"]),
            notify_url=str(raw["notify_url"]),
            merchant_key=Path(raw.get("merchant_key") or Path(data_dir) / MERCHANT_KEY),
        )

    def save(self, data_dir: Path) -> Path:
        path = Path(data_dir) / PAYMENTS_FILE
        data = {
            "url": self.url,
            "merchant_id": self.merchant_id,
            "gateway_public_key": str(self.gateway_public_key),
            "notify_url": self.notify_url,
            "merchant_key": str(self.merchant_key),
        }
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, ensure_ascii=False, indent=1), encoding="utf-8")
        tmp.replace(path)
        return path

    def client(self) -> HttpPaymentGateway:
        return HttpPaymentGateway(
            self.url,
            self.merchant_id,
            ensure_merchant_key(self.merchant_key),
            load_public_key(self.gateway_public_key.read_bytes()),
            notify_url=self.notify_url,
        )
