"""City operations: the collector on a real broker, alert rules and their history, figures, /metrics, roles."""

from __future__ import annotations

import csv
import io
import json
import math
import re
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from node.adapters.mqtt import MqttLink, alerts_topic, ops_topic, status_topic
from node.adapters.opsmodel import LinkReport, OpsModel, QuarantineReport, StatusReport, write_agent_stats
from node.bootstrap import CollectorContext, NodeContext, ProcessKind, bootstrap
from node.config import NodeConfig, Thresholds
from node.entrypoints.collector import Collector
from node.entrypoints.ops_jobs import evaluate_alerts_job
from node.entrypoints.ops_reports import parse_ops, parse_status
from node.entrypoints.web.commands import accept_case_from_json, act_on_case_from_json
from node.entrypoints.web.ops_views import node_views
from node.service_layer.alerts import RULES, evaluate_alerts
from node.service_layer.cases import Actor
from node.service_layer.commands import FlagDeadline
from sync.replicator import StorePeer, replicate
from tests.conftest import TEST_PASSWORD, Services, client_for, make_node, token_for, wait_for
from tests.test_api_cases import DIBAO, accept_body
from tests.test_pages import CSRF, sign_in
from tiers import yiyang
from tiers.demo import CITY, HESHAN, HESHAN_TOWN, HESHAN_VILLAGE, ZIYANG

TOWNSHIP, VILLAGE = HESHAN_TOWN, HESHAN_VILLAGE
RESIDENCE_PROOF = "430900-GG-0002"  # 村（居）民委员会出具居住证明: village authority, immediate
ACCEPTOR = Actor("acceptor", "acceptor", None)
APPROVER = Actor("approver.civil_affairs", "approver", "civil_affairs")
OPS_ENDPOINTS = [
    ("GET", "/api/v1/ops/nodes"),
    ("GET", "/api/v1/ops/links"),
    ("GET", "/api/v1/ops/alerts"),
    ("POST", "/api/v1/ops/alerts/1/ack"),
    ("GET", "/api/v1/ops/figures"),
    ("GET", "/api/v1/ops/figures.csv"),
]


def fast_account(context: NodeContext, username: str) -> None:
    """The account ``token_for``/``sign_in`` would create, with the fast hash of generated passwords.

    Their scrypt hashing costs about a second per account and sign-in; these tests sign in a lot.
    """
    if context.state.account(username) is None:
        role, _, department = username.partition(".")
        context.state.add_account(username, TEST_PASSWORD, role, department or None, generated=True)


def bearer(client: FlaskClient, context: NodeContext, username: str) -> dict[str, str]:
    fast_account(context, username)
    return token_for(client, context, username)


def staff_sign_in(client: FlaskClient, context: NodeContext, username: str) -> None:
    fast_account(context, username)
    sign_in(client, context, username)


@pytest.fixture
def city(services: Services, city_ca: Path, tmp_path: Path) -> NodeContext:
    return make_node(services, city_ca, tmp_path / "city", CITY)


@pytest.fixture
def ops(city: NodeContext) -> OpsModel:
    return OpsModel.for_node(city.config.data_dir)


class Publisher:
    """A client on the session's broker that clears the retained messages it left, so tests stay apart."""

    def __init__(self, port: int) -> None:
        self.link = MqttLink("127.0.0.1", port, client_id=f"test-{uuid.uuid4().hex[:10]}")
        self.retained: set[str] = set()

    def __enter__(self) -> Publisher:
        assert self.link.start(wait_s=10)
        return self

    def publish(self, topic: str, payload: dict[str, Any], retain: bool = False) -> None:
        assert self.link.publish(topic, payload, retain=retain)
        if retain:
            self.retained.add(topic)

    def __exit__(self, *exc: object) -> None:
        for topic in self.retained:
            self.link.client.publish(topic, b"", qos=1, retain=True).wait_for_publish(5)
        self.link.stop()


