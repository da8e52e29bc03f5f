"""Payment orders for fees (缴费): amounts in fen, the payment code (缴款码) and the order state machine.

This module owns what a payment order is, which state changes are legal and who may cause them
(the merchant — this node — or the payment gateway), and how facts reported by the gateway (an
asynchronous notify or a query answer) are applied exactly once: the same fact twice is a no-op,
an older fact after a newer one changes nothing, a fact whose amount differs from the order's is
refused. It knows nothing of HTTP, signatures or storage (see node/adapters/payment_gateway.py and
node/service_layer/payments.py). The protocol and the state set are described in docs/payments.md.

Amounts are integers in fen (分) everywhere; a float never enters an order.
"""

from __future__ import annotations

import re
import secrets
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any

from node.domain.errors import DomainError, ErrorKind

__all__ = [
    "MAX_ORDER_FEN",
    "TRANSITIONS",
    "Anomaly",
    "ApplyOutcome",
    "Channel",
    "DuplicatePaymentCode",
    "FeeItem",
    "GatewayFact",
    "PaymentOrder",
    "PaymentState",
    "Transition",
    "fee_items_for_matter",
    "make_payment_code",
    "new_order_id",
    "validate_payment_code",
    "yuan_to_fen",
]

MAX_ORDER_FEN = 100_000_000 * 100  # one hundred million yuan: far above any administrative fee
MAX_FEE_ITEMS = 20
DEFAULT_TIME_TO_PAY = timedelta(hours=24)

_ORDER_ID = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
_PAYER_KEY = re.compile(r"^[0-9a-f]{64}$")  # the HMAC look-up key of node/adapters/pii.py, never the ID
_CASE_NO = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_REASON = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
_FEE_CODE = re.compile(r"^[A-Za-z0-9_.-]{1,40}$")


class PaymentState(StrEnum):
    CREATED = "created"  # known to us and to the gateway; the payment code is issued
    PAYING = "paying"  # the payer opened the pay page; no money confirmed yet
    SUCCEEDED = "succeeded"  # the gateway confirmed the full amount was received
    FAILED = "failed"  # the gateway declined the payment (reason code); terminal, a new order may follow
    CANCELLED = "cancelled"  # we cancelled it before payment (e.g. the case was withdrawn); terminal
    CLOSED = "closed"  # expired unpaid; terminal
    REFUNDING = "refunding"  # a refund is asked for and not yet confirmed
    PARTIALLY_REFUNDED = "partially_refunded"
    REFUNDED = "refunded"  # the whole amount went back; terminal


STATE_NAMES_ZH: Mapping[PaymentState, str] = {
    PaymentState.CREATED: "待支付",
    PaymentState.PAYING: "支付中",
    PaymentState.SUCCEEDED: "已支付",
    PaymentState.FAILED: "支付失败",
    PaymentState.CANCELLED: "已取消",
    PaymentState.CLOSED: "已关闭（超时）",
    PaymentState.REFUNDING: "退款中",
    PaymentState.PARTIALLY_REFUNDED: "部分退款",
    PaymentState.REFUNDED: "已退款",
}

TERMINAL = frozenset({PaymentState.FAILED, PaymentState.CANCELLED, PaymentState.CLOSED, PaymentState.REFUNDED})
SETTLED = frozenset(
    {PaymentState.SUCCEEDED, PaymentState.REFUNDING, PaymentState.PARTIALLY_REFUNDED, PaymentState.REFUNDED}
)
OPEN = frozenset({PaymentState.CREATED, PaymentState.PAYING})

MERCHANT = "merchant"
GATEWAY = "gateway"

