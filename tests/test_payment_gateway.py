"""Paying through the sandbox gateway running as its own process, with a real merchant notify receiver.

Covers the issue's bad input: a notify with a bad signature, a wrong amount, an unknown order, a
replayed notify, paying a cancelled order; and that restarting the gateway loses nothing.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from node.adapters.payment_gateway import HttpPaymentGateway, ensure_merchant_key, load_private_key, load_public_key
from node.adapters.payment_store import SqlPaymentRepository
from node.adapters.sqlite import sqlite_engine
from node.domain.errors import DomainError
from node.domain.payment import FeeItem, PaymentOrder, PaymentState, make_payment_code
from node.runtime.services import PROJECT_ROOT, free_port, http_ok
from node.service_layer.payments import InMemoryPaymentRepository, NotifyAnswer, PaymentService
from tests.conftest import wait_for

MERCHANT_ID = "tongban-test"
PAYER = "cd" * 32
BEIJING = timezone(timedelta(hours=8))  # the gateway's statement day
ITEMS = (FeeItem("430900-QR-0003", "证照工本费", 2000), FeeItem("POST", "邮寄费", 1500))


class Receiver:
    """The merchant's notify endpoint: a small HTTP server in front of ``PaymentService.handle_notify``."""

    def __init__(self) -> None:
        self.service: PaymentService | None = None
        self.accepting = True
        self.refuse_next = 0  # answer this many notifies with an error, as a merchant in trouble would
        self.answers: list[NotifyAnswer] = []
        self.delivered: list[tuple[dict[str, str], bytes]] = []  # what the gateway sent, for replays
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if not receiver.accepting or receiver.service is None or receiver.refuse_next > 0:
                    receiver.refuse_next -= 1
                    self._answer(503, "busy")
                    return
                headers = dict(self.headers.items())
                answer = receiver.service.handle_notify(headers, raw)
                receiver.answers.append(answer)
                receiver.delivered.append((headers, raw))
                self._answer(answer.status, answer.body)

            def _answer(self, status: int, body: str) -> None:
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/payments/notify"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def post(self, headers: dict[str, str], body: bytes) -> requests.Response:
        return requests.post(self.url, data=body, headers=headers, timeout=10)


@dataclass
class Sandbox:
    state_dir: Path
    argv: list[str]
    port: int
    process: subprocess.Popen | None = None
    log: list[Path] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        log_path = self.state_dir.parent / f"sandbox-{len(self.log)}.log"
        self.log.append(log_path)
        env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
        with log_path.open("wb") as out:
            self.process = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT, env=env)
        if not wait_for(lambda: http_ok(f"{self.url}/healthz"), timeout=30):
            raise RuntimeError(log_path.read_text())

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(timeout=20)

    def gateway_key(self) -> rsa.RSAPrivateKey:
        # Read only to forge messages a real gateway could send (wrong amount, unknown order).
        return load_private_key(self.state_dir / "gateway_private.pem")


@dataclass
class World:
    sandbox: Sandbox
    receiver: Receiver
    service: PaymentService
    repository: SqlPaymentRepository | InMemoryPaymentRepository
    gateway: HttpPaymentGateway
    settled: list[str]


@pytest.fixture
def make_world(tmp_path: Path) -> Iterator[Callable[..., World]]:
    sandboxes: list[Sandbox] = []

    def make(*faults: str, repository: str = "sql") -> World:
        root = tmp_path / f"w{len(sandboxes)}"
        settled: list[str] = []
        merchant_key = ensure_merchant_key(root / "merchant.pem")
        receiver = Receiver()
        port = free_port()
        state_dir = root / "gateway"
        argv = [
            sys.executable,
            "-m",
            "sandboxes.payment_gateway",
            "--port",
            str(port),
            "--state-dir",
            str(state_dir),
            "--merchant-id",
            MERCHANT_ID,
            "--merchant-public-key",
            str(root / "merchant.pub.pem"),
            "--notify-url",
            receiver.url,
            "--time-scale",
            "0.01",
            "--seed",
            "7",
            *faults,
        ]
        sandbox = Sandbox(state_dir, argv, port)
        sandboxes.append(sandbox)
        sandbox.start()
        gateway = HttpPaymentGateway(
            sandbox.url, MERCHANT_ID, merchant_key, load_public_key((state_dir / "gateway_public.pem").read_bytes())
        )
        store: SqlPaymentRepository | InMemoryPaymentRepository
        if repository == "sql":
            store = SqlPaymentRepository(sqlite_engine(root / "payments.sqlite3"))
        else:
            store = InMemoryPaymentRepository()
        service = PaymentService(store, gateway, region_code="430903", on_settled=lambda o: settled.append(o.order_id))
        receiver.service = service
        return World(sandbox, receiver, service, store, gateway, settled)

    yield make
    for sandbox in sandboxes:
        sandbox.stop()


