"""A hostile village with its real key, certificate and link attacks its parent; every attack is refused.

Real nodes (the fixture of tests/test_sync_link.py: real Flask apps over HTTP, real pouchdb-server
stores): the village 八字哨第1村 signs whatever it likes with its own key and talks to its township
八字哨镇 through the township's real node API. Each refusal is recorded (naming the village) in the
township's quarantine, which the agent reports to city operations; nothing refused is written; the
township and everything above it stay healthy; honest cases converge with identical revisions.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from werkzeug.serving import make_server

from node.adapters.catalogue_doc import signed_catalogue_doc
from node.adapters.pki import CertificateAuthority, NodeIdentity, certificate_doc
from node.bootstrap import NodeContext
from node.config import NodeConfig
from node.domain.catalogue import Catalogue
from node.domain.events import Event, EventType
from node.domain.hlc import Timestamp, wall_clock_ms
from node.entrypoints.web.commands import accept_case_from_json, act_on_case_from_json
from node.runtime.services import free_port
from sync.auth import sign_request, sign_response
from sync.authority import LinkPolicy
from sync.link import GuardedTarget, Link
from sync.node_peer import PREFIX, LinkRefused, NodeApiPeer
from sync.replicator import StorePeer
from tests.conftest import Services, make_node
from tests.test_api_cases import accept_body
from tests.test_sync_link import (
    ACCEPTOR,
    APPROVER,
    CITY,
    COUNTY_A,
    COUNTY_B,
    TOWN_B,
    VILLAGE_B1,
    Served,
    case_doc_ids,
    sync_all,
)

Doc = dict[str, Any]
OTHER_VILLAGE = "430902005001"  # a village of another county: its case numbers are not B1's


@pytest.fixture
def nodes(services: Services, city_ca: Path, tmp_path: Path) -> Iterator[dict[str, NodeContext]]:
    """City, both counties, 八字哨镇 and its (hostile) village, each parent served over HTTP."""
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


class Impostor:
    """A server at the parent's address that answers like a parent, unsigned or signed by another node."""

    def __init__(self, signer: NodeIdentity | None) -> None:
        def app(environ: dict, start_response: Any) -> list[bytes]:
            body = json.dumps({"results": [], "last_seq": 0}).encode()
            headers = [("Content-Type", "application/json")]
            if signer is not None:
                nonce = environ.get("HTTP_X_TONGBAN_NONCE", "")
                headers += list(sign_response(signer, nonce, 200, body).items())
            start_response("200 OK", headers)
            return [body]

        self.port = free_port()
        self.server = make_server("127.0.0.1", self.port, app, threaded=True)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.server.shutdown()


def new_rev(generation: int = 1) -> str:
    return f"{generation}-{secrets.token_hex(16)}"


def signed(
    identity: NodeIdentity, case_no: str, kind: EventType, prev: str | None, payload: dict, hlc: str = ""
) -> Doc:
    event = Event(
        case_no=case_no,
        type=kind,
        actor_id="mallory",
        actor_role="acceptor",
        node=identity.node_code,
        hlc=hlc or Timestamp(wall_clock_ms(), 0, identity.node_code).to_str(),
        prev_hash=prev,
        payload=payload,
    )
    return {**event.with_signature(identity.sign(event.hash)).to_doc(), "_rev": new_rev()}


def push(village: NodeContext, docs: list[Doc]) -> dict:
    """What a hostile child sends straight to its parent's bulk_docs, bypassing its own checks."""
    assert village.config.parent_url
    peer = NodeApiPeer(village.config.parent_url, village.identity)
    return peer._call("POST", "/bulk_docs", body={"docs": docs, "new_edits": False})


def refusals(node: NodeContext, by: str) -> list[dict]:
    return [row for row in node.readmodel.quarantined() if row["doc_id"].startswith(f"refused:{by}:")]


def honest_case(nodes: dict[str, NodeContext]) -> str:
    command = accept_case_from_json(ACCEPTOR, accept_body(residence_code=VILLAGE_B1))
    case_no = nodes[VILLAGE_B1].bus.handle(command).case_no
    assert case_no
    sync_all(nodes)
    nodes[COUNTY_B].bus.handle(act_on_case_from_json(APPROVER, case_no, {"action": "approve"}))
    sync_all(nodes)
    return case_no


