"""Links between real nodes: push up, filtered pull down, authentication, quarantine, transfer backfill.

Each parent serves its real Flask app over HTTP on a free loopback port (the same app gunicorn runs);
every node's store is a database on the session's real pouchdb-server.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from werkzeug.serving import make_server

from node.adapters.pki import CertificateAuthority, NodeIdentity
from node.bootstrap import NodeContext
from node.config import NodeConfig
from node.entrypoints.web import create_app
from node.entrypoints.web.commands import accept_case_from_json, act_on_case_from_json
from node.runtime.services import free_port
from node.service_layer.cases import Actor
from sync.link import Link
from sync.node_peer import LinkRefused, NodeApiPeer
from sync.replicator import StorePeer, replicate
from tests.conftest import Services, make_node
from tests.test_api_cases import accept_body
from tiers.demo import CITY, HESHAN, HESHAN_TOWN, HESHAN_VILLAGE, ZIYANG, ZIYANG_VILLAGE

ACCEPTOR = Actor("acceptor", "acceptor", None)
APPROVER = Actor("approver.civil_affairs", "approver", "civil_affairs")
COUNTY_A, COUNTY_B = ZIYANG, HESHAN
TOWN_B, VILLAGE_B1 = HESHAN_TOWN, HESHAN_VILLAGE


class Served:
    """A node whose web app answers on a real port."""

    def __init__(self, context: NodeContext) -> None:
        self.context = context
        self.port = free_port()
        self.server = make_server("127.0.0.1", self.port, create_app(context), threaded=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture
def nodes(services: Services, city_ca: Path, tmp_path: Path) -> Iterator[dict[str, NodeContext]]:
    """City, both counties, 八字哨镇 and its village; each child knows its parent's URL."""
    built: dict[str, NodeContext] = {}
    served: dict[str, Served] = {}
    for code in (CITY, COUNTY_A, COUNTY_B, TOWN_B, VILLAGE_B1):
        node = make_node(services, city_ca, tmp_path / code, code)
        parent = node.tree.parent(code)
        if parent:
            node.config = NodeConfig(**{**node.config.__dict__, "parent_url": served[parent].url})
        built[code] = node
        if code != VILLAGE_B1:
            served[code] = Served(node)
    yield built
    for server in served.values():
        server.close()


def sync_all(nodes: dict[str, NodeContext], rounds: int = 2) -> None:
    """Every node catches up and syncs with its parent, leaves first, then back down."""
    order = [VILLAGE_B1, TOWN_B, COUNTY_A, COUNTY_B, CITY]
    for _ in range(rounds):
        for code in order + list(reversed(order)):
            node = nodes[code]
            node.projector.catch_up()
            if node.config.parent_url:
                Link(node).sync()
            node.projector.catch_up()


def case_doc_ids(node: NodeContext, case_no: str) -> set[str]:
    return {doc["_id"] for doc in node.cases.events.case_docs(case_no)}


def test_village_case_goes_up_and_the_decision_comes_back(nodes: dict[str, NodeContext]) -> None:
    village = nodes[VILLAGE_B1]
    case_no = village.bus.handle(accept_case_from_json(ACCEPTOR, accept_body(residence_code=VILLAGE_B1))).case_no
    assert case_no
    sync_all(nodes)
    county = nodes[COUNTY_B]
    assert [r.case_no for r in county.readmodel.inbox(COUNTY_B, "approver", "civil_affairs")] == [case_no]
    county.bus.handle(act_on_case_from_json(APPROVER, case_no, {"action": "approve"}))
    sync_all(nodes)
    back = village.cases.load(case_no)
    assert back.state.value == "approved"
    # Issue 15: the sealed result comes back with the decision.
    assert [e["type"] for e in back.timeline] == ["accepted", "routed", "received", "approved", "result_sealed"]
    # The city holds everything; county A's branch never receives this case.
    assert case_doc_ids(nodes[CITY], case_no) == case_doc_ids(county, case_no) == case_doc_ids(village, case_no)
    assert case_doc_ids(nodes[COUNTY_A], case_no) == set()