@pytest.fixture
def collector(city: NodeContext, ops: OpsModel) -> Iterator[Collector]:
    """The collector of the city, running on the session's real broker."""
    running = Collector(
        CollectorContext(city.config, ops, city.store), client_id=f"test-collector-{uuid.uuid4().hex[:8]}"
    )
    stop = threading.Event()
    thread = threading.Thread(target=running.run, args=(stop,), daemon=True)
    thread.start()
    assert wait_for(lambda: running.mqtt.ready, 10)
    try:
        yield running
    finally:
        stop.set()
        thread.join(10)


def heartbeat(code: str, at: float | None = None, version: str = "0.1.0") -> dict[str, Any]:
    return {"node": code, "status": "online", "version": version, "at": at if at is not None else time.time()}


def link_report(code: str, parent: str, pending: int = 0, errors: int = 0, **push: Any) -> dict[str, Any]:
    now = time.time()
    stats = {
        "last_success": now,
        "last_attempt": now - 0.5,
        "docs_written": 12,
        "errors": errors,
        "last_error": "ConnectionError: refused" if errors else None,
        "last_seq": 42,
        "checkpoint_moved_at": now,
    }
    return {
        "kind": "link",
        "node": code,
        "parent": parent,
        "push": {**stats, **push},
        "pull": dict(stats),
        "pending": pending,
        "store": {"reachable": True, "doc_count": 321, "size": 654_321},
    }


def status_report(code: str, payload: dict[str, Any], at: float, retained: bool = False) -> StatusReport:
    report = parse_status(status_topic(code), payload, at, retained)
    assert report is not None
    return report


def link(code: str, payload: dict[str, Any], at: float) -> LinkReport:
    report = parse_ops(ops_topic(code), payload, at)
    assert isinstance(report, LinkReport)
    return report


def quarantined(reporter: str, payload: dict[str, Any], at: float) -> QuarantineReport:
    report = parse_ops(ops_topic(reporter), payload, at)
    assert isinstance(report, QuarantineReport)
    return report


def alert_row(ops: OpsModel, alert_id: int) -> dict[str, Any]:
    row = ops.alert(alert_id)
    assert row is not None
    return row


# --------------------------------------------------------------------------------------------- collector


def test_collector_records_status_and_ops_messages_from_a_real_broker(
    services: Services, collector: Collector, ops: OpsModel
) -> None:
    with Publisher(services.mqtt_port) as broker:
        broker.publish(status_topic(VILLAGE), heartbeat(VILLAGE, version="9.9.9"), retain=True)
        broker.publish(status_topic(TOWNSHIP), heartbeat(TOWNSHIP), retain=True)
        broker.publish(ops_topic(VILLAGE), link_report(VILLAGE, TOWNSHIP, pending=7, errors=2))
        # The agent spreads the quarantine row over the message: its "node" is the document's signer.
        broker.publish(
            ops_topic(TOWNSHIP),
            {"kind": "quarantine", "node": VILLAGE, "doc_id": "event:x:1", "case_no": "x", "reason": "bad signature"},
        )
        assert wait_for(lambda: len(ops.statuses()) >= 2 and VILLAGE in ops.links(), 10), ops.statuses()
        assert wait_for(lambda: TOWNSHIP in ops.unacknowledged_quarantine(), 10)
    village = ops.statuses()[VILLAGE]
    assert village["status"] == "online" and village["version"] == "9.9.9"
    assert village["last_heartbeat_at"] == pytest.approx(time.time(), abs=10)
    assert village["store_size"] == 654_321 and village["store_docs"] == 321 and village["store_reachable"] is True
    link = ops.links()[VILLAGE]
    assert link["parent"] == TOWNSHIP and link["pending"] == 7 and link["pending_since"] is not None
    assert link["push_errors"] == 2 and link["push_last_error"] == "ConnectionError: refused"
    assert link["push_docs_written"] == 12 and link["pull_checkpoint_moved_at"] is not None
    report = ops.unacknowledged_quarantine()[TOWNSHIP][0]
    assert report["doc_id"] == "event:x:1" and report["signer"] == VILLAGE and report["case_no"] == "x"