def signed_notify(key: rsa.RSAPrivateKey, payload: dict, *, age_s: int = 0) -> tuple[dict[str, str], bytes]:
    body = json.dumps(payload).encode()
    timestamp = str(int(time.time()) - age_s)
    nonce = secrets.token_hex(16)
    signature = key.sign(f"{timestamp}\n{nonce}\n".encode() + body + b"\n", padding.PKCS1v15(), hashes.SHA256())
    headers = {
        "Content-Type": "application/json",
        "Tb-Timestamp": timestamp,
        "Tb-Nonce": nonce,
        "Tb-Signature": base64.b64encode(signature).decode(),
        "Tb-Sign-Type": "RSA2",
    }
    return headers, body


def paid_notify(world: World, order_id: str, **changes: object) -> dict:
    state = world.gateway.query(order_id)
    return {
        "merchant_id": MERCHANT_ID,
        "merchant_order_id": order_id,
        "trade_no": state.trade_no,
        "status": "succeeded",
        "amount_fen": state.amount_fen,
        "refunded_fen": 0,
        "version": state.version + 1,
        "reason_code": "",
        **changes,
    }


def pay(world: World, pay_url: str, action: str = "pay") -> requests.Response:
    assert requests.get(pay_url, timeout=10).status_code == 200
    return requests.post(pay_url, data={"action": action, "reason": "insufficient_funds"}, timeout=10)


def state_of(world: World, order_id: str) -> PaymentState:
    order = world.repository.get(order_id)
    assert order is not None
    return order.state


def test_paying_through_the_sandbox_settles_the_order_once(make_world: Callable[..., World]) -> None:
    world = make_world()
    order, pay_url = world.service.create_for_case("C2026120100001", ITEMS, PAYER, "hall", "营业执照补领")
    assert order.total_fen == 3500 and order.trade_no
    again, again_url = world.service.create_for_case("C2026120100001", ITEMS, PAYER, "hall", "营业执照补领")
    assert (again.order_id, again_url) == (order.order_id, pay_url)  # idempotent create

    page = requests.get(pay_url, timeout=10)
    assert "35.00" in page.text
    assert requests.post(pay_url, data={"action": "pay"}, timeout=10).status_code == 200
    assert wait_for(lambda: state_of(world, order.order_id) is PaymentState.SUCCEEDED, timeout=15)
    settled = world.repository.get(order.order_id)
    assert settled is not None and settled.times_settled == 1
    assert all(a.status == 200 and a.body == "success" for a in world.receiver.answers)

    lines = world.gateway.statement(datetime.now(BEIJING).date())
    assert [(line.kind, line.order_id, line.amount_fen) for line in lines] == [("payment", order.order_id, 3500)]


def test_a_failed_payment_keeps_the_gateway_reason(make_world: Callable[..., World]) -> None:
    world = make_world()
    order, pay_url = world.service.create_for_case("C2026120100002", ITEMS, PAYER, "kiosk", "缴费")
    pay(world, pay_url, action="fail")
    assert wait_for(lambda: state_of(world, order.order_id) is PaymentState.FAILED, timeout=15)
    assert world.repository.get(order.order_id).reason_code == "insufficient_funds"  # type: ignore[union-attr]


