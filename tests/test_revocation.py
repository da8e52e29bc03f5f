"""Certificates over time: renewal keeps old events valid, an expired or revoked certificate signs nothing new.

Real nodes over HTTP (as in tests/test_hostile_child.py), under a city CA dated back two months so that
a village can hold a certificate that has already expired. The village signs with its real key under
its old certificate, its renewed one and, after the city revoked it (``tongban ca revoke``), its
revoked one; its parent and everything above it verify each event against the certificate valid
when the event was signed and the city CA's revocation list (``crl``), which only the city publishes
and no node takes back to an older number.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509

from node.adapters.pki import CertificateAuthority, NodeIdentity, certificate_doc
from node.adapters.pki.common import load_private_key, public_pem
from node.adapters.pki.revocation import CRL_DOC, crl_problem, parse_crl
from node.bootstrap import NodeContext
from node.config import NodeConfig
from node.domain.errors import DomainError
from node.domain.events import Event, EventType
from node.domain.hlc import Timestamp
from node.entrypoints import cli
from node.entrypoints.web.commands import accept_case_from_json, act_on_case_from_json
from node.runtime.provisioning import ensure_city_authority
from sync.link import GuardedTarget
from sync.replicator import StorePeer
from tests.conftest import Services, make_node
from tests.test_api_cases import accept_body
from tests.test_hostile_child import assert_converged, new_rev, push, refusals, signed
from tests.test_sync_link import (
    ACCEPTOR,
    APPROVER,
    CITY,
    COUNTY_A,
    COUNTY_B,
    TOWN_B,
    VILLAGE_B1,
    Served,
    sync_all,
)

Doc = dict


@pytest.fixture(scope="module")
def dated_ca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A city CA valid since two months ago, so node certificates can start (and end) in the past."""
    ca_dir = tmp_path_factory.mktemp("dated-ca")
    tree_root = CITY
    CertificateAuthority.create(ca_dir, tree_root, "益阳市", not_before=datetime.now(UTC) - timedelta(days=60))
    ensure_city_authority(ca_dir)
    return ca_dir


@pytest.fixture
def nodes(services: Services, dated_ca: Path, tmp_path: Path) -> Iterator[dict[str, NodeContext]]:
    built: dict[str, NodeContext] = {}
    served: dict[str, Served] = {}
    for code in (CITY, COUNTY_A, COUNTY_B, TOWN_B, VILLAGE_B1):
        node = make_node(services, dated_ca, tmp_path / code, code)
        parent = node.tree.parent(code)
        if parent:
            node.config = NodeConfig(**{**node.config.__dict__, "parent_url": served[parent].url})
        built[code] = node
        if code != VILLAGE_B1:
            served[code] = Served(node)
    yield built
    for server in served.values():
        server.close()


def identity_with(village: NodeContext, ca: CertificateAuthority, start: datetime, days: int) -> NodeIdentity:
    """The village's own key under another certificate of the city CA (valid from ``start`` for ``days``)."""
    key = load_private_key(village.identity.directory / "node.key")
    name, tier = village.identity.node_name, village.identity.tier
    pem = ca.issue_node_certificate(VILLAGE_B1, name, tier, public_pem(key.public_key()), days, not_before=start)
    return NodeIdentity(village.identity.directory, key, x509.load_pem_x509_certificate(pem), ca.certificate)


def at(moment: datetime) -> str:
    return Timestamp(int(moment.timestamp() * 1000), 0, VILLAGE_B1).to_str()


def new_case(identity: NodeIdentity, serial: int, payload: dict, moment: datetime) -> list[Doc]:
    """A first event and its routing to the county, both signed by ``identity`` at ``moment``."""
    case_no = f"{VILLAGE_B1}-{moment:%Y%m%d}-{serial}"
    accepted = signed(identity, case_no, EventType.ACCEPTED, None, payload, hlc=at(moment))
    routed = signed(
        identity,
        case_no,
        EventType.ROUTED,
        Event.from_doc(accepted).hash,
        {"handling_node": COUNTY_B},
        hlc=at(moment + timedelta(seconds=1)),
    )
    return [accepted, routed]


def cert_docs(*identities: NodeIdentity) -> list[Doc]:
    return [{**certificate_doc(i.certificate_pem), "_rev": new_rev()} for i in identities]