def test_collector_reads_the_heartbeat_documents_the_city_holds(city: NodeContext, ops: OpsModel) -> None:
    at = time.time() - 42
    city.store.bulk_docs([{"_id": f"heartbeat:{VILLAGE}", "node": VILLAGE, "at": at, "version": "0.1.0"}])
    collector = Collector(CollectorContext(city.config, ops, city.store), client_id=f"test-{uuid.uuid4().hex[:8]}")
    assert collector.poll_heartbeats() >= 1
    assert ops.heartbeats()[VILLAGE] == pytest.approx(at)
    view = next(v for v in node_views(ops, yiyang(), at + 50, Thresholds()) if v.code == VILLAGE)
    assert view.lag_s == pytest.approx(50)


def test_a_retained_status_is_as_old_as_its_own_timestamp_a_live_one_as_its_arrival() -> None:
    now = time.time()
    old = parse_status(status_topic(VILLAGE), heartbeat(VILLAGE, at=now - 3600), now, retained=True)
    live = parse_status(status_topic(VILLAGE), heartbeat(VILLAGE, at=now - 3600), now, retained=False)
    future = parse_status(status_topic(VILLAGE), heartbeat(VILLAGE, at=now + 3600), now, retained=True)
    assert old is not None and old.seen_at == pytest.approx(now - 3600)
    assert live is not None and live.seen_at == now
    assert future is not None and future.seen_at == now
    will = parse_status(status_topic(VILLAGE), {"node": VILLAGE, "status": "offline"}, now, retained=True)
    assert will is not None and will.status == "offline" and will.reason == "will"
    assert parse_status("tongban/up/not-a-code/status", heartbeat(VILLAGE), now, retained=False) is None
    assert parse_ops(ops_topic(VILLAGE), {"kind": "something else"}, now) is None


# --------------------------------------------------------------------------------------------- alerts


def test_a_node_going_offline_raises_an_alert_kept_with_its_history_and_closed_when_it_returns(
    services: Services, city: NodeContext, collector: Collector, ops: OpsModel
) -> None:
    (city.config.data_dir / "ops.json").write_text(json.dumps({"offline_alert_s": 0}))
    client = client_for(city)
    headers = bearer(client, city, "ops")
    alerts_seen: list[dict[str, Any]] = []
    listener = MqttLink("127.0.0.1", services.mqtt_port, client_id=f"test-{uuid.uuid4().hex[:8]}")
    listener.subscribe(alerts_topic(CITY), lambda _topic, payload: alerts_seen.append(payload))
    assert listener.start(wait_s=10)
    # The city's worker process: its ops model and the MQTT link the alerts are announced on.
    worker = bootstrap(city.config, ProcessKind.WORKER)
    try:
        with Publisher(services.mqtt_port) as broker:
            broker.publish(status_topic(VILLAGE), heartbeat(VILLAGE), retain=True)
            assert wait_for(lambda: ops.statuses().get(VILLAGE, {}).get("status") == "online")
            assert evaluate_alerts_job(worker)["opened"] == 0

            # The village's broker publishes the agent's last will: {"node", "status": "offline"}, retained.
            broker.publish(status_topic(VILLAGE), {"node": VILLAGE, "status": "offline"}, retain=True)
            assert wait_for(lambda: ops.statuses()[VILLAGE]["status"] == "offline")
            assert evaluate_alerts_job(worker)["opened"] == 1
            again = evaluate_alerts_job(worker)
            assert again["opened"] == 0 and again["closed"] == 0, "an open alert is kept, not opened twice"
            body = client.get("/api/v1/ops/alerts?state=open", headers=headers).get_json()
            [alert] = [a for a in body["alerts"] if a["node"] == VILLAGE]
            assert alert["kind"] == "node_offline" and alert["state"] == "open" and alert["closed_at"] is None
            assert alert["detail"]["reason"] == "will"
            nodes = client.get("/api/v1/ops/nodes?status=offline", headers=headers).get_json()["nodes"]
            assert [n["code"] for n in nodes] == [VILLAGE]

            broker.publish(status_topic(VILLAGE), heartbeat(VILLAGE), retain=True)
            assert wait_for(lambda: ops.statuses()[VILLAGE]["status"] == "online")
            assert evaluate_alerts_job(worker)["closed"] == 1
        history = client.get("/api/v1/ops/alerts", headers=headers).get_json()["alerts"]
        [closed] = [a for a in history if a["id"] == alert["id"]]
        assert closed["state"] == "closed" and closed["opened_at"] <= closed["closed_at"]
        assert wait_for(lambda: [a["event"] for a in alerts_seen if a["id"] == alert["id"]] == ["opened", "closed"])
        assert evaluate_alerts_job(worker)["announced"] == 0, "each opening and closing is announced once"
    finally:
        listener.stop()
        assert worker.mqtt is not None
        worker.mqtt.stop()