def test_bad_notifies_are_refused_and_change_nothing(make_world: Callable[..., World]) -> None:
    world = make_world()
    order, _ = world.service.create_for_case("C2026120100003", ITEMS, PAYER, "window", "缴费")
    before = world.repository.get(order.order_id).to_dict()  # type: ignore[union-attr]
    gateway_key = world.sandbox.gateway_key()

    forger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    response = world.receiver.post(*signed_notify(forger, paid_notify(world, order.order_id)))
    assert response.status_code == 401 and response.json()["error"] == "payment_signature_invalid"

    headers, body = signed_notify(gateway_key, paid_notify(world, order.order_id))
    tampered = body.replace(b'"succeeded"', b'"refunded" ')
    response = world.receiver.post(headers, tampered)
    assert response.status_code == 401 and response.json()["error"] == "payment_signature_invalid"

    response = world.receiver.post(*signed_notify(gateway_key, paid_notify(world, order.order_id), age_s=900))
    assert response.status_code == 401 and response.json()["error"] == "payment_signature_expired"

    response = world.receiver.post({"Content-Type": "application/json"}, body)
    assert response.status_code == 401 and response.json()["error"] == "payment_signature_missing"

    # The signature is checked before the body is parsed: garbage is "unsigned" unless the gateway signed it.
    response = world.receiver.post({**headers, "Tb-Timestamp": str(int(time.time()))}, b"{not json")
    assert response.status_code == 401 and response.json()["error"] == "payment_signature_invalid"
    garbage_headers, garbage = signed_notify(
        gateway_key, {"merchant_id": MERCHANT_ID, "merchant_order_id": order.order_id, "status": "paid"}
    )
    response = world.receiver.post(garbage_headers, garbage)
    assert response.status_code == 400 and response.json()["error"] == "payment_fact_invalid"

    wrong = paid_notify(world, order.order_id, amount_fen=1)
    response = world.receiver.post(*signed_notify(gateway_key, wrong))
    assert response.status_code == 409 and response.json()["error"] == "payment_amount_mismatch"
    assert "不符" in response.json()["message_zh"]

    another_merchant = {**paid_notify(world, order.order_id), "merchant_id": "someone-else"}
    response = world.receiver.post(*signed_notify(gateway_key, another_merchant))
    assert response.status_code == 400 and response.json()["error"] == "payment_fact_merchant"

    unknown = {**paid_notify(world, order.order_id), "merchant_order_id": "po_" + "0" * 24}
    response = world.receiver.post(*signed_notify(gateway_key, unknown))
    assert response.status_code == 404 and response.json()["error"] == "payment_unknown_order"

    assert world.repository.get(order.order_id).to_dict() == before  # type: ignore[union-attr]
    kinds = sorted(a.kind for a in world.repository.anomalies())
    assert kinds == ["amount_mismatch", "unknown_order"]


def test_a_replayed_notify_is_a_no_op(make_world: Callable[..., World]) -> None:
    world = make_world()
    order, pay_url = world.service.create_for_case("C2026120100004", ITEMS, PAYER, "hall", "缴费")
    pay(world, pay_url)
    assert wait_for(lambda: state_of(world, order.order_id) is PaymentState.SUCCEEDED, timeout=15)
    assert wait_for(lambda: len(world.receiver.delivered) >= 2, timeout=15)  # paying, then succeeded
    settled = world.repository.get(order.order_id)
    for headers, raw in list(world.receiver.delivered):
        response = world.receiver.post(headers, raw)
        assert (response.status_code, response.text) == (200, "success")
    assert {a.outcome for a in world.receiver.answers[-2:]} <= {"duplicate", "stale"}
    assert world.repository.get(order.order_id).to_dict() == settled.to_dict()  # type: ignore[union-attr]


def test_paying_a_cancelled_order_is_refused(make_world: Callable[..., World]) -> None:
    world = make_world()
    order, pay_url = world.service.create_for_case("C2026120100005", ITEMS, PAYER, "hall", "缴费")
    cancelled = world.service.cancel(order.order_id)
    assert cancelled.state is PaymentState.CANCELLED

    page = requests.get(pay_url, timeout=10)
    assert page.status_code == 409 and "已取消，不能支付" in page.text
    response = requests.post(pay_url, data={"action": "pay"}, timeout=10)
    assert response.status_code == 409
    assert world.gateway.query(order.order_id).status is PaymentState.CANCELLED

    # Even a genuine-looking gateway message claiming payment does not move it, and is reported.
    forged = paid_notify(world, order.order_id)
    response = world.receiver.post(*signed_notify(world.sandbox.gateway_key(), forged))
    assert response.status_code == 409 and response.json()["error"] == "payment_order_cancelled"
    assert state_of(world, order.order_id) is PaymentState.CANCELLED
    assert [a.kind for a in world.repository.anomalies()] == ["paid_after_cancel"]


