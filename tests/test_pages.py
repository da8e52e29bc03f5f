"""The server-rendered pages: sign-in, window acceptance, one-time notice, inbox, case actions, citizen query."""

from __future__ import annotations

import re
from datetime import date

from flask.testing import FlaskClient

from node.bootstrap import NodeContext
from node.domain.identifiers import make_id_number
from tests.conftest import TEST_PASSWORD, client_for
from tests.test_api_cases import DIBAO, DIBAO_MATERIALS, RESIDENT
from tiers.demo import HESHAN, HESHAN_VILLAGE

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
CASE_URL = re.compile(r"/cases/([^/?#]+)$")


def csrf_from(client: FlaskClient, path: str) -> str:
    page = client.get(path)
    assert page.status_code == 200, page.status_code
    match = CSRF.search(page.get_data(as_text=True))
    assert match, f"no CSRF token in {path}"
    return match.group(1)


def sign_in(client: FlaskClient, context: NodeContext, username: str) -> None:
    """Sign in as ``role`` or ``approver.<department>`` through the form, creating the account on first use."""
    if context.state.account(username) is None:
        role, _, department = username.partition(".")
        context.state.add_account(username, TEST_PASSWORD, role, department or None)
    token = csrf_from(client, "/login")
    response = client.post("/login", data={"username": username, "password": TEST_PASSWORD, "csrf_token": token})
    assert response.status_code == 302, response.get_data(as_text=True)


def accept_form(token: str, **extra: object) -> dict[str, object]:
    form: dict[str, object] = {
        "csrf_token": token,
        "matter_code": DIBAO,
        "applicant_kind": "person",
        "applicant_id": RESIDENT,
        "applicant_name": "李秀英",
        "materials": DIBAO_MATERIALS,
        "residence_code": HESHAN_VILLAGE,
    }
    form.update(extra)
    return form


def accept_case(client: FlaskClient, **extra: object) -> str:
    """Accept a 低保 case through the form (as the signed-in acceptor); returns its case number."""
    token = csrf_from(client, f"/accept?matter={DIBAO}")
    response = client.post("/accept", data=accept_form(token, **extra))
    assert response.status_code == 303, response.get_data(as_text=True)
    match = CASE_URL.search(response.headers["Location"])
    assert match, response.headers["Location"]
    return match.group(1)


def fieldset_tag(page: str, matter_code: str) -> str:
    match = re.search(rf'<fieldset class="matter-materials" data-matter="{re.escape(matter_code)}"[^>]*>', page)
    assert match, matter_code
    return match.group(0)


def event_docs(context: NodeContext) -> list[str]:
    return [r["id"] for r in context.store.changes(since=0)["results"] if r["id"].startswith("event:")]


def test_home_and_failed_sign_in(county_node: NodeContext) -> None:
    client = client_for(county_node)
    home = client.get("/").get_data(as_text=True)
    assert "赫山区" in home and HESHAN in home and "县/区" in home
    assert 'href="/login"' in home and 'href="/query"' in home and 'href="/accept"' not in home

    token = csrf_from(client, "/login")
    county_node.state.add_account("acceptor", TEST_PASSWORD, "acceptor")
    failed = client.post("/login", data={"username": "acceptor", "password": "wrong", "csrf_token": token})
    assert failed.status_code == 401
    assert "用户名或密码错误" in failed.get_data(as_text=True)

    # Staff pages send a signed-out visitor to the sign-in page; the JSON feed answers 401.
    inbox = client.get("/inbox")
    assert inbox.status_code == 302 and inbox.headers["Location"].startswith("/login")
    assert client.get("/inbox.json").status_code == 401
    assert client.get(f"/cases/{HESHAN}-20250101-1").status_code == 302


