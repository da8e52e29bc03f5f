"""Sessions, sign-in and input at the HTTP edge (issue 11): each test reproduces a weakness of the old code.

Through the Flask test client against a real node (document store, state file) as the pages tests do.
"""

from __future__ import annotations

import sqlite3
import time
from datetime import date
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from node.adapters import nodestate
from node.adapters.sessions import Lifetimes
from node.bootstrap import NodeContext
from node.domain.identifiers import make_id_number
from node.entrypoints.web.http import PAGE_LIFETIMES_KEY
from node.entrypoints.web.limits import QUERY_PER_ADDRESS, QUERY_PER_CASE, SIGN_IN_PER_ADDRESS
from sync.auth import sign_request
from tests.conftest import TEST_PASSWORD, Services, client_for, make_node, token_for
from tests.test_api_cases import accept_body
from tests.test_pages import CSRF, csrf_from, sign_in

SESSION_COOKIE = "session"


def app_of(client: FlaskClient) -> Flask:
    return client.application


def cookie_value(client: FlaskClient) -> str:
    cookie = client.get_cookie(SESSION_COOKIE)
    assert cookie is not None
    return cookie.value


def session_data(client: FlaskClient) -> dict:
    app = app_of(client)
    serializer = app.session_interface.get_signing_serializer(app)  # type: ignore[attr-defined]
    return dict(serializer.loads(cookie_value(client)))


def signed_in(client: FlaskClient) -> bool:
    response = client.get("/inbox")
    assert response.status_code in (200, 302), response.status_code
    return response.status_code == 200


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def api_token(client: FlaskClient, username: str, password: str = TEST_PASSWORD) -> str:
    response = client.post("/api/v1/auth/token", json={"username": username, "password": password})
    assert response.status_code == 200, response.get_json()
    return str(response.get_json()["token"])


# --- 1. server-side, revocable sessions --------------------------------------------------------------------


def test_a_copied_cookie_dies_with_logout(county_node: NodeContext) -> None:
    client = client_for(county_node)
    sign_in(client, county_node, "acceptor")
    stolen = cookie_value(client)
    token = CSRF.search(client.get("/inbox").get_data(as_text=True)).group(1)  # type: ignore[union-attr]
    assert client.post("/logout", data={"csrf_token": token}).status_code == 302
    assert not signed_in(client)
    # The old code's signed cookie kept working after logout: replay it.
    client.set_cookie(SESSION_COOKIE, stolen)
    assert not signed_in(client)