def reasons(node: NodeContext) -> dict[str, str]:
    return {row["doc_id"]: row["reason"] for row in node.readmodel.quarantined()}


def honest_payload(nodes: dict[str, NodeContext]) -> tuple[str, dict]:
    village = nodes[VILLAGE_B1]
    case_no = village.bus.handle(accept_case_from_json(ACCEPTOR, accept_body(residence_code=VILLAGE_B1))).case_no
    assert case_no
    sync_all(nodes)
    first = next(d for d in village.cases.events.case_docs(case_no) if d["type"] == "accepted")
    return case_no, dict(first["payload"])


def test_past_expiry_a_renewed_certificate_keeps_old_events_and_the_expired_one_signs_nothing_new(
    nodes: dict[str, NodeContext], dated_ca: Path
) -> None:
    village, town, county, city = nodes[VILLAGE_B1], nodes[TOWN_B], nodes[COUNTY_B], nodes[CITY]
    _, payload = honest_payload(nodes)
    ca = CertificateAuthority.load(dated_ca)
    now = datetime.now(UTC)
    # The village's first certificate ran from ten days ago to five days ago; it was renewed then.
    old = identity_with(village, ca, now - timedelta(days=10), 5)
    renewed = identity_with(village, ca, now - timedelta(days=5), 400)
    before_expiry = new_case(old, 11, payload, now - timedelta(days=7))
    after_renewal = new_case(renewed, 12, payload, now - timedelta(minutes=1))
    # The clock has moved past the old certificate's expiry: it still signs, but nobody trusts it now.
    expired = new_case(old, 13, payload, now - timedelta(minutes=1))
    # Both certificates are kept (certificate documents are written once, one per fingerprint).
    assert push(village, cert_docs(old, renewed))["refused"] == 0
    assert push(village, before_expiry + after_renewal + expired)["refused"] == 0
    town.projector.catch_up()
    found = reasons(town)
    for doc in before_expiry + after_renewal:
        assert doc["_id"] not in found
    assert "expired" in found[expired[0]["_id"]]
    sync_all(nodes)
    for docs in (before_expiry, after_renewal):
        case_no = docs[0]["case_no"]
        assert city.cases.load(case_no).handling_node == COUNTY_B
        county.bus.handle(act_on_case_from_json(APPROVER, case_no, {"action": "approve"}))
    sync_all(nodes)
    for docs in (before_expiry, after_renewal):
        assert_converged(nodes, docs[0]["case_no"], "approved")
    for node in (county, city):
        assert node.store.get(expired[0]["_id"]) is None
    with pytest.raises(DomainError):
        town.cases.load(expired[0]["case_no"])
    for code in (TOWN_B, COUNTY_B, CITY):
        held = {d["_id"] for d in nodes[code].store.all_docs(f"cert:{VILLAGE_B1}:", f"cert:{VILLAGE_B1}:\ufff0")}
        assert {f"cert:{VILLAGE_B1}:{i.cert_sha256}" for i in (old, renewed, village.identity)} <= held


def revoke(city: NodeContext, *args: str) -> int:
    return cli.main(["ca", "revoke", *args, "--config", str(city.config.config_path)])


