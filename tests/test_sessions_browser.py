"""Signing out in a real browser: two tabs of one sign-in, logout in one, the other is signed out too.

A real gunicorn node (the fixture of :mod:`tests.test_sessions_streams`) and headless Chromium
(Debian's ``/usr/bin/chromium`` driven by Playwright). The open inbox tab notices on its next poll
(its ``/inbox.json`` answers 401) and goes to the sign-in page by itself; a stale copy of the cookie,
put back into a fresh browser, opens nothing either.
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect, sync_playwright

from node.bootstrap import NodeContext
from tests.conftest import TEST_PASSWORD
from tests.test_ops_browser import CHROMIUM, CHROMIUM_ARGS
from tests.test_sessions_streams import served_node

pytestmark = pytest.mark.slow
__all__ = ["served_node"]  # the fixture, imported for pytest


def sign_in(page: Page, base: str) -> None:
    page.goto(f"{base}/login?next=/inbox")
    page.fill("input[name=username]", "acceptor")
    page.fill("input[name=password]", TEST_PASSWORD)
    page.click("button[type=submit].primary")
    page.wait_for_url(f"{base}/inbox")


def test_logout_in_one_tab_signs_out_the_other(served_node: tuple[NodeContext, str]) -> None:
    _node, base = served_node
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} not found: apt-get install chromium")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            context = browser.new_context(locale="zh-CN")
            first = context.new_page()
            sign_in(first, base)
            second = context.new_page()
            second.goto(f"{base}/inbox")
            expect(second.locator(".user-box strong")).to_have_text("acceptor")
            stale = context.cookies()

            first.click(".user-box form button:not([name])")  # 退出 (this browser)
            first.wait_for_url(f"{base}/")
            expect(first.locator(".user-box")).to_contain_text("工作人员登录")

            # The other tab is polling its inbox: it finds itself signed out and goes to the sign-in page.
            second.wait_for_url(re.compile(r"/login\?next="), timeout=15_000)
            second.goto(f"{base}/inbox")
            expect(second).to_have_url(f"{base}/login?next=/inbox")

            # The cookie copied before the logout opens nothing in another browser.
            other = browser.new_context()
            other.add_cookies(stale)
            replay = other.new_page()
            replay.goto(f"{base}/inbox")
            expect(replay).to_have_url(f"{base}/login?next=/inbox")
        finally:
            browser.close()
