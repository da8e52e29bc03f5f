"""Issue 12's "done when", on a real local federation (`tongban federation up`, every process real).

A 资阳区 village (迎风桥第1村) verifies a demo resident by a photo never enrolled; the register data comes
back for the form; two of the resident's library documents are reused; the case (不动产权证书补换发 for a
property in 赫山区) crosses the city to 赫山区, whose approver sees the verification on the replicated case
and approves it; the approval is back at the village; the applicant sees who used their data. The wrong
person's photo is refused.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from node.adapters.demo_people import load_demo_people
from node.bootstrap import ProcessKind, bootstrap
from node.domain.registers import generate_population
from node.runtime.demo import fetch_json, login
from node.runtime.federation import Federation
from tests.conftest import wait_for
from tests.test_e2e_federation import free_base_port
from tiers.demo import CITY, HESHAN, HESHAN_VILLAGE, ZIYANG, ZIYANG_TOWN, ZIYANG_VILLAGE, ZIYANG_VILLAGE_2

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
FACES = Path(__file__).parent / "data" / "faces"
NODES = [CITY, ZIYANG, ZIYANG_TOWN, ZIYANG_VILLAGE, HESHAN]
MATTER = "430900-QR-0011"  # 不动产权证书补换发 (real estate, where the property is): M003, M001, M005
ZHOU = next(p.record for p in load_demo_people() if p.record.name == "周建国")


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    var = tmp_path_factory.mktemp("identity-federation")
    log = (var / "up.log").open("w")
    command = [sys.executable, "-m", "node.entrypoints.cli", "federation", "up", "--var", str(var)]
    command += ["--base-port", str(free_base_port()), "--nodes", ",".join(NODES)]
    process = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        up = wait_for(lambda: process.poll() is not None or "press Ctrl-C" in (var / "up.log").read_text(), 300, 0.5)
        if not up or process.poll() is not None:
            pytest.fail(f"federation did not start:\n{(var / 'up.log').read_text()[-3000:]}")
        yield Federation.load(var)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=90)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def verify(url: str, token: str, photo: str) -> requests.Response:
    return requests.post(
        f"{url}/api/v1/identity/verify",
        data={"id_number": ZHOU.id_number},
        files={"photo": (photo, (FACES / photo).read_bytes())},
        headers={"Authorization": f"Bearer {token}"},
        timeout=120,
    )


def test_registers_generate_fills_every_node_with_its_share(federation: Federation) -> None:
    command = [sys.executable, "-m", "node.entrypoints.cli", "registers", "generate", "--var", str(federation.var_dir)]
    done = subprocess.run(
        [*command, "--all-nodes", "--people-per-village", "4", "--json"], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    held = {line["node"]: line["held_with_face"] for line in map(json.loads, done.stdout.strip().splitlines())}
    # Each demo resident is held at their village's node and every node above it: 资阳区's three here,
    # 赫山区's three at 赫山区 (its villages are not nodes of this federation), all six at the city.
    assert held == {CITY: 6, ZIYANG: 3, ZIYANG_TOWN: 3, ZIYANG_VILLAGE: 3, HESHAN: 3}


def test_register_records_published_at_the_city_reach_the_residence_subtree_only(federation: Federation) -> None:
    command = [sys.executable, "-m", "node.entrypoints.cli", "registers", "generate", "--var", str(federation.var_dir)]
    done = subprocess.run(
        [*command, "--node", CITY, "--publish", "--people-per-village", "8", "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1])["published"] > 24
    # Residents drawn beyond the 4 per village the nodes loaded locally (the test above): only documents carry them.
    villages = [ZIYANG_VILLAGE, ZIYANG_VILLAGE_2, HESHAN_VILLAGE]
    loaded = {
        p.id_number for p in generate_population(villages, people_per_division=4, enterprises_per_division=0).people
    }
    people = generate_population(villages, people_per_division=8, enterprises_per_division=0).people
    ziyang = next(p for p in people if p.residence_code == ZIYANG_VILLAGE and p.id_number not in loaded)
    heshan = next(p for p in people if p.residence_code == HESHAN_VILLAGE and p.id_number not in loaded)
    village = bootstrap(federation.node_config(ZIYANG_VILLAGE), ProcessKind.TOOL, connect_mqtt=False)
    county = bootstrap(federation.node_config(HESHAN), ProcessKind.TOOL, connect_mqtt=False)
    assert village.registers is not None and county.registers is not None

    assert wait_for(lambda: village.registers.person(ziyang.id_number) is not None, 180, 1.0), (
        "the city's record of a 资阳区 resident did not reach the village"
    )
    assert village.registers.person(ziyang.id_number).name == ziyang.name  # type: ignore[union-attr]
    assert wait_for(lambda: county.registers.person(heshan.id_number) is not None, 60, 1.0)
    # Never outside the residence's subtree.
    assert village.registers.person(heshan.id_number) is None
    assert county.registers.person(ziyang.id_number) is None
    held = county.store.all_docs("register:person:", "register:person:\ufff0")
    assert held and all(county.tree.is_in_subtree(doc["residence_code"], HESHAN) for doc in held)


def test_a_village_verifies_reuses_and_the_case_is_approved_in_another_county(federation: Federation) -> None:
    village, county = federation.node_config(ZIYANG_VILLAGE).url, federation.node_config(HESHAN).url
    acceptor = login(federation, ZIYANG_VILLAGE, "acceptor")
    approver = login(federation, HESHAN, "approver.real_estate")

    wrong = verify(village, acceptor, "biden_biden2.jpg")
    assert wrong.status_code == 200 and wrong.json()["match"] is False and "person" not in wrong.json()

    verified = verify(village, acceptor, "test_obama1.jpg")
    assert verified.status_code == 200, verified.text
    body = verified.json()
    assert body["match"] is True and body["person"]["name"] == ZHOU.name
    pulled = fetch_json(
        f"{village}/api/v1/identity/person",
        {"id_number": ZHOU.id_number, "verification_id": body["verification_id"], "matter_code": MATTER},
        acceptor,
    )
    on_file = {m["material_code"]: m for m in pulled["materials"] if m["on_file"]}
    assert set(on_file) == {"M001", "M005"}

    case = fetch_json(
        f"{village}/api/v1/identity/cases",
        {
            "matter_code": MATTER,
            "applicant": {"kind": "person", "name": pulled["person"]["name"], "id_number": ZHOU.id_number},
            "property_code": HESHAN_VILLAGE,
            "materials": ["M003"],
            "verification_id": body["verification_id"],
            "library_materials": [on_file["M001"]["material_id"], on_file["M005"]["material_id"]],
        },
        acceptor,
    )
    case_no = case["case_no"]
    assert case["handling_node"] == HESHAN and len(case["material_links"]) == 2
    assert case["identity_verification"]["match"] is True

    def at_county() -> bool:
        try:
            view = fetch_json(f"{county}/api/v1/cases/{case_no}", token=approver)
        except OSError:
            return False
        return any(entry["type"] == "identity_verified" for entry in view["timeline"])

    assert wait_for(at_county, 120, 0.5), "the case and its verification did not reach 赫山区"
    view = fetch_json(f"{county}/api/v1/cases/{case_no}", token=approver)
    assert any("人脸核验通过" in entry["summary_zh"] for entry in view["timeline"])
    fetch_json(f"{county}/api/v1/cases/{case_no}/actions", {"action": "approve"}, approver)
    assert wait_for(
        lambda: fetch_json(f"{village}/api/v1/cases/{case_no}", token=acceptor)["state"] == "approved", 120, 0.5
    ), "the approval did not come back to the village"

    uses = fetch_json(f"{village}/api/v1/identity/public/uses", {"case_no": case_no, "id_number": ZHOU.id_number})
    reused = {u["material_code"] for u in uses["uses"] if u["kind"] == "material" and u["case_no"] == case_no}
    assert reused == {"M001", "M005"}
    assert any(u["kind"] == "verification" and u["outcome"] == "no_match" for u in uses["uses"])
