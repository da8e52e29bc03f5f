"""Routing is checked against the catalogue version each event names; catalogue versions cannot be replayed.

Real nodes over HTTP (the fixture of tests/test_hostile_child.py): the village 八字哨第1村 signs, with its
real key and certificate, first events and transfers that the catalogue does not route that way, or
that name a catalogue version nobody has; its parent verifies each against the city-signed version it
names (kept as ``catalogue:v<N>`` documents that travel everywhere) and quarantines what disagrees,
with a reason, never passing it on. A parent that sends an older catalogue is refused by its child.
Honest cases, under the old version and the new one, converge everywhere.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from node.adapters.catalogue_doc import catalogue_problem, signed_catalogue_doc, version_doc_id
from node.bootstrap import NodeContext
from node.config import NodeConfig
from node.domain.catalogue import Catalogue
from node.domain.errors import DomainError
from node.domain.events import CATALOGUE_VERSION, Event, EventType
from node.domain.hlc import Timestamp
from node.entrypoints.web.commands import accept_case_from_json, act_on_case_from_json
from sync.link import GuardedTarget
from sync.replicator import StorePeer
from tests.conftest import Services, make_node
from tests.test_api_cases import DIBAO, accept_body
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

# A matter handled at village level (residence): the village is the holder of its own residents' cases.
VILLAGE_MATTER = "430900-GG-0002"


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


def quarantine_reasons(node: NodeContext) -> dict[str, str]:
    return {row["doc_id"]: row["reason"] for row in node.readmodel.quarantined()}


def first_event(node: NodeContext, case_no: str) -> dict:
    return next(d for d in node.cases.events.case_docs(case_no) if d["type"] == "accepted")


def delegate_dibao_to_townships(city: NodeContext) -> Catalogue:
    """The city publishes version 2: county B's 低保 cases are handled by its townships from now on."""
    current = city.published_catalogue.latest()
    newer = current.with_implementation_list({COUNTY_B: [{"matter_code": DIBAO, "authority_tier": "township"}]})
    city.published_catalogue.publish(newer)
    return newer


def test_honest_cases_name_their_version_and_are_checked_by_it_after_a_new_version(
    nodes: dict[str, NodeContext],
) -> None:
    village, town, county, city = nodes[VILLAGE_B1], nodes[TOWN_B], nodes[COUNTY_B], nodes[CITY]
    old = village.bus.handle(accept_case_from_json(ACCEPTOR, accept_body(residence_code=VILLAGE_B1))).case_no
    assert old
    assert first_event(village, old)["payload"][CATALOGUE_VERSION] == 1
    sync_all(nodes)
    assert county.cases.load(old).handling_node == COUNTY_B
    # Every kept version travels everywhere, signed by the city.
    for code in (VILLAGE_B1, TOWN_B, COUNTY_A, COUNTY_B):
        kept = nodes[code].store.get(version_doc_id(1))
        assert kept and catalogue_problem(kept, nodes[code].identity.ca_pem, CITY) is None

    newer = delegate_dibao_to_townships(city)
    sync_all(nodes)
    assert village.published_catalogue.latest().version == newer.version == 2
    assert village.store.get(version_doc_id(2))
    new = village.bus.handle(accept_case_from_json(ACCEPTOR, accept_body(residence_code=VILLAGE_B1))).case_no
    assert new
    assert first_event(village, new)["payload"][CATALOGUE_VERSION] == 2
    sync_all(nodes)
    # The new case goes to the township under version 2; the old one, checked by version 1, stays at the county.
    assert town.cases.load(new).handling_node == TOWN_B
    town.bus.handle(act_on_case_from_json(APPROVER, new, {"action": "approve"}))
    county.bus.handle(act_on_case_from_json(APPROVER, old, {"action": "approve"}))
    sync_all(nodes)
    for case_no in (old, new):
        assert_converged(nodes, case_no, "approved")
    assert not quarantine_reasons(town) and not quarantine_reasons(city)

    # A node rebuilding its read model re-verifies both by the versions they name.
    town.projector.rebuild()
    assert town.cases.load(old).handling_node == COUNTY_B
    assert town.cases.load(new).state.value == "approved"


