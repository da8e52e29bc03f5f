"""``tongban demo scenario``: the cross-county flow driven through the running federation's HTTP API.

A resident of 赫山区 applies at a village of 资阳区; the case is routed to 赫山区's civil-affairs
office, approved there, and the result comes back to the village window, where it is delivered.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

from node.domain.identifiers import make_id_number
from node.runtime.federation import Federation
from node.runtime.provisioning import seed_demo_accounts
from tiers import yiyang
from tiers.demo import HESHAN

CHINA = timezone(timedelta(hours=8))
MATTER = "430900-JF-0001"  # 最低生活保障审核确认: county civil affairs, by registered residence


class ScenarioError(Exception):
    pass


def fetch_json(url: str, body: dict[str, Any] | None = None, token: str | None = None) -> Any:
    """GET (or POST ``body``) as JSON with an optional bearer token; HTTP and network errors propagate."""
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers=headers, method="POST" if data else "GET")
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def call(url: str, body: dict[str, Any] | None = None, token: str | None = None) -> Any:
    """:func:`fetch_json` for the scenario: a failure becomes one bilingual ScenarioError line."""
    try:
        return fetch_json(url, body, token)
    except urllib.error.HTTPError as exc:
        detail = json.loads(exc.read() or b"{}")
        raise ScenarioError(f"{url}: {exc.code} {detail.get('message_zh')} / {detail.get('message_en')}") from None
    except OSError as exc:
        raise ScenarioError(f"{url} 无法访问 / unreachable ({exc}): is `tongban federation up` running?") from None


def login(federation: Federation, code: str, username: str) -> str:
    """A bearer token for one of the demo accounts seeded at node ``code``."""
    password = next(
        a["password"] for a in seed_demo_accounts(federation.node_config(code)) if a["username"] == username
    )
    return call(f"{federation.node_config(code).url}/api/v1/auth/token", {"username": username, "password": password})[
        "token"
    ]


def wait_for(what: str, check: Callable[[], bool], timeout_s: float = 60.0) -> float:
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout_s:
            raise ScenarioError(f"等待超时 / timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(0.1)
    return time.monotonic() - started


def run_scenario(federation: Federation, print_line: Callable[[str], None] = print) -> dict[str, Any]:
    tree = yiyang()
    village = next(c for c in federation.codes if tree.tier(c) == 3 and c.startswith("430902"))
    county_b = HESHAN
    resident_village = next(c for c in federation.codes if tree.tier(c) == 3 and c.startswith("430903"))
    if county_b not in federation.codes:
        raise ScenarioError("the federation has no 赫山区 node (430903000000)")

    village_url, county_url = federation.node_config(village).url, federation.node_config(county_b).url
    acceptor, approver = login(federation, village, "acceptor"), login(federation, county_b, "approver.civil_affairs")
    body = {
        "matter_code": MATTER,
        "applicant": {"kind": "person", "id_number": make_id_number("430903", date(1968, 5, 12), 37), "name": "王桂兰"},
        "materials": ["M001", "M002", "M013", "M003"],
        "residence_code": resident_village,
    }
    resident_of = tree.get(resident_village).name
    print_line(f"1. {tree.get(village).name} ({village}) 受理 / accepts an application of a {resident_of} resident")
    case = call(f"{village_url}/api/v1/cases", body, acceptor)
    case_no = case["case_no"]
    print_line(f"   case {case_no} → handling node {case['handling_node']} ({tree.get(case['handling_node']).name})")

    def in_county_inbox() -> bool:
        return any(row["case_no"] == case_no for row in call(f"{county_url}/api/v1/inbox", token=approver)["cases"])

    seconds = wait_for("the case to reach 赫山区", in_county_inbox)
    print_line(f"2. 赫山区 civil-affairs inbox shows it after {seconds:.2f}s; the approver approves")
    call(f"{county_url}/api/v1/cases/{case_no}/actions", {"action": "approve"}, approver)

    def back_at_village() -> bool:
        return call(f"{village_url}/api/v1/cases/{case_no}", token=acceptor)["state"] == "approved"

    seconds = wait_for("the approval to reach the village", back_at_village)
    print_line(f"3. the approval is back at the village window after {seconds:.2f}s; the clerk delivers it")
    final = call(f"{village_url}/api/v1/cases/{case_no}/actions", {"action": "deliver", "method": "window"}, acceptor)
    print_line(f"\n{case_no} — {final['matter_name']} — {final['state_zh']} / {final['state_en']}")
    for entry in final["timeline"]:
        at = datetime.fromisoformat(entry["at"].replace("Z", "+00:00")).replace(tzinfo=UTC).astimezone(CHINA)
        node_name = tree.get(entry["node"]).name
        print_line(
            f"  {at:%H:%M:%S.%f}"[:-3] + f"  {entry['node']} {node_name:<10} {entry['type']:<12} {entry['summary_zh']}"
        )
    return final
