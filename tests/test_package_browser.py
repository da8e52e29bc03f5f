"""The window's view of a 一件事 package in headless Chromium against a real gunicorn node.

The acceptor opens the package page: one row per department's sub-case with its handling node
and state, and — once two departments ask for a supplement — one merged notice naming both.
Screenshot: ``test-artifacts/package-window.png``.
"""

from __future__ import annotations

import pytest
import requests
from playwright.sync_api import expect, sync_playwright

from node.bootstrap import NodeContext
from tests.conftest import TEST_PASSWORD
from tests.test_ops_browser import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS
from tests.test_packages import SELLER, TRANSFER, TRANSFER_MATERIALS
from tests.test_sessions_browser import sign_in
from tests.test_sessions_streams import served_node
from tiers.demo import HESHAN_VILLAGE

pytestmark = pytest.mark.slow
__all__ = ["served_node"]  # the fixture, imported for pytest


def token(base: str, username: str) -> dict[str, str]:
    answer = requests.post(
        f"{base}/api/v1/auth/token", json={"username": username, "password": TEST_PASSWORD}, timeout=30
    )
    assert answer.status_code == 200, answer.text
    return {"Authorization": f"Bearer {answer.json()['token']}"}


def test_the_window_sees_every_department_and_one_merged_notice(served_node: tuple[NodeContext, str]) -> None:
    node, base = served_node
    assert CHROMIUM.exists(), "Debian chromium is not installed: run `bash deploy/setup-system.sh chromium`"
    for department in ("real_estate", "housing"):
        node.state.add_account(f"approver.{department}", TEST_PASSWORD, "approver", department)
    acceptor = token(base, "acceptor")
    created = requests.post(
        f"{base}/api/v1/packages/{TRANSFER}/cases",
        json={
            "applicant": {"kind": "person", "name": "周建国", "id_number": SELLER},
            "materials": TRANSFER_MATERIALS,
            "property_code": HESHAN_VILLAGE,
        },
        headers=acceptor,
        timeout=30,
    )
    assert created.status_code == 201, created.text
    package_no = created.json()["package_no"]
    subs = {s["department"]: s["case_no"] for s in created.json()["sub_cases"]}
    for department, reason in (("real_estate", "缺共有人同意书"), ("housing", "合同页码不全")):
        asked = requests.post(
            f"{base}/api/v1/cases/{subs[department]}/actions",
            json={"action": "request_supplement", "reason": reason},
            headers=token(base, f"approver.{department}"),
            timeout=30,
        )
        assert asked.status_code == 200, asked.text

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_context(locale="zh-CN").new_page()
            sign_in(page, base)
            page.goto(f"{base}/packages/{package_no}")
            expect(page.locator("h1")).to_contain_text("不动产转移登记一件事")
            expect(page.locator("#sub-cases tbody tr")).to_have_count(3)
            expect(page.locator("#package-state")).to_have_text("待补正（一次性告知）")
            notice = page.locator("#merged-notice")
            expect(notice).to_contain_text("缺共有人同意书")
            expect(notice).to_contain_text("合同页码不全")
            expect(notice.locator("li")).to_have_count(2)
            page.screenshot(path=str(ARTIFACTS / "package-window.png"), full_page=True)
            page.click("#sub-cases tbody tr:first-child a")
            expect(page).to_have_url(f"{base}/cases/{subs['real_estate']}")
        finally:
            browser.close()