S = PaymentState
# (from, to) -> who may cause it. "merchant" changes are our own commands; "gateway" changes only
# ever come from a verified gateway fact (notify or query). Nothing else is legal.
TRANSITIONS: Mapping[tuple[PaymentState, PaymentState], frozenset[str]] = {
    (S.CREATED, S.PAYING): frozenset({GATEWAY}),
    (S.CREATED, S.SUCCEEDED): frozenset({GATEWAY}),  # the "paying" notify may be late or lost
    (S.CREATED, S.FAILED): frozenset({GATEWAY}),
    # Cancelling is ours, but done by closing the order at the gateway and applying its answer; the
    # merchant edge alone is for an order the gateway never heard of.
    (S.CREATED, S.CANCELLED): frozenset({MERCHANT, GATEWAY}),
    (S.CREATED, S.CLOSED): frozenset({MERCHANT, GATEWAY}),
    (S.PAYING, S.SUCCEEDED): frozenset({GATEWAY}),
    (S.PAYING, S.FAILED): frozenset({GATEWAY}),
    (S.PAYING, S.CANCELLED): frozenset({MERCHANT, GATEWAY}),
    (S.PAYING, S.CLOSED): frozenset({MERCHANT, GATEWAY}),
    (S.SUCCEEDED, S.REFUNDING): frozenset({MERCHANT, GATEWAY}),  # gateway: we crashed after asking
    (S.PARTIALLY_REFUNDED, S.REFUNDING): frozenset({MERCHANT, GATEWAY}),
    (S.REFUNDING, S.PARTIALLY_REFUNDED): frozenset({GATEWAY}),
    (S.REFUNDING, S.REFUNDED): frozenset({GATEWAY}),
    (S.REFUNDING, S.SUCCEEDED): frozenset({GATEWAY}),  # the refund was refused, nothing went back
}
del S


class Channel(StrEnum):
    HALL = "hall"  # the online hall (网上办事大厅)
    WINDOW = "window"  # at a service window (窗口)
    KIOSK = "kiosk"  # a self-service terminal (自助终端)


def _invalid(code: str, zh: str, en: str, kind: ErrorKind = ErrorKind.INVALID) -> DomainError:
    return DomainError(code, zh, en, kind)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _fen(value: object, what: tuple[str, str], *, allow_zero: bool = False) -> int:
    low = 0 if allow_zero else 1
    if not _is_int(value) or not low <= value <= MAX_ORDER_FEN:  # type: ignore[operator]
        raise _invalid(
            "payment_amount_invalid",
            f"{what[0]}金额须为 {low}–{MAX_ORDER_FEN} 分之间的整数",
            f"the {what[1]} amount must be an integer number of fen between {low} and {MAX_ORDER_FEN}",
        )
    return int(value)  # type: ignore[arg-type]


def yuan_to_fen(yuan: Decimal | str | int) -> int:
    """An exact amount in yuan (``Decimal`` or string, never a float) as fen; sub-fen amounts are refused."""
    if isinstance(yuan, bool | float) or not isinstance(yuan, Decimal | str | int):
        raise _invalid("payment_amount_invalid", "金额须为十进制数字", "an amount must be a decimal number")
    try:
        amount = Decimal(yuan) if not isinstance(yuan, Decimal) else yuan
        fen = amount * 100
    except InvalidOperation:
        raise _invalid("payment_amount_invalid", "金额须为十进制数字", "an amount must be a decimal number") from None
    if not fen.is_finite() or fen != fen.to_integral_value() or fen < 0:
        raise _invalid("payment_amount_invalid", "金额须精确到分", "an amount must be whole fen")
    return int(fen)


# ---------------------------------------------------------------------------------------------------------------------
# Payment code (缴款码)
#
# 20 digits: RRRRRR YY SSSSSSSSSSS C
#   R  the 6-digit administrative division code of the collecting node (GB/T 2260 county level);
#   Y  the last two digits of the year the order was created;
#   S  11 random digits (uniqueness is enforced by the repository, which retries on a clash);
#   C  the check digit of ISO/IEC 7064 MOD 11,10 (as GB/T 17710) over the 19 digits before it, which
#      catches every single-digit error and every transposition of adjacent digits.
# The public non-tax payment system issues 20-digit codes; its exact field layout is not published,
# so this layout is our assumption and is the only one the platform issues or accepts.
# ---------------------------------------------------------------------------------------------------------------------

_PAYMENT_CODE = re.compile(r"^[0-9]{20}$")


