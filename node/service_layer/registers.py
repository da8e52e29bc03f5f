"""Filling a node's reference registers and materials library for the demo tree (``tongban registers generate``).

The population is generated for every village of the demo tree at once (deterministic, so every node
draws the same people), then each node keeps only the records it holds under
:func:`node.domain.registers.held_at` (the residence's own node and its ancestors). The demo residents of
``node/data/demo_people.json`` join with their reference face encodings, and each gets three documents a
department issued into the library (居民身份证 M001, 居民户口簿 M002, 不动产权证书 M005), so the window can reuse them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from node.adapters.demo_people import load_demo_people
from node.adapters.library import MaterialsLibrary
from node.adapters.pii import PersonalData
from node.adapters.pki import NodeIdentity
from node.adapters.registers import RegisterStore
from node.domain.registers import PersonRecord, generate_population, held_at
from tiers import DivisionTree, Tier
from tiers.demo import DEMO_NODES

__all__ = ["DEMO_MATERIALS", "RegisterFill", "ensure_demo_people", "fill_register", "publish_register"]

# (material code, name, issuing department, issued on, valid until) of the demo residents' library documents.
DEMO_MATERIALS = (
    ("M001", "居民身份证", "public_security", date(2018, 3, 1), date(2038, 3, 1)),
    ("M002", "居民户口簿", "public_security", date(2015, 6, 1), None),
    ("M005", "不动产权证书", "real_estate", date(2019, 9, 1), None),
)


@dataclass(frozen=True)
class RegisterFill:
    people: int
    enterprises: int
    demo_people: int
    materials: int


def _demo_villages(tree: DivisionTree) -> list[str]:
    return [code for code in DEMO_NODES if code in tree and tree.tier(code) is Tier.VILLAGE]


def _county_names(tree: DivisionTree, villages: list[str]) -> dict[str, str]:
    names = {}
    for village in villages:
        county = next((c for c in tree.path_to_root(village) if tree.tier(c) is Tier.COUNTY), None)
        if county is not None:
            names[village[:6]] = tree.get(county).name
    return names


def _demo_material_id(owner_key: str, code: str) -> str:
    return f"lib:demo:{owner_key[:24]}:{code}"


def _demo_materials(person: PersonRecord, library: MaterialsLibrary, personal_data: PersonalData) -> int:
    key = personal_data.lookup_key(person.id_number)
    missing = [entry for entry in DEMO_MATERIALS if library.get(_demo_material_id(key, entry[0])) is None]
    library.add_many(
        [
            {
                "material_id": _demo_material_id(key, code),
                "owner_key": key,
                "material_code": code,
                "grade": "issued",
                "issuer": issuer,
                "issued_on": issued_on,
                "valid_until": valid_until,
                "content": f"电子证照（演示）{name}\n签发：{issuer}\n编号：{_demo_material_id(key, code)}\n".encode(),
                "media_type": "text/plain; charset=utf-8",
            }
            for code, name, issuer, issued_on, valid_until in missing
        ],
        if_absent=True,  # the web workers of a demo node seed at the same time
    )
    return len(missing)


def ensure_demo_people(
    node: str, tree: DivisionTree, registers: RegisterStore, library: MaterialsLibrary, personal_data: PersonalData
) -> int:
    """The demo residents this node holds, with their reference faces and library documents; idempotent."""
    held = [p.record for p in load_demo_people() if held_at(node, p.record.residence_code, tree)]
    registers.put_people(held)
    for person in held:
        _demo_materials(person, library, personal_data)
    return len(held)


def publish_register(
    node: str,
    tree: DivisionTree,
    registers: RegisterStore,
    identity: NodeIdentity,
    *,
    people_per_village: int = 60,
) -> int:
    """Write the records this node authors (the city: everyone; a county: its residents) as signed documents.

    They replicate to the nodes of each residence's subtree (sync/registers.py). Returns how many were written.
    """
    if registers.documents is None:
        return 0
    villages = _demo_villages(tree)
    population = generate_population(villages, people_per_division=people_per_village, enterprises_per_division=0)
    demo = [p.record for p in load_demo_people()]
    return registers.documents.publish([*population.people, *demo], identity)


def fill_register(
    node: str,
    tree: DivisionTree,
    registers: RegisterStore,
    library: MaterialsLibrary,
    personal_data: PersonalData,
    *,
    people_per_village: int = 60,
    enterprises_per_village: int = 2,
) -> RegisterFill:
    """This node's share of the demo tree's synthetic population, plus the demo residents it holds."""
    villages = _demo_villages(tree)
    population = generate_population(
        villages,
        people_per_division=people_per_village,
        enterprises_per_division=enterprises_per_village,
        county_names=_county_names(tree, villages),
    )
    people = registers.put_people(p for p in population.people if held_at(node, p.residence_code, tree))
    enterprises = registers.put_enterprises(
        e for e in population.enterprises if held_at(node, e.registered_address_code, tree)
    )
    before = library.count()
    demo = ensure_demo_people(node, tree, registers, library, personal_data)
    return RegisterFill(people, enterprises, demo, library.count() - before)
