"""The SMS adapter (node/adapters/sms.py) against the sandbox SMS gateway running as its own process."""

from __future__ import annotations

import json
import secrets
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

from node.adapters.sms import DeliveryReceipt, SmsClient
from node.domain.errors import DomainError
from node.domain.notifications import render
from node.runtime.services import http_ok
from sandboxes.sms.server import callback_signature, request_signature
from tests.conftest import wait_for
from tests.sandbox_process import SandboxProcess

APP = "tongban-430900000000"
SECRET = "sandbox-sms-secret-430900"
DELIVERED, UNDELIVERABLE, DELAYED, PROVIDER_ERROR, FLAKY, REPLY_LOST = (
    "13800000000",
    "13900000001",
    "13900000002",
    "13900000003",
    "13900000004",
    "13900000005",
)
NOTICE = render(
    "one_time_notice",
    {"name": "张三丰", "matter": "出生登记", "case_no": "430903000000-20261201-1", "materials": ["出生医学证明"]},
)


class Sandbox(SandboxProcess):
    def inbox(self, phone: str) -> list[dict[str, Any]]:
        response = requests.get(f"{self.url}/sandbox/inbox/{phone}", timeout=5)
        assert response.status_code == 200
        return list(response.json()["messages"])


def _sandbox(tmp: Path, delay_seconds: float, retry_schedule: list[float] | None = None) -> Sandbox:
    config = tmp / "sms.json"
    config.write_text(
        json.dumps(
            {
                "apps": {APP: SECRET},
                "deliver_seconds": 0.05,
                "delay_seconds": delay_seconds,
                "retry_schedule": retry_schedule or [0.1, 0.2, 0.3, 0.4, 0.5],
            }
        )
    )
    return Sandbox.started("sandboxes.sms", tmp / "data", config)


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    box = _sandbox(tmp_path_factory.mktemp("sms"), 1.5)
    yield box
    box.stop()


@dataclass
class Receiver:
    """The node side of the receipts: checks each with the adapter, as a node's endpoint would."""

    client: SmsClient
    receipts: list[DeliveryReceipt] = field(default_factory=list)
    raw: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    refusals: list[str] = field(default_factory=list)
    fail_next: int = 0
    attempts: int = 0
    url: str = ""

    def of(self, message_id: str) -> list[DeliveryReceipt]:
        return [r for r in self.receipts if r.message_id == message_id]


def _client(url: str, callback_url: str | None = None, sleeps: list[float] | None = None) -> SmsClient:
    record = sleeps if sleeps is not None else []
    return SmsClient(url, APP, SECRET, callback_url=callback_url, backoff=(0.05, 0.05, 0.05), sleep=record.append)


@pytest.fixture
def receiver(sandbox: Sandbox) -> Iterator[Receiver]:
    state = Receiver(_client(sandbox.url))

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
            state.raw.append((dict(self.headers), raw))
            try:
                receipt = state.client.parse_receipt(dict(self.headers), raw)
            except DomainError as exc:
                state.refusals.append(exc.code)
                self.send_response(400)
                self.end_headers()
                return
            state.receipts.append(receipt)
            self.send_response(200)
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/sms/receipt"
    state.client = _client(sandbox.url, state.url)
    yield state
    server.shutdown()
    server.server_close()


def _signed(method: str, path: str, body: bytes, *, secret: str = SECRET, timestamp: int | None = None,
            nonce: str | None = None) -> dict[str, str]:  # fmt: skip
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    once = nonce or secrets.token_hex(16)
    return {
        "Content-Type": "application/json",
        "X-Sms-App-Key": APP,
        "X-Sms-Timestamp": stamp,
        "X-Sms-Nonce": once,
        "X-Sms-Signature": request_signature(secret.encode(), method, path, stamp, once, body),
    }