def test_first_events_and_transfers_the_catalogue_does_not_route_are_quarantined(
    nodes: dict[str, NodeContext],
) -> None:
    village, town, county, city = nodes[VILLAGE_B1], nodes[TOWN_B], nodes[COUNTY_B], nodes[CITY]
    honest = village.bus.handle(accept_case_from_json(ACCEPTOR, accept_body(residence_code=VILLAGE_B1))).case_no
    assert honest
    sync_all(nodes)
    payload = dict(first_event(village, honest)["payload"])

    # 低保 is a county matter: the village keeps the case to itself, or hands it to another county.
    kept_here = signed(
        village.identity,
        f"{VILLAGE_B1}-20261201-501",
        EventType.ACCEPTED,
        None,
        payload | {"handling_node": VILLAGE_B1},
    )
    elsewhere = signed(
        village.identity, f"{VILLAGE_B1}-20261201-502", EventType.ACCEPTED, None, payload | {"handling_node": COUNTY_A}
    )
    # Naming a version that says something else does not help: version 1 is what it names.
    unversioned = {k: v for k, v in payload.items() if k != CATALOGUE_VERSION}
    legacy_wrong = signed(
        village.identity,
        f"{VILLAGE_B1}-20261201-503",
        EventType.ACCEPTED,
        None,
        unversioned | {"handling_node": TOWN_B},
    )
    # A matter the village really holds, transferred up to the city, which does not handle it.
    own = signed(
        village.identity,
        f"{VILLAGE_B1}-20261201-504",
        EventType.ACCEPTED,
        None,
        payload | {"matter_code": VILLAGE_MATTER, "handling_node": VILLAGE_B1, "location_code": VILLAGE_B1},
    )
    bad_transfer = signed(
        village.identity,
        own["case_no"],
        EventType.TRANSFERRED,
        Event.from_doc(own).hash,
        {"new_handling_node": CITY, "reason": "上交", CATALOGUE_VERSION: 1},
        hlc=Timestamp(Timestamp.parse(own["hlc"]).wall_ms + 1000, 0, VILLAGE_B1).to_str(),
    )
    # The legacy form of an honest case (no version named) still verifies: it agrees with version 1.
    legacy_honest = signed(village.identity, f"{VILLAGE_B1}-20261201-505", EventType.ACCEPTED, None, unversioned)
    docs = [kept_here, elsewhere, legacy_wrong, own, bad_transfer, legacy_honest]
    # The link takes them (the writer is the child, every target a node); verification decides.
    assert push(village, docs)["refused"] == 0
    town.projector.catch_up()
    reasons = quarantine_reasons(town)
    assert "catalogue version 1 routes matter" in reasons[kept_here["_id"]]
    assert "catalogue version 1 routes matter" in reasons[elsewhere["_id"]]
    assert "agrees with no catalogue version" in reasons[legacy_wrong["_id"]]
    assert "does not handle matter" in reasons[bad_transfer["_id"]]
    assert own["_id"] not in reasons and legacy_honest["_id"] not in reasons
    assert town.cases.load(own["case_no"]).handling_node == VILLAGE_B1  # the transfer was never applied
    assert town.readmodel.held_counts().quarantined == 4
    sync_all(nodes)
    # Nothing condemned travels on; the honest ones do.
    for doc in (kept_here, elsewhere, legacy_wrong, bad_transfer):
        assert county.store.get(doc["_id"]) is None and city.store.get(doc["_id"]) is None
    assert city.cases.load(legacy_honest["case_no"]).handling_node == COUNTY_B
    assert_converged(nodes, honest, "accepted")

    # The acceptance command stamps the version; a transfer command refuses a target that does not handle it.
    county.bus.handle(act_on_case_from_json(APPROVER, honest, {"action": "receive"}))
    downward = {"action": "transfer", "new_handling_node": TOWN_B, "reason": "下放"}
    with pytest.raises(DomainError) as refused:
        county.bus.handle(act_on_case_from_json(APPROVER, honest, downward))
    assert refused.value.code == "transfer_not_allowed"
    county.bus.handle(
        act_on_case_from_json(APPROVER, honest, {"action": "transfer", "new_handling_node": COUNTY_A, "reason": "迁出"})
    )
    transfer = next(d for d in county.cases.events.case_docs(honest) if d["type"] == "transferred")
    assert transfer["payload"][CATALOGUE_VERSION] == 1
    sync_all(nodes)
    assert nodes[COUNTY_A].cases.load(honest).handling_node == COUNTY_A