def test_accept_through_the_form_then_approve_from_the_case_page(county_node: NodeContext) -> None:
    acceptor = client_for(county_node)
    sign_in(acceptor, county_node, "acceptor")
    form_page = acceptor.get(f"/accept?matter={DIBAO}").get_data(as_text=True)
    assert "家庭经济状况声明及授权核对书" in form_page and 'name="residence_code"' in form_page
    assert "民政局" in form_page  # matters are grouped by department
    # Without JavaScript, step one (GET ?matter=) enables only the chosen matter's materials.
    assert "disabled" not in fieldset_tag(form_page, DIBAO)
    assert "hidden disabled" in fieldset_tag(form_page, "430900-QR-0001")
    first_step = acceptor.get("/accept").get_data(as_text=True)
    assert "请先在上方选择办理事项" in first_step and 'id="matter-choose"' in first_step
    assert "hidden disabled" in fieldset_tag(first_step, DIBAO)

    case_no = accept_case(acceptor)
    assert case_no.startswith(f"{HESHAN}-")
    page = acceptor.get(f"/cases/{case_no}").get_data(as_text=True)
    assert case_no in page and "已受理" in page and "审查中" in page
    assert "李秀英" in page and RESIDENT not in page  # the ID number is shown masked

    approver = client_for(county_node)
    sign_in(approver, county_node, "approver.civil_affairs")
    inbox = approver.get("/inbox").get_data(as_text=True)
    assert case_no in inbox and "最低生活保障审核确认" in inbox
    feed = approver.get("/inbox.json").get_json()
    assert [row["case_no"] for row in feed["cases"]] == [case_no] and feed["cases"][0]["state_label"] == "审查中"
    assert approver.get("/inbox?q=李秀英").get_data(as_text=True).count(f">{case_no}<") == 1
    assert f">{case_no}<" not in approver.get("/inbox?q=张三").get_data(as_text=True)

    case_page = approver.get(f"/cases/{case_no}").get_data(as_text=True)
    assert 'value="approve"' in case_page and 'value="reject"' in case_page
    token = CSRF.search(case_page).group(1)  # type: ignore[union-attr]

    # A rule broken on the page comes back as the bilingual message with the service's status.
    no_reason = approver.post(f"/cases/{case_no}/actions", data={"action": "reject", "csrf_token": token})
    assert no_reason.status_code == 400
    assert "此操作必须填写理由" in no_reason.get_data(as_text=True)
    assert "this action needs a reason" in no_reason.get_data(as_text=True)

    approved = approver.post(f"/cases/{case_no}/actions", data={"action": "approve", "csrf_token": token})
    assert approved.status_code == 303 and approved.headers["Location"] == f"/cases/{case_no}"
    after = approver.get(f"/cases/{case_no}").get_data(as_text=True)
    assert "准予办理" in after and "已批准" in after  # the state and the flash
    assert approver.get("/inbox.json").get_json()["cases"] == []

    replay = approver.post(f"/cases/{case_no}/actions", data={"action": "approve", "csrf_token": token})
    assert replay.status_code == 409


def test_village_window_routes_the_case_to_the_county(village_node: NodeContext) -> None:
    client = client_for(village_node)
    sign_in(client, village_node, "acceptor")
    home = client.get("/").get_data(as_text=True)
    assert "村/社区" in home and 'href="/accept"' in home and 'href="/inbox"' in home
    case_no = accept_case(client)
    page = client.get(f"/cases/{case_no}").get_data(as_text=True)
    assert "流转至 赫山区 办理" in page  # the flash names the handling node
    assert HESHAN in page and HESHAN_VILLAGE in page


def test_incomplete_submission_prints_the_one_time_notice(county_node: NodeContext) -> None:
    client = client_for(county_node)
    sign_in(client, county_node, "acceptor")
    token = csrf_from(client, f"/accept?matter={DIBAO}")
    response = client.post("/accept", data=accept_form(token, materials=["M001"]))
    assert response.status_code == 200
    notice = response.get_data(as_text=True)
    assert "材料补正一次性告知书" in notice and "window.print()" in notice
    for name in ("居民户口簿", "家庭经济状况声明及授权核对书", "申请表"):
        assert name in notice
    assert "赫山区" in notice and "李秀英" in notice
    assert event_docs(county_node) == []