def test_a_revoked_node_keeps_its_earlier_events_and_its_later_ones_are_quarantined_everywhere(
    nodes: dict[str, NodeContext],
) -> None:
    village, town, county, city = nodes[VILLAGE_B1], nodes[TOWN_B], nodes[COUNTY_B], nodes[CITY]
    earlier, payload = honest_payload(nodes)
    county.bus.handle(act_on_case_from_json(APPROVER, earlier, {"action": "approve"}))
    sync_all(nodes)
    # Only the city revokes; an unknown certificate is nothing to revoke.
    assert revoke(town, "--node", VILLAGE_B1) == 2
    assert revoke(city, "--sha", "ab" * 32) == 1
    assert revoke(city, "--node", VILLAGE_B1, "--reason", "村委会电脑被盗") == 0
    crl = city.store.get(CRL_DOC)
    assert crl_problem(crl, city.identity.ca_pem) is None
    entry = parse_crl(crl).revoked(village.identity.cert_sha256)
    assert entry is not None and entry.reason == "村委会电脑被盗"
    time.sleep(0.01)

    # The thief signs a case right away and pushes it before the revocation list reached the township:
    # trusted there for now, it is quarantined wherever the list arrives, and never shown as a case.
    raced = new_case(village.identity, 21, payload, datetime.now(UTC))
    assert push(village, raced)["refused"] == 0
    town.projector.catch_up()
    assert raced[0]["_id"] not in reasons(town)
    sync_all(nodes)
    for code in (VILLAGE_B1, TOWN_B, COUNTY_B, CITY):
        node = nodes[code]
        assert node.store.get(CRL_DOC)["_rev"] == crl["_rev"]
        if code in (TOWN_B, COUNTY_B) or node.store.get(raced[0]["_id"]) is not None:
            assert reasons(node)[raced[0]["_id"]].startswith("revoked")
            with pytest.raises(DomainError):
                node.cases.load(raced[0]["case_no"])

    # Once the list is there, a later event is quarantined on arrival and goes no further.
    later = new_case(village.identity, 22, payload, datetime.now(UTC))
    assert push(village, later)["refused"] == 0
    town.projector.catch_up()
    assert reasons(town)[later[0]["_id"]].startswith("revoked")
    sync_all(nodes)
    assert county.store.get(later[0]["_id"]) is None
    # An event signed before the revocation stays valid, as does the whole earlier case.
    backdated = new_case(village.identity, 23, payload, entry.revoked_at - timedelta(seconds=30))
    assert push(village, backdated)["refused"] == 0
    sync_all(nodes)
    assert city.cases.load(backdated[0]["case_no"]).handling_node == COUNTY_B
    assert_converged(nodes, earlier, "approved")

    # A child never sends the revocation list; a parent never takes a node back to an older one.
    assert push(village, [{**crl, "_rev": new_rev(9)}])["refused"] == 1
    assert any("revocation list" in row["reason"] for row in refusals(town, VILLAGE_B1))
    assert revoke(city, "--sha", nodes[COUNTY_A].identity.cert_sha256, "--reason", "retired") == 0
    sync_all(nodes)
    newer = village.store.get(CRL_DOC)
    assert parse_crl(newer).number == 2
    guard = GuardedTarget(StorePeer(village.store), village, TOWN_B)
    generation = int(newer["_rev"].split("-")[0])
    assert guard.bulk_docs([{**crl, "_rev": new_rev(generation + 3)}]) == []
    assert guard.refused == 1
    assert any("older than 2" in row["reason"] for row in refusals(village, TOWN_B))
    assert village.store.get(CRL_DOC)["_rev"] == newer["_rev"]


def test_a_forged_or_altered_revocation_list_is_refused_and_never_used(
    nodes: dict[str, NodeContext], dated_ca: Path
) -> None:
    village, city = nodes[VILLAGE_B1], nodes[CITY]
    sync_all(nodes)  # the county's certificate reaches the city
    assert revoke(city, "--node", COUNTY_A, "--reason", "retired") == 0
    sync_all(nodes)
    real = village.store.get(CRL_DOC)
    assert real and parse_crl(real).revoked(nodes[COUNTY_A].identity.cert_sha256)
    generation = int(real["_rev"].split("-")[0])
    # Entries dropped from the CA's list (the signature no longer holds), a list signed by the city
    # node's key instead of the CA's, and one whose shape is wrong.
    altered = {**real, "_rev": new_rev(generation + 1), "number": 5, "revoked": []}
    by_node = {k: v for k, v in real.items() if k != "signature"} | {"number": 6, "revoked": []}
    by_node["signature"] = city.identity.sign("ab" * 32)
    by_node["_rev"] = new_rev(generation + 1)
    malformed = {**real, "_rev": new_rev(generation + 1), "revoked": [{"cert_sha256": "../x", "node": "?"}]}
    guard = GuardedTarget(StorePeer(village.store), village, TOWN_B)
    for doc in (altered, by_node, malformed):
        assert guard.bulk_docs([doc]) == []
    assert guard.refused == 3
    rows = [row["reason"] for row in refusals(village, TOWN_B)]
    assert sum("revocation list" in reason for reason in rows) == 3
    assert village.store.get(CRL_DOC)["_rev"] == real["_rev"]
    # Had one reached the store anyway, the node keeps the last list that verified.
    verifier = village.cases.verifier
    assert verifier.revoked_nodes() == [COUNTY_A]
    village.store.put({**altered, "_rev": real["_rev"]})
    assert verifier.revoked_nodes() == [COUNTY_A]