def test_an_unknown_version_waits_from_its_arrival_then_is_quarantined_and_cleared_when_the_version_comes(
    nodes: dict[str, NodeContext],
) -> None:
    village, town, county, city = nodes[VILLAGE_B1], nodes[TOWN_B], nodes[COUNTY_B], nodes[CITY]
    honest = village.bus.handle(accept_case_from_json(ACCEPTOR, accept_body(residence_code=VILLAGE_B1))).case_no
    assert honest
    sync_all(nodes)
    payload = dict(first_event(village, honest)["payload"])
    # Stamped three minutes ago by the village's clock, naming version 2, which the city has not published.
    stamped = time.time_ns() // 1_000_000 - 180_000
    ahead = signed(
        village.identity,
        f"{VILLAGE_B1}-20261201-601",
        EventType.ACCEPTED,
        None,
        payload | {CATALOGUE_VERSION: 2, "handling_node": TOWN_B},
        hlc=f"{stamped:016d}-0000-{VILLAGE_B1}",
    )
    verifier = town.cases.verifier
    verifier.max_undecided_s = 60  # shorter than the event's own age: the wait counts from its arrival
    assert push(village, [ahead])["refused"] == 0
    town.projector.catch_up()
    sync_all(nodes)
    assert ahead["_id"] not in quarantine_reasons(town)  # undecided, not condemned
    assert county.store.get(ahead["_id"]) is None  # and held back
    first_seen = verifier.first_seen(ahead["_id"])
    assert time.time() - first_seen < 120

    # Once it has waited longer than allowed since it arrived, it is quarantined and the link goes past it.
    real_now = verifier.now
    verifier.now = lambda: real_now() + 120
    try:
        sync_all(nodes)
        reason = quarantine_reasons(town)[ahead["_id"]]
        assert reason.startswith("undecided: ") and "catalogue version 2" in reason
        assert county.store.get(ahead["_id"]) is None
        assert_converged(nodes, honest, "accepted")

        # The city publishes version 2 (delegating 低保 to the townships): the event is trusted after all,
        # its "undecided" quarantine row goes, and the township's link offers it again (its checkpoint
        # had gone past it).
        delegate_dibao_to_townships(city)
        sync_all(nodes)
        assert ahead["_id"] not in quarantine_reasons(town)
        assert town.cases.load(ahead["case_no"]).handling_node == TOWN_B
        sync_all(nodes)
        for node in (county, city):
            assert node.cases.load(ahead["case_no"]).handling_node == TOWN_B
        assert (town.store.get_local("trust-reoffer") or {}).get("ids") == []
    finally:
        verifier.now = real_now


def test_catalogue_versions_come_only_from_the_parent_and_never_go_back(
    nodes: dict[str, NodeContext], tmp_path: Path
) -> None:
    village, town, city = nodes[VILLAGE_B1], nodes[TOWN_B], nodes[CITY]
    sync_all(nodes)
    v1_pointer, v1_kept = town.store.get("catalogue"), town.store.get(version_doc_id(1))
    # A child never sends catalogue versions, real or forged.
    forged = signed_catalogue_doc(Catalogue.from_dict({**v1_kept, "version": 7}), village.identity, version_doc_id(7))
    attacks = [
        {**v1_kept, "_rev": new_rev(2)},
        {**forged, "_rev": new_rev(1)},
        {**v1_pointer, "_id": version_doc_id(3), "_rev": new_rev(1)},
    ]
    assert push(village, attacks)["refused"] == len(attacks)
    assert town.store.get(version_doc_id(7)) is None and town.store.get(version_doc_id(3)) is None
    assert len(refusals(town, VILLAGE_B1)) == len(attacks)

    delegate_dibao_to_townships(city)
    sync_all(nodes)
    assert village.store.get("catalogue")["version"] == 2
    held = village.store.get("catalogue")
    # A (compromised) parent sends the older city-signed version again under a newer revision: refused.
    guard = GuardedTarget(StorePeer(village.store), village, TOWN_B)
    replay = {**v1_pointer, "_rev": new_rev(int(held["_rev"].split("-")[0]) + 5)}
    # The same version 2 again under another revision: nothing to do, nothing refused.
    same = {**held, "_rev": new_rev(int(held["_rev"].split("-")[0]) + 1)}
    # A kept version's document sent again with other content under its id: refused.
    v2_kept = village.store.get(version_doc_id(2))
    swapped = {**v1_kept, "_id": version_doc_id(2), "_rev": new_rev(2)}
    assert guard.bulk_docs([replay, same, swapped]) == []
    assert guard.refused == 2
    rows = {row["doc_id"]: row["reason"] for row in refusals(village, TOWN_B)}
    assert any("older than 2" in reason and "replay" in reason for reason in rows.values())
    assert village.store.get("catalogue")["_rev"] == held["_rev"]
    assert village.store.get(version_doc_id(2))["_rev"] == v2_kept["_rev"]
    assert village.published_catalogue.latest().version == 2
    # Had the older version been written over the newer one anyway, the node keeps using the newer.
    village.store.put({**v1_pointer, "_rev": village.store.get("catalogue")["_rev"]})
    assert village.published_catalogue.latest().version == 2