def test_cookie_flags_and_a_new_session_id_at_every_sign_in(
    county_node: NodeContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = client_for(county_node)
    token = csrf_from(client, "/login")
    county_node.state.add_account("acceptor", TEST_PASSWORD, "acceptor")
    response = client.post("/login", data={"username": "acceptor", "password": TEST_PASSWORD, "csrf_token": token})
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie
    first = session_data(client)["sid"]
    first_cookie = cookie_value(client)

    # Signing in again (e.g. over a planted cookie) opens a new session and ends the old one.
    sign_in(client, county_node, "acceptor")
    assert session_data(client)["sid"] != first
    assert signed_in(client)
    other = client_for(county_node)
    other.set_cookie(SESSION_COOKIE, first_cookie)
    assert not signed_in(other)

    # Served over HTTPS (as behind the city's TLS front), the cookie is Secure too.
    secure = client_for(county_node)
    token = csrf_from(secure, "/login")
    over_tls = secure.post(
        "/login",
        data={"username": "acceptor", "password": TEST_PASSWORD, "csrf_token": token},
        base_url="https://localhost",
    )
    assert over_tls.status_code == 302 and "Secure" in over_tls.headers["Set-Cookie"]

    # Behind a front that terminates TLS, the deployment marks every cookie Secure.
    monkeypatch.setenv("TONGBAN_COOKIE_SECURE", "1")
    fronted = client_for(county_node)
    assert "Secure" in fronted.get("/login").headers["Set-Cookie"]


def test_idle_and_absolute_timeouts(county_node: NodeContext) -> None:
    client = client_for(county_node)
    app_of(client).config[PAGE_LIFETIMES_KEY] = Lifetimes(idle_s=1.0, absolute_s=60.0)
    sign_in(client, county_node, "acceptor")
    assert signed_in(client)
    time.sleep(1.3)
    assert not signed_in(client)

    app_of(client).config[PAGE_LIFETIMES_KEY] = Lifetimes(idle_s=60.0, absolute_s=2.0)
    sign_in(client, county_node, "acceptor")
    for _ in range(3):  # active all along, still ended at the absolute limit
        assert signed_in(client)
        time.sleep(0.5)
    time.sleep(0.8)
    assert not signed_in(client)


def test_logout_everywhere_ends_other_browsers_and_api_tokens(county_node: NodeContext) -> None:
    here, there = client_for(county_node), client_for(county_node)
    sign_in(here, county_node, "acceptor")
    sign_in(there, county_node, "acceptor")
    token = api_token(here, "acceptor")
    assert here.get("/api/v1/inbox", headers=bearer(token)).status_code == 200

    csrf = CSRF.search(here.get("/inbox").get_data(as_text=True)).group(1)  # type: ignore[union-attr]
    page = here.get("/inbox").get_data(as_text=True)
    assert 'name="everywhere"' in page
    assert here.post("/logout", data={"csrf_token": csrf, "everywhere": "1"}).status_code == 302
    assert not signed_in(here) and not signed_in(there)
    refused = here.get("/api/v1/inbox", headers=bearer(token))
    assert refused.status_code == 401 and refused.get_json()["error"] == "unauthenticated"


def test_api_logout_ends_the_token(county_node: NodeContext) -> None:
    client = client_for(county_node)
    county_node.state.add_account("acceptor", TEST_PASSWORD, "acceptor")
    first, second = api_token(client, "acceptor"), api_token(client, "acceptor")
    assert client.post("/api/v1/auth/logout", headers=bearer(first)).get_json() == {"ended": 1}
    assert client.get("/api/v1/inbox", headers=bearer(first)).status_code == 401
    assert client.get("/api/v1/inbox", headers=bearer(second)).status_code == 200
    everywhere = client.post("/api/v1/auth/logout", json={"everywhere": True}, headers=bearer(second))
    assert everywhere.status_code == 200
    assert client.get("/api/v1/inbox", headers=bearer(second)).status_code == 401


def test_password_change_ends_every_other_session_and_token(county_node: NodeContext) -> None:
    browser, elsewhere = client_for(county_node), client_for(county_node)
    sign_in(browser, county_node, "acceptor")
    sign_in(elsewhere, county_node, "acceptor")
    token = api_token(browser, "acceptor")
    csrf = csrf_from(browser, "/account/password")

    weak = browser.post(
        "/account/password",
        data={
            "csrf_token": csrf,
            "current_password": TEST_PASSWORD,
            "new_password": "aaaaaaaaaaaa",
            "repeat_password": "aaaaaaaaaaaa",
        },
    )
    assert weak.status_code == 400
    assert "至少包含" in weak.get_data(as_text=True) or "两类" in weak.get_data(as_text=True)
    assert signed_in(elsewhere)  # nothing changed

    new_password = "Neu-Passwort-2026"
    changed = browser.post(
        "/account/password",
        data={
            "csrf_token": csrf,
            "current_password": TEST_PASSWORD,
            "new_password": new_password,
            "repeat_password": new_password,
        },
    )
    assert changed.status_code == 303
    assert signed_in(browser)  # this browser got a fresh session
    assert not signed_in(elsewhere)
    assert browser.get("/api/v1/inbox", headers=bearer(token)).status_code == 401
    old = browser.post("/api/v1/auth/token", json={"username": "acceptor", "password": TEST_PASSWORD})
    assert old.status_code == 401
    api_token(browser, "acceptor", new_password)


def test_an_administrator_disabling_an_account_ends_its_sessions(county_node: NodeContext) -> None:
    client = client_for(county_node)
    admin = token_for(client, county_node, "admin")
    browser = client_for(county_node)
    sign_in(browser, county_node, "acceptor")
    token = api_token(client, "acceptor")

    not_admin = client.post("/api/v1/accounts/admin/disable", headers=bearer(token))
    assert not_admin.status_code == 403
    disabled = client.post("/api/v1/accounts/acceptor/disable", headers=admin)
    assert disabled.status_code == 200 and disabled.get_json()["sessions_ended"] == 2
    assert not signed_in(browser)
    assert client.get("/api/v1/inbox", headers=bearer(token)).status_code == 401
    # The same answer as a wrong password: a disabled account is not singled out.
    refused = client.post("/api/v1/auth/token", json={"username": "acceptor", "password": TEST_PASSWORD})
    assert refused.status_code == 401 and refused.get_json()["error"] == "bad_credentials"
    assert client.post("/api/v1/accounts/nobody/disable", headers=admin).status_code == 404

    assert client.post("/api/v1/accounts/acceptor/enable", headers=admin).status_code == 200
    api_token(client, "acceptor")


# --- 2. sign-in throttling, lockout, one hash scheme ---------------------------------------------------------


def test_lockout_per_account_answers_the_same_for_unknown_names(county_node: NodeContext) -> None:
    client = client_for(county_node)
    county_node.state.add_account("acceptor", TEST_PASSWORD, "acceptor")

    def statuses(username: str) -> list[int]:
        return [
            client.post("/api/v1/auth/token", json={"username": username, "password": "wrong-guess"}).status_code
            for _ in range(6)
        ]

    assert statuses("acceptor") == statuses("no-such-person") == [401, 401, 401, 401, 429, 429]
    locked = client.post("/api/v1/auth/token", json={"username": "acceptor", "password": TEST_PASSWORD})
    assert locked.status_code == 429 and locked.get_json()["error"] == "account_locked"
    assert "锁定" in locked.get_json()["message_zh"] and "locked" in locked.get_json()["message_en"]

    trail = client.application.extensions["tongban_sessions"].audit_trail()
    events = [row["event"] for row in trail]
    assert events.count("api.failed") == 10 and "api.locked_out" in events
    assert not any(
        "acceptor" in str(value) or "no-such-person" in str(value) for row in trail for value in row.values()
    )


def test_sign_in_is_limited_per_client_address(county_node: NodeContext) -> None:
    client = client_for(county_node)
    client.application.config[SIGN_IN_PER_ADDRESS] = "3 per minute"
    token = csrf_from(client, "/login")
    answers = [
        client.post("/login", data={"username": f"user{i}", "password": "x", "csrf_token": token}) for i in range(4)
    ]
    assert [a.status_code for a in answers] == [401, 401, 401, 429]
    assert int(answers[-1].headers["Retry-After"]) > 0
    assert "请求过于频繁" in answers[-1].get_data(as_text=True)
    api = client.post("/api/v1/auth/token", json={"username": "a", "password": "b"})
    assert api.status_code == 429 and api.get_json()["error"] == "too_many_requests"


def test_one_hash_scheme_equal_work_and_legacy_hashes_replaced(
    county_node: NodeContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = client_for(county_node)
    county_node.state.add_account("acceptor", TEST_PASSWORD, "acceptor", generated=True)
    checked: list[str] = []
    real_check = nodestate.check_password_hash

    def spy(stored: str, password: str) -> bool:
        checked.append(stored.split("$", 1)[0])
        return real_check(stored, password)

    monkeypatch.setattr(nodestate, "check_password_hash", spy)

    def work(username: str) -> list[str]:
        checked.clear()
        client.post("/api/v1/auth/token", json={"username": username, "password": "wrong-guess"})
        return [scheme for scheme in checked if scheme.startswith("scrypt")]

    # Generated accounts got pbkdf2:1000 before, unknown names two scrypt runs: timing told them apart.
    assert work("acceptor") == work("nobody-here") == ["scrypt:32768:8:1"]

    # A legacy hash still signs in once, and is replaced by the one scheme.
    path = county_node.config.data_dir / "state.sqlite3"
    with sqlite3.connect(path) as db:
        legacy = real_check.__globals__["generate_password_hash"](TEST_PASSWORD, method="pbkdf2:sha256:1000")
        db.execute("UPDATE accounts SET password_hash = ? WHERE username = 'acceptor'", (legacy,))
    assert work("acceptor") == ["scrypt:32768:8:1"]  # a wrong password costs the same on a legacy hash
    api_token(client, "acceptor")
    with sqlite3.connect(path) as db:
        (stored,) = db.execute("SELECT password_hash FROM accounts WHERE username = 'acceptor'").fetchone()
    assert stored.startswith("scrypt:")


# --- 3. open redirect ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/%09/evil.example", "/"),
        ("/%0a/evil.example", "/"),
        ("/%5Cevil.example", "/"),
        ("//evil.example", "/"),
        ("https://evil.example/", "/"),
        ("/%20/evil.example", "/"),
        ("/inbox?state=in_review", "/inbox?state=in_review"),
    ],
)
def test_sign_in_never_redirects_off_site(county_node: NodeContext, target: str, expected: str) -> None:
    client = client_for(county_node)
    county_node.state.add_account("acceptor", TEST_PASSWORD, "acceptor")
    page = client.get(f"/login?next={target}").get_data(as_text=True)
    token = CSRF.search(page).group(1)  # type: ignore[union-attr]
    next_value = page.split('name="next" value="', 1)[1].split('"', 1)[0]
    response = client.post(
        "/login",
        data={"username": "acceptor", "password": TEST_PASSWORD, "csrf_token": token, "next": next_value},
    )
    assert response.status_code == 302 and response.headers["Location"] == expected