def revisions(node: NodeContext, case_no: str) -> dict[str, str]:
    return {doc["_id"]: doc["_rev"] for doc in node.cases.events.case_docs(case_no)}


def assert_converged(nodes: dict[str, NodeContext], case_no: str, state: str) -> None:
    """Every node holds the same revisions of the case's trusted events (quarantined evidence aside)."""
    expected = revisions(nodes[CITY], case_no)
    assert expected
    for code in (VILLAGE_B1, TOWN_B, COUNTY_B):
        condemned = {row["doc_id"] for row in nodes[code].readmodel.quarantined()}
        held = {doc_id: rev for doc_id, rev in revisions(nodes[code], case_no).items() if doc_id not in condemned}
        assert held == expected
        assert nodes[code].cases.load(case_no).state.value == state


def test_a_child_cannot_change_or_delete_what_it_did_not_write(nodes: dict[str, NodeContext]) -> None:
    village, town = nodes[VILLAGE_B1], nodes[TOWN_B]
    case_no = honest_case(nodes)
    docs = village.cases.events.case_docs(case_no)
    approved = next(d for d in docs if d["type"] == "approved")
    accepted = next(d for d in docs if d["type"] == "accepted")
    catalogue = village.store.get("catalogue")
    county_cert = next(d for d in town.store.all_docs("cert:", "cert;") if d["node"] == COUNTY_B)
    catalogue_rev, cert_before = town.store.get("catalogue")["_rev"], dict(county_cert)
    attacks = [
        # a decision turned around: a new revision of the county's approval
        {**approved, "_rev": new_rev(2), "type": "rejected", "payload": {"reason": "伪造"}},
        # a deletion of the county's approval (folds the case back to accepted)
        {"_id": approved["_id"], "_rev": new_rev(2), "_deleted": True},
        # even its own first event is written once and never deleted
        {"_id": accepted["_id"], "_rev": new_rev(2), "_deleted": True},
        # a catalogue revision that would travel to the city and everywhere
        {**catalogue, "_rev": new_rev(50), "note": "被篡改"},
        # the county's certificate swapped for the village's own: the county's events would be quarantined
        {
            **county_cert,
            "_rev": new_rev(1),
            "pem": certificate_doc(village.identity.certificate_pem)["pem"],
        },
        # another node's heartbeat, a design document, an unknown namespace
        {"_id": f"heartbeat:{COUNTY_B}", "_rev": new_rev(3), "node": COUNTY_B, "at": time.time()},
        {"_id": "_design/evil", "_rev": new_rev(1), "views": {}},
        {"_id": "settings", "_rev": new_rev(1), "admin": True},
    ]
    answer = push(village, attacks)
    assert answer["refused"] == len(attacks)
    assert len(refusals(town, VILLAGE_B1)) == len(attacks)
    # Nothing was written at the township.
    assert town.store.get(approved["_id"])["_rev"] == approved["_rev"]
    assert town.store.get(accepted["_id"])["_rev"] == accepted["_rev"]
    assert town.store.get("catalogue")["_rev"] == catalogue_rev
    assert town.store.get(county_cert["_id"]) == cert_before
    assert town.store.get("settings") is None
    assert town.store.get(f"heartbeat:{COUNTY_B}") is None
    # The federation stays healthy and the honest case is the same everywhere.
    sync_all(nodes)
    assert_converged(nodes, case_no, "approved")


