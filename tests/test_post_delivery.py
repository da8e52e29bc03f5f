"""Postal delivery of a result: the sandbox courier runs as its own process, its signed tracking callbacks
reach the node over HTTP and become events on the case page; the courier's "delivered" delivers the case."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from flask.testing import FlaskClient
from werkzeug.serving import BaseWSGIServer, make_server

from node.adapters.courier import CourierSettings, Party
from node.bootstrap import NodeContext, bootstrap
from node.entrypoints.web import create_app
from node.runtime.services import free_port
from node.service_layer.results import PollPost
from sandboxes.courier.server import sign
from tests.conftest import Services, make_node, token_for, wait_for
from tests.sandbox_process import SandboxProcess
from tests.test_results_wiring import APPLICANT_NAME, approved_case, sign_in
from tiers.demo import HESHAN

SECRET = "courier-secret-for-the-county"


@dataclass
class World:
    node: NodeContext
    client: FlaskClient
    courier: SandboxProcess
    url: str

    def send(self, case_no: str, address: str) -> str:
        page = self.client.get(f"/cases/{case_no}").get_data(as_text=True)
        assert 'id="post-form"' in page
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
        form = {"csrf_token": csrf, "name": APPLICANT_NAME, "phone": "13800000000", "address": address}
        response = self.client.post(f"/cases/{case_no}/post", data=form)
        assert response.status_code == 303
        return self.client.get(f"/cases/{case_no}").get_data(as_text=True)

    def timeline(self, case_no: str) -> list[dict]:
        headers = token_for(self.client, self.node, "acceptor")
        return self.client.get(f"/api/v1/cases/{case_no}", headers=headers).get_json()["timeline"]

    def state(self, case_no: str) -> str:
        headers = token_for(self.client, self.node, "acceptor")
        return str(self.client.get(f"/api/v1/cases/{case_no}", headers=headers).get_json()["state"])


@pytest.fixture
def world(services: Services, city_ca: Path, tmp_path: Path) -> Iterator[World]:
    provisioned = make_node(services, city_ca, tmp_path / "node", HESHAN)
    config = provisioned.config
    courier_config = tmp_path / "courier.json"
    courier_config.write_text(
        json.dumps({"clients": {HESHAN: SECRET}, "step_seconds": 0.2, "retry_schedule": [0.1, 0.2, 0.4]})
    )
    courier = SandboxProcess.started("sandboxes.courier", tmp_path / "courier", courier_config)
    port = free_port()
    sender = Party("赫山区政务服务中心", "0737-4000000", "益阳市赫山区龙岭大道 1 号")
    CourierSettings(courier.url, HESHAN, SECRET, f"http://127.0.0.1:{port}/post/callback", sender).save(config.data_dir)
    node = bootstrap(config, connect_mqtt=False)
    app = create_app(node)
    app.testing = True
    server: BaseWSGIServer = make_server("127.0.0.1", port, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    client = app.test_client()
    sign_in(client, node, "acceptor")
    yield World(node, client, courier, f"http://127.0.0.1:{port}")
    server.shutdown()
    courier.stop()


def callback(world: World, body: dict, secret: str = SECRET) -> requests.Response:
    raw = json.dumps(body, ensure_ascii=False).encode()
    timestamp = str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        "X-Courier-Client": HESHAN,
        "X-Courier-Timestamp": timestamp,
        "X-Courier-Signature": sign(secret.encode(), timestamp, raw),
    }
    return requests.post(f"{world.url}/post/callback", data=raw, headers=headers, timeout=10)


def test_posted_result_is_tracked_on_the_case_until_delivered(world: World) -> None:
    case_no = approved_case(world.client, world.node)
    page = world.send(case_no, "益阳市赫山区会龙山街道 8 号")
    waybill = re.search(r"运单号 <span class=\"mono\">(SX[0-9]+)</span>", page)
    assert waybill, page[page.find("results-panel") :][:1500]

    assert wait_for(lambda: world.state(case_no) == "delivered", timeout=30)
    codes = [e["summary_en"] for e in world.timeline(case_no) if e["type"] == "post_tracked"]
    assert codes == [
        "post: picked up",
        "post: in transit",
        "post: out for delivery",
        "post: delivered",
    ]
    page = world.client.get(f"/cases/{case_no}").get_data(as_text=True)
    assert 'data-code="delivered"' in page and "已签收" in page
    # The recipient's address travels only encrypted.
    docs = repr(world.node.store.all_docs(f"event:{case_no}:", f"event:{case_no}:\ufff0"))
    assert "会龙山街道" not in docs

    # Bad callbacks are refused with a reason and change nothing: wrong signature, another case, unknown waybill.
    count = len(world.timeline(case_no))
    event = {"seq": 9, "code": "returned", "at": "2026-01-01T00:00:00+00:00", "description": "x", "location": "x"}
    forged = callback(world, {"waybill_no": waybill.group(1), "order_ref": case_no, "event": event}, secret="wrong")
    assert forged.status_code == 401 and forged.json()["error"] == "callback_signature_invalid"
    other = callback(world, {"waybill_no": waybill.group(1), "order_ref": f"{HESHAN}-20200101-1", "event": event})
    assert other.status_code == 409 and other.json()["error"] == "callback_wrong_case"
    unknown = callback(world, {"waybill_no": "SX20260101000000019", "order_ref": case_no, "event": event})
    assert unknown.status_code == 404
    assert len(world.timeline(case_no)) == count and world.state(case_no) == "delivered"


def test_failed_delivery_falls_back_to_the_window(world: World) -> None:
    case_no = approved_case(world.client, world.node)
    world.send(case_no, "益阳市某处 FAIL 无人")

    def failed() -> bool:
        return "delivery_failed" in world.client.get(f"/cases/{case_no}").get_data(as_text=True)

    assert wait_for(failed, timeout=30)
    page = world.client.get(f"/cases/{case_no}").get_data(as_text=True)
    assert "邮寄未能送达，请通知申请人到受理窗口领取结果" in page
    assert world.state(case_no) == "approved"  # still to be delivered, at the window


def test_sending_needs_an_address(world: World) -> None:
    case_no = approved_case(world.client, world.node)
    page = world.client.get(f"/cases/{case_no}").get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
    response = world.client.post(
        f"/cases/{case_no}/post", data={"csrf_token": csrf, "name": "", "phone": "1", "address": "x"}
    )
    assert response.status_code == 303
    page = world.client.get(f"/cases/{case_no}").get_data(as_text=True)
    assert "请填写收件人姓名" in page and 'id="post-form"' in page


def test_lost_callbacks_are_caught_up_by_the_polling_job(world: World, tmp_path: Path) -> None:
    """The node answers no callback (its server is down for the courier): the beat job's poll records
    the whole journey from the courier's query API, once."""
    world.courier.stop()
    config = json.loads(world.courier.config_path.read_text())
    world.courier.config_path.write_text(json.dumps({**config, "retry_schedule": []}))
    world.courier.start()  # callbacks now get a single try each
    settings = CourierSettings.load(world.node.config.data_dir)
    assert settings is not None
    CourierSettings(
        settings.url, settings.client_id, settings.secret, "http://127.0.0.1:9/nowhere", settings.sender
    ).save(world.node.config.data_dir)
    node = bootstrap(world.node.config, connect_mqtt=False)  # this process's callbacks go nowhere
    assert node.results is not None
    case_no = approved_case(world.client, world.node)
    node.results.send_by_post(case_no, APPLICANT_NAME, "13800000000", "益阳市赫山区某路 1 号")

    def delivered_at_courier() -> bool:
        waybill = node.results.courier.poll(str(node.cases.load(case_no).post["waybill_no"]))  # type: ignore[union-attr,index]
        return waybill.status == "delivered"

    assert wait_for(delivered_at_courier, timeout=30)
    assert world.state(case_no) == "approved"  # no callback reached the node
    assert node.bus.handle(PollPost()) == 1
    assert world.state(case_no) == "delivered"
    assert node.bus.handle(PollPost()) == 0  # done: nothing left to poll
    codes = [e["summary_en"] for e in world.timeline(case_no) if e["type"] == "post_tracked"]
    assert codes == ["post: picked up", "post: in transit", "post: out for delivery", "post: delivered"]


def test_the_api_sends_by_post_and_refuses_a_bad_body(world: World) -> None:
    case_no = approved_case(world.client, world.node)
    headers = token_for(world.client, world.node, "acceptor")
    bad = world.client.post(f"/api/v1/cases/{case_no}/post", json={"name": "李", "phone": 1}, headers=headers)
    assert bad.status_code == 400 and bad.get_json()["error"] == "post_address_invalid"
    body = {"name": APPLICANT_NAME, "phone": "13800000000", "address": "益阳市赫山区某路 3 号"}
    sent = world.client.post(f"/api/v1/cases/{case_no}/post", json=body, headers=headers)
    assert sent.status_code == 201 and sent.get_json()["post"]["waybill_no"].startswith("SX")
    again = world.client.post(f"/api/v1/cases/{case_no}/post", json=body, headers=headers)
    assert again.get_json()["post"]["waybill_no"] == sent.get_json()["post"]["waybill_no"]  # one waybill per case
    assert world.client.post(f"/api/v1/cases/{case_no}/post", json=body).status_code == 401
