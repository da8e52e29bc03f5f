"""The courier adapter (node/adapters/courier.py) against the sandbox courier running as its own process."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from node.adapters.courier import CourierClient, Party, TrackingEvent
from node.domain.errors import DomainError
from sandboxes.courier.server import sign
from tests.conftest import wait_for
from tests.sandbox_process import SandboxProcess as Sandbox

CLIENT_ID = "node-430903000000"
SECRET = "sandbox-courier-secret-430903"
SENDER = Party("赫山区政务服务中心", "0737-4000000", "益阳市赫山区龙岭大道 1 号")


def _sandbox(tmp: Path, step_seconds: float) -> Sandbox:
    config = tmp / "courier.json"
    config.write_text(
        json.dumps({"clients": {CLIENT_ID: SECRET}, "step_seconds": step_seconds, "retry_schedule": [0.1, 0.2, 0.4]})
    )
    return Sandbox.started("sandboxes.courier", tmp / "data", config)


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    box = _sandbox(tmp_path_factory.mktemp("courier"), 0.15)
    yield box
    box.stop()


@dataclass
class Receiver:
    """The node side of the callbacks: checks each with the adapter, as a node's endpoint would."""

    client: CourierClient
    cases: dict[str, str] = field(default_factory=dict)  # waybill → case number
    events: list[TrackingEvent] = field(default_factory=list)
    refusals: list[str] = field(default_factory=list)
    fail_next: int = 0
    attempts: int = 0
    url: str = ""

    def by_case(self, case_no: str) -> list[TrackingEvent]:
        unique = {(e.waybill_no, e.seq): e for e in self.events if e.order_ref == case_no}
        return sorted(unique.values(), key=lambda e: e.seq)


@pytest.fixture
def receiver(sandbox: Sandbox) -> Iterator[Receiver]:
    state = Receiver(CourierClient(sandbox.url, CLIENT_ID, SECRET))

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            return

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            state.attempts += 1
            if state.fail_next > 0:
                state.fail_next -= 1
                self.send_response(500)
                self.end_headers()
                return
            try:
                event = state.client.parse_callback(dict(self.headers), raw, state.cases.get)
            except DomainError as exc:
                state.refusals.append(exc.code)
                self.send_response(400)
                self.end_headers()
                return
            state.events.append(event)
            self.send_response(200)
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/courier/callback"
    yield state
    server.shutdown()
    server.server_close()


def _order(receiver: Receiver, case_no: str, address: str) -> str:
    waybill = receiver.client.create_waybill(case_no, SENDER, Party("张三", "13800000000", address), receiver.url)
    receiver.cases[waybill.waybill_no] = case_no
    return waybill.waybill_no


def test_delivered_parcel_pushes_every_event_in_order_despite_failed_callbacks(receiver: Receiver) -> None:
    receiver.fail_next = 3  # the first three callback attempts get a 500: the courier must retry them
    number = _order(receiver, "430903-20261201-0001", "益阳市资阳区迎风桥镇第1村 8 号")
    assert wait_for(lambda: any(e.code == "delivered" for e in receiver.by_case("430903-20261201-0001")), timeout=20)
    events = receiver.by_case("430903-20261201-0001")
    assert [e.code for e in events] == ["created", "picked_up", "in_transit", "out_for_delivery", "delivered"]
    assert [e.seq for e in events] == [1, 2, 3, 4, 5] and events[-1].outcome == "delivered"
    assert receiver.attempts >= 5 + 3 and receiver.refusals == []
    polled = receiver.client.poll(number)
    assert polled.status == "delivered" and [e.code for e in polled.events] == [e.code for e in events]


@pytest.mark.parametrize(
    ("address", "codes", "outcome"),
    [
        ("测试地址 FAIL 无人", ["out_for_delivery", "delivery_failed"], "failed"),
        ("测试地址 拒收", ["delivery_failed", "returned"], "returned"),
    ],
)
def test_failed_and_returned_outcomes_by_test_address(
    receiver: Receiver, address: str, codes: list[str], outcome: str
) -> None:
    case_no = f"430903-20261201-{outcome}"
    number = _order(receiver, case_no, address)
    assert wait_for(lambda: any(e.outcome == outcome for e in receiver.by_case(case_no)), timeout=20)
    seen = [e.code for e in receiver.by_case(case_no)]
    assert seen[-len(codes) :] == codes and "delivered" not in seen
    assert receiver.client.poll(number).status == codes[-1]


