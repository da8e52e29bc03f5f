"""Payment orders: the state table, idempotent facts, refused transitions and the payment code."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.domain.catalogue import load_seed_catalogue
from node.domain.errors import DomainError
from node.domain.payment import (
    GATEWAY,
    MERCHANT,
    TRANSITIONS,
    ApplyOutcome,
    FeeItem,
    GatewayFact,
    PaymentOrder,
    PaymentState,
    fee_items_for_matter,
    make_payment_code,
    validate_payment_code,
    yuan_to_fen,
)

S = PaymentState
NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
PAYER = "ab" * 32


def order(amounts: tuple[int, ...] = (5000, 1250)) -> PaymentOrder:
    items = [FeeItem(f"F{i}", f"收费项目{i}", fen) for i, fen in enumerate(amounts)]
    return PaymentOrder.create(
        case_no="C2026120100001",
        items=items,
        payer_key=PAYER,
        channel="hall",
        payment_code=make_payment_code("430903", 2026, 12345),
        now=NOW,
    )


def fact(o: PaymentOrder, status: PaymentState, version: int, **extra: object) -> GatewayFact:
    values: dict = {"amount_fen": o.total_fen, "refunded_fen": 0, "trade_no": "T1", **extra}
    return GatewayFact(order_id=o.order_id, status=status, version=version, **values)


def test_the_state_table_is_exactly_the_documented_one() -> None:
    expected = {
        (S.CREATED, S.PAYING): {GATEWAY},
        (S.CREATED, S.SUCCEEDED): {GATEWAY},
        (S.CREATED, S.FAILED): {GATEWAY},
        (S.CREATED, S.CANCELLED): {MERCHANT, GATEWAY},
        (S.CREATED, S.CLOSED): {MERCHANT, GATEWAY},
        (S.PAYING, S.SUCCEEDED): {GATEWAY},
        (S.PAYING, S.FAILED): {GATEWAY},
        (S.PAYING, S.CANCELLED): {MERCHANT, GATEWAY},
        (S.PAYING, S.CLOSED): {MERCHANT, GATEWAY},
        (S.SUCCEEDED, S.REFUNDING): {MERCHANT, GATEWAY},
        (S.PARTIALLY_REFUNDED, S.REFUNDING): {MERCHANT, GATEWAY},
        (S.REFUNDING, S.PARTIALLY_REFUNDED): {GATEWAY},
        (S.REFUNDING, S.REFUNDED): {GATEWAY},
        (S.REFUNDING, S.SUCCEEDED): {GATEWAY},
    }
    assert {k: set(v) for k, v in TRANSITIONS.items()} == expected
    terminal = {S.FAILED, S.CANCELLED, S.CLOSED, S.REFUNDED}
    assert not any(a in terminal for a, _ in TRANSITIONS)


def test_a_payment_notify_settles_once_and_replays_change_nothing() -> None:
    o = order()
    assert o.total_fen == 6250 and o.state is S.CREATED
    assert o.apply(fact(o, S.PAYING, 2), NOW) is ApplyOutcome.APPLIED
    assert o.apply(fact(o, S.SUCCEEDED, 3), NOW) is ApplyOutcome.APPLIED
    snapshot = o.to_dict()
    assert o.apply(fact(o, S.SUCCEEDED, 3), NOW) is ApplyOutcome.DUPLICATE
    assert o.apply(fact(o, S.PAYING, 2), NOW) is ApplyOutcome.STALE  # the late "paying" notify
    assert o.to_dict() == snapshot
    assert o.state is S.SUCCEEDED and o.times_settled == 1


def test_a_fact_may_skip_states_it_never_reported_but_only_along_legal_steps() -> None:
    o = order()
    o.apply(fact(o, S.REFUNDED, 6, refunded_fen=o.total_fen), NOW)  # paying/succeeded/refunding notifies lost
    assert o.state is S.REFUNDED and o.refunded_fen == o.total_fen
    assert [t.to_state for t in o.history] == [S.SUCCEEDED, S.REFUNDING, S.REFUNDED]


def test_a_failure_keeps_its_reason_code() -> None:
    o = order()
    o.apply(fact(o, S.FAILED, 2, reason_code="insufficient_funds"), NOW)
    assert (o.state, o.reason_code) == (S.FAILED, "insufficient_funds")
    with pytest.raises(DomainError) as refused:
        o.apply(fact(o, S.SUCCEEDED, 3), NOW)
    assert refused.value.code == "payment_illegal_transition"
    assert "支付失败" in refused.value.message_zh and "failed" in refused.value.message_en


def test_paying_a_cancelled_order_is_refused_and_changes_nothing() -> None:
    o = order()
    o.cancel(NOW)
    snapshot = o.to_dict()
    with pytest.raises(DomainError) as refused:
        o.apply(fact(o, S.SUCCEEDED, 2), NOW)
    assert refused.value.code == "payment_order_cancelled"
    assert refused.value.message_zh == "订单已取消，不能支付"
    assert o.to_dict() == snapshot


def test_an_amount_mismatch_is_refused_and_changes_nothing() -> None:
    o = order()
    snapshot = o.to_dict()
    with pytest.raises(DomainError) as refused:
        o.apply(fact(o, S.SUCCEEDED, 2, amount_fen=o.total_fen - 1), NOW)
    assert refused.value.code == "payment_amount_mismatch"
    assert o.to_dict() == snapshot


@pytest.mark.parametrize(
    ("start", "command"),
    [
        (S.SUCCEEDED, "cancel"),
        (S.CREATED, "refund"),
        (S.CANCELLED, "refund"),
        (S.REFUNDED, "cancel"),
    ],
)
def test_illegal_merchant_commands_are_refused(start: PaymentState, command: str) -> None:
    o = order()
    if start is S.SUCCEEDED:
        o.apply(fact(o, S.SUCCEEDED, 2), NOW)
    elif start is S.CANCELLED:
        o.cancel(NOW)
    elif start is S.REFUNDED:
        o.apply(fact(o, S.REFUNDED, 5, refunded_fen=o.total_fen), NOW)
    with pytest.raises(DomainError) as refused:
        o.cancel(NOW) if command == "cancel" else o.request_refund(100, NOW)
    assert refused.value.kind == "conflict"
    assert o.state is start


def test_refunds_are_bounded_by_what_was_paid() -> None:
    o = order()
    o.apply(fact(o, S.SUCCEEDED, 2), NOW)
    with pytest.raises(DomainError) as refused:
        o.request_refund(o.total_fen + 1, NOW)
    assert refused.value.code == "payment_refund_too_large"
    o.request_refund(1000, NOW)
    o.apply(fact(o, S.PARTIALLY_REFUNDED, 4, refunded_fen=1000), NOW)
    assert (o.state, o.refunded_fen) == (S.PARTIALLY_REFUNDED, 1000)


def test_an_order_expires_only_after_its_time() -> None:
    o = order()
    with pytest.raises(DomainError):
        o.close_expired(NOW)
    o.close_expired(NOW + timedelta(days=2))
    assert o.state is S.CLOSED
    with pytest.raises(DomainError) as refused:
        o.apply(fact(o, S.SUCCEEDED, 2), NOW)
    assert refused.value.code == "payment_order_closed"


def test_orders_refuse_bad_input() -> None:
    with pytest.raises(DomainError) as refused:
        PaymentOrder.create(
            case_no="C1",
            items=[FeeItem("F", "费", 100)],
            payer_key="430903199001011234",  # a raw ID number is not a payer key
            channel="hall",
            payment_code=make_payment_code("430903", 2026, 1),
            now=NOW,
        )
    assert refused.value.code == "payment_payer_key_invalid"
    for bad in (0, -5, 1.5, True, "100"):
        with pytest.raises(DomainError):
            FeeItem("F", "费", bad)  # type: ignore[arg-type]
    with pytest.raises(DomainError):
        GatewayFact(order_id="po_12345678", status="paid", amount_fen=1, refunded_fen=0, version=1)  # type: ignore[arg-type]


def test_amounts_are_exact_fen() -> None:
    assert yuan_to_fen(Decimal("12.30")) == 1230
    assert yuan_to_fen("0.01") == 1
    for bad in ("0.001", 1.5, "abc", "-1"):
        with pytest.raises(DomainError):
            yuan_to_fen(bad)  # type: ignore[arg-type]
    charged = [m for m in load_seed_catalogue().matters() if m.fee_yuan > 0]
    free = [m for m in load_seed_catalogue().matters() if m.fee_yuan == 0]
    assert charged and free  # the seed catalogue has both kinds
    (item,) = fee_items_for_matter(charged[0])
    assert item.amount_fen == int(charged[0].fee_yuan * 100) > 0
    assert fee_items_for_matter(free[0]) == []


def test_payment_codes_carry_a_check_digit_that_catches_typos() -> None:
    code = make_payment_code("430903", 2026, 12345678901)
    assert len(code) == 20 and code.startswith("43090326")
    assert validate_payment_code(" ".join(code[i : i + 4] for i in range(0, 20, 4))) == code
    for position in range(20):
        wrong = code[:position] + str((int(code[position]) + 3) % 10) + code[position + 1 :]
        with pytest.raises(DomainError):
            validate_payment_code(wrong)
    for position in range(19):
        if code[position] != code[position + 1]:
            swapped = code[:position] + code[position + 1] + code[position] + code[position + 2 :]
            with pytest.raises(DomainError):
                validate_payment_code(swapped)


def test_an_order_survives_its_round_trip() -> None:
    o = order()
    o.apply(fact(o, S.SUCCEEDED, 2), NOW)
    assert PaymentOrder.from_dict(o.to_dict()).to_dict() == o.to_dict()


# A gateway's life of an order: each list is the status sequence the gateway goes through (versions 2, 3, ...).
GATEWAY_LIVES = [
    [S.PAYING, S.SUCCEEDED],
    [S.SUCCEEDED],
    [S.PAYING, S.FAILED],
    [S.PAYING, S.CLOSED],
    [S.PAYING, S.SUCCEEDED, S.REFUNDING, S.REFUNDED],
    [S.SUCCEEDED, S.REFUNDING, S.PARTIALLY_REFUNDED, S.REFUNDING, S.REFUNDED],
    [S.PAYING, S.SUCCEEDED, S.REFUNDING, S.SUCCEEDED],
]


@settings(max_examples=300, deadline=None)
@given(life=st.sampled_from(GATEWAY_LIVES), data=st.data())
def test_any_delivery_order_with_copies_and_losses_ends_where_the_gateway_is(life: list, data: st.DataObject) -> None:
    o = order((1000,))
    refunded = {S.PARTIALLY_REFUNDED: 400, S.REFUNDED: 1000}
    facts = []
    so_far = 0
    for version, status in enumerate(life, start=2):
        so_far = refunded.get(status, so_far)
        facts.append(fact(o, status, version, refunded_fen=so_far))
    delivered = data.draw(st.lists(st.sampled_from(facts), max_size=12))  # lost, copied, any order
    delivered.append(facts[-1])  # reconciliation's query answer, at the latest
    for f in data.draw(st.permutations(delivered)):
        o.apply(f, NOW)
    assert o.state is life[-1] and o.gateway_version == len(life) + 1
    assert o.refunded_fen == facts[-1].refunded_fen
    assert o.times_settled == (1 if S.SUCCEEDED in life else 0)  # money arrived once, whatever the deliveries
    for a, b in zip(o.history, o.history[1:], strict=False):
        assert a.to_state is b.from_state  # a connected chain of legal steps
    assert all(GATEWAY in TRANSITIONS[(t.from_state, t.to_state)] for t in o.history)