def test_squatted_numbers_wild_clocks_and_path_injection_are_refused(
    nodes: dict[str, NodeContext], tmp_path: Path
) -> None:
    village, town = nodes[VILLAGE_B1], nodes[TOWN_B]
    case_no = honest_case(nodes)
    payload = dict(village.cases.events.case_docs(case_no)[0]["payload"])
    now = wall_clock_ms()
    squat = signed(village.identity, f"{OTHER_VILLAGE}-20261201-1", EventType.ACCEPTED, None, payload)
    year_9000 = signed(
        village.identity,
        f"{VILLAGE_B1}-90000101-1",
        EventType.ACCEPTED,
        None,
        payload,
        hlc=Timestamp(221_845_392_000_000, 0, VILLAGE_B1).to_str(),
    )
    past_9999 = signed(village.identity, f"{VILLAGE_B1}-20261201-77", EventType.ACCEPTED, None, payload)
    past_9999["hlc"] = f"9999999999999999-0000-{VILLAGE_B1}"
    past_9999["_id"] = f"event:{past_9999['case_no']}:{past_9999['hlc']}"
    injected = signed(village.identity, f"{VILLAGE_B1}-20261201-78", EventType.ACCEPTED, None, payload)
    injected["signature"]["cert_sha256"] = "../../_design/x/_view/y?"
    foreign_target = signed(
        village.identity, f"{VILLAGE_B1}-20261201-79", EventType.ACCEPTED, None, {**payload, "handling_node": "X"}
    )
    attacks = [squat, year_9000, past_9999, injected, foreign_target]
    assert push(village, attacks)["refused"] == len(attacks)
    reasons = {row["doc_id"].split(":", 2)[2].rsplit("#", 1)[0]: row["reason"] for row in refusals(town, VILLAGE_B1)}
    assert "not issued by" in reasons[squat["_id"]]
    assert "ahead of this node" in reasons[year_9000["_id"]]
    assert "9999" in reasons[past_9999["_id"]]
    assert "fingerprint" in reasons[injected["_id"]]
    assert "not a node" in reasons[foreign_target["_id"]]
    for doc in attacks:
        assert town.store.get(doc["_id"]) is None

    # Had they reached a store anyway (an older node, an insider), they are quarantined, never a crash.
    squatter = NodeIdentity.ensure(
        tmp_path / "squatter", "430903101202", "八字哨第2村", "village", CertificateAuthority.load(town.config.ca_dir)
    )
    town.cases.events.publish_certificate(squatter.certificate_pem)
    # Another village signs a first event for B1's number, stamped before B1's real one.
    first_hlc = Timestamp(now - 10**9, 0, squatter.node_code).to_str()
    genesis_squat = signed(
        squatter, case_no, EventType.ACCEPTED, None, payload | {"accepting_node": squatter.node_code}, hlc=first_hlc
    )
    town.store.bulk_docs([past_9999, injected, genesis_squat, foreign_target], new_edits=False)
    town.projector.catch_up()
    quarantined = {row["doc_id"]: row["reason"] for row in town.readmodel.quarantined()}
    assert "9999" in quarantined[past_9999["_id"]]
    assert "cert_sha256" in quarantined[injected["_id"]]
    assert "not issued by" in quarantined[genesis_squat["_id"]]
    assert "not a node" in quarantined[foreign_target["_id"]]
    case = town.cases.load(case_no)
    assert case.accepting_node == VILLAGE_B1 and case.state.value == "approved"
    sync_all(nodes)
    assert_converged(nodes, case_no, "approved")


def test_an_orphan_event_holds_the_link_up_for_a_bounded_time_only(nodes: dict[str, NodeContext]) -> None:
    village, town, county = nodes[VILLAGE_B1], nodes[TOWN_B], nodes[COUNTY_B]
    sync_all(nodes)
    # An evaluation of a case whose first event never comes: the village's own, well-formed, signed.
    orphan = signed(village.identity, f"{VILLAGE_B1}-20261201-999", EventType.EVALUATED, "a" * 64, {"level": 5})
    assert push(village, [orphan])["refused"] == 0
    town.projector.catch_up()
    honest = village.bus.handle(accept_case_from_json(ACCEPTOR, accept_body(residence_code=VILLAGE_B1))).case_no
    assert honest
    Link(village).sync()
    Link(town).sync()
    # Undecided: the township holds it back and waits (it might be the case's first event still on its way).
    assert county.store.get(orphan["_id"]) is None
    # Once the wait is over the orphan is quarantined with a reason and the link goes on past it.
    town.cases.verifier.max_undecided_s = 0
    sync_all(nodes)
    reasons = {row["doc_id"]: row["reason"] for row in town.readmodel.quarantined()}
    assert "first event did not arrive" in reasons[orphan["_id"]]
    assert county.store.get(orphan["_id"]) is None
    assert case_doc_ids(county, honest) == case_doc_ids(village, honest) != set()