def test_a_node_whose_heartbeats_stop_turns_offline_and_alerts(ops: OpsModel) -> None:
    tree, limits, start = yiyang(), Thresholds(), time.time()
    report = parse_status(status_topic(VILLAGE), heartbeat(VILLAGE), start, retained=False)
    assert report is not None
    ops.record([report])
    assert next(v for v in node_views(ops, tree, start + 20, limits) if v.code == VILLAGE).status == "online"
    dark = next(v for v in node_views(ops, tree, start + limits.stale_after_s + 1, limits) if v.code == VILLAGE)
    assert dark.status == "offline" and dark.reason == "no_heartbeat"
    assert evaluate_alerts(ops, tree, start + limits.stale_after_s + 1, limits).opened == []
    changes = evaluate_alerts(ops, tree, start + limits.offline_alert_s + 1, limits)
    assert len(changes.opened) == 1
    [alert] = ops.alerts("open")
    assert (alert["kind"], alert["node"], alert["detail"]["reason"]) == ("node_offline", VILLAGE, "no_heartbeat")


def test_link_rules_lag_stuck_checkpoint_store_and_quarantine(ops: OpsModel) -> None:
    tree, limits, now = yiyang(), Thresholds(), time.time()
    codes = ["430903101202", "430903101203", "430903101204", "430903101205"]
    lagging, stuck, no_store, fine = codes
    ops.record([status_report(code, heartbeat(code), now) for code in codes])
    ops.record_heartbeat_docs(
        [{"node": code, "at": now - (limits.lag_alert_s + 5 if code == lagging else 10)} for code in codes], now
    )
    reports = {
        stuck: link_report(stuck, TOWNSHIP, pending=30, errors=4, checkpoint_moved_at=now - 3600, last_success=None),
        no_store: {**link_report(no_store, TOWNSHIP), "store": {"reachable": False}},
        fine: link_report(fine, TOWNSHIP),
        lagging: link_report(lagging, TOWNSHIP),
    }
    earlier = now - limits.stuck_alert_s - 1
    ops.record(links=[link(stuck, reports[stuck], earlier)])
    ops.record(links=[link(code, report, now) for code, report in reports.items()])
    assert ops.links()[stuck]["pending_since"] == pytest.approx(earlier), "the backlog's start is kept"
    quarantine = quarantined(fine, {"kind": "quarantine", "doc_id": "event:q:1", "node": VILLAGE}, now)
    ops.record(quarantined=[quarantine])

    changes = evaluate_alerts(ops, tree, now + 1, limits, own_code=CITY, own_store_ok=False)
    found = {(a["kind"], a["node"]) for a in ops.alerts("open")}
    assert found == {
        ("link_lag", lagging),
        ("checkpoint_stuck", stuck),
        ("store_unreachable", no_store),
        ("store_unreachable", CITY),
        ("quarantine", fine),
    }
    assert len(changes.opened) == 5
    assert evaluate_alerts(ops, tree, now + 2, limits, own_code=CITY, own_store_ok=False).opened == []

    # Acknowledging a quarantine alert means its documents were looked at: it closes at the next run.
    quarantine_alert = next(a for a in ops.alerts("open") if a["kind"] == "quarantine")
    ops.acknowledge(quarantine_alert["id"], "ops", now + 3)
    ops.record(links=[link(stuck, link_report(stuck, TOWNSHIP), now + 3)])
    changes = evaluate_alerts(ops, tree, now + 4, limits, own_code=CITY, own_store_ok=True)
    assert len(changes.closed) == 3
    assert {(a["kind"], a["node"]) for a in ops.alerts("open")} == {
        ("link_lag", lagging),
        ("store_unreachable", no_store),
    }