# --- 4. citizen query ---------------------------------------------------------------------------------------


def test_citizen_query_one_answer_for_every_failure_limited_and_audited(county_node: NodeContext) -> None:
    client = client_for(county_node)
    acceptor = token_for(client, county_node, "acceptor")
    case_no = client.post("/api/v1/cases", json=accept_body(), headers=acceptor).get_json()["case_no"]
    resident = accept_body()["applicant"]["id_number"]
    other = make_id_number("430903", date(1990, 1, 1), 11)
    client.application.config[QUERY_PER_ADDRESS] = "1000 per minute"

    answers = [
        client.post("/api/v1/public/progress", json={"case_no": case_no, "id_number": other}),
        client.post("/api/v1/public/progress", json={"case_no": case_no[:-1] + "9", "id_number": resident}),
        client.post("/api/v1/public/progress", json={"case_no": "x" * 80, "id_number": resident}),
        client.post("/api/v1/public/progress", json={"case_no": case_no, "id_number": "   "}),
    ]
    assert {(a.status_code, a.get_data(as_text=True)) for a in answers} == {
        (answers[0].status_code, answers[0].get_data(as_text=True))
    }
    assert answers[0].status_code == 404

    # Per case number: guessing the ID number that goes with one case stops after a few tries.
    tries = [
        client.post("/api/v1/public/progress", json={"case_no": case_no, "id_number": other}).status_code
        for _ in range(5)
    ]
    assert tries == [404, 404, 404, 429, 429]  # two look-ups of this case above, three more, then no
    right_but_late = client.post("/api/v1/public/progress", json={"case_no": case_no, "id_number": resident})
    assert right_but_late.status_code == 429 and right_but_late.headers["Retry-After"]

    # Per client address, across case numbers (an enumerator walking sequential numbers).
    client.application.config[QUERY_PER_ADDRESS] = "3 per minute"
    client.application.config[QUERY_PER_CASE] = "1000 per minute"
    csrf = csrf_from(client, "/query")
    walk = [
        client.post("/query", data={"case_no": f"{case_no[:-1]}{n}", "id_number": other, "csrf_token": csrf})
        for n in range(2, 6)
    ]
    assert [page.status_code for page in walk] == [404, 404, 404, 429]
    assert "未找到" in walk[0].get_data(as_text=True) and "请求过于频繁" in walk[-1].get_data(as_text=True)

    trail = client.application.extensions["tongban_sessions"].audit_trail(event="citizen.progress")
    assert len(trail) >= 10
    assert not any(case_no in str(row) or resident in str(row) or other in str(row) for row in trail)