def test_a_withheld_step_shows_the_case_incomplete(nodes: dict[str, NodeContext]) -> None:
    village, county = nodes[VILLAGE_B1], nodes[COUNTY_B]
    case_no = village.bus.handle(accept_case_from_json(ACCEPTOR, accept_body(residence_code=VILLAGE_B1))).case_no
    assert case_no
    sync_all(nodes)
    supplement = {"action": "request_supplement", "reason": "缺少户口簿"}
    county.bus.handle(act_on_case_from_json(APPROVER, case_no, supplement))
    county.bus.handle(act_on_case_from_json(APPROVER, case_no, {"action": "reject", "reason": "逾期未补正"}))
    docs = county.cases.events.case_docs(case_no)
    withheld = next(d for d in docs if d["type"] == "supplement_requested")
    verified = county.cases.verifier.verify_docs(case_no, [d for d in docs if d["_id"] != withheld["_id"]])
    assert verified.incomplete
    case = county.cases.load(case_no)
    assert not case.incomplete
    from node.domain.case import fold

    gap = fold(verified.events)
    assert gap.incomplete and gap.missing_predecessors


def test_transport_replays_audience_oversize_and_an_impostor_parent(nodes: dict[str, NodeContext]) -> None:
    village = nodes[VILLAGE_B1]
    url = village.config.parent_url
    assert url
    target = f"{PREFIX}/changes?since=0&limit=5"
    headers = sign_request(village.identity, "GET", target, b"", TOWN_B)
    first = requests.get(url + target, headers=headers, timeout=30)
    assert first.status_code == 200
    replayed = requests.get(url + target, headers=headers, timeout=30)
    assert replayed.status_code == 401 and "replay" in replayed.json()["message_en"]
    # Bad query values are a 400 naming the parameter (the audience defaults to this node's parent).
    for query, status in (("since=bad", 400), ("since=0&limit=x", 400), ("since=-1", 400), ("since=0", 200)):
        path = f"{PREFIX}/changes?{query}"
        response = requests.get(url + path, headers=sign_request(village.identity, "GET", path, b""), timeout=30)
        assert response.status_code == status, query
        assert status == 200 or response.json()["error"] == "invalid_query"
    # A request signed for another node is refused there.
    wrong_audience = sign_request(village.identity, "GET", target, b"", COUNTY_B)
    assert requests.get(url + target, headers=wrong_audience, timeout=30).status_code == 401
    # The size is checked from the header before the body is read.
    big = b"[" + b" " * (17 * 1024 * 1024) + b"]"
    bulk = f"{PREFIX}/bulk_docs"
    too_big = requests.post(
        url + bulk, data=big, headers=sign_request(village.identity, "POST", bulk, big, TOWN_B), timeout=60
    )
    assert too_big.status_code == 413
    anonymous = requests.post(url + bulk, data=big, timeout=60)
    assert anonymous.status_code == 401
    # The child takes answers from its parent only: an impostor at the parent's address is refused,
    # whether it answers unsigned or signs with another node's real key.
    for signer in (None, nodes[COUNTY_A].identity):
        impostor = Impostor(signer)
        try:
            with pytest.raises(LinkRefused, match="not from the parent"):
                NodeApiPeer(impostor.url, village.identity).changes(0, 5)
        finally:
            impostor.close()
    # And the honest link still works.
    rows, _ = NodeApiPeer(url, village.identity).changes(0, 5)
    assert isinstance(rows, list)


def test_a_child_refuses_what_its_parent_may_not_send(nodes: dict[str, NodeContext]) -> None:
    village, town = nodes[VILLAGE_B1], nodes[TOWN_B]
    case_no = honest_case(nodes)
    approved = next(d for d in town.cases.events.case_docs(case_no) if d["type"] == "approved")
    guard = GuardedTarget(StorePeer(village.store), village, TOWN_B)
    bad = [
        {**approved, "_rev": new_rev(2), "type": "rejected"},
        {"_id": approved["_id"], "_rev": new_rev(2), "_deleted": True},
        {"_id": f"heartbeat:{CITY}", "_rev": new_rev(1), "node": CITY, "at": 0},
        {"_id": "_design/evil", "_rev": new_rev(1)},
    ]
    # A catalogue not signed by the city: unsigned, or signed by the township itself.
    real = town.store.get("catalogue")
    forged = {**real, "_rev": new_rev(int(real["_rev"].split("-")[0]) + 1), "note": "伪造的目录"}
    bad.append({k: v for k, v in forged.items() if k not in ("signature", "certificate")})
    forged_signed = signed_catalogue_doc(Catalogue.from_dict(forged), town.identity)
    bad.append({**forged_signed, "_rev": new_rev(int(real["_rev"].split("-")[0]) + 1)})
    assert guard.bulk_docs(bad) == []
    assert guard.refused == len(bad)
    assert village.store.get("catalogue")["_rev"] == real["_rev"]
    # Had a forged catalogue reached the store anyway, the node keeps using the city's.
    village.store.put({**forged_signed, "_rev": real["_rev"]})
    assert village.published_catalogue.latest().note != "伪造的目录"
    assert village.store.get(approved["_id"])["_rev"] == approved["_rev"]
    assert len(refusals(village, TOWN_B)) == len(bad)
    assert village.cases.load(case_no).state.value == "approved"


