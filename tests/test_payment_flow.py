"""Fees on cases, end to end: the sandbox gateway runs as its own process, the node serves HTTP for its
notifies, and a person pays on the gateway's pay page. Asserts what staff and the applicant see."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pytest
import requests
from flask.testing import FlaskClient
from werkzeug.serving import BaseWSGIServer, make_server

from node.adapters.payment_gateway import MERCHANT_KEY, GatewaySettings, ensure_merchant_key, load_private_key
from node.adapters.result_pdf import verify_result
from node.adapters.seal_keys import TrustBundle
from node.bootstrap import NodeContext, ProcessKind, bootstrap
from node.domain.catalogue import load_seed_catalogue
from node.domain.identifiers import make_id_number
from node.entrypoints import tasks
from node.entrypoints.web import create_app
from node.runtime.services import free_port
from node.service_layer.results import ReconcilePayments
from tests.conftest import Services, make_node, token_for, wait_for
from tests.sandbox_process import SandboxProcess
from tests.test_payment_gateway import signed_notify
from tests.test_results_wiring import sign_in
from tiers.demo import HESHAN, HESHAN_VILLAGE

TRANSFER = "430900-QR-0009"  # 不动产转移登记: real estate, county, 80 yuan after approval
ID_CARD = "430900-QR-0003"  # 居民身份证换领: public security, county, 20 yuan at acceptance
RESIDENT = make_id_number("430903", date(1979, 6, 2), 31)


def required_materials(code: str) -> list[str]:
    return [m.code for m in load_seed_catalogue().get(code).materials if m.required]


@dataclass
class World:
    node: NodeContext
    client: FlaskClient
    gateway: SandboxProcess
    url: str

    def accept(self, matter: str) -> str:
        body = {
            "matter_code": matter,
            "applicant": {"kind": "person", "id_number": RESIDENT, "name": "王建国"},
            "materials": required_materials(matter),
            "property_code": HESHAN_VILLAGE,
        }
        created = self.client.post("/api/v1/cases", json=body, headers=token_for(self.client, self.node, "acceptor"))
        assert created.status_code == 201, created.get_json()
        return str(created.get_json()["case_no"])

    def act(self, case_no: str, department: str, action: str, **extra: str) -> None:
        headers = token_for(self.client, self.node, f"approver.{department}")
        response = self.client.post(
            f"/api/v1/cases/{case_no}/actions", json={"action": action, **extra}, headers=headers
        )
        assert response.status_code == 200, response.get_json()

    def payment(self, case_no: str) -> dict:
        response = self.client.get(
            f"/api/v1/cases/{case_no}/payment", headers=token_for(self.client, self.node, "acceptor")
        )
        assert response.status_code == 200, response.get_json()
        return response.get_json()["payment"]

    def timeline(self, case_no: str) -> list[dict]:
        headers = token_for(self.client, self.node, "acceptor")
        return self.client.get(f"/api/v1/cases/{case_no}", headers=headers).get_json()["timeline"]

    def payment_events(self, case_no: str) -> list[str]:
        return [e["summary_en"] for e in self.timeline(case_no) if e["type"] == "payment_updated"]


@pytest.fixture
def make_world(services: Services, city_ca: Path, tmp_path: Path) -> Iterator[Callable[..., World]]:
    servers: list[BaseWSGIServer] = []
    sandboxes: list[SandboxProcess] = []

    def build(**faults: float) -> World:
        root = tmp_path / f"w{len(servers)}"
        provisioned = make_node(services, city_ca, root / "node", HESHAN)
        config = provisioned.config
        merchant_key = config.data_dir / MERCHANT_KEY
        ensure_merchant_key(merchant_key)
        port = free_port()
        notify_url = f"http://127.0.0.1:{port}/payments/notify"
        sandbox_config = root / "gateway.json"
        sandbox_config.write_text(
            json.dumps(
                {
                    "merchant_id": f"tongban-{HESHAN}",
                    "merchant_public_key": str(merchant_key.with_suffix(".pub.pem")),
                    "notify_url": notify_url,
                    "time_scale": 0.01,
                    "seed": 7,
                    **faults,
                }
            )
        )
        gateway = SandboxProcess.started("sandboxes.payment_gateway", root / "gateway", sandbox_config)
        sandboxes.append(gateway)
        GatewaySettings(
            gateway.url, f"tongban-{HESHAN}", root / "gateway" / "gateway_public.pem", notify_url, merchant_key
        ).save(config.data_dir)
        node = bootstrap(config, connect_mqtt=False)
        app = create_app(node)
        app.testing = True
        server = make_server("127.0.0.1", port, app, threaded=True)
        servers.append(server)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return World(node, app.test_client(), gateway, f"http://127.0.0.1:{port}")

    yield build
    for server in servers:
        server.shutdown()
    for sandbox in sandboxes:
        sandbox.stop()


def pay(pay_url: str, action: str = "pay") -> str:
    assert requests.get(pay_url, timeout=10).status_code == 200  # opening the page: created -> paying
    return requests.post(pay_url, data={"action": action, "reason": "insufficient_funds"}, timeout=10).text


def test_fee_after_approval_is_paid_through_the_sandbox_once(make_world: Callable[..., World]) -> None:
    world = make_world(duplicate=1.0)  # every notify arrives twice
    case_no = world.accept(TRANSFER)
    assert world.payment(case_no) is None  # this matter's fee falls due once approved
    world.act(case_no, "real_estate", "approve")

    payment = world.payment(case_no)
    assert payment["state"] == "created" and payment["total_fen"] == 8000
    assert re.fullmatch(r"[0-9]{20}", payment["payment_code"]) and payment["payment_code"].startswith("430903")
    page = requests.get(payment["pay_url"], timeout=10).text
    assert "80.00" in page
    assert "已支付" in pay(payment["pay_url"])

    assert wait_for(lambda: world.payment(case_no)["state"] == "succeeded", timeout=20)

    # Every notify was sent twice; the case records the payment exactly once.
    def duplicates_delivered() -> bool:
        counts = requests.get(f"{world.gateway.url}/sandbox/notifies", timeout=5).json()
        return counts["faults"].get("duplicate", 0) >= 2 and set(counts["states"]) == {"delivered"}

    assert wait_for(duplicates_delivered, timeout=10)
    assert world.payment_events(case_no) == ["paid (CNY 80.00)"]
    assert [e["type"] for e in world.timeline(case_no)][-5:] == [
        "approved",
        "payment_requested",
        "result_sealed",
        "payment_updated",
        "receipt_issued",
    ]
    # The electronic receipt is sealed like a result and verifies offline.
    receipt = world.client.get(
        f"/api/v1/cases/{case_no}/receipt.pdf", headers=token_for(world.client, world.node, "acceptor")
    )
    assert receipt.status_code == 200 and receipt.mimetype == "application/pdf"
    verdict = verify_result(receipt.data, TrustBundle.build(world.node.identity.ca_pem))
    assert verdict.valid and verdict.issuer == f"{HESHAN}/real_estate" and verdict.document_id.startswith(case_no)

    # The applicant sees it in the hall; staff on the case page.
    hall = world.client.get("/hall/fees").get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', hall).group(1)  # type: ignore[union-attr]
    shown = world.client.post(
        "/hall/fees", data={"case_no": case_no, "id_number": RESIDENT, "action": "show", "csrf_token": csrf}
    ).get_data(as_text=True)
    assert 'data-state="succeeded"' in shown and "¥80.00" in shown and "已缴费" in shown
    mine = world.client.post(
        "/hall/fees", data={"case_no": case_no, "id_number": RESIDENT, "action": "receipt", "csrf_token": csrf}
    )
    assert mine.status_code == 200 and mine.data == receipt.data

    # A forged or replayed-garbage notify is refused and changes nothing.
    forged = requests.post(
        f"{world.url}/payments/notify",
        data=json.dumps({"merchant_order_id": payment["order_id"], "status": "refunded"}),
        headers={"Tb-Timestamp": "1700000000", "Tb-Nonce": "a" * 16, "Tb-Signature": "AAAA", "Tb-Sign-Type": "RSA2"},
        timeout=10,
    )
    assert forged.status_code == 401 and json.loads(forged.text)["error"].startswith("payment_")
    assert world.payment(case_no)["state"] == "succeeded"
    assert world.payment_events(case_no) == ["paid (CNY 80.00)"]


def test_lost_notify_is_settled_by_the_reconciliation_job_once(make_world: Callable[..., World]) -> None:
    world = make_world(lose=1.0)  # the gateway never delivers a notify
    case_no = world.accept(TRANSFER)
    world.act(case_no, "real_estate", "approve")
    payment = world.payment(case_no)
    assert "已支付" in pay(payment["pay_url"])
    assert not wait_for(lambda: world.payment(case_no)["state"] == "succeeded", timeout=2)

    worker = bootstrap(world.node.config, ProcessKind.WORKER, connect_mqtt=False)
    tasks._context = worker  # the beat job as the worker runs it
    try:
        first = tasks.reconcile_payments()
        assert first["settled"] == 0  # the order changed under five minutes ago: not yet due
        report = worker.bus.handle(ReconcilePayments(older_than_s=0))
        assert report.settled == [payment["order_id"]]
        again = worker.bus.handle(ReconcilePayments(older_than_s=0))
        assert again.settled == [] and again.checked == 0
    finally:
        tasks._context = None
    assert world.payment(case_no)["state"] == "succeeded"
    assert world.payment_events(case_no) == ["paid (CNY 80.00)"]


def test_fee_at_acceptance_is_refunded_when_the_case_is_rejected(make_world: Callable[..., World]) -> None:
    world = make_world()
    case_no = world.accept(ID_CARD)
    payment = world.payment(case_no)  # this matter's fee falls due at acceptance
    assert payment["state"] == "created" and payment["total_fen"] == 2000
    sign_in(world.client, world.node, "approver.public_security")
    assert 'id="fee-unpaid"' in world.client.get(f"/cases/{case_no}").get_data(as_text=True)
    pay(payment["pay_url"])
    assert wait_for(lambda: world.payment(case_no)["state"] == "succeeded", timeout=20)
    assert 'id="fee-unpaid"' not in world.client.get(f"/cases/{case_no}").get_data(as_text=True)

    world.act(case_no, "public_security", "reject", reason="照片不符合要求")
    assert wait_for(lambda: world.payment(case_no)["state"] == "refunded", timeout=20)
    assert world.payment_events(case_no) == [
        "paid (CNY 20.00)",
        "refund in progress (CNY 20.00)",
        "refunded (CNY 20.00)",
    ]
    # The decision not to grant is sealed like any result.
    rejection = world.client.get(
        f"/api/v1/cases/{case_no}/result.pdf", headers=token_for(world.client, world.node, "acceptor")
    )
    assert rejection.status_code == 200 and rejection.data.startswith(b"%PDF-")


def test_an_unpaid_order_of_a_rejected_case_is_cancelled_and_cannot_be_paid(make_world: Callable[..., World]) -> None:
    world = make_world()
    case_no = world.accept(ID_CARD)
    payment = world.payment(case_no)
    world.act(case_no, "public_security", "reject", reason="材料不全")
    assert world.payment(case_no)["state"] == "cancelled"
    answer = requests.post(payment["pay_url"], data={"action": "pay"}, timeout=10)
    assert answer.status_code == 409 and "不能支付" in answer.text
    assert world.payment_events(case_no) == ["payment order cancelled (CNY 20.00)"]


def test_bad_notifies_at_the_node_are_refused_and_change_nothing(make_world: Callable[..., World]) -> None:
    """Signed as the gateway would sign them (its key read from the sandbox's state): a wrong amount, an
    unknown order, a stale timestamp and a replay of a genuine notify."""
    world = make_world(lose=1.0)  # only the notifies this test sends arrive
    case_no = world.accept(ID_CARD)
    payment = world.payment(case_no)
    key = load_private_key(world.gateway.data_dir / "gateway_private.pem")
    fact = world.node.results.payments.gateway.query(payment["order_id"])  # type: ignore[union-attr]
    genuine = {
        "merchant_id": f"tongban-{HESHAN}",
        "merchant_order_id": payment["order_id"],
        "trade_no": fact.trade_no,
        "status": "succeeded",
        "amount_fen": fact.amount_fen,
        "refunded_fen": 0,
        "version": fact.version + 1,
        "reason_code": "",
    }

    def send(payload: dict, age_s: int = 0) -> requests.Response:
        headers, body = signed_notify(key, payload, age_s=age_s)
        return requests.post(f"{world.url}/payments/notify", data=body, headers=headers, timeout=10)

    wrong_amount = send({**genuine, "amount_fen": 1})
    assert wrong_amount.status_code == 409 and wrong_amount.json()["error"] == "payment_amount_mismatch"
    unknown = send({**genuine, "merchant_order_id": "po_" + "0" * 24})
    assert unknown.status_code == 404 and unknown.json()["message_zh"]
    stale = send(genuine, age_s=3600)
    assert stale.status_code == 401
    assert world.payment(case_no)["state"] == "created" and world.payment_events(case_no) == []

    first = send(genuine)
    assert first.status_code == 200 and first.text == "success"
    replay = send(genuine)
    assert replay.status_code == 200 and replay.text == "success"
    assert world.payment_events(case_no) == ["paid (CNY 20.00)"]
    anomalies = {a.kind for a in world.node.results.payments.repository.anomalies()}  # type: ignore[union-attr]
    assert {"amount_mismatch", "unknown_order"} <= anomalies


def test_a_broken_gateway_settings_file_costs_the_fees_not_the_node(
    services: Services, city_ca: Path, tmp_path: Path
) -> None:
    config = make_node(services, city_ca, tmp_path / "node", HESHAN).config
    (config.data_dir / "payments.json").write_text('{"url": "http://127.0.0.1:9"')
    node = bootstrap(config, connect_mqtt=False)
    assert node.results is not None and node.results.payments is None
    client = create_app(node).test_client()
    body = {
        "matter_code": ID_CARD,
        "applicant": {"kind": "person", "id_number": RESIDENT, "name": "王建国"},
        "materials": required_materials(ID_CARD),
    }
    created = client.post("/api/v1/cases", json=body, headers=token_for(client, node, "acceptor"))
    assert created.status_code == 201  # accepting still works; the fee is collected at the window
    refused = client.post(
        f"/api/v1/cases/{created.get_json()['case_no']}/payment", headers=token_for(client, node, "acceptor")
    )
    assert refused.status_code == 409 and refused.get_json()["error"] == "payments_not_configured"


def test_a_package_charges_all_its_fees_in_one_order(make_world: Callable[..., World]) -> None:
    """一次性缴费: 不动产转移及抵押登记一件事 charges the transfer's and the mortgage's fee once, together."""
    world = make_world()
    acceptor = token_for(world.client, world.node, "acceptor")
    created = world.client.post(
        "/api/v1/packages/430900-YJS-0006/cases",
        json={
            "applicant": {"kind": "person", "id_number": RESIDENT, "name": "王建国"},
            "materials": ["M001", "M003", "M005", "M020", "M022"],
            "property_code": HESHAN_VILLAGE,
        },
        headers=acceptor,
    )
    assert created.status_code == 201, created.get_json()
    subs = {s["matter_code"]: s["case_no"] for s in created.get_json()["sub_cases"]}
    world.act(subs["430900-QR-0010"], "real_estate", "approve")
    assert world.payment(subs["430900-QR-0010"]) is None  # the mortgage charges nothing of its own
    world.act(subs[TRANSFER], "real_estate", "approve")
    payment = world.payment(subs[TRANSFER])
    assert payment["total_fen"] == 16000 and len(payment["items"]) == 2
    assert {item["code"] for item in payment["items"]} == {TRANSFER, "430900-QR-0010"}
    assert "已支付" in pay(payment["pay_url"])
    assert wait_for(lambda: world.payment(subs[TRANSFER])["state"] == "succeeded", timeout=20)
    for matter, case_no in subs.items():
        if matter != TRANSFER:
            assert world.payment(case_no) is None