def _mod11_10_check(digits: str) -> str:
    product = 10
    for ch in digits:
        total = (int(ch) + product) % 10 or 10
        product = (total * 2) % 11
    return str((11 - product) % 10)


def make_payment_code(region6: str, year: int, serial: int | None = None) -> str:
    if not re.fullmatch(r"[1-9][0-9]{5}", region6 or ""):
        raise _invalid("payment_region_invalid", "缴款码地区码须为6位行政区划代码", "region must be a 6-digit code")
    if serial is None:
        serial = secrets.randbelow(10**11)
    if not 0 <= serial < 10**11:
        raise ValueError("serial must have at most 11 digits")
    body = f"{region6}{year % 100:02d}{serial:011d}"
    return body + _mod11_10_check(body)


def validate_payment_code(value: object) -> str:
    """A 20-digit payment code with a correct check digit (spaces, as printed in groups of four, are removed)."""
    text = value.replace(" ", "") if isinstance(value, str) else ""
    if not _PAYMENT_CODE.fullmatch(text):
        raise _invalid("payment_code_format", "缴款码须为20位数字", "a payment code has 20 digits")
    if _mod11_10_check(text[:19]) != text[19]:
        raise _invalid("payment_code_checksum", "缴款码校验位错误", "the payment code's check digit is wrong")
    return text


def new_order_id() -> str:
    return "po_" + secrets.token_hex(12)


# ---------------------------------------------------------------------------------------------------------------------
# Orders
# ---------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FeeItem:
    code: str
    name: str
    amount_fen: int

    def __post_init__(self) -> None:
        if not isinstance(self.code, str) or not _FEE_CODE.fullmatch(self.code):
            raise _invalid("payment_fee_item_invalid", "收费项目编码无效", "invalid fee item code")
        if not isinstance(self.name, str) or not 1 <= len(self.name) <= 100:
            raise _invalid("payment_fee_item_invalid", "收费项目名称须为1–100个字符", "fee item name: 1-100 characters")
        _fen(self.amount_fen, ("收费项目", "fee item"))

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "name": self.name, "amount_fen": self.amount_fen}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FeeItem:
        return cls(code=data["code"], name=data["name"], amount_fen=data["amount_fen"])


def fee_items_for_matter(matter: Any) -> list[FeeItem]:
    """The fee items a catalogue matter charges (one item: the matter's fee); none for a free matter."""
    fen = yuan_to_fen(matter.fee_yuan)
    return [FeeItem(code=matter.code, name=matter.name[:100], amount_fen=fen)] if fen else []


@dataclass(frozen=True)
class GatewayFact:
    """What the gateway says about an order, from a verified notify or a query.

    ``version`` is the gateway's own counter of changes to the order; it orders facts, so a late or
    replayed notify can be recognised whatever order the notifies arrive in.
    """

    order_id: str
    status: PaymentState
    amount_fen: int
    refunded_fen: int
    version: int
    trade_no: str = ""
    reason_code: str = ""
    occurred_at: datetime | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.order_id, str) or not _ORDER_ID.fullmatch(self.order_id):
            raise _invalid("payment_fact_invalid", "网关消息中的订单号无效", "the gateway fact's order id is invalid")
        try:
            object.__setattr__(self, "status", PaymentState(self.status))
        except ValueError:
            raise _invalid(
                "payment_fact_invalid", "网关消息中的状态未知", "unknown status in the gateway fact"
            ) from None
        _fen(self.amount_fen, ("网关消息", "gateway fact"))
        _fen(self.refunded_fen, ("网关退款", "gateway refund"), allow_zero=True)
        if self.refunded_fen > self.amount_fen:
            raise _invalid("payment_fact_invalid", "退款金额超过订单金额", "refunded more than the order amount")
        if not _is_int(self.version) or not 1 <= self.version <= 1_000_000:
            raise _invalid("payment_fact_invalid", "网关消息版本号无效", "invalid gateway fact version")
        if not isinstance(self.trade_no, str) or len(self.trade_no) > 64:
            raise _invalid("payment_fact_invalid", "网关交易号无效", "invalid gateway trade number")
        if self.reason_code and (not isinstance(self.reason_code, str) or not _REASON.fullmatch(self.reason_code)):
            raise _invalid("payment_fact_invalid", "失败原因码无效", "invalid failure reason code")


