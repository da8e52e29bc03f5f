"""``tongban demo results``: issue 15's flow through the running federation (fees, seal, post, verify).

A 赫山区 resident applies at a 资阳区 village for 不动产转移登记 (80 yuan, due once approved); 赫山区
approves it, which issues the payment code and seals the result; the resident pays on the sandbox
gateway's pay page; the village sees the payment and the sealed result, sends it by post, and the
sandbox courier's tracking shows on the case until it is delivered. The sealed PDF is checked as
``tongban verify`` does: valid as downloaded, tampered with one byte changed.
"""

from __future__ import annotations

import urllib.parse
import urllib.request
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

from node.adapters.result_pdf import verify_result
from node.adapters.seal_keys import TrustBundle
from node.domain.catalogue import load_seed_catalogue
from node.domain.identifiers import make_id_number
from node.runtime.demo import ScenarioError, call, login, wait_for
from node.runtime.federation import Federation
from tiers import yiyang
from tiers.demo import HESHAN, HESHAN_VILLAGE

MATTER = "430900-QR-0009"  # 不动产转移登记（存量房买卖）: real estate, county, 80 yuan after approval


def fetch_page(url: str, token: str | None = None, data: dict[str, str] | None = None) -> bytes:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    body = urllib.parse.urlencode(data).encode() if data is not None else None
    request = urllib.request.Request(url, data=body, headers=headers, method="POST" if body else "GET")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return bytes(response.read())
    except OSError as exc:
        raise ScenarioError(f"{url} 无法访问 / unreachable ({exc})") from None


def run_results_scenario(federation: Federation, print_line: Callable[[str], None] = print) -> dict[str, Any]:
    tree = yiyang()
    village = next((c for c in federation.codes if tree.tier(c) == 3 and c.startswith("430902")), None)
    if village is None or HESHAN not in federation.codes:
        raise ScenarioError("the federation needs a 资阳区 village and 赫山区 (430903000000)")
    village_url, county_url = federation.node_config(village).url, federation.node_config(HESHAN).url
    acceptor, approver = login(federation, village, "acceptor"), login(federation, HESHAN, "approver.real_estate")
    matter = load_seed_catalogue().get(MATTER)
    serial = int(date.today().strftime("%j")) + 500
    resident = make_id_number("430903", date(1980, 5, 5), serial)
    body = {
        "matter_code": MATTER,
        "applicant": {"kind": "person", "id_number": resident, "name": "赵大山"},
        "materials": [m.code for m in matter.materials if m.required],
        "property_code": HESHAN_VILLAGE,
    }
    case_no = call(f"{village_url}/api/v1/cases", body, acceptor)["case_no"]
    print_line(f"1. {tree.get(village).name} accepts {case_no} ({matter.name}) for a 赫山区 property")

    def at_county() -> bool:
        rows = call(f"{county_url}/api/v1/inbox", token=approver)["cases"]
        return any(row["case_no"] == case_no for row in rows)

    wait_for("the case to reach 赫山区", at_county)
    call(f"{county_url}/api/v1/cases/{case_no}/actions", {"action": "approve"}, approver)
    print_line("2. 赫山区 approves: the fee falls due and the result is sealed")

    def payment() -> dict[str, Any] | None:
        return call(f"{village_url}/api/v1/cases/{case_no}/payment", token=acceptor)["payment"]

    wait_for("the payment code to reach the village", lambda: payment() is not None)
    order = payment() or {}
    amount = order["total_fen"] / 100
    print_line(f"3. payment code {order['payment_code']} for ¥{amount:.2f}; paying at {order['pay_url']}")
    fetch_page(order["pay_url"])
    if "已支付".encode() not in fetch_page(order["pay_url"], data={"action": "pay"}):
        raise ScenarioError("the sandbox gateway did not take the payment")
    wait_for("the payment to be seen at the village", lambda: (payment() or {}).get("state") == "succeeded")
    print_line("4. paid: the gateway's notify reached 赫山区 and the payment replicated to the village")

    def sealed() -> bool:
        timeline = call(f"{village_url}/api/v1/cases/{case_no}", token=acceptor)["timeline"]
        return any(entry["type"] == "result_sealed" for entry in timeline)

    wait_for("the sealed result at the village", sealed)
    pdf = fetch_page(f"{village_url}/api/v1/cases/{case_no}/result.pdf", token=acceptor)
    trust = TrustBundle.load(Path(federation.var_dir) / "ca")
    good = verify_result(pdf, trust)
    damaged = bytearray(pdf)
    damaged[len(pdf) // 2] ^= 0x01
    bad = verify_result(bytes(damaged), trust)
    print_line(f"5. the village hands over the sealed PDF: {good.status.label} {good.issuer}")
    print_line(f"   the same PDF with one byte changed: {bad.status.label}")
    post = {"name": "赵大山", "phone": "13900000000", "address": "湖南省益阳市资阳区某路 2 号"}
    waybill = call(f"{village_url}/api/v1/cases/{case_no}/post", post, acceptor)["post"]["waybill_no"]
    print_line(f"6. sent by post, waybill {waybill}; following the courier's tracking …")

    def delivered() -> bool:
        return call(f"{village_url}/api/v1/cases/{case_no}", token=acceptor)["state"] == "delivered"

    wait_for("the courier to deliver", delivered, timeout_s=180)
    final = call(f"{village_url}/api/v1/cases/{case_no}", token=acceptor)
    for entry in final["timeline"]:
        print_line(f"  {entry['node']} {tree.get(entry['node']).name:<8} {entry['type']:<18} {entry['summary_zh']}")
    return {"case_no": case_no, "verdict": good.status.value, "tampered": bad.status.value, **final}