# --- fuzz: the sync API never fails, never writes outside the child's namespace ---------------------

_ids = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["catalogue", "_design/x", f"heartbeat:{COUNTY_B}", f"heartbeat:{VILLAGE_B1}", "cert:x:y"]),
    st.builds(lambda s: f"event:{s}", st.text(max_size=60)),
    st.builds(
        lambda n, w: f"event:{n}-20261201-1:{w:016d}-0000-{n}",
        st.sampled_from([VILLAGE_B1, COUNTY_B, CITY]),
        st.integers(0, 10**16 - 1),
    ),
)
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
_docs = st.builds(
    lambda i, r, deleted, extra: {"_id": i, "_rev": r, **({"_deleted": True} if deleted else {}), **extra},
    _ids,
    st.one_of(st.text(max_size=40), st.builds(lambda g: new_rev(g), st.integers(1, 5))),
    st.booleans(),
    st.dictionaries(
        st.sampled_from(["doc_type", "node", "hlc", "case_no", "type", "pem", "payload", "x"]), _json, max_size=5
    ),
)
_requests = st.one_of(
    st.tuples(st.just("POST"), st.just("/bulk_docs"), st.builds(lambda d: {"docs": d}, st.lists(_docs, max_size=6))),
    st.tuples(st.just("POST"), st.just("/bulk_docs"), _json),
    st.tuples(st.just("POST"), st.just("/revs_diff"), st.one_of(_json, st.dictionaries(_ids, st.lists(st.text())))),
    st.tuples(
        st.just("POST"),
        st.just("/bulk_get"),
        st.one_of(
            _json,
            st.builds(
                lambda d: {"docs": d},
                st.lists(st.fixed_dictionaries({"id": _ids}, optional={"rev": st.text(max_size=40)}), max_size=5),
            ),
        ),
    ),
    st.tuples(
        st.just("GET"),
        st.builds(
            lambda s, n: f"/changes?since={s}&limit={n}",
            st.text(alphabet='0123456789[]"{}ab', max_size=8),
            st.text(alphabet="-0123456789x", max_size=6),
        ),
        st.none(),
    ),
    st.tuples(
        st.just("PUT"),
        st.builds(lambda n: f"/local/{n}", st.text(alphabet="abc-._%2F", min_size=1, max_size=12)),
        _json,
    ),
)


def test_fuzzing_the_sync_api_never_fails_and_never_writes_outside_the_childs_namespace(
    nodes: dict[str, NodeContext],
) -> None:
    village, town = nodes[VILLAGE_B1], nodes[TOWN_B]
    url = village.config.parent_url
    assert url
    before = {row["id"]: row["value"]["rev"] for row in town.store.all_docs("", "\ufff0", include_docs=False)}
    policy = LinkPolicy(town.tree, town.identity.ca_pem)

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(_requests)
    def one(request: tuple[str, str, Any]) -> None:
        method, path, body = request
        data = b"" if body is None else json.dumps(body).encode()
        target = PREFIX + path
        headers = {"Content-Type": "application/json", **sign_request(village.identity, method, target, data, TOWN_B)}
        answer = requests.request(method, url + target, data=data or None, headers=headers, timeout=60)
        assert answer.status_code < 500, answer.text[:300]

    one()
    after = {row["id"]: row["value"]["rev"] for row in town.store.all_docs("", "\ufff0", include_docs=False)}
    for doc_id, rev in after.items():
        if before.get(doc_id) != rev:
            assert policy.child_may_author(doc_id, VILLAGE_B1), doc_id
    assert town.store.reachable()
    sync_all(nodes)