@dataclass(frozen=True)
class Transition:
    from_state: PaymentState
    to_state: PaymentState
    at: datetime
    source: str  # merchant | gateway
    gateway_version: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "from": self.from_state.value,
            "to": self.to_state.value,
            "at": self.at.isoformat(),
            "source": self.source,
            "gateway_version": self.gateway_version,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Transition:
        return cls(
            PaymentState(data["from"]),
            PaymentState(data["to"]),
            datetime.fromisoformat(data["at"]),
            data["source"],
            int(data.get("gateway_version", 0)),
        )


class ApplyOutcome(StrEnum):
    APPLIED = "applied"  # the order changed
    DUPLICATE = "duplicate"  # this very fact was applied before
    STALE = "stale"  # an older fact than one already applied


def _state_label(state: PaymentState) -> tuple[str, str]:
    return STATE_NAMES_ZH[state], state.value


def _illegal(from_state: PaymentState, to_state: PaymentState) -> DomainError:
    if from_state is PaymentState.CANCELLED and to_state in SETTLED | {PaymentState.PAYING}:
        return _invalid(
            "payment_order_cancelled",
            "订单已取消，不能支付",
            "the order was cancelled and cannot be paid",
            ErrorKind.CONFLICT,
        )
    if from_state is PaymentState.CLOSED and to_state in SETTLED | {PaymentState.PAYING}:
        return _invalid(
            "payment_order_closed",
            "订单已超时关闭，不能支付",
            "the order expired and cannot be paid",
            ErrorKind.CONFLICT,
        )
    zh_from, en_from = _state_label(from_state)
    zh_to, en_to = _state_label(to_state)
    return _invalid(
        "payment_illegal_transition",
        f"缴费订单不能从“{zh_from}”变为“{zh_to}”",
        f"a payment order cannot go from {en_from} to {en_to}",
        ErrorKind.CONFLICT,
    )


def _path(from_state: PaymentState, to_state: PaymentState, source: str) -> list[PaymentState] | None:
    """The shortest chain of legal ``source`` transitions from one state to another (BFS over the table).

    A gateway fact may skip states we never heard of (a lost "paying" or "refunding" notify); every
    step of the chain is still a legal transition, so a skipped state is never an illegal one.
    """
    queue: deque[list[PaymentState]] = deque([[from_state]])
    seen = {from_state}
    while queue:
        chain = queue.popleft()
        for (a, b), sources in TRANSITIONS.items():
            if a is chain[-1] and source in sources and b not in seen:
                if b is to_state:
                    return [*chain[1:], b]
                seen.add(b)
                queue.append([*chain, b])
    return None