def test_a_restart_of_the_sandbox_loses_nothing(make_world: Callable[..., World]) -> None:
    world = make_world()
    public_key = (world.sandbox.state_dir / "gateway_public.pem").read_bytes()
    order, pay_url = world.service.create_for_case("C2026120100006", ITEMS, PAYER, "hall", "缴费")
    world.receiver.accepting = False  # the merchant is down: the notify stays due at the gateway
    pay(world, pay_url)
    world.sandbox.stop(signal.SIGKILL)
    world.sandbox.start()
    assert (world.sandbox.state_dir / "gateway_public.pem").read_bytes() == public_key
    fact = world.gateway.query(order.order_id)
    assert (fact.status, fact.amount_fen) == (PaymentState.SUCCEEDED, 3500)
    assert requests.post(pay_url, data={"action": "pay"}, timeout=10).status_code == 200  # paid once, not twice
    world.receiver.accepting = True
    assert wait_for(lambda: state_of(world, order.order_id) is PaymentState.SUCCEEDED, timeout=30)
    assert any(a.outcome == "applied" for a in world.receiver.answers)  # settled by the retried notify

    def all_delivered() -> bool:
        states = requests.get(f"{world.sandbox.url}/sandbox/notifies", timeout=10).json()["states"]
        return states.get("delivered", 0) >= 2 and set(states) == {"delivered"}

    assert wait_for(all_delivered, timeout=15)


def test_reconciliation_settles_orders_whose_notify_was_lost(make_world: Callable[..., World]) -> None:
    world = make_world("--lose", "1.0")
    order, pay_url = world.service.create_for_case("C2026120100007", ITEMS, PAYER, "hall", "缴费")
    pay(world, pay_url)
    time.sleep(0.5)
    assert state_of(world, order.order_id) is PaymentState.CREATED and not world.receiver.answers
    report = world.service.reconcile(older_than=timedelta(0))
    assert report.settled == [order.order_id]
    assert world.service.reconcile(older_than=timedelta(0)).settled == []
    assert world.repository.get(order.order_id).times_settled == 1  # type: ignore[union-attr]


def test_a_rejected_case_is_refunded(make_world: Callable[..., World]) -> None:
    world = make_world()
    order, pay_url = world.service.create_for_case("C2026120100008", ITEMS, PAYER, "hall", "缴费")
    pay(world, pay_url)
    assert wait_for(lambda: state_of(world, order.order_id) is PaymentState.SUCCEEDED, timeout=15)
    (refunding,) = world.service.refund_rejected_case("C2026120100008", "不予许可")
    assert refunding.state in (PaymentState.REFUNDING, PaymentState.REFUNDED)
    assert wait_for(lambda: state_of(world, order.order_id) is PaymentState.REFUNDED, timeout=15)
    assert world.service.refund_rejected_case("C2026120100008", "again") == []  # nothing left to refund
    lines = world.gateway.statement(datetime.now(BEIJING).date())
    assert sorted((line.kind, line.amount_fen) for line in lines) == [("payment", 3500), ("refund", -3500)]


def test_the_gateway_refuses_unsigned_merchant_requests(make_world: Callable[..., World]) -> None:
    world = make_world()
    response = requests.post(f"{world.sandbox.url}/v3/orders", json={"merchant_order_id": "po_x" * 3}, timeout=10)
    assert response.status_code == 401
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    impostor = HttpPaymentGateway(world.sandbox.url, MERCHANT_ID, other, world.gateway.gateway_public_key)
    with pytest.raises(DomainError) as refused:
        impostor.query("po_" + "1" * 24)
    assert refused.value.code == "payment_gateway_refused" and "unauthenticated" in refused.value.message_en