def _send_body(phone: str, ref: str) -> bytes:
    body = {"phone": phone, "template_code": NOTICE.sms_code, "params": dict(NOTICE.params), "client_ref": ref}
    return json.dumps(body, ensure_ascii=False).encode()


# --- Sending and delivery ----------------------------------------------------------------------------------


def test_signed_send_is_delivered_with_the_rendered_text_and_a_signed_receipt(
    sandbox: Sandbox, receiver: Receiver
) -> None:
    message_id = receiver.client.send_rendered(NOTICE, DELIVERED, idempotency_key="case-1:notice:0001")

    assert wait_for(lambda: receiver.of(message_id), timeout=10)
    receipt = receiver.of(message_id)[0]
    assert receipt.delivered and receipt.client_ref == "case-1:notice:0001" and receipt.error_code is None
    received = [m for m in sandbox.inbox(DELIVERED) if m["message_id"] == message_id]
    assert [(m["text"], m["params"]) for m in received] == [(NOTICE.text, dict(NOTICE.params))]
    texts = [m["text"] for m in received]
    assert "张**" in texts[0] and "出生医学证明" in texts[0]
    status = receiver.client.status(message_id)
    assert (status.status, status.client_ref) == ("delivered", "case-1:notice:0001")


def test_receipt_is_retried_until_the_receiver_acknowledges_it(sandbox: Sandbox, receiver: Receiver) -> None:
    receiver.fail_next = 3  # three answers of 500: the gateway must try a fourth time
    message_id = receiver.client.send_rendered(NOTICE, DELIVERED)

    assert wait_for(lambda: receiver.of(message_id), timeout=10)
    assert receiver.attempts >= 4
    # The gateway's own record of its pushes, read through the signed status API.
    assert [p.acked for p in receiver.client.status(message_id).pushes] == [False, False, False, True]
    time.sleep(0.8)  # past the whole retry schedule: an acknowledged receipt is not pushed again
    assert len(receiver.of(message_id)) == 1


def test_a_receipt_nobody_acknowledges_is_dropped_after_the_last_retry(sandbox: Sandbox, receiver: Receiver) -> None:
    receiver.fail_next = 10**6
    message_id = receiver.client.send_rendered(NOTICE, DELIVERED)

    assert wait_for(lambda: receiver.attempts >= 6, timeout=10)  # the first push and five retries
    time.sleep(1.0)
    assert receiver.attempts == 6
    assert [p.acked for p in receiver.client.status(message_id).pushes] == [False] * 6
    assert receiver.client.status(message_id).status == "delivered"  # polling still tells the truth


def test_undeliverable_number_reports_failure_and_receives_nothing(sandbox: Sandbox, receiver: Receiver) -> None:
    message_id = receiver.client.send_rendered(NOTICE, UNDELIVERABLE)

    assert wait_for(lambda: receiver.of(message_id), timeout=10)
    receipt = receiver.of(message_id)[0]
    assert (receipt.status, receipt.error_code, receipt.delivered) == ("undeliverable", "UNDELIVERABLE", False)
    assert receiver.client.status(message_id).status == "undeliverable"
    assert sandbox.inbox(UNDELIVERABLE) == []


def test_delayed_number_is_delivered_late(sandbox: Sandbox, receiver: Receiver) -> None:
    message_id = receiver.client.send_rendered(NOTICE, DELAYED)

    time.sleep(0.5)
    assert receiver.client.status(message_id).status == "accepted"
    assert all(m["message_id"] != message_id for m in sandbox.inbox(DELAYED))
    assert wait_for(lambda: receiver.of(message_id), timeout=10)
    assert receiver.of(message_id)[0].delivered
    assert [m["message_id"] for m in sandbox.inbox(DELAYED)].count(message_id) == 1