def test_acknowledging_records_who_and_the_first_acknowledgement_stands(city: NodeContext, ops: OpsModel) -> None:
    client = client_for(city)
    ops.record([status_report(VILLAGE, {"node": VILLAGE, "status": "offline"}, time.time(), retained=True)])
    evaluate_alerts(ops, yiyang(), time.time() + 100, Thresholds())
    [alert] = ops.alerts("open")
    first = client.post(f"/api/v1/ops/alerts/{alert['id']}/ack", headers=bearer(client, city, "ops"))
    assert first.status_code == 200, first.get_json()
    assert first.get_json()["acknowledged_by"] == "ops" and first.get_json()["acknowledged_at"]
    second = client.post(f"/api/v1/ops/alerts/{alert['id']}/ack", headers=bearer(client, city, "admin"))
    assert second.get_json()["acknowledged_by"] == "ops"
    missing = client.post("/api/v1/ops/alerts/999999/ack", headers=bearer(client, city, "ops"))
    assert missing.status_code == 404 and missing.get_json()["error"] == "alert_not_found"


def test_the_dashboard_acknowledge_button_records_the_signed_in_user(city: NodeContext, ops: OpsModel) -> None:
    ops.record([status_report(VILLAGE, {"node": VILLAGE, "status": "offline"}, time.time(), retained=True)])
    evaluate_alerts(ops, yiyang(), time.time() + 100, Thresholds())
    [alert] = ops.alerts("open")
    client = client_for(city)
    staff_sign_in(client, city, "ops")
    page = client.get("/ops")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "运维监控" in html and f'data-code="{VILLAGE}"' in html and "节点离线" in html
    token = CSRF.search(html)
    assert token
    refused = client.post(f"/ops/alerts/{alert['id']}/ack", data={"csrf_token": "forged"})
    assert refused.status_code == 400 and alert_row(ops, alert["id"])["acknowledged_by"] is None
    done = client.post(f"/ops/alerts/{alert['id']}/ack", data={"csrf_token": token.group(1)})
    assert done.status_code == 303
    assert alert_row(ops, alert["id"])["acknowledged_by"] == "ops"
    english = client.get("/ops?lang=en").get_data(as_text=True)
    assert "Operations" in english and "Node offline" in english
    status = client.get("/ops/status.json").get_json()
    assert status["nodes"][VILLAGE]["s"] == "offline" and status["counts"]["offline"] == 1


# --------------------------------------------------------------------------------------------- API


def test_nodes_api_lists_the_whole_tree_with_status_and_lag(city: NodeContext, ops: OpsModel) -> None:
    now = time.time()
    ops.record([status_report(VILLAGE, heartbeat(VILLAGE), now)])
    ops.record_heartbeat_docs([{"node": VILLAGE, "at": now - 30}], now)
    client = client_for(city)
    headers = bearer(client, city, "ops")
    started = time.perf_counter()
    response = client.get("/api/v1/ops/nodes", headers=headers)
    assert time.perf_counter() - started < 1.0
    body = response.get_json()
    assert len(body["nodes"]) == len(yiyang()) > 1500
    assert body["counts"]["online"] == 1 and body["counts"]["unknown"] == len(yiyang()) - 1
    by_code = {node["code"]: node for node in body["nodes"]}
    village = by_code[VILLAGE]
    assert village["tier"] == "village" and village["status"] == "online" and village["last_seen"]
    assert 29 <= village["lag_s"] < 60
    assert by_code[CITY]["lag_s"] is None and by_code[HESHAN]["status"] == "unknown"
    assert set(village) >= {"code", "tier", "status", "last_seen", "lag_s"}
    links = client.get("/api/v1/ops/links", headers=bearer(client, city, "ops")).get_json()
    assert len(links["links"]) == len(yiyang()) - 1
    assert next(link for link in links["links"] if link["child"] == VILLAGE)["parent"] == TOWNSHIP