def test_same_case_gets_the_same_waybill_and_bad_requests_are_refused(receiver: Receiver, sandbox: Sandbox) -> None:
    first = _order(receiver, "430903-20261201-0009", "益阳市赫山区 9 号")
    assert _order(receiver, "430903-20261201-0009", "益阳市赫山区 9 号") == first
    with pytest.raises(DomainError) as err:
        CourierClient(sandbox.url, CLIENT_ID, "wrong-secret").poll(first)
    assert err.value.code == "courier_refused"
    with pytest.raises(DomainError) as err:
        receiver.client.create_waybill("x", SENDER, Party("", "1", "addr"), receiver.url)
    assert err.value.code == "courier_refused"
    with pytest.raises(DomainError) as err:
        receiver.client.poll("SX000000000000")
    assert err.value.code == "waybill_not_found"


def _signed(body: dict[str, object], secret: str = SECRET, at: float | None = None) -> tuple[dict[str, str], bytes]:
    raw = json.dumps(body, ensure_ascii=False).encode("utf-8")
    timestamp = str(int(at if at is not None else time.time()))
    headers = {
        "X-Courier-Client": CLIENT_ID,
        "X-Courier-Timestamp": timestamp,
        "X-Courier-Signature": sign(secret.encode(), timestamp, raw),
    }
    return headers, raw


def test_callbacks_forged_stale_for_another_case_or_unknown_waybill_are_refused(receiver: Receiver) -> None:
    client = receiver.client
    known = {"SX2612010000011": "430903-20261201-0001"}
    event = {"seq": 2, "code": "picked_up", "at": "2026-12-01T10:00:00+00:00", "description": "揽收", "location": "x"}
    good = {"waybill_no": "SX2612010000011", "order_ref": "430903-20261201-0001", "event": event}
    headers, raw = _signed(good)
    assert client.parse_callback(headers, raw, known.get).code == "picked_up"

    cases = [
        (_signed(good, secret="attacker"), "callback_signature_invalid"),
        ((headers, raw.replace(b"picked_up", b"delivered")), "callback_signature_invalid"),
        (_signed(good, at=time.time() - 3600), "callback_stale"),
        (_signed({**good, "order_ref": "430903-20261201-0002"}), "callback_wrong_case"),
        (_signed({**good, "waybill_no": "SX2612010000099"}), "callback_unknown_waybill"),
        (_signed({**good, "event": {**event, "code": "teleported"}}), "callback_invalid"),
        (_signed({"waybill_no": 1}), "callback_invalid"),
    ]
    for (h, body), code in cases:
        with pytest.raises(DomainError) as err:
            client.parse_callback(h, body, known.get)
        assert err.value.code == code
        assert "message_zh" in err.value.to_dict()


def test_state_survives_a_killed_sandbox_and_cancel_only_before_pick_up(tmp_path: Path) -> None:
    box = _sandbox(tmp_path, 1.0)
    try:
        client = CourierClient(box.url, CLIENT_ID, SECRET)
        callback = "http://127.0.0.1:9/unreachable"
        kept = client.create_waybill("430903-20261201-0100", SENDER, Party("李四", "1", "益阳市 1 号"), callback)
        cancelled = client.create_waybill("430903-20261201-0101", SENDER, Party("王五", "1", "益阳市 2 号"), callback)
        assert client.cancel(cancelled.waybill_no).status == "cancelled"
        box.stop(signal.SIGKILL)
        box.start()
        assert client.poll(kept.waybill_no).order_ref == "430903-20261201-0100"
        assert client.poll(cancelled.waybill_no).status == "cancelled"
        assert wait_for(lambda: client.poll(kept.waybill_no).status == "in_transit", timeout=10)
        with pytest.raises(DomainError) as err:
            client.cancel(kept.waybill_no)
        assert err.value.code == "courier_refused"
        # numbering carries on after the restart: a new waybill gets a new number
        again = client.create_waybill("430903-20261201-0102", SENDER, Party("赵六", "1", "益阳市 3 号"), callback)
        assert again.waybill_no not in {kept.waybill_no, cancelled.waybill_no}
    finally:
        box.stop()