def test_provider_error_is_retried_with_backoff_then_reported_unsent(sandbox: Sandbox) -> None:
    sleeps: list[float] = []
    client = _client(sandbox.url, sleeps=sleeps)

    with pytest.raises(DomainError) as refused:
        client.send_rendered(NOTICE, PROVIDER_ERROR)

    assert refused.value.code == "sms_unavailable" and "503" in refused.value.message_en
    assert sleeps == [0.05, 0.05, 0.05]  # three retries after the first try, each after a wait
    assert sandbox.inbox(PROVIDER_ERROR) == []


def test_transient_provider_errors_are_retried_and_the_message_sent_once(sandbox: Sandbox) -> None:
    sleeps: list[float] = []
    client = _client(sandbox.url, sleeps=sleeps)

    message_id = client.send_rendered(NOTICE, FLAKY)

    assert len(sleeps) == 2  # two 503s, then accepted
    assert wait_for(lambda: client.status(message_id).status == "delivered", timeout=10)
    assert [m["message_id"] for m in sandbox.inbox(FLAKY)] == [message_id]


def test_a_lost_reply_is_retried_without_sending_twice(sandbox: Sandbox) -> None:
    sleeps: list[float] = []
    client = _client(sandbox.url, sleeps=sleeps)

    message_id = client.send_rendered(NOTICE, REPLY_LOST, idempotency_key="case-7:notice:0001")
    again = client.send_rendered(NOTICE, REPLY_LOST, idempotency_key="case-7:notice:0001")

    assert len(sleeps) == 1 and again == message_id
    assert wait_for(lambda: client.status(message_id).status == "delivered", timeout=10)
    assert [m["message_id"] for m in sandbox.inbox(REPLY_LOST)] == [message_id]


def test_the_same_idempotency_key_with_other_content_is_refused(sandbox: Sandbox) -> None:
    client = _client(sandbox.url)
    client.send_rendered(NOTICE, DELIVERED, idempotency_key="case-8:notice:0001")
    other = render("login_code", {"code": "123456", "minutes": 5})

    with pytest.raises(DomainError) as refused:
        client.send_rendered(other, DELIVERED, idempotency_key="case-8:notice:0001")

    assert refused.value.code == "sms_refused" and "client_ref_conflict" in refused.value.message_en


@pytest.mark.parametrize(
    ("template", "params", "error"),
    [
        ("TB_NO_SUCH_TEMPLATE", {"code": "123456"}, "template_unknown"),
        ("TB_LOGIN_CODE_ZH", {"code": "123456"}, "template_params_invalid"),  # "minutes" missing
        ("TB_LOGIN_CODE_ZH", {"code": "123456", "minutes": "5", "extra": "x"}, "template_params_invalid"),
        ("TB_LOGIN_CODE_ZH", {"code": "1" * 151, "minutes": "5"}, "template_params_invalid"),
    ],
)
def test_unregistered_templates_and_wrong_params_are_refused(
    sandbox: Sandbox, template: str, params: dict[str, str], error: str
) -> None:
    client = _client(sandbox.url)
    with pytest.raises(DomainError) as refused:
        client.send(template, "13800000099", params)
    assert refused.value.code in {"sms_refused", "sms_invalid"}
    if refused.value.code == "sms_refused":
        assert error in refused.value.message_en
    assert sandbox.inbox("13800000099") == []


def test_the_adapter_refuses_malformed_input_before_sending(sandbox: Sandbox) -> None:
    client = _client(sandbox.url)
    for phone in ("12800000000", "1380000000", "１３８００００００００", "+8613800000000"):
        with pytest.raises(DomainError) as refused:
            client.send(NOTICE.sms_code, phone, NOTICE.params)
        assert refused.value.code == "sms_invalid"
    with pytest.raises(DomainError):
        client.send(NOTICE.sms_code, DELIVERED, NOTICE.params, idempotency_key="short")


# --- Request authentication --------------------------------------------------------------------------------