def test_ops_endpoints_refuse_anonymous_and_other_roles(city: NodeContext) -> None:
    client = client_for(city)
    roles = ("acceptor", "supervisor", "approver.civil_affairs", "ops", "admin")
    headers = {role: bearer(client, city, role) for role in roles}
    for method, path in OPS_ENDPOINTS:
        anonymous = client.open(path, method=method)
        assert anonymous.status_code == 401 and anonymous.get_json()["error"] == "unauthenticated", path
        for role in roles[:3]:
            response = client.open(path, method=method, headers=headers[role])
            assert response.status_code == 403, (role, path, response.get_json())
            assert response.get_json()["error"] == "role_not_allowed"
        for role in roles[3:]:
            status = client.open(path, method=method, headers=headers[role]).status_code
            assert status == (404 if path.endswith("/ack") else 200), (role, path)


def test_the_dashboard_is_for_ops_and_admin_only(city: NodeContext) -> None:
    client = client_for(city)
    anonymous = client.get("/ops")
    assert anonymous.status_code == 302 and "/login" in anonymous.headers["Location"]
    assert client.get("/ops/status.json").status_code == 401
    staff_sign_in(client, city, "acceptor")
    assert client.get("/ops").status_code == 403
    assert client.get("/ops/status.json").status_code == 403
    assert client.get("/ops/figures.csv").status_code == 403


def test_ops_is_served_only_where_ops_monitoring_is(county_node: NodeContext) -> None:
    client = client_for(county_node)
    response = client.get("/api/v1/ops/nodes", headers=bearer(client, county_node, "ops"))
    assert response.status_code == 404


# --------------------------------------------------------------------------------------------- figures


def _replicate_into(source: NodeContext, city: NodeContext) -> None:
    replicate(StorePeer(source.store), StorePeer(city.store))