@dataclass
class PaymentOrder:
    """A payment order for the fee items of one case. Mutated only through its methods."""

    order_id: str
    case_no: str
    payment_code: str
    items: tuple[FeeItem, ...]
    payer_key: str
    channel: Channel
    created_at: datetime
    expires_at: datetime
    state: PaymentState = PaymentState.CREATED
    reason_code: str = ""
    trade_no: str = ""
    gateway_version: int = 0
    refunded_fen: int = 0
    refund_requested_fen: int = 0
    revision: int = 0  # bumped on every change, for the repository's compare-and-set
    history: list[Transition] = field(default_factory=list)

    @classmethod
    def create(
        cls,
        *,
        case_no: str,
        items: Iterable[FeeItem],
        payer_key: str,
        channel: Channel | str,
        payment_code: str,
        now: datetime,
        time_to_pay: timedelta = DEFAULT_TIME_TO_PAY,
        order_id: str | None = None,
    ) -> PaymentOrder:
        items = tuple(items)
        if not isinstance(case_no, str) or not _CASE_NO.fullmatch(case_no):
            raise _invalid("payment_case_invalid", "案件编号无效", "invalid case number")
        if not items or len(items) > MAX_FEE_ITEMS or not all(isinstance(i, FeeItem) for i in items):
            raise _invalid(
                "payment_no_fee_items",
                f"缴费订单须有1–{MAX_FEE_ITEMS}个收费项目",
                f"a payment order needs 1-{MAX_FEE_ITEMS} fee items",
            )
        if len({i.code for i in items}) != len(items):
            raise _invalid("payment_fee_item_duplicate", "收费项目重复", "duplicate fee items")
        if not isinstance(payer_key, str) or not _PAYER_KEY.fullmatch(payer_key):
            raise _invalid(
                "payment_payer_key_invalid",
                "缴款人须以查询密钥标识（不得使用身份证号）",
                "the payer is identified by a look-up key (64 hex digits), never an ID number",
            )
        try:
            channel = Channel(channel)
        except ValueError:
            raise _invalid(
                "payment_channel_invalid", "缴费渠道须为 hall、window 或 kiosk", "channel must be hall, window or kiosk"
            ) from None
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        if not timedelta(minutes=1) <= time_to_pay <= timedelta(days=30):
            raise _invalid("payment_expiry_invalid", "支付期限须为1分钟至30天", "time to pay must be 1 minute-30 days")
        order = cls(
            order_id=order_id or new_order_id(),
            case_no=case_no,
            payment_code=validate_payment_code(payment_code),
            items=items,
            payer_key=payer_key,
            channel=channel,
            created_at=now,
            expires_at=now + time_to_pay,
        )
        if not _ORDER_ID.fullmatch(order.order_id):
            raise _invalid("payment_order_id_invalid", "订单号无效", "invalid order id")
        _fen(order.total_fen, ("订单", "order"))
        return order

    @property
    def total_fen(self) -> int:
        return sum(item.amount_fen for item in self.items)

    @property
    def is_settled(self) -> bool:
        """Money was received (whatever happened after)."""
        return self.state in SETTLED

    @property
    def is_open(self) -> bool:
        return self.state in OPEN

    @property
    def last_change_at(self) -> datetime:
        return self.history[-1].at if self.history else self.created_at

    def times_entered(self, state: PaymentState) -> int:
        return sum(1 for t in self.history if t.to_state is state)

    @property
    def times_settled(self) -> int:
        """How often money was received: entries into ``succeeded`` from an unpaid state (0 or 1).

        A refused refund also re-enters ``succeeded``, but that is no new payment.
        """
        return sum(1 for t in self.history if t.to_state is PaymentState.SUCCEEDED and t.from_state in OPEN)

    def _move(self, to_state: PaymentState, source: str, now: datetime, gateway_version: int = 0) -> None:
        if source not in TRANSITIONS.get((self.state, to_state), frozenset()):
            raise _illegal(self.state, to_state)
        self.history.append(Transition(self.state, to_state, now, source, gateway_version))
        self.state = to_state

    # -- merchant commands ---------------------------------------------------------------------------------------------

    def cancel(self, now: datetime) -> None:
        """Cancel an unpaid order the gateway never heard of (otherwise close it there and apply the answer)."""
        self._move(PaymentState.CANCELLED, MERCHANT, now)
        self.revision += 1

    def close_expired(self, now: datetime) -> None:
        if now < self.expires_at:
            raise _invalid(
                "payment_not_expired", "订单尚未超过支付期限", "the order has not expired yet", ErrorKind.CONFLICT
            )
        self._move(PaymentState.CLOSED, MERCHANT, now)
        self.revision += 1

    def request_refund(self, amount_fen: int, now: datetime) -> None:
        amount_fen = _fen(amount_fen, ("退款", "refund"))
        if amount_fen > self.total_fen - self.refunded_fen:
            raise _invalid(
                "payment_refund_too_large",
                "退款金额超过可退金额",
                "the refund is larger than what is left to refund",
                ErrorKind.CONFLICT,
            )
        self._move(PaymentState.REFUNDING, MERCHANT, now)
        self.refund_requested_fen = self.refunded_fen + amount_fen
        self.revision += 1

    # -- gateway facts -------------------------------------------------------------------------------------------------

    def apply(self, fact: GatewayFact, now: datetime) -> ApplyOutcome:
        """Apply a verified gateway fact once; nothing changes when it is refused, a duplicate or stale."""
        if fact.order_id != self.order_id:
            raise _invalid("payment_fact_order", "网关消息不属于此订单", "the fact is about another order")
        if fact.amount_fen != self.total_fen:
            raise _invalid(
                "payment_amount_mismatch",
                f"网关金额 {fact.amount_fen} 分与订单金额 {self.total_fen} 分不符",
                f"the gateway amount {fact.amount_fen} fen differs from the order's {self.total_fen} fen",
                ErrorKind.CONFLICT,
            )
        if self.trade_no and fact.trade_no and fact.trade_no != self.trade_no:
            raise _invalid(
                "payment_trade_mismatch", "网关交易号与订单不符", "the gateway trade number differs", ErrorKind.CONFLICT
            )
        if fact.version == self.gateway_version:
            return ApplyOutcome.DUPLICATE
        if fact.version < self.gateway_version:
            return ApplyOutcome.STALE
        if fact.status is not self.state:
            chain = _path(self.state, fact.status, GATEWAY)
            if chain is None:
                raise _illegal(self.state, fact.status)
            for step in chain:
                self._move(step, GATEWAY, now, fact.version)
        if fact.status is PaymentState.FAILED:
            self.reason_code = fact.reason_code or "unspecified"
        self.refunded_fen = fact.refunded_fen
        self.gateway_version = fact.version
        self.trade_no = self.trade_no or fact.trade_no
        self.revision += 1
        return ApplyOutcome.APPLIED

    # -- persistence ---------------------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "order_id": self.order_id,
            "case_no": self.case_no,
            "payment_code": self.payment_code,
            "items": [i.to_dict() for i in self.items],
            "payer_key": self.payer_key,
            "channel": self.channel.value,
            "created_at": self.created_at.isoformat(),
            "expires_at": self.expires_at.isoformat(),
            "state": self.state.value,
            "reason_code": self.reason_code,
            "trade_no": self.trade_no,
            "gateway_version": self.gateway_version,
            "refunded_fen": self.refunded_fen,
            "refund_requested_fen": self.refund_requested_fen,
            "revision": self.revision,
            "history": [t.to_dict() for t in self.history],
            "total_fen": self.total_fen,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PaymentOrder:
        return cls(
            order_id=data["order_id"],
            case_no=data["case_no"],
            payment_code=data["payment_code"],
            items=tuple(FeeItem.from_dict(i) for i in data["items"]),
            payer_key=data["payer_key"],
            channel=Channel(data["channel"]),
            created_at=datetime.fromisoformat(data["created_at"]),
            expires_at=datetime.fromisoformat(data["expires_at"]),
            state=PaymentState(data["state"]),
            reason_code=data.get("reason_code", ""),
            trade_no=data.get("trade_no", ""),
            gateway_version=int(data.get("gateway_version", 0)),
            refunded_fen=int(data.get("refunded_fen", 0)),
            refund_requested_fen=int(data.get("refund_requested_fen", 0)),
            revision=int(data.get("revision", 0)),
            history=[Transition.from_dict(t) for t in data.get("history", [])],
        )

    def copy(self) -> PaymentOrder:
        return replace(self, history=list(self.history))


@dataclass(frozen=True)
class Anomaly:
    """Something a person must look at: the money and our records disagree."""

    kind: str  # amount_mismatch | paid_after_cancel | paid_after_close | illegal_transition | unknown_order
    order_id: str
    gateway_version: int
    detail: str
    at: datetime


class DuplicatePaymentCode(Exception):
    """A repository already holds an order with this payment code (a new one is drawn)."""


WAITING = frozenset(OPEN | {PaymentState.REFUNDING})  # states that wait for the gateway


def utc_now() -> datetime:
    return datetime.now(UTC)