# --- 6. input -------------------------------------------------------------------------------------------------


def test_search_wildcards_are_literal_and_parameters_are_validated(county_node: NodeContext) -> None:
    client = client_for(county_node)
    acceptor = token_for(client, county_node, "acceptor")
    case_no = client.post("/api/v1/cases", json=accept_body(), headers=acceptor).get_json()["case_no"]
    assert [c["case_no"] for c in client.get("/api/v1/cases?q=李秀英", headers=acceptor).get_json()["cases"]] == [
        case_no
    ]
    for wildcard in ("%", "_", "%25%"):
        found = client.get("/api/v1/cases", query_string={"q": wildcard}, headers=acceptor)
        assert found.status_code == 200 and found.get_json()["cases"] == [], wildcard

    bad = client.get("/api/v1/cases?state=bogus", headers=acceptor)
    assert bad.status_code == 400
    body = bad.get_json()
    assert body["error"] == "invalid_query" and body["message_zh"] and "state" in body["message_en"]
    assert client.get("/api/v1/cases", query_string={"q": "x" * 101}, headers=acceptor).status_code == 400

    browser = client_for(county_node)
    sign_in(browser, county_node, "acceptor")
    page = browser.get("/inbox?state=bogus")
    assert page.status_code == 400 and "查询参数" in page.get_data(as_text=True)
    assert f">{case_no}<" not in browser.get("/inbox?q=%25").get_data(as_text=True)


