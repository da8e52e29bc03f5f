"""Paying in the hall and downloading a verified result, in a real browser.

Headless Chromium (Debian's, driven by Playwright) against a node serving HTTP and the sandbox payment
gateway running as its own process (the fixture of :mod:`tests.test_payment_flow`): the applicant looks
up the case with the case number and ID number, opens the gateway's pay page, pays, sees the fee paid,
downloads the sealed result and checks it on the public ``/verify`` page.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect, sync_playwright

from node.adapters.result_pdf import verify_result
from node.adapters.seal_keys import TrustBundle
from tests.test_ops_browser import CHROMIUM, CHROMIUM_ARGS
from tests.test_payment_flow import RESIDENT, TRANSFER, World, make_world
from tiers.demo import HESHAN

pytestmark = pytest.mark.slow
__all__ = ["make_world"]  # the fixture, imported for pytest


def look_up(page: Page, base: str, case_no: str) -> None:
    page.goto(f"{base}/hall/fees")
    page.fill("input[name=case_no]", case_no)
    page.fill("input[name=id_number]", RESIDENT)
    page.click("#show-fees")


def test_pay_in_the_hall_then_download_and_verify_the_result(make_world: Callable[..., World], tmp_path: Path) -> None:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} not found: apt-get install chromium")
    world = make_world()
    case_no = world.accept(TRANSFER)
    world.act(case_no, "real_estate", "approve")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_context(locale="zh-CN", accept_downloads=True).new_page()
            look_up(page, world.url, case_no)
            expect(page.locator("#fee-amount")).to_have_text("¥80.00")
            expect(page.locator("#payment-state")).to_have_attribute("data-state", "created")
            code = page.locator("#payment-code").inner_text().replace(" ", "")
            assert len(code) == 20 and code.startswith("430903")

            page.click("#pay-online")  # the gateway's pay page
            expect(page.locator("#amount")).to_have_text("80.00")
            page.click("#pay")
            expect(page.locator("#result")).to_contain_text("已支付")

            # Back in the hall: the notify has reached the node.
            def paid() -> bool:
                look_up(page, world.url, case_no)
                return page.locator("#payment-state").get_attribute("data-state") == "succeeded"

            for _ in range(40):
                if paid():
                    break
                page.wait_for_timeout(250)
            expect(page.locator("#payment-state")).to_have_text("已缴费")

            page.fill("input[name=id_number]", RESIDENT)  # never echoed back into the page: typed again
            with page.expect_download() as download:
                page.click("#download-result")
            saved = tmp_path / "result.pdf"
            download.value.save_as(saved)
            verdict = verify_result(saved.read_bytes(), TrustBundle.build(world.node.identity.ca_pem))
            assert verdict.valid and verdict.issuer == f"{HESHAN}/real_estate"

            page.goto(f"{world.url}/verify")
            page.set_input_files("input[name=file]", str(saved))
            page.click("form button.primary")
            expect(page.locator("#verdict-status")).to_have_attribute("data-status", "valid")
            expect(page.locator("#verdict-status")).to_have_text("有效")
            expect(page.locator("#verdict-issuer")).to_contain_text(f"{HESHAN}/real_estate")
        finally:
            browser.close()