def test_figures_and_csv_count_a_handful_of_cases(
    services: Services, city_ca: Path, tmp_path: Path, city: NodeContext
) -> None:
    heshan = make_node(services, city_ca, tmp_path / "heshan", HESHAN)
    ziyang = make_node(services, city_ca, tmp_path / "ziyang", ZIYANG)
    village = make_node(services, city_ca, tmp_path / "village", VILLAGE)

    def accept(node: NodeContext, **extra: Any) -> str:
        outcome = node.bus.handle(accept_case_from_json(ACCEPTOR, accept_body(**extra)))
        assert outcome.case_no
        return outcome.case_no

    approved = accept(heshan)
    heshan.bus.handle(act_on_case_from_json(APPROVER, approved, {"action": "approve"}))
    heshan.bus.handle(
        act_on_case_from_json(ACCEPTOR, approved, {"action": "deliver", "method": "post"})
    )  # delivered: still approved
    rejected = accept(heshan)
    heshan.bus.handle(act_on_case_from_json(APPROVER, rejected, {"action": "reject", "reason": "不符合条件"}))
    late = accept(heshan)
    assert heshan.bus.handle(FlagDeadline(late, date.today() + timedelta(days=120))) == "red"
    accept(heshan, refuse_reason="非本事项受理范围")
    settled = accept(village, matter_code=RESIDENCE_PROOF, materials=["M001", "M002"], settle_on_spot=True)
    routed = accept(village)
    cross = accept(ziyang)  # residence in 赫山区: handled there
    for node in (heshan, ziyang, village):
        _replicate_into(node, city)
    city.projector.catch_up()
    assert city.readmodel.count() == 7

    client = client_for(city)
    headers = bearer(client, city, "ops")
    figures = client.get("/api/v1/ops/figures", headers=headers).get_json()
    totals = figures["totals"]
    assert (totals["accepted"], totals["refused"], totals["approved"], totals["rejected"]) == (6, 1, 2, 1)
    assert (totals["settled_on_spot"], totals["red"], totals["cross_county"], totals["open"]) == (1, 1, 1, 3)
    assert totals["settled_share"] == pytest.approx(1 / 6, abs=1e-4)
    tiers = {row["tier"]: row for row in figures["by_tier"]}
    assert (tiers["county"]["accepted"], tiers["village"]["accepted"]) == (4, 2)
    assert (tiers["county"]["approved"], tiers["village"]["approved"], tiers["county"]["rejected"]) == (1, 1, 1)
    assert tiers["village"]["settled_on_spot"] == 1 and tiers["city"]["accepted"] == 0
    counties = {row["code"]: row for row in figures["by_county"]}
    assert [row["code"] for row in figures["by_county"]][:2] == [CITY, ZIYANG]
    heshan_row = counties[HESHAN]
    assert (heshan_row["accepted"], heshan_row["approved"], heshan_row["rejected"], heshan_row["red"]) == (5, 2, 1, 1)
    assert heshan_row["name"] == "赫山区" and heshan_row["cross_county"] == 0
    assert (counties[ZIYANG]["accepted"], counties[ZIYANG]["cross_county"]) == (1, 1)
    matters = {row["matter_code"]: row for row in figures["matters"]}
    assert (matters[DIBAO]["accepted"], matters[DIBAO]["decided"]) == (5, 2)
    assert matters[RESIDENCE_PROOF]["settled_on_spot"] == 1
    assert 0 <= matters[DIBAO]["avg_handling_days"] < 0.01  # decided within the test
    assert {settled, routed, cross} <= {r["case_no"] for r in city.readmodel.snapshot() if "case_no" in r}

    response = client.get("/api/v1/ops/figures.csv", headers=headers)
    assert response.status_code == 200 and response.mimetype == "text/csv"
    text = response.get_data(as_text=True)
    assert text.startswith("\ufeff")
    rows = list(csv.DictReader(io.StringIO(text.lstrip("\ufeff"))))
    total = next(row for row in rows if row["section"] == "total")
    assert (total["accepted"], total["approved"], total["rejected"], total["cross_county"]) == ("6", "2", "1", "1")
    county = next(row for row in rows if row["section"] == "county" and row["code"] == HESHAN)
    assert (county["name"], county["accepted"], county["red"]) == ("赫山区", "5", "1")
    matter = next(row for row in rows if row["section"] == "matter" and row["code"] == DIBAO)
    assert (matter["accepted"], matter["decided"]) == ("5", "2") and matter["name"] == "最低生活保障审核确认"