@pytest.mark.parametrize("repository", ["sql", "memory"])
def test_racing_copies_of_one_notify_settle_the_order_once(make_world: Callable[..., World], repository: str) -> None:
    world = make_world("--lose", "1.0", repository=repository)  # only our copies arrive
    order, _ = world.service.create_for_case("C2026120100009", ITEMS, PAYER, "hall", "缴费")
    headers, body = signed_notify(world.sandbox.gateway_key(), paid_notify(world, order.order_id))
    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda _: world.receiver.post(headers, body), range(16)))
    assert {(r.status_code, r.text) for r in responses} == {(200, "success")}
    assert sorted(a.outcome for a in world.receiver.answers) == ["applied"] + ["duplicate"] * 15
    assert world.settled == [order.order_id]
    assert world.repository.get(order.order_id).times_settled == 1  # type: ignore[union-attr]


def test_reconciliation_reports_an_amount_mismatch_and_does_not_settle(make_world: Callable[..., World]) -> None:
    world = make_world("--lose", "1.0")
    code = make_payment_code("430903", 2026, 42)
    order = PaymentOrder.create(
        case_no="C2026120100010", items=ITEMS, payer_key=PAYER, channel="hall", payment_code=code, now=datetime.now(UTC)
    )
    world.repository.add(order)
    # The gateway holds another amount for our order id (a tampered or faulty create): 0.01 yuan.
    created = world.gateway.create_order(replace(order, items=(FeeItem("X", "其他", 1),)), "缴费")
    assert requests.post(created.pay_url, data={"action": "pay"}, timeout=10).status_code == 200

    report = world.service.reconcile(older_than=timedelta(0))
    assert [(a.kind, a.order_id) for a in report.anomalies] == [("amount_mismatch", order.order_id)]
    assert report.settled == [] and world.settled == []
    assert state_of(world, order.order_id) is PaymentState.CREATED
    assert [a.kind for a in world.repository.anomalies()] == ["amount_mismatch"]
    world.service.reconcile(older_than=timedelta(0))
    assert len(world.repository.anomalies()) == 1  # reported once, not once per run


def test_reconciliation_closes_expired_orders_which_then_cannot_be_paid(make_world: Callable[..., World]) -> None:
    world = make_world()
    order, pay_url = world.service.create_for_case("C2026120100012", ITEMS, PAYER, "kiosk", "缴费")
    later = PaymentService(
        world.repository,
        world.gateway,
        region_code="430903",
        clock=lambda: datetime.now(BEIJING) + timedelta(days=2),
    )
    report = later.reconcile(older_than=timedelta(minutes=5))
    assert report.closed == [order.order_id]
    assert state_of(world, order.order_id) is PaymentState.CLOSED
    page = requests.get(pay_url, timeout=10)
    assert page.status_code == 409 and "已关闭，不能支付" in page.text
    assert world.gateway.query(order.order_id).status is PaymentState.CLOSED


def test_an_unacknowledged_notify_is_retried_on_the_schedule(make_world: Callable[..., World]) -> None:
    world = make_world()
    order, pay_url = world.service.create_for_case("C2026120100013", ITEMS, PAYER, "hall", "缴费")
    world.receiver.refuse_next = 2
    requests.post(pay_url, data={"action": "pay"}, timeout=10)  # without opening the page: one notify only
    assert wait_for(lambda: state_of(world, order.order_id) is PaymentState.SUCCEEDED, timeout=30)

    def attempts() -> dict[str, int]:
        return requests.get(f"{world.sandbox.url}/sandbox/notifies", timeout=10).json()["attempts"]

    # Refused at 0 s and 15 s (scaled by 0.01), acknowledged at the third attempt 60 s later: one notify, three tries.
    assert wait_for(lambda: attempts() == {"3": 1}, timeout=10), attempts()


def test_a_delayed_notify_arrives_late_but_settles(make_world: Callable[..., World]) -> None:
    world = make_world("--delay", "1.0")  # every notify held 120 s, scaled by 0.01 to 1.2 s
    order, pay_url = world.service.create_for_case("C2026120100014", ITEMS, PAYER, "hall", "缴费")
    paid_at = time.monotonic()
    requests.post(pay_url, data={"action": "pay"}, timeout=10)
    assert wait_for(lambda: state_of(world, order.order_id) is PaymentState.SUCCEEDED, timeout=20)
    assert time.monotonic() - paid_at >= 1.2
    assert [a.outcome for a in world.receiver.answers] == ["applied"]
