"""``tongban demo scenario --package``: 不动产转移登记一件事 driven through the running federation's HTTP API.

A village window of 资阳区 accepts the package for a property in 赫山区; 赫山区's real-estate,
housing and tax departments review in parallel; two ask for a supplement, which the village
window hears of in one merged notice and answers once; all approve; the package's one payment is
made through the sandbox gateway; one delivery closes it.
Prints the package with each sub-case's department, handling node, state and decision
time; raises :class:`ScenarioError` (non-zero exit) if any step fails.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from typing import Any

from node.domain.identifiers import make_id_number
from node.runtime.demo import ScenarioError, call, login, wait_for
from node.runtime.demo_results import fetch_page
from node.runtime.federation import Federation
from tiers import yiyang
from tiers.demo import HESHAN

PACKAGE = "430900-YJS-0001"  # 不动产转移登记一件事
MATERIALS = ["M001", "M003", "M005", "M020"]


def run_package_scenario(federation: Federation, print_line: Callable[[str], None] = print) -> dict[str, Any]:
    tree = yiyang()
    village = next((c for c in federation.codes if tree.tier(c) == 3 and c.startswith("430902")), None)
    property_village = next((c for c in federation.codes if tree.tier(c) == 3 and c.startswith("430903")), None)
    if village is None or property_village is None or HESHAN not in federation.codes:
        raise ScenarioError("the federation needs a 资阳区 village, a 赫山区 village and 赫山区 (430903000000)")
    village_url, county_url = federation.node_config(village).url, federation.node_config(HESHAN).url
    acceptor = login(federation, village, "acceptor")
    approvers = {d: login(federation, HESHAN, f"approver.{d}") for d in ("real_estate", "housing", "taxation")}

    print_line(f"1. {tree.get(village).name} ({village}) 受理一件事 / accepts {PACKAGE} for a property in 赫山区")
    package = call(
        f"{village_url}/api/v1/packages/{PACKAGE}/cases",
        {
            "applicant": {
                "kind": "person",
                "name": "周建国",
                "id_number": make_id_number("430903", date(1970, 4, 8), 15),
            },
            "materials": MATERIALS,
            "property_code": property_village,
        },
        acceptor,
    )
    package_no = package["package_no"]
    subs = {s["department"]: s["case_no"] for s in package["sub_cases"]}
    print_line(f"   package {package_no}: {len(subs)} sub-cases, one per department")

    def in_inbox(department: str) -> bool:
        rows = call(f"{county_url}/api/v1/inbox", token=approvers[department])["cases"]
        return any(row["case_no"] == subs[department] for row in rows)

    for department in approvers:
        wait_for(f"{department}'s sub-case to reach 赫山区", lambda d=department: in_inbox(d))
    print_line("2. three departments of 赫山区 review in parallel; real estate and housing ask for a supplement")
    act = f"{county_url}/api/v1/cases"
    call(
        f"{act}/{subs['real_estate']}/actions",
        {"action": "request_supplement", "reason": "缺共有人同意书"},
        approvers["real_estate"],
    )
    call(
        f"{act}/{subs['housing']}/actions",
        {"action": "request_supplement", "reason": "合同页码不全"},
        approvers["housing"],
    )
    call(f"{act}/{subs['taxation']}/actions", {"action": "approve"}, approvers["taxation"])

    view_url = f"{village_url}/api/v1/package-cases/{package_no}"

    def merged_notice() -> bool:
        view = call(view_url, token=acceptor)
        return view["notice_ready"] and len(view["supplement_requests"]) == 2

    seconds = wait_for("the merged supplement notice at the village", merged_notice)
    print_line(f"3. the village window shows one merged notice after {seconds:.2f}s; the applicant supplements once")
    call(
        f"{view_url}/supplement",
        {
            "answers": {
                subs["real_estate"]: {"note": "已补交共有人同意书", "materials": ["M014"]},
                subs["housing"]: {"materials": ["M020"]},
            }
        },
        acceptor,
    )

    def back_in_review(department: str) -> bool:
        return call(f"{act}/{subs[department]}", token=approvers[department])["state"] == "in_review"

    for department in ("real_estate", "housing"):
        wait_for(f"the supplement to reach {department}", lambda d=department: back_in_review(d))
        call(f"{act}/{subs[department]}/actions", {"action": "approve"}, approvers[department])
    print_line("4. both departments approve")

    wait_for("every decision at the village", lambda: call(view_url, token=acceptor)["state"] == "decided")
    first = subs["real_estate"]  # the package's first sub-case carries its one order (一次性缴费)

    def payment() -> dict[str, Any] | None:
        return call(f"{village_url}/api/v1/cases/{first}/payment", token=acceptor)["payment"]

    wait_for("the package's payment code at the village", lambda: payment() is not None)
    order = payment() or {}
    fetch_page(order["pay_url"])
    if "已支付".encode() not in fetch_page(order["pay_url"], data={"action": "pay"}):
        raise ScenarioError("the sandbox gateway did not take the payment")
    wait_for("the payment to be seen at the village", lambda: (payment() or {}).get("state") == "succeeded")
    print_line(f"5. one payment of ¥{order['total_fen'] / 100:.2f} for the whole package, paid through the gateway")
    final = call(f"{view_url}/deliver", {"method": "post"}, acceptor)
    print_line("6. one delivery by post closes the package\n")
    print_line(f"{package_no} — {final['name']} — {final['state_zh']} / {final['state_en']}")
    for sub in final["sub_cases"]:
        node_name = tree.get(sub["handling_node"]).name
        print_line(
            f"  {sub['case_no']}  {sub['department']:<12} {sub['handling_node']} {node_name:<6} "
            f"{sub['state']:<10} decided {sub['decided_at'] or '—'}"
        )
    if final["state"] != "delivered":
        raise ScenarioError(f"package ended {final['state']}, not delivered")
    return final
