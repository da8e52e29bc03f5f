# Temporary: renders pages to /tmp/shots for screenshots. Deleted after use.
from datetime import date, timedelta
from pathlib import Path

from tests.test_pages import CSRF, accept_case, accept_form, client_for, csrf_from, sign_in, DIBAO

OUT = Path("/tmp/shots")


def save(name, html):
    (OUT / f"{name}.html").write_text(html.replace("/static/site.css", "site.css"), encoding="utf-8")


def test_shots(county_node):
    anon = client_for(county_node)
    save("home_anon", anon.get("/").get_data(as_text=True))
    save("login", anon.get("/login").get_data(as_text=True))
    acc = client_for(county_node)
    sign_in(acc, county_node, "acceptor")
    save("home_acceptor", acc.get("/").get_data(as_text=True))
    save("accept_empty", acc.get("/accept").get_data(as_text=True))
    save("accept_dibao", acc.get(f"/accept?matter={DIBAO}").get_data(as_text=True))
    token = csrf_from(acc, "/accept")
    save("notice", acc.post("/accept", data=accept_form(token, materials=["M001"])).get_data(as_text=True))
    save("accept_error", acc.post("/accept", data=accept_form(token, applicant_id="123")).get_data(as_text=True))
    no1 = accept_case(acc)
    no2 = accept_case(acc, applicant_name="张伟")
    no3 = accept_case(acc, applicant_name="<script>alert(1)</script>")
    svc = county_node.cases
    print(svc.flag_deadline(no2, date.today() + timedelta(days=60)))
    print(svc.flag_deadline(no3, date.today() + timedelta(days=26)))
    save("case_acceptor", acc.get(f"/cases/{no1}").get_data(as_text=True))
    appr = client_for(county_node)
    sign_in(appr, county_node, "approver.civil_affairs")
    save("inbox", appr.get("/inbox").get_data(as_text=True))
    save("case_approver", appr.get(f"/cases/{no1}").get_data(as_text=True))
    page = appr.get(f"/cases/{no1}").get_data(as_text=True)
    token = CSRF.search(page).group(1)
    save("case_error", appr.post(f"/cases/{no1}/actions", data={"action": "reject", "csrf_token": token}).get_data(as_text=True))
    appr.post(f"/cases/{no1}/actions", data={"action": "approve", "csrf_token": token})
    save("case_approved", appr.get(f"/cases/{no1}").get_data(as_text=True))
    save("case_approved_en", appr.get(f"/cases/{no1}?lang=en").get_data(as_text=True))
    save("inbox_en", appr.get("/inbox").get_data(as_text=True))
    cit = client_for(county_node)
    t = csrf_from(cit, "/query")
    from tests.test_api_cases import RESIDENT
    save("query_result", cit.post("/query", data={"case_no": no1, "id_number": RESIDENT, "csrf_token": t}).get_data(as_text=True))
    save("query_wrong", cit.post("/query", data={"case_no": no1, "id_number": "430903199001010011", "csrf_token": t}).get_data(as_text=True))
    save("forbidden", appr.get("/accept").get_data(as_text=True))