def test_a_wrongly_signed_request_is_refused(sandbox: Sandbox) -> None:
    body = _send_body("13800000011", "forged-0000001")
    response = requests.post(
        f"{sandbox.url}/v1/sms/send",
        data=body,
        headers=_signed("POST", "/v1/sms/send", body, secret="guess"),
        timeout=5,
    )
    assert (response.status_code, response.json()["error"]) == (401, "signature_invalid")
    tampered = _send_body("13800000012", "forged-0000002")
    headers = _signed("POST", "/v1/sms/send", body)
    response = requests.post(f"{sandbox.url}/v1/sms/send", data=tampered, headers=headers, timeout=5)
    assert (response.status_code, response.json()["error"]) == (401, "signature_invalid")
    assert sandbox.inbox("13800000011") == [] and sandbox.inbox("13800000012") == []


def test_a_stale_request_is_refused(sandbox: Sandbox) -> None:
    body = _send_body("13800000013", "stale-00000001")
    headers = _signed("POST", "/v1/sms/send", body, timestamp=int(time.time()) - 301)
    response = requests.post(f"{sandbox.url}/v1/sms/send", data=body, headers=headers, timeout=5)
    assert (response.status_code, response.json()["error"]) == (401, "timestamp_stale")
    assert sandbox.inbox("13800000013") == []


def test_a_replayed_request_is_refused(sandbox: Sandbox) -> None:
    body = _send_body("13800000014", "replay-0000001")
    headers = _signed("POST", "/v1/sms/send", body)
    first = requests.post(f"{sandbox.url}/v1/sms/send", data=body, headers=headers, timeout=5)
    replayed = requests.post(f"{sandbox.url}/v1/sms/send", data=body, headers=headers, timeout=5)

    assert first.status_code == 200
    assert (replayed.status_code, replayed.json()["error"]) == (401, "nonce_replayed")
    assert wait_for(lambda: len(sandbox.inbox("13800000014")) == 1, timeout=5)
    time.sleep(0.3)
    assert len(sandbox.inbox("13800000014")) == 1


def test_garbage_is_refused_with_a_reason_and_the_gateway_stays_up(sandbox: Sandbox) -> None:
    def post(body: bytes, path: str = "/v1/sms/send", **headers: str) -> tuple[int, str]:
        signed = {**_signed("POST", path, body), **headers}
        response = requests.post(f"{sandbox.url}{path}", data=body, headers=signed, timeout=5)
        return response.status_code, response.json().get("error", "")

    assert post(b"{not json") == (400, "json_invalid")
    assert post(b"[1, 2]") == (400, "json_invalid")
    assert post("\udcff".encode("utf-8", "surrogatepass")) == (400, "json_invalid")
    assert post(b"{}") == (400, "phone_invalid")
    assert post(json.dumps({"phone": "13800000016", "client_ref": "x"}).encode()) == (400, "client_ref_invalid")
    no_callback = json.loads(_send_body("13800000016", "garbage-000001"))
    assert post(json.dumps({**no_callback, "callback_url": "file:///etc/passwd"}).encode()) == (
        400,
        "callback_url_invalid",
    )
    assert post(b"{}", path="/v1/sms/unknown") == (404, "not_found")
    too_big = requests.post(f"{sandbox.url}/v1/sms/send", data=b"x" * 20000, timeout=5)
    assert too_big.status_code == 413
    assert requests.get(f"{sandbox.url}/sandbox/inbox/not-a-phone", timeout=5).status_code == 400
    client = _client(sandbox.url)
    with pytest.raises(DomainError) as missing:
        client.status("SM0000000000000000000000")
    assert missing.value.code == "sms_message_not_found"
    other_app = SmsClient(sandbox.url, "someone", "else", backoff=())
    with pytest.raises(DomainError) as refused:
        other_app.send_rendered(NOTICE, DELIVERED)
    assert refused.value.code == "sms_refused" and "signature_invalid" in refused.value.message_en
    assert http_ok(f"{sandbox.url}/healthz") and sandbox.inbox("13800000016") == []


