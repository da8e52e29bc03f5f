"""Register records as signed documents (real pouchdb-server): authored at the city, routed to the
residence's subtree only, refused when forged or altered, read by a village that never loaded them.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from node.adapters.register_docs import PREFIX, register_hash
from node.bootstrap import NodeContext
from node.domain.registers import generate_population
from node.service_layer.registers import publish_register
from sync.authority import LinkPolicy
from sync.registers import register_visible
from tests.conftest import Services, make_node
from tiers.demo import CITY, HESHAN, HESHAN_VILLAGE, ZIYANG, ZIYANG_TOWN, ZIYANG_VILLAGE, ZIYANG_VILLAGE_2

PER_VILLAGE = 3
VILLAGES = [ZIYANG_VILLAGE, ZIYANG_VILLAGE_2, HESHAN_VILLAGE]  # the demo tree's villages, in tree order


@pytest.fixture(scope="module")
def nodes(services: Services, city_ca: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, NodeContext]:
    root = tmp_path_factory.mktemp("register-docs")
    return {code: make_node(services, city_ca, root / code, code) for code in (CITY, HESHAN, ZIYANG_VILLAGE)}


def resident_of(village: str):
    population = generate_population(VILLAGES, people_per_division=PER_VILLAGE, enterprises_per_division=0)
    return next(p for p in population.people if p.residence_code == village)


def published(node: NodeContext) -> list[dict]:
    return node.store.all_docs(f"{PREFIX}person:", f"{PREFIX}person:\ufff0")


def test_the_city_publishes_and_each_record_goes_to_its_residence_subtree_only(nodes: dict[str, NodeContext]) -> None:
    city = nodes[CITY]
    assert city.registers is not None
    written = publish_register(CITY, city.tree, city.registers, city.identity, people_per_village=PER_VILLAGE)
    docs = published(city)
    assert written == len(docs) > 6
    assert all(doc["author"] == CITY and "name" not in doc and "id_number" not in doc for doc in docs)
    ziyang_doc = next(d for d in docs if d["residence_code"] == ZIYANG_VILLAGE)
    assert register_visible(ziyang_doc["_id"], ZIYANG, city.tree)
    assert register_visible(ziyang_doc["_id"], ZIYANG_TOWN, city.tree)
    assert not register_visible(ziyang_doc["_id"], HESHAN, city.tree)
    # A county authors only its own residents' records.
    heshan = nodes[HESHAN]
    assert heshan.registers is not None
    publish_register(HESHAN, heshan.tree, heshan.registers, heshan.identity, people_per_village=PER_VILLAGE)
    assert {d["residence_code"] for d in published(heshan)} == {HESHAN_VILLAGE}


def test_a_village_reads_a_replicated_record_and_refuses_forged_ones(nodes: dict[str, NodeContext]) -> None:
    city, village = nodes[CITY], nodes[ZIYANG_VILLAGE]
    assert village.registers is not None and village.registers.documents is not None
    docs = [d for d in published(city) if register_visible(d["_id"], ZIYANG_VILLAGE, city.tree)]
    policy = LinkPolicy(village.tree, village.identity.ca_pem)
    accepted, refused = policy.from_parent(docs, ZIYANG, {})
    assert len(accepted) == len(docs) and not refused
    village.store.bulk_docs(accepted, new_edits=False)
    # Certificates go everywhere (sync/routing.py): the city's reaches the village with its documents.
    village.store.bulk_docs(city.store.all_docs("cert:", "cert:\ufff0"), new_edits=False)

    person = resident_of(ZIYANG_VILLAGE)
    assert village.registers.counts()["people"] == 0  # nothing loaded locally: the record comes from its document
    found = village.registers.person(person.id_number)
    assert found is not None and found.name == person.name and found.residence_code == ZIYANG_VILLAGE
    assert village.registers.person(resident_of(HESHAN_VILLAGE).id_number) is None  # not sent here

    # Forgeries and alterations: refused at the link, and unreadable even if written straight into the store.
    original = next(d for d in docs if d["residence_code"] == ZIYANG_VILLAGE)
    by_village = copy.deepcopy(original) | {"author": ZIYANG_VILLAGE}
    moved = copy.deepcopy(original) | {"residence_code": HESHAN_VILLAGE}
    from_child = policy.from_child([copy.deepcopy(original)], ZIYANG_VILLAGE, {})
    assert from_child[0] == [] and "outside" in from_child[1][0].reason
    for forged, why in ((by_village, "may not author"), (moved, "differs from its id")):
        kept, refusals = policy.from_parent([forged], ZIYANG, {})
        assert kept == [] and why in refusals[0].reason
    altered = copy.deepcopy(original)
    altered["status"] = "deceased"  # changed after signing
    assert register_hash(altered) != register_hash(original)
    assert village.registers.documents.verified(altered) is None
    assert village.registers.documents.verified(original) is not None
