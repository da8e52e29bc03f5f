"""The ops dashboard in a real browser: a village of a running federation goes dark and turns offline.

Starts ``tongban federation up`` with city → county → township → village, signs in to the city's
``/ops`` as the demo ops account in headless Chromium (Debian's ``/usr/bin/chromium`` driven by
Playwright), then stops the village the way a power cut or a cut line would: every process of the
village — store, broker, web, worker, agent — is frozen with SIGSTOP. No last will can reach the city
then (the village's own broker is frozen too); the city notices because the heartbeats stop. The
supervisor does not restart frozen processes, so the village stays dark until the test thaws it.
The page must show the village offline within 60 s (screenshot ``test-artifacts/ops-offline.png``),
then the alert the city's beat job opens (``test-artifacts/ops-alert.png``), and the village back
online once thawed.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from node.runtime.services import PROJECT_ROOT
from tests.test_federation import CITY, VILLAGE, RunningFederation, federation_in

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = PROJECT_ROOT / "test-artifacts"
OFFLINE_WITHIN_S = 60


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningFederation]:
    with federation_in(tmp_path_factory.mktemp("ops-browser")) as running:
        yield running


def ops_account(federation: RunningFederation) -> dict[str, str]:
    result = subprocess.run(
        [sys.executable, "-m", "node.entrypoints.cli", "demo", "accounts", "--json", "--var", str(federation.var)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return next(a for a in json.loads(result.stdout) if a["node"] == CITY and a["role"] == "ops")


def village_groups(federation: RunningFederation) -> list[int]:
    """The process groups of every service of the village (each service leads its own group)."""
    pids = []
    for pid_file in sorted((federation.var / "run").glob(f"{VILLAGE}-*.pid")):
        pids.append(int(pid_file.read_text().strip()))
    assert len(pids) == 5, f"expected store, broker, web, worker and agent: {pids}"
    return pids


def signal_groups(groups: list[int], signum: signal.Signals) -> None:
    for group in groups:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signum)


def test_a_village_that_goes_dark_turns_offline_on_the_dashboard(federation: RunningFederation) -> None:
    from playwright import sync_api

    # `make test` installs Debian's chromium; without it this check must fail, not pass unseen.
    assert CHROMIUM.exists(), "Debian chromium is not installed: run `bash deploy/setup-system.sh chromium`"
    account = ops_account(federation)
    city_url = f"http://127.0.0.1:{federation.http_port(CITY)}"
    chip = f'.chip[data-code="{VILLAGE}"]'
    ARTIFACTS.mkdir(exist_ok=True)

    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900}, locale="zh-CN")
            page.goto(f"{city_url}/ops")
            assert "/login" in page.url, "the dashboard asks an anonymous visitor to sign in"
            page.fill('input[name="username"]', account["username"])
            page.fill('input[name="password"]', account["password"])
            page.click('button[type="submit"]')
            page.wait_for_url(f"{city_url}/ops", timeout=15_000)
            assert page.locator("h1").first.inner_text() == "运维监控"

            # The village's heartbeats reach the city through three bridges; the page picks them up.
            page.wait_for_selector(f"{chip}.st-online", state="attached", timeout=45_000)
            page.locator(f"details.county:has({chip})").evaluate("d => d.open = true")

            # Every node serves /metrics; the village's replication figures come from its agent's file.
            with urllib.request.urlopen(f"http://127.0.0.1:{federation.http_port(VILLAGE)}/metrics", timeout=10) as r:
                metrics = r.read().decode()
            assert 'tongban_replication_docs_written_total{direction="push"' in metrics, metrics[:2000]
            assert "tongban_agent_stats_present 1" in metrics

            groups = village_groups(federation)
            signal_groups(groups, signal.SIGSTOP)
            went_dark = time.monotonic()
            try:
                page.wait_for_selector(f"{chip}.st-offline", timeout=OFFLINE_WITHIN_S * 1000)
                took = time.monotonic() - went_dark
                title = page.locator(chip).get_attribute("title") or ""
                page.locator(chip).scroll_into_view_if_needed()
                page.screenshot(path=str(ARTIFACTS / "ops-offline.png"), full_page=False)
                assert took < OFFLINE_WITHIN_S
                assert "离线" in title and "心跳中断" in title, title
                assert int(page.locator('[data-count="offline"]').inner_text()) >= 1
                # The city's Celery beat evaluates the rules every 15 s: offline for 45 s opens an alert.
                alert = page.locator("#alerts-body tr.alert-node_offline", has_text=VILLAGE)
                alert.wait_for(timeout=45_000)
                assert "节点离线" in alert.inner_text()
                page.locator("#alerts").scroll_into_view_if_needed()
                page.screenshot(path=str(ARTIFACTS / "ops-alert.png"), full_page=False)
            finally:
                signal_groups(groups, signal.SIGCONT)

            # Thawed, the village heartbeats again and the dashboard shows it back.
            page.wait_for_selector(f"{chip}.st-online", timeout=45_000)
        finally:
            browser.close()
    assert (ARTIFACTS / "ops-offline.png").stat().st_size > 10_000
