"""The composition root: what each kind of process gets, who reacts to what, commands from requests."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from werkzeug.datastructures import MultiDict

from node.bootstrap import NodeContext, ProcessKind, bootstrap
from node.config import NodeConfig
from node.domain.errors import DomainError
from node.domain.messages import CaseChanged, CaseWritten
from node.entrypoints.web.commands import (
    accept_case_from_form,
    accept_case_from_json,
    act_on_case_from_form,
    act_on_case_from_json,
)
from node.service_layer.cases import Actor
from node.service_layer.messagebus import MessageBus
from tests.conftest import Services, make_node
from tests.test_api_cases import accept_body

CITY, COUNTY, VILLAGE = "430900000000", "430903000000", "430903101201"
ACCEPTOR = Actor("acceptor", "acceptor", None)


def config(tmp_path: Path, code: str, **extra: object) -> NodeConfig:
    return NodeConfig(
        code=code, data_dir=tmp_path / code, http_port=1, docstore_port=2, mqtt_port=3, redis_url="", **extra
    )


def test_whether_a_node_monitors_operations_follows_its_tier_unless_its_config_says(tmp_path: Path) -> None:
    assert config(tmp_path, CITY).monitors_operations is True
    assert config(tmp_path, COUNTY).monitors_operations is False
    standby = config(tmp_path, COUNTY, monitors_operations=True)
    standby.save()
    assert NodeConfig.load(standby.config_path).monitors_operations is True


def test_each_kind_of_process_gets_its_own_adapters(
    services: Services, city_ca: Path, tmp_path: Path, county_node: NodeContext
) -> None:
    city = make_node(services, city_ca, tmp_path / "city", CITY)
    assert city.ops is not None and city.redis is not None, "the city's web process serves /ops and /metrics"
    assert county_node.ops is None, "a county does not monitor operations"
    worker = bootstrap(city.config, ProcessKind.WORKER)
    try:
        assert worker.ops is not None and worker.redis is None
        assert worker.mqtt is not None and worker.mqtt.connected, "the city's worker announces alerts"
    finally:
        assert worker.mqtt is not None
        worker.mqtt.stop()
    county_worker = bootstrap(county_node.config, ProcessKind.WORKER)
    assert county_worker.ops is None and county_worker.mqtt is None
    agent = bootstrap(county_node.config, ProcessKind.AGENT)
    assert agent.mqtt is not None and not agent.mqtt.connected, "the agent starts its link once subscribed"


def test_the_agent_takes_in_an_arriving_case_and_the_web_process_does_not(
    services: Services, county_node: NodeContext, village_node: NodeContext
) -> None:
    outcome = village_node.bus.handle(accept_case_from_json(ACCEPTOR, accept_body(residence_code=VILLAGE)))
    case_no = outcome.case_no
    assert case_no and outcome.case.handling_node == COUNTY
    cert = village_node.store.get(f"cert:{VILLAGE}:{village_node.identity.cert_sha256}")
    docs = [*village_node.cases.events.case_docs(case_no), cert]
    county_node.store.bulk_docs([{k: v for k, v in d.items() if k != "_rev"} for d in docs])

    county_node.projector.catch_up()
    assert county_node.cases.load(case_no).state.value == "accepted"

    agent = bootstrap(county_node.config, ProcessKind.AGENT, connect_mqtt=False)
    agent.projector.rebuild()
    case = agent.cases.load(case_no)
    assert case.state.value == "in_review"
    assert [(e["type"], e["actor_id"]) for e in case.timeline][-1] == ("received", "system")
    [row] = agent.readmodel.search(text=case_no)
    assert row.state == "in_review", "the intake is projected too"


def test_a_write_is_projected_before_the_command_returns_and_said_once(county_node: NodeContext) -> None:
    seen: list[object] = []
    county_node.bus.subscribe(CaseWritten, seen.append)
    county_node.bus.subscribe(CaseChanged, seen.append)
    outcome = county_node.bus.handle(accept_case_from_json(ACCEPTOR, accept_body()))
    [row] = county_node.readmodel.search(text=outcome.case_no)
    assert row.state == "in_review"
    [written] = [m for m in seen if isinstance(m, CaseWritten)]
    [changed] = [m for m in seen if isinstance(m, CaseChanged)]
    assert [e.type.value for e in written.written] == ["accepted", "received"]
    assert changed.case.case_no == outcome.case_no and changed.case.state.value == "in_review"


def test_a_command_has_one_handler() -> None:
    bus = MessageBus()
    bus.register(int, lambda n: n + 1)
    assert bus.handle(41) == 42
    with pytest.raises(ValueError):
        bus.register(int, lambda n: n)
    with pytest.raises(LookupError):
        bus.handle("no handler for text")


def test_the_acceptance_form_and_the_json_body_make_the_same_command() -> None:
    body = accept_body(residence_code=VILLAGE)
    form = MultiDict(
        [
            ("matter_code", f" {body['matter_code']} "),
            ("applicant_kind", "person"),
            ("applicant_name", body["applicant"]["name"]),
            ("applicant_id", body["applicant"]["id_number"].lower()),
            *[("materials", code) for code in body["materials"]],
            ("residence_code", VILLAGE),
            ("property_code", ""),
            ("csrf_token", "ignored"),
        ]
    )
    assert accept_case_from_form(ACCEPTOR, form) == accept_case_from_json(ACCEPTOR, body)


def test_action_fields_are_checked_for_shape_whichever_door_they_come_through() -> None:
    form = MultiDict([("action", "evaluate"), ("level", "4"), ("reason", "  快  "), ("summary", "")])
    from_form = act_on_case_from_form(ACCEPTOR, "X-1", form)
    assert from_form == act_on_case_from_json(ACCEPTOR, "X-1", {"action": "evaluate", "level": 4, "reason": "快"})
    for bad, code in [
        ({"action": ""}, "missing_field"),
        ({"action": "evaluate", "level": True}, "invalid_level"),
        ({"action": "note", "reason": "长" * 501}, "field_too_long"),
        ({"action": "supplement", "materials": "M001"}, "invalid_materials"),
        ({"action": "deliver", "method": 3}, "invalid_method"),
    ]:
        with pytest.raises(DomainError) as refused:
            act_on_case_from_json(ACCEPTOR, "X-1", bad)
        assert refused.value.code == code, bad
    with pytest.raises(DomainError) as refused:
        act_on_case_from_form(ACCEPTOR, "X-1", MultiDict([("action", "evaluate"), ("level", "five")]))
    assert refused.value.code == "invalid_level"


def test_the_web_process_tells_its_pages_of_its_own_writes_not_of_cases_it_projects_for_a_child(
    services: Services, county_node: NodeContext, village_node: NodeContext
) -> None:
    from node.adapters.mqtt import notice_topic
    from tests.conftest import wait_for

    heard: list[dict] = []
    listener = services.mqtt_link("t-composition-listener")
    listener.subscribe(notice_topic(COUNTY), lambda _topic, payload: heard.append(payload))
    county_node.mqtt = services.mqtt_link("t-composition-web")
    try:
        assert listener.start(wait_s=10) and county_node.mqtt.start(wait_s=10)
        own = county_node.bus.handle(accept_case_from_json(ACCEPTOR, accept_body())).case_no
        assert wait_for(lambda: [n["case_no"] for n in heard] == [own], 5)

        arrived = village_node.bus.handle(accept_case_from_json(ACCEPTOR, accept_body(residence_code=VILLAGE)))
        cert = village_node.store.get(f"cert:{VILLAGE}:{village_node.identity.cert_sha256}")
        docs = [*village_node.cases.events.case_docs(arrived.case_no), cert]
        county_node.store.bulk_docs([{k: v for k, v in d.items() if k != "_rev"} for d in docs])
        county_node.projector.catch_up()  # as the web process does when a child pulls through it
        assert len(county_node.readmodel.search(text=arrived.case_no)) == 1
        time.sleep(0.5)
        assert [n["case_no"] for n in heard] == [own], "the agent, not the web process, announces arrivals"
    finally:
        listener.stop()
        county_node.mqtt.stop()
