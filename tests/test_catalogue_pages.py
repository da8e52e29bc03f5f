"""Catalogue pages: every staff member reads the catalogue; at the city an admin edits and publishes it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from node.bootstrap import NodeContext
from tests.conftest import Services, client_for, make_node
from tests.test_api_cases import DIBAO_MATERIALS, RESIDENT
from tests.test_pages import CSRF, csrf_from, sign_in
from tiers.demo import CITY, HESHAN, HESHAN_TOWN, HESHAN_VILLAGE

DIBAO = "430900-JF-0001"


@pytest.fixture
def city(services: Services, city_ca: Path, tmp_path: Path) -> NodeContext:
    node = make_node(services, city_ca, tmp_path / "city", CITY)
    node.published_catalogue.ttl_s = 0
    return node


def edit_form(client: FlaskClient, code: str, **changes: object) -> dict[str, object]:
    """The edit form as the page fills it (every input with its current value), then ``changes``."""
    whole = client.get(f"/catalogue/matters/{code}").get_data(as_text=True)
    page = whole[whole.index('id="matter-form"') :]
    page = page[: page.index("</form>")]
    form: dict[str, object] = {"csrf_token": CSRF.search(whole).group(1)}  # type: ignore[union-attr]
    for name, value in re.findall(r'<input type="(?:text|number|hidden)" name="([^"]+)" value="([^"]*)"', page):
        form[name] = value
    for select in re.finditer(r'<select name="([^"]+)"[^>]*>(.*?)</select>', page, re.S):
        chosen = re.search(r'<option value="([^"]*)" selected', select.group(2))
        form[select.group(1)] = chosen.group(1) if chosen else ""
    for name, value in re.findall(r'<input type="checkbox" name="([^"]+)" value="([^"]*)" checked', page):
        form.setdefault(name, [])
        form[name].append(value)  # type: ignore[union-attr]
    form.update(changes)
    return form


def matter_json(client: FlaskClient, code: str) -> tuple[int, dict]:
    listed = client.get("/api/v1/catalog/matters").get_json()
    return listed["version"], next(m for m in listed["matters"] if m["code"] == code)


def test_the_city_admin_edits_a_matter_and_a_new_version_is_published(city: NodeContext) -> None:
    client = client_for(city)
    sign_in(client, city, "admin")
    index = client.get("/catalogue/").get_data(as_text=True)
    version, before = matter_json(client, DIBAO)
    before_matter_version = city.catalogue.get(DIBAO).version
    assert f"第 {version} 版" in index and "最低生活保障" in index and 'id="new-matter"' in index
    assert before["materials"][-1]["code"] != "M900"

    form = edit_form(client, DIBAO, promised_days="7", m20_code="M900", m20_name="家庭经济状况核对授权书")
    form["m20_form"], form["m20_copies"], form["m20_source"], form["m20_required"] = "original", "1", "applicant", "1"
    saved = client.post(f"/catalogue/matters/{DIBAO}", data=form)
    assert saved.status_code == 303, saved.get_data(as_text=True)
    shown = client.get(saved.headers["Location"]).get_data(as_text=True)
    assert f"已发布事项目录第 {version + 1} 版" in shown

    new_version, after = matter_json(client, DIBAO)
    assert new_version == version + 1 and after["promised_days"] == 7
    added = [m for m in after["materials"] if m["code"] == "M900"]
    assert added == [{**added[0], "name": "家庭经济状况核对授权书", "required": True}]
    assert city.published_catalogue.latest().get(DIBAO).version == before_matter_version + 1

    # A form opened before that publication is refused, not applied over it.
    stale = {**form, "based_on": str(version), "promised_days": "5"}
    refused = client.post(f"/catalogue/matters/{DIBAO}", data=stale)
    assert refused.status_code == 409 and "编辑期间目录已更新" in refused.get_data(as_text=True)
    assert matter_json(client, DIBAO) == (new_version, after)


def test_bad_values_are_explained_and_nothing_is_published(city: NodeContext) -> None:
    client = client_for(city)
    sign_in(client, city, "admin")
    version, before = matter_json(client, DIBAO)
    too_long = client.post(
        f"/catalogue/matters/{DIBAO}", data=edit_form(client, DIBAO, legal_days="5", promised_days="9", name="改名")
    )
    page = too_long.get_data(as_text=True)
    assert too_long.status_code == 400 and "承诺时限不得超过法定时限" in page and "promised_days may not exceed" in page
    assert 'value="改名"' in page  # what the admin typed is kept
    not_a_number = client.post(f"/catalogue/matters/{DIBAO}", data=edit_form(client, DIBAO, legal_days="二十"))
    assert not_a_number.status_code == 400 and "须填写非负整数" in not_a_number.get_data(as_text=True)
    new_row = {"m20_form": "original", "m20_copies": "1", "m20_source": "applicant"}
    clash = edit_form(client, DIBAO, m20_code="M007", m20_name="另一个名字", **new_row)  # M007: 出生医学证明
    clash_page = client.post(f"/catalogue/matters/{DIBAO}", data=clash)
    assert clash_page.status_code == 400 and "材料编码 M007 同时用于" in clash_page.get_data(as_text=True)
    assert matter_json(client, DIBAO) == (version, before)


def test_the_city_admin_adds_a_matter_that_windows_can_accept(city: NodeContext) -> None:
    client = client_for(city)
    sign_in(client, city, "admin")
    version, _ = matter_json(client, DIBAO)
    token = csrf_from(client, "/catalogue/new")
    form = {
        "csrf_token": token,
        "based_on": str(version),
        "code": "430900-GG-0099",
        "name": "老年人优待证办理",
        "matter_type": "公共服务",
        "department": "civil_affairs",
        "authority_tier": "township",
        "jurisdiction_rule": "residence",
        "legal_days": "5",
        "promised_days": "3",
        "handling_type": "promised",
        "visits_required": "1",
        "fee_yuan": "0",
        "online_depth": "3",
        "tongban_scope": "city",
        "delivery_options": ["window", "post"],
        "m0_code": "M001",
        "m0_name": "居民身份证",
        "m0_form": "original",
        "m0_copies": "1",
        "m0_source": "applicant",
        "m0_required": "1",
    }
    created = client.post("/catalogue/new", data=form)
    assert created.status_code == 303, created.get_data(as_text=True)
    new_version, matter = matter_json(client, "430900-GG-0099")
    assert new_version == version + 1 and matter["authority_tier"] == "township"
    assert [m["code"] for m in matter["materials"]] == ["M001"]
    again = client.post("/catalogue/new", data={**form, "based_on": str(new_version)})
    assert again.status_code == 409 and "已存在" in again.get_data(as_text=True)
    nameless = client.post("/catalogue/new", data={**form, "code": "", "based_on": str(new_version)})
    assert nameless.status_code == 400 and "请填写事项编码" in nameless.get_data(as_text=True)

    # A window accepts the new matter at once, routed to the township of the applicant's residence.
    from node.service_layer.cases import Actor

    body = {
        "matter_code": "430900-GG-0099",
        "applicant": {"kind": "person", "id_number": RESIDENT, "name": "李秀英"},
        "materials": ["M001"],
        "residence_code": HESHAN_VILLAGE,
    }
    outcome = city.cases.accept(Actor("acceptor", "acceptor", None), body)
    assert outcome.outcome == "accepted" and outcome.case is not None
    assert outcome.case.handling_node == HESHAN_TOWN


def test_others_only_read_the_catalogue(city: NodeContext, county_node: NodeContext) -> None:
    city_client = client_for(city)
    sign_in(city_client, city, "acceptor")
    page = city_client.get(f"/catalogue/matters/{DIBAO}").get_data(as_text=True)
    assert "最低生活保障" in page and "保存并发布新版本" not in page and "disabled" in page
    before = matter_json(city_client, DIBAO)
    assert (
        city_client.post(
            f"/catalogue/matters/{DIBAO}", data=edit_form(city_client, DIBAO, promised_days="3")
        ).status_code
        == 403
    )
    assert matter_json(city_client, DIBAO) == before
    assert city_client.get("/catalogue/new").status_code == 403

    county = client_for(county_node)
    sign_in(county, county_node, "admin")
    index = county.get("/catalogue/?lang=en").get_data(as_text=True)
    assert "Catalogue of government-service matters" in index and "read-only at this node" in index
    refused = county.post(f"/catalogue/matters/{DIBAO}", data=edit_form(county, DIBAO, promised_days="3"))
    assert refused.status_code == 403 and "read-only at this node" in refused.get_data(as_text=True)
    assert client_for(county_node).get("/catalogue/").status_code == 302  # signed out: to the sign-in page


def test_a_region_delegates_a_matter_downward_and_cases_follow(city: NodeContext) -> None:
    """赫山区's implementation list moves 低保 to the township and shortens it; cases there are routed so."""
    from node.service_layer.cases import Actor

    client = client_for(city)
    sign_in(client, city, "admin")
    url = f"/catalogue/matters/{DIBAO}/delegations"
    version, _ = matter_json(client, DIBAO)
    token = csrf_from(client, f"/catalogue/matters/{DIBAO}")
    line = {"csrf_token": token, "region": HESHAN, "authority_tier": "township", "promised_days": "10"}
    saved = client.post(url, data={**line, "based_on": str(version), "action": "save"})
    assert saved.status_code == 303, saved.get_data(as_text=True)
    page = client.get(f"/catalogue/matters/{DIBAO}").get_data(as_text=True)
    assert f'data-region="{HESHAN}"' in page and "赫山区" in page

    acceptor = Actor("acceptor", "acceptor", None)
    body = {
        "matter_code": DIBAO,
        "applicant": {"kind": "person", "id_number": RESIDENT, "name": "李秀英"},
        "materials": DIBAO_MATERIALS,
        "residence_code": HESHAN_VILLAGE,
    }
    outcome = city.cases.accept(acceptor, body)
    assert outcome.case is not None and outcome.case.handling_node == HESHAN_TOWN  # 八字哨镇, not 赫山区

    # Upward, or longer than the city's promise: refused with the reason, nothing published.
    for bad, message in (({"authority_tier": "city"}, "只能下放"), ({"promised_days": "25"}, "只能缩短")):
        refused = client.post(url, data={**line, **bad, "based_on": str(version + 1), "action": "save"})
        assert refused.status_code == 400 and message in refused.get_data(as_text=True), bad
    unknown = client.post(url, data={**line, "region": "430999000000", "based_on": str(version + 1)})
    assert unknown.status_code == 400 and "430999000000" in unknown.get_data(as_text=True)
    assert matter_json(client, DIBAO)[0] == version + 1

    removed = client.post(
        url, data={"csrf_token": token, "region": HESHAN, "based_on": str(version + 1), "action": "remove"}
    )
    assert removed.status_code == 303
    assert "data-region=" not in client.get(f"/catalogue/matters/{DIBAO}").get_data(as_text=True)
    assert city.cases.accept(acceptor, body).case.handling_node == HESHAN  # type: ignore[union-attr]