def test_sync_changes_with_a_bad_since_is_a_400(
    county_node: NodeContext, services: Services, city_ca: Path, tmp_path: Path
) -> None:
    town = make_node(services, city_ca, tmp_path / "town", county_node.tree.children(county_node.config.code)[0])
    client = client_for(county_node)
    for query, status in (("since=bad", 400), ("since=0&limit=x", 400), ("since=-1", 400), ("since=0", 200)):
        path = f"/sync/v1/changes?{query}"
        response = client.get(path, headers=sign_request(town.identity, "GET", path, b""))
        assert response.status_code == status, (query, response.get_data(as_text=True))
        if status == 400:
            assert response.get_json()["error"] == "invalid_query" and response.get_json()["message_zh"]


def test_ops_query_parameters_are_validated(services: Services, city_ca: Path, tmp_path: Path) -> None:
    city = make_node(services, city_ca, tmp_path / "city", "430900000000")
    client = client_for(city)
    ops = token_for(client, city, "ops")
    for path in (
        "/api/v1/ops/alerts?state=bogus",
        "/api/v1/ops/alerts?limit=abc",
        "/api/v1/ops/nodes?tier=planet",
        "/api/v1/ops/nodes?status=%00",
        "/api/v1/ops/links?state=bogus",
    ):
        response = client.get(path, headers=ops)
        assert response.status_code == 400, path
        assert response.get_json()["error"] == "invalid_query" and response.get_json()["message_zh"], path
    assert client.get("/api/v1/ops/nodes?tier=county&status=offline", headers=ops).status_code == 200
    assert client.get("/api/v1/ops/alerts?state=open&limit=10", headers=ops).status_code == 200
