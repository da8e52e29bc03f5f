"""The self-service kiosk on a 1080×1920 portrait screen, in headless Chromium against a real gunicorn node.

A person takes a number by touch, staff call it, the person rates the visit with the code on the
slip through the numeric pad (a poor rating opens a rectification ticket), and after the idle time
the kiosk is back at its start screen with nothing of that person left on any screen. Screenshots
go to ``test-artifacts/kiosk-*.png``.
"""

from __future__ import annotations

import pytest
import requests
from playwright.sync_api import expect, sync_playwright

from node.bootstrap import NodeContext
from tests.conftest import TEST_PASSWORD
from tests.test_ops_browser import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS
from tests.test_sessions_streams import served_node

pytestmark = pytest.mark.slow
__all__ = ["served_node"]  # the fixture, imported for pytest


def test_number_rating_and_idle_reset_on_the_kiosk(served_node: tuple[NodeContext, str]) -> None:
    node, base = served_node
    assert CHROMIUM.exists(), "Debian chromium is not installed: run `bash deploy/setup-system.sh chromium`"
    ARTIFACTS.mkdir(exist_ok=True)
    node.state.add_account("supervisor", TEST_PASSWORD, "supervisor")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1080, "height": 1920}, locale="zh-CN", has_touch=True)
            page.goto(f"{base}/kiosk")
            expect(page.locator("#start")).to_be_visible()
            page.screenshot(path=str(ARTIFACTS / "kiosk-start.png"))
            # Large targets: every tile at least 200 px high for a finger.
            assert all(box["height"] >= 200 for box in (t.bounding_box() for t in page.locator(".tile").all()) if box)

            page.click("[data-go=number]")
            page.click("#take-number")
            expect(page.locator("#ticket-number")).to_have_text("A001")
            slip = page.locator("#number-result").inner_text()
            code = slip.rsplit("：", 1)[-1].strip()
            assert len(code) == 8 and code.isdigit(), slip
            page.screenshot(path=str(ARTIFACTS / "kiosk-number.png"))

            token = requests.post(
                f"{base}/api/v1/auth/token", json={"username": "acceptor", "password": TEST_PASSWORD}, timeout=30
            ).json()["token"]
            called = requests.post(
                f"{base}/api/v1/queue/call",
                json={"window": "3"},
                headers={"Authorization": f"Bearer {token}"},
                timeout=30,
            ).json()
            assert called["ticket"]["number"] == "A001"

            page.click("#number [data-go=start]")
            expect(page.locator("#ticket-number")).to_have_text("")
            page.click("[data-go=rate]")
            for digit in code:
                page.click(f"#rate-pad button:text-is('{digit}')")
            expect(page.locator("#rate-display")).to_have_text(code)
            page.click("#rate-levels [data-level='2']")
            expect(page.locator("#rate-result")).to_have_text("感谢您的评价！")
            page.screenshot(path=str(ARTIFACTS / "kiosk-rated.png"))

            # Idle: back to the start screen with nothing left (the test shortens the minute to 1.5 s).
            page.evaluate("document.getElementById('kiosk').dataset.idleMs = '1500'")
            page.locator("#rate-display").dispatch_event("pointerdown")
            expect(page.locator("#start")).to_be_visible(timeout=10_000)
            expect(page.locator("#rate")).to_be_hidden()
            assert page.locator("#rate-display").inner_text() == ""
            assert page.locator("#rate-result").inner_text() == ""
            page.screenshot(path=str(ARTIFACTS / "kiosk-idle-reset.png"))
        finally:
            browser.close()

    supervisor = requests.post(
        f"{base}/api/v1/auth/token", json={"username": "supervisor", "password": TEST_PASSWORD}, timeout=30
    ).json()["token"]
    tickets = requests.get(
        f"{base}/api/v1/rectifications", headers={"Authorization": f"Bearer {supervisor}"}, timeout=30
    ).json()["tickets"]
    assert [t["rating"]["label_zh"] for t in tickets] == ["不满意"]