def test_bad_input_is_shown_with_the_form_kept(county_node: NodeContext) -> None:
    client = client_for(county_node)
    sign_in(client, county_node, "acceptor")
    token = csrf_from(client, f"/accept?matter={DIBAO}")
    bad_id = RESIDENT[:-1] + ("0" if RESIDENT[-1] != "0" else "1")
    response = client.post("/accept", data=accept_form(token, applicant_id=bad_id, applicant_name="王五"))
    assert response.status_code == 400
    page = response.get_data(as_text=True)
    assert "校验位错误" in page and "check digit is wrong" in page  # both languages of the DomainError
    assert 'value="王五"' in page and f'value="{bad_id}"' in page and 'value="M013" checked' in page
    missing_location = client.post("/accept", data=accept_form(token, residence_code=""))
    assert missing_location.status_code == 400 and "residence_code" in missing_location.get_data(as_text=True)
    assert event_docs(county_node) == []


def test_roles_and_csrf_are_enforced(county_node: NodeContext) -> None:
    client = client_for(county_node)
    sign_in(client, county_node, "approver.civil_affairs")
    forbidden = client.get("/accept")
    assert forbidden.status_code == 403 and "无权访问" in forbidden.get_data(as_text=True)

    acceptor = client_for(county_node)
    sign_in(acceptor, county_node, "acceptor")
    no_token = acceptor.post("/accept", data={k: v for k, v in accept_form("").items() if k != "csrf_token"})
    assert no_token.status_code == 400 and "表单已失效" in no_token.get_data(as_text=True)
    wrong_token = acceptor.post("/accept", data=accept_form("not-the-token"))
    assert wrong_token.status_code == 400
    assert client_for(county_node).post("/login", data={"username": "acceptor", "password": "x"}).status_code == 400
    assert event_docs(county_node) == []

    # The role is read again on every request: a demoted account loses the page at once.
    county_node.state.add_account("acceptor", TEST_PASSWORD, "supervisor")
    assert acceptor.get("/accept").status_code == 403


def test_citizen_query_needs_the_matching_id_number(county_node: NodeContext) -> None:
    staff = client_for(county_node)
    sign_in(staff, county_node, "acceptor")
    case_no = accept_case(staff)

    citizen = client_for(county_node)
    token = csrf_from(citizen, "/query")
    found = citizen.post("/query", data={"case_no": case_no, "id_number": RESIDENT, "csrf_token": token})
    assert found.status_code == 200
    page = found.get_data(as_text=True)
    assert "审查中" in page and "受理申请" in page and "赫山区" in page
    assert "acceptor" not in page and "李秀英" not in page and RESIDENT not in page  # no staff, no personal data

    other = make_id_number("430903", date(1990, 1, 1), 11)
    wrong = citizen.post("/query", data={"case_no": case_no, "id_number": other, "csrf_token": token})
    assert wrong.status_code == 404
    assert "未找到与该身份证件号码匹配的案件" in wrong.get_data(as_text=True)


def test_english_is_chosen_with_lang_and_remembered(county_node: NodeContext) -> None:
    client = client_for(county_node)
    english = client.get("/login?lang=en").get_data(as_text=True)
    assert "Staff sign-in" in english and "Username" in english and 'lang="en"' in english
    assert "用户名" not in english
    remembered = client.get("/query").get_data(as_text=True)
    assert "Check the progress of a case" in remembered and "办件进度查询" not in remembered

    sign_in(client, county_node, "acceptor")
    case_no = accept_case(client)
    page = client.get(f"/cases/{case_no}").get_data(as_text=True)
    assert "in review" in page and "application accepted" in page and "Accepted. Case number" in page
    assert "审查中" not in page
    assert f'href="/cases/{case_no}?lang=zh"' in page  # the switch keeps the page
    assert "办件进度查询" in client.get("/query?lang=zh").get_data(as_text=True)


def test_user_input_is_escaped(county_node: NodeContext) -> None:
    client = client_for(county_node)
    sign_in(client, county_node, "acceptor")
    case_no = accept_case(client, applicant_name="<script>alert(1)</script>")
    page = client.get(f"/cases/{case_no}").get_data(as_text=True)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>alert(1)" not in page

    search = client.get("/inbox?q=<script>x</script>").get_data(as_text=True)
    assert "&lt;script&gt;x&lt;/script&gt;" in search and "<script>x" not in search
    token = csrf_from(client, "/accept")
    failed = client.post("/accept", data=accept_form(token, applicant_name='"><script>y()</script>', applicant_id="1"))
    assert failed.status_code == 400 and "<script>y()" not in failed.get_data(as_text=True)
