"""The window's face-verification flow in a real browser against a real gunicorn node (issue 12).

Headless Debian Chromium driven by Playwright: the acceptor picks the matter, types the ID number and
chooses a large camera photo (the page scales it down before sending it); after the match the form is
filled from the register and the library's materials are ticked; the case is accepted with the
verification recorded; the wrong person's photo is refused with nothing filled in; the applicant's query
page lists every use of their data.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image
from playwright.sync_api import Page, expect, sync_playwright

from node.adapters.demo_people import load_demo_people
from node.bootstrap import NodeContext
from node.runtime.services import free_port, gunicorn_spec
from node.runtime.supervisor import Supervisor
from node.service_layer.registers import ensure_demo_people
from tests.conftest import TEST_PASSWORD, Services, make_node
from tests.test_ops_browser import CHROMIUM, CHROMIUM_ARGS
from tiers.demo import ZIYANG_VILLAGE

pytestmark = pytest.mark.slow

FACES = Path(__file__).parent / "data" / "faces"
MATTER = "430900-JF-0004"  # 高龄津贴申领
ZHOU = next(p.record for p in load_demo_people() if p.record.name == "周建国")


@pytest.fixture
def served_village(services: Services, city_ca: Path, tmp_path: Path) -> Iterator[tuple[NodeContext, str]]:
    node = make_node(services, city_ca, tmp_path / "village", ZIYANG_VILLAGE)
    assert node.registers and node.library
    ensure_demo_people(node.config.code, node.tree, node.registers, node.library, node.cases.pii)
    node.state.add_account("acceptor", TEST_PASSWORD, "acceptor")
    port = free_port()
    supervisor = Supervisor(tmp_path / "run", progress=lambda _line: None)
    try:
        supervisor.start([gunicorn_spec("web", node.config.config_path, port, tmp_path / "logs", workers=1)])
        yield node, f"http://127.0.0.1:{port}"
    finally:
        supervisor.stop_all()


def camera_photo(tmp_path: Path) -> Path:
    """obama-480p.jpg (never enrolled) blown up to 3,000 px: over the page's 1 MB upload limit as it is."""
    with Image.open(FACES / "obama-480p.jpg") as image:
        big = image.convert("RGB").resize((image.width * 3000 // image.height, 3000))
    out = io.BytesIO()
    big.save(out, "JPEG", quality=95)
    assert len(out.getvalue()) > 1024 * 1024
    path = tmp_path / "camera.jpg"
    path.write_bytes(out.getvalue())
    return path


def identify(page: Page, base: str, photo: Path) -> None:
    page.goto(f"{base}/accept")
    page.select_option("#matter-select", MATTER)
    page.fill("#identify-form input[name=id_number]", ZHOU.id_number)
    page.set_input_files("#identify-form input[name=photo]", str(photo))
    page.click("#identify-submit")
    page.wait_for_load_state("load")


def test_face_verification_fills_the_form_and_the_case_records_it(
    served_village: tuple[NodeContext, str], tmp_path: Path
) -> None:
    node, base = served_village
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} not found: apt-get install chromium")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_context(locale="zh-CN").new_page()
            page.goto(f"{base}/login?next=/accept")
            page.fill("input[name=username]", "acceptor")
            page.fill("input[name=password]", TEST_PASSWORD)
            page.click("button[type=submit].primary")
            page.wait_for_url(f"{base}/accept")

            # The wrong person's photo: refused, nothing filled in.
            identify(page, base, FACES / "biden_biden2.jpg")
            expect(page.locator("#identity-result")).to_contain_text("人脸核验未通过")
            expect(page.locator("#accept-form input[name=applicant_name]")).to_have_value("")

            # The person's own camera photo, scaled down by the page: the form fills in from the register.
            identify(page, base, camera_photo(tmp_path))
            expect(page.locator("#identity-result")).to_contain_text("人脸核验通过")
            expect(page.locator("#person-data")).to_contain_text(ZHOU.name)
            expect(page.locator("#accept-form input[name=applicant_name]")).to_have_value(ZHOU.name)
            expect(page.locator("#accept-form input[name=residence_code]")).to_have_value(ZHOU.residence_code)
            expect(page.locator("#library input[name=library_material]:checked")).to_have_count(2)
            materials = page.locator(f'fieldset[data-matter="{MATTER}"]')
            expect(materials.locator('input[value="M001"]')).to_be_checked()
            materials.locator('input[value="M051"]').check()
            materials.locator('input[value="M003"]').check()
            page.click("#accept-form button[type=submit].primary")
            page.wait_for_url(re.compile(r"/cases/"))
            expect(page.locator("body")).to_contain_text("人脸核验通过")
            expect(page.locator("body")).to_contain_text("复用材料库材料 2 件")
            case_no = page.url.rsplit("/", 1)[1]
            case = node.cases.load(case_no)
            assert case.identity_verification and case.identity_verification["channel"] == "window"
            assert len(case.material_links) == 2

            # The applicant's own query page: who used their data, where, for which case.
            citizen = browser.new_context(locale="zh-CN").new_page()
            citizen.goto(f"{base}/query")
            citizen.fill("input[name=case_no]", case_no)
            citizen.fill("input[name=id_number]", ZHOU.id_number)
            citizen.click("button[type=submit].primary")
            uses = citizen.locator("#data-uses")
            expect(uses).to_contain_text("复用材料库材料")
            expect(uses.locator("tr.use-material")).to_have_count(2)
            expect(uses.locator("tr.use-verification").first).to_contain_text("人脸核验")
        finally:
            browser.close()