# --- Receipt checks on the node side -----------------------------------------------------------------------


def test_forged_stale_and_replayed_receipts_are_refused(sandbox: Sandbox, receiver: Receiver) -> None:
    message_id = receiver.client.send_rendered(NOTICE, DELIVERED)
    assert wait_for(lambda: receiver.of(message_id), timeout=10)
    headers, raw = next((h, r) for h, r in receiver.raw if message_id.encode() in r)
    fresh = _client(sandbox.url)  # another receiver process: it has not seen this nonce

    def refusal(headers: dict[str, str], raw: bytes, client: SmsClient = fresh, **kwargs: Any) -> str:
        with pytest.raises(DomainError) as refused:
            client.parse_receipt(headers, raw, **kwargs)
        return refused.value.code

    assert refusal(headers, raw, client=receiver.client) == "receipt_replayed"
    assert refusal(headers, raw.replace(b"delivered", b"undeliverable")) == "receipt_signature_invalid"
    assert refusal({**headers, "X-Sms-App-Key": "someone-else"}, raw) == "receipt_signature_invalid"
    assert refusal(headers, raw, now=time.time() + 301) == "receipt_stale"
    assert refusal(headers, raw + b" " * 9000) == "receipt_too_large"
    stamp, nonce = str(int(time.time())), secrets.token_hex(16)
    bad = json.dumps({"message_id": message_id, "client_ref": "x", "status": "delivered"}).encode()
    forged_shape = {
        "X-Sms-App-Key": APP,
        "X-Sms-Timestamp": stamp,
        "X-Sms-Nonce": nonce,
        "X-Sms-Signature": callback_signature(SECRET.encode(), stamp, nonce, bad),
    }
    assert refusal(forged_shape, bad) == "receipt_invalid"
    assert fresh.parse_receipt(headers, raw).message_id == message_id  # the genuine one, seen the first time


# --- Restart ------------------------------------------------------------------------------------------------


def test_a_restart_loses_nothing(tmp_path: Path, receiver: Receiver) -> None:
    box = _sandbox(tmp_path, 4.0, retry_schedule=[0.2] * 100)
    try:
        client = _client(box.url, receiver.url)
        receiver.fail_next = 10**6  # the node is down: the first receipt waits in the gateway's outbox
        delivered = client.send_rendered(NOTICE, DELIVERED, idempotency_key="restart:notice:0001")
        assert wait_for(lambda: receiver.attempts >= 2, timeout=10)
        pending = client.send_rendered(NOTICE, DELAYED, idempotency_key="restart:notice:0002")
        assert client.status(pending).status == "accepted"  # still to be delivered when the gateway dies
        body = _send_body("13800000015", "restart-000003")
        headers = _signed("POST", "/v1/sms/send", body)
        assert requests.post(f"{box.url}/v1/sms/send", data=body, headers=headers, timeout=5).status_code == 200

        box.stop(signal.SIGKILL)  # no chance to flush anything: every change was already on disk
        box.start()
        receiver.fail_next = 0

        assert [m["message_id"] for m in box.inbox(DELIVERED)] == [delivered]
        assert client.send_rendered(NOTICE, DELAYED, idempotency_key="restart:notice:0002") == pending
        replayed = requests.post(f"{box.url}/v1/sms/send", data=body, headers=headers, timeout=5)
        assert (replayed.status_code, replayed.json()["error"]) == (401, "nonce_replayed")
        assert wait_for(lambda: receiver.of(delivered), timeout=10)  # the waiting receipt went out after all
        pushes = client.status(delivered).pushes
        assert len(pushes) >= 3 and pushes[-1].acked and not any(p.acked for p in pushes[:-1])
        assert wait_for(lambda: receiver.of(pending), timeout=10)  # the delayed delivery and its receipt went on
        assert [m["message_id"] for m in box.inbox(DELAYED)] == [pending]
    finally:
        box.stop()
