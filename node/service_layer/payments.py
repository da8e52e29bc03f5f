"""Payment use cases: create a case's payment order, take the gateway's notify, reconcile, cancel and refund.

This module owns applying gateway facts exactly once under concurrency (a notify and the
reconciliation job may race: every save is a compare-and-set on the order's revision), settling
orders whose notify never came by querying the gateway, and keeping a report of anomalies (amount
mismatches, money taken on a cancelled order, notifies about unknown orders). Storage sits behind
``PaymentRepository``: an in-memory one here for unit tests, and the SQLAlchemy one of
node/adapters/payment_store.py for real use.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from node.adapters.payment_gateway import GatewayRefusal, GatewayUnavailable, PaymentGateway
from node.domain.errors import DomainError, ErrorKind
from node.domain.payment import (
    DEFAULT_TIME_TO_PAY,
    WAITING,
    Anomaly,
    ApplyOutcome,
    Channel,
    DuplicatePaymentCode,
    FeeItem,
    GatewayFact,
    PaymentOrder,
    PaymentState,
    make_payment_code,
    utc_now,
)

log = logging.getLogger("tongban.payments")


class PaymentRepository(Protocol):
    def add(self, order: PaymentOrder) -> None:
        """Store a new order; ``DuplicatePaymentCode`` when its payment code is taken."""

    def get(self, order_id: str) -> PaymentOrder | None: ...

    def save(self, order: PaymentOrder, expected_revision: int) -> bool:
        """Store ``order`` only if the stored one still has ``expected_revision``; whether it did."""

    def for_case(self, case_no: str) -> list[PaymentOrder]: ...

    def waiting(self, changed_before: datetime) -> list[PaymentOrder]:
        """Orders waiting for the gateway (created, paying, refunding) whose last change is older."""

    def record_anomaly(self, anomaly: Anomaly) -> bool:
        """Keep an anomaly once per (kind, order, gateway version); whether it is new."""

    def anomalies(self) -> list[Anomaly]: ...


class InMemoryPaymentRepository:
    def __init__(self) -> None:
        self._orders: dict[str, dict[str, Any]] = {}
        self._codes: set[str] = set()
        self._anomalies: dict[tuple[str, str, int], Anomaly] = {}
        self._lock = threading.Lock()

    def add(self, order: PaymentOrder) -> None:
        with self._lock:
            if order.payment_code in self._codes:
                raise DuplicatePaymentCode(order.payment_code)
            if order.order_id in self._orders:
                raise ValueError(f"order {order.order_id} exists")
            self._codes.add(order.payment_code)
            self._orders[order.order_id] = order.to_dict()

    def get(self, order_id: str) -> PaymentOrder | None:
        with self._lock:
            data = self._orders.get(order_id)
        return PaymentOrder.from_dict(data) if data is not None else None

    def save(self, order: PaymentOrder, expected_revision: int) -> bool:
        with self._lock:
            stored = self._orders.get(order.order_id)
            if stored is None or stored["revision"] != expected_revision:
                return False
            self._orders[order.order_id] = order.to_dict()
            return True

    def for_case(self, case_no: str) -> list[PaymentOrder]:
        with self._lock:
            found = [d for d in self._orders.values() if d["case_no"] == case_no]
        return [PaymentOrder.from_dict(d) for d in found]

    def waiting(self, changed_before: datetime) -> list[PaymentOrder]:
        with self._lock:
            orders = [PaymentOrder.from_dict(d) for d in self._orders.values() if d["state"] in WAITING]
        return [o for o in orders if o.last_change_at < changed_before]

    def record_anomaly(self, anomaly: Anomaly) -> bool:
        key = (anomaly.kind, anomaly.order_id, anomaly.gateway_version)
        with self._lock:
            if key in self._anomalies:
                return False
            self._anomalies[key] = anomaly
            return True

    def anomalies(self) -> list[Anomaly]:
        with self._lock:
            return list(self._anomalies.values())


# ---------------------------------------------------------------------------------------------------------------------
# Use cases
# ---------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NotifyAnswer:
    """What the notify endpoint answers: ``success`` only when the fact is applied (or already was)."""

    status: int
    body: str
    outcome: str  # applied | duplicate | stale | refused


@dataclass
class ReconcileReport:
    checked: int = 0
    settled: list[str] = field(default_factory=list)  # orders that became paid in this run
    closed: list[str] = field(default_factory=list)
    refunds_resent: list[str] = field(default_factory=list)
    changed: int = 0
    anomalies: list[Anomaly] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def _error_body(error: DomainError) -> str:
    return json.dumps(error.to_dict(), ensure_ascii=False)


class PaymentService:
    def __init__(
        self,
        repository: PaymentRepository,
        gateway: PaymentGateway,
        *,
        region_code: str,
        clock: Callable[[], datetime] = utc_now,
        on_settled: Callable[[PaymentOrder], None] | None = None,
        on_state_change: Callable[[PaymentOrder], None] | None = None,
    ) -> None:
        self.repository = repository
        self.gateway = gateway
        self.region_code = region_code
        self.clock = clock
        self.on_settled = on_settled
        # Called once per stored change of an order's state (the compare-and-set makes it once), with the
        # order as stored: the case records it as an event.
        self.on_state_change = on_state_change

    def _changed(self, order: PaymentOrder, before: PaymentState) -> None:
        if order.state is not before and self.on_state_change is not None:
            self.on_state_change(order)

    # -- create --------------------------------------------------------------------------------------------------------

    def create_for_case(
        self,
        case_no: str,
        items: Iterable[FeeItem],
        payer_key: str,
        channel: Channel | str,
        description: str,
        time_to_pay: timedelta = DEFAULT_TIME_TO_PAY,
    ) -> tuple[PaymentOrder, str]:
        """The open order of the case for these fee items (creating it once), and the URL to pay it."""
        items = tuple(items)
        for existing in self.repository.for_case(case_no):
            if existing.is_open and existing.items == items:
                return self._register(existing, description)
        now = self.clock()
        for _ in range(5):
            order = PaymentOrder.create(
                case_no=case_no,
                items=items,
                payer_key=payer_key,
                channel=channel,
                payment_code=make_payment_code(self.region_code, now.year),
                now=now,
                time_to_pay=time_to_pay,
            )
            try:
                self.repository.add(order)
                break
            except DuplicatePaymentCode:
                continue
        else:  # pragma: no cover - five clashes in 10^11 codes
            raise RuntimeError("could not draw a free payment code")
        return self._register(order, description)

    def _register(self, order: PaymentOrder, description: str) -> tuple[PaymentOrder, str]:
        # Creating at the gateway is idempotent by order id, so an order whose first attempt failed
        # is simply registered again.
        created = self.gateway.create_order(order, description)
        applied = self._apply(order.order_id, created.fact)
        return applied or order, created.pay_url

    # -- facts ---------------------------------------------------------------------------------------------------------

    def _apply(self, order_id: str, fact: GatewayFact, report: ReconcileReport | None = None) -> PaymentOrder | None:
        """Apply a fact with compare-and-set; the order as stored afterwards (None when unknown)."""
        return self._apply_once(order_id, fact, report)[0]

    def _apply_once(
        self, order_id: str, fact: GatewayFact, report: ReconcileReport | None = None
    ) -> tuple[PaymentOrder | None, ApplyOutcome | None]:
        for _ in range(20):
            order = self.repository.get(order_id)
            if order is None:
                return None, None
            before_revision = order.revision
            before_state = order.state
            paid_before = order.times_settled
            try:
                outcome = order.apply(fact, self.clock())
            except DomainError as error:
                self._anomaly(order, fact, error, report)
                raise
            if outcome is not ApplyOutcome.APPLIED:
                return order, outcome
            if self.repository.save(order, before_revision):
                self._changed(order, before_state)
                if order.times_settled > paid_before:
                    log.info("payment order %s settled (gateway version %s)", order.order_id, fact.version)
                    if report is not None:
                        report.settled.append(order.order_id)
                    if self.on_settled is not None:
                        self.on_settled(order)
                return order, outcome
        raise RuntimeError(f"order {order_id} kept changing under us")

    def _anomaly(
        self, order: PaymentOrder, fact: GatewayFact, error: DomainError, report: ReconcileReport | None
    ) -> None:
        kind = {
            "payment_amount_mismatch": "amount_mismatch",
            "payment_order_cancelled": "paid_after_cancel",
            "payment_order_closed": "paid_after_close",
        }.get(error.code, "illegal_transition")
        anomaly = Anomaly(kind, order.order_id, fact.version, error.message_en, self.clock())
        if self.repository.record_anomaly(anomaly):
            log.warning("payment anomaly %s on order %s: %s", kind, order.order_id, error.message_en)
        if report is not None:
            report.anomalies.append(anomaly)

    def handle_notify(self, headers: Any, raw_body: bytes) -> NotifyAnswer:
        """Verify the raw body, then apply the fact once, then acknowledge; refuse anything else with a reason."""
        try:
            fact = self.gateway.verify_notify(headers, raw_body)
        except DomainError as error:
            log.warning("payment notify refused: %s", error.code)
            status = 401 if error.kind is ErrorKind.UNAUTHENTICATED else 400
            return NotifyAnswer(status, _error_body(error), "refused")
        try:
            order, outcome = self._apply_once(fact.order_id, fact)
        except DomainError as error:
            return NotifyAnswer(409, _error_body(error), "refused")
        if order is None or outcome is None:
            error = DomainError("payment_unknown_order", "缴费订单不存在", "no such payment order", ErrorKind.NOT_FOUND)
            anomaly = Anomaly("unknown_order", fact.order_id, fact.version, error.message_en, self.clock())
            if self.repository.record_anomaly(anomaly):
                log.warning("payment notify for an unknown order %s", fact.order_id)
            return NotifyAnswer(404, _error_body(error), "refused")
        return NotifyAnswer(200, "success", outcome.value)

    # -- reconciliation ------------------------------------------------------------------------------------------------

    def reconcile(self, older_than: timedelta = timedelta(minutes=5)) -> ReconcileReport:
        """Query the gateway about every order still waiting after ``older_than`` and settle it from the answer."""
        report = ReconcileReport()
        now = self.clock()
        for order in self.repository.waiting(now - older_than):
            report.checked += 1
            try:
                self._reconcile_one(order, now, report)
            except GatewayUnavailable as error:
                report.errors.append(f"{order.order_id}: {error}")
            except DomainError as error:
                if error.kind is not ErrorKind.CONFLICT and error.code != "payment_fact_invalid":
                    report.errors.append(f"{order.order_id}: {error.code}")
        if report.settled or report.anomalies:
            log.info("reconciliation: %d settled, %d anomalies", len(report.settled), len(report.anomalies))
        return report

    def _reconcile_one(self, order: PaymentOrder, now: datetime, report: ReconcileReport) -> None:
        try:
            fact = self.gateway.query(order.order_id)
        except DomainError as error:
            if error.kind is ErrorKind.NOT_FOUND and order.is_open:
                # Creation never reached the gateway: nobody can have paid it.
                self._merchant_close(order, now, report)
                return
            raise
        after = self._apply(order.order_id, fact, report)
        if after is None:
            return
        if after.revision != order.revision:
            report.changed += 1
        if after.is_open and now >= after.expires_at:
            try:
                closed = self.gateway.close(after.order_id, PaymentState.CLOSED.value)
            except GatewayRefusal as refusal:  # paid at the last moment: the refusal carries the truth
                closed = refusal.fact
            after = self._apply(after.order_id, closed, report)
            if after is not None and after.state is PaymentState.CLOSED:
                report.closed.append(after.order_id)
        elif (
            after is not None
            and after.state is PaymentState.REFUNDING
            and fact.status in (PaymentState.SUCCEEDED, PaymentState.PARTIALLY_REFUNDED)
        ):
            # Our refund request never reached the gateway: send the same request (same refund id) again.
            self._send_refund(after)
            report.refunds_resent.append(after.order_id)

    def _merchant_close(self, order: PaymentOrder, now: datetime, report: ReconcileReport) -> None:
        if now < order.expires_at:
            return
        before, before_state = order.revision, order.state
        order.close_expired(now)
        if self.repository.save(order, before):
            self._changed(order, before_state)
            report.closed.append(order.order_id)

    # -- cancel and refund ---------------------------------------------------------------------------------------------

    def cancel(self, order_id: str) -> PaymentOrder:
        """Cancel an unpaid order: close it at the gateway first, so the payer can no longer pay it."""
        order = self._existing(order_id)
        if not order.is_open:
            order.cancel(self.clock())  # raises the bilingual illegal-transition error
        try:
            fact = self.gateway.close(order_id, PaymentState.CANCELLED.value)
        except GatewayRefusal as refusal:
            self._apply(order_id, refusal.fact)
            raise DomainError(
                "payment_already_paid",
                "订单已支付，不能取消，请办理退款",
                "the order is already paid; refund it instead",
                ErrorKind.CONFLICT,
            ) from None
        except DomainError as error:
            if error.kind is not ErrorKind.NOT_FOUND:
                raise
            before, before_state = order.revision, order.state
            order.cancel(self.clock())
            if not self.repository.save(order, before):
                return self.cancel(order_id)
            self._changed(order, before_state)
            return order
        result = self._apply(order_id, fact)
        assert result is not None
        return result

    def refund_rejected_case(self, case_no: str, reason: str) -> list[PaymentOrder]:
        """Refund in full every paid order of a case that was rejected (不予受理 / 不予许可)."""
        refunded = []
        for order in self.repository.for_case(case_no):
            if order.state not in (PaymentState.SUCCEEDED, PaymentState.PARTIALLY_REFUNDED):
                continue
            before, before_state = order.revision, order.state
            order.request_refund(order.total_fen - order.refunded_fen, self.clock())
            if not self.repository.save(order, before):
                continue  # someone else moved it; the next call sees the new state
            self._changed(order, before_state)
            try:
                self._send_refund(order, reason)
            except GatewayUnavailable:
                log.warning("refund of %s not sent yet; reconciliation will resend it", order.order_id)
            refunded.append(self._existing(order.order_id))
        return refunded

    def _send_refund(self, order: PaymentOrder, reason: str = "case rejected") -> None:
        refund_id = f"{order.order_id}-r{order.times_entered(PaymentState.REFUNDING)}"
        amount = order.refund_requested_fen - order.refunded_fen
        fact = self.gateway.refund(order.order_id, refund_id, amount, reason[:200])
        self._apply(order.order_id, fact)

    def _existing(self, order_id: str) -> PaymentOrder:
        order = self.repository.get(order_id)
        if order is None:
            raise DomainError("payment_unknown_order", "缴费订单不存在", "no such payment order", ErrorKind.NOT_FOUND)
        return order