# --------------------------------------------------------------------------------------------- /metrics

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*",?)*\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_prometheus(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """A strict reader of the text format: TYPE before samples, valid names, labels and values."""
    assert text.endswith("\n")
    types: dict[str, str] = {}
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            assert kind in ("counter", "gauge", "histogram", "summary", "untyped"), line
            assert name not in types, f"TYPE twice for {name}"
            types[name] = kind
            continue
        match = SAMPLE.match(line)
        assert match, f"not a sample line: {line!r}"
        name, labels, value = match.group(1), match.group(2) or "", match.group(3)
        family = re.sub(r"_(bucket|sum|count)$", "", name) if name not in types else name
        assert family in types, f"sample {name} before its TYPE"
        number = math.inf if value == "+Inf" else float(value)
        samples.setdefault(name, []).append((dict(LABEL.findall(labels)), number))
    return samples


def test_metrics_parse_as_prometheus_text_and_count_cases(county_node: NodeContext) -> None:
    for _ in range(3):
        county_node.bus.handle(accept_case_from_json(ACCEPTOR, accept_body()))
    write_agent_stats(
        county_node.config.data_dir,
        {
            "parent": CITY,
            "push": {"last_success": time.time(), "docs_written": 9, "errors": 1, "checkpoint_moved_at": time.time()},
            "pull": {"last_success": time.time(), "docs_written": 4, "errors": 0},
            "pending": 2,
            "store": {"reachable": True, "doc_count": 17, "size": 4096},
        },
    )
    client = client_for(county_node)
    assert client.get("/healthz").status_code in (200, 503)
    client.get("/api/v1/cases/nope-1", headers=bearer(client, county_node, "acceptor"))
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    metrics = parse_prometheus(response.get_data(as_text=True))
    cases = {labels["state"]: value for labels, value in metrics["tongban_cases"]}
    assert cases["in_review"] == 3 and cases["approved"] == 0
    assert metrics["tongban_node_info"][0][0]["node"] == HESHAN
    docs = {labels["direction"]: value for labels, value in metrics["tongban_replication_docs_written_total"]}
    assert docs == {"push": 9, "pull": 4}
    assert metrics["tongban_replication_pending_changes"][0][1] == 2
    assert metrics["tongban_store_size_bytes"][0][1] == 4096
    assert metrics["tongban_task_queue_up"][0][1] == 1
    requests = {
        (labels["endpoint"], labels["status"]): value for labels, value in metrics["tongban_http_requests_total"]
    }
    assert requests.get(("/healthz", "200"), 0) + requests.get(("/healthz", "503"), 0) == 1
    assert requests[("/api/v1/cases/<case_no>", "404")] == 1, "endpoints are URL rules, not raw paths"
    buckets = [
        v for labels, v in metrics["tongban_http_request_duration_seconds_bucket"] if labels["endpoint"] == "/healthz"
    ]
    assert buckets == sorted(buckets) and buckets[-1] >= 1
    assert "tongban_ops_nodes" not in metrics, "only the city reports operations"


def test_city_metrics_report_operations(city: NodeContext, ops: OpsModel) -> None:
    ops.record([status_report(VILLAGE, heartbeat(VILLAGE), time.time())])
    metrics = parse_prometheus(client_for(city).get("/metrics").get_data(as_text=True))
    nodes = {labels["status"]: value for labels, value in metrics["tongban_ops_nodes"]}
    assert nodes["online"] == 1 and nodes["unknown"] == len(yiyang()) - 1
    assert {labels["kind"] for labels, _ in metrics["tongban_ops_alerts_open"]} >= {"node_offline", "link_lag"}


# --------------------------------------------------------------------------------------------- processes


def test_only_the_city_runs_a_collector(tmp_path: Path) -> None:
    from node.runtime.federation import node_service_specs

    def names(code: str) -> list[str]:
        config = NodeConfig(
            code=code, data_dir=tmp_path / code, http_port=1, docstore_port=2, mqtt_port=3, redis_url=""
        )
        _, application = node_service_specs(config, tmp_path / "logs")
        return [spec.name for spec in application]

    assert names(CITY) == [f"{CITY}-web", f"{CITY}-worker", f"{CITY}-agent", f"{CITY}-collector"]
    assert names(HESHAN) == [f"{HESHAN}-web", f"{HESHAN}-worker", f"{HESHAN}-agent"]
    spec = next(s for s in node_service_specs(NodeConfig(code=CITY, data_dir=tmp_path / "c", http_port=1,
        docstore_port=2, mqtt_port=3, redis_url=""), tmp_path)[1] if s.name.endswith("collector"))  # fmt: skip
    assert spec.argv[-4:] == ["node", "collector", "--config", str(tmp_path / "c" / "node.json")]


def test_every_alert_rule_is_a_module_of_its_own_in_the_one_list() -> None:
    assert [rule.KIND for rule in RULES] == [
        "node_offline",
        "link_lag",
        "checkpoint_stuck",
        "quarantine",
        "store_unreachable",
        "incomplete_cases",
    ]
    for rule in RULES:
        assert rule.__name__ == f"node.service_layer.alerts.{rule.KIND}"
        assert callable(rule.holds) and callable(rule.says)