def test_a_transfer_backfills_the_whole_history_to_the_new_branch(nodes: dict[str, NodeContext]) -> None:
    village = nodes[VILLAGE_B1]
    case_no = village.bus.handle(accept_case_from_json(ACCEPTOR, accept_body(residence_code=VILLAGE_B1))).case_no
    assert case_no
    sync_all(nodes)
    county_b = nodes[COUNTY_B]
    county_b.bus.handle(act_on_case_from_json(APPROVER, case_no, {"action": "receive"}))
    county_b.bus.handle(
        act_on_case_from_json(
            APPROVER, case_no, {"action": "transfer", "new_handling_node": COUNTY_A, "reason": "户籍已迁至资阳区"}
        )
    )
    sync_all(nodes)
    county_a = nodes[COUNTY_A]
    # County A got every event from the first, not just the transfer.
    assert case_doc_ids(county_a, case_no) == case_doc_ids(county_b, case_no)
    assert county_a.cases.load(case_no).timeline[0]["type"] == "accepted"
    assert [r.case_no for r in county_a.readmodel.inbox(COUNTY_A, "approver", "civil_affairs")] == [case_no]
    county_a.bus.handle(act_on_case_from_json(APPROVER, case_no, {"action": "approve"}))
    sync_all(nodes)
    assert village.cases.load(case_no).state.value == "approved"


def test_tampered_event_is_quarantined_at_the_parent_and_not_spread(nodes: dict[str, NodeContext]) -> None:
    village = nodes[VILLAGE_B1]
    case_no = village.bus.handle(accept_case_from_json(ACCEPTOR, accept_body(residence_code=VILLAGE_B1))).case_no
    assert case_no
    sync_all(nodes)
    # Someone with access to the village's store forges an approval in the county's name.
    county_b = nodes[COUNTY_B]
    real = county_b.cases.events.case_docs(case_no)[-1]
    forged = {k: v for k, v in real.items() if k not in ("_rev",)}
    forged["_id"] = real["_id"].rsplit(":", 1)[0] + ":" + "9" * 16 + "-0000-" + COUNTY_B
    forged["hlc"] = forged["_id"].split(":", 2)[2]
    forged["type"] = "approved"
    village.store.bulk_docs([forged])
    village.projector.catch_up()
    assert forged["_id"] in {row["doc_id"] for row in village.readmodel.quarantined()}
    # A sound village would hold it back; a compromised one pushes its raw store up anyway.
    assert village.config.parent_url
    replicate(StorePeer(village.store), NodeApiPeer(village.config.parent_url, village.identity))
    sync_all(nodes)
    town = nodes[TOWN_B]
    # The parent refuses it (an event in the county's name is not the village's to write), records the
    # refusal naming the village, and never writes or passes it on.
    refusals = [row for row in town.readmodel.quarantined() if row["doc_id"].startswith(f"refused:{VILLAGE_B1}:")]
    assert any(forged["_id"] in row["doc_id"] for row in refusals)
    for code in (TOWN_B, COUNTY_B, CITY):
        assert nodes[code].store.get(forged["_id"]) is None
    assert county_b.cases.load(case_no).state.value != "approved"


def test_only_children_with_a_city_certificate_get_anything(nodes: dict[str, NodeContext], tmp_path: Path) -> None:
    town_url = nodes[VILLAGE_B1].config.parent_url
    assert town_url
    # A village of another township is not a child of 八字哨镇.
    stranger = NodeIdentity.ensure(
        tmp_path / "stranger",
        ZIYANG_VILLAGE,
        "迎风桥第1村",
        "village",
        CertificateAuthority.load(nodes[CITY].config.ca_dir),
    )
    with pytest.raises(LinkRefused, match="403"):
        NodeApiPeer(town_url, stranger, parent=TOWN_B).changes(0, 10)
    # A certificate from another CA, claiming to be the real child.
    rogue_ca = CertificateAuthority.create(tmp_path / "rogue-ca", CITY, "益阳市")
    impostor = NodeIdentity.ensure(tmp_path / "impostor", VILLAGE_B1, "八字哨第1村", "village", rogue_ca)
    with pytest.raises(LinkRefused, match="401"):
        NodeApiPeer(town_url, impostor).changes(0, 10)
    # And the real child is served.
    rows, _ = NodeApiPeer(town_url, nodes[VILLAGE_B1].identity).changes(0, 10)
    assert isinstance(rows, list)


def test_a_village_never_receives_another_villages_case(
    nodes: dict[str, NodeContext], services: Services, city_ca: Path, tmp_path: Path
) -> None:
    other_code = "430903101202"
    other = make_node(services, city_ca, tmp_path / other_code, other_code)
    other.config = NodeConfig(**{**other.config.__dict__, "parent_url": nodes[VILLAGE_B1].config.parent_url})
    nodes = {**nodes, other_code: other}
    case_no = (
        nodes[VILLAGE_B1].bus.handle(accept_case_from_json(ACCEPTOR, accept_body(residence_code=VILLAGE_B1))).case_no
    )
    assert case_no
    sync_all(nodes)
    Link(other).sync()
    assert case_doc_ids(other, case_no) == set()
    assert case_doc_ids(nodes[TOWN_B], case_no)
