"""The division tree: real data, synthetic villages, alias codes and the path/LCA laws."""

from __future__ import annotations

import csv
import itertools
import re
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.runtime.federation import demo_node_codes
from tiers import Tier, UnknownDivisionError, infer_tier, yiyang
from tiers.demo import DEMO_NODES, HESHAN_VILLAGE, ZIYANG_TOWN, ZIYANG_VILLAGE, ZIYANG_VILLAGE_2
from tiers.tree import DIVISIONS_CSV, Division, build_tree, read_divisions_csv, structural_parent

TREE = yiyang()
CODES = sorted(d.code for d in TREE)
codes = st.sampled_from(CODES)


def test_real_units_and_synthetic_villages() -> None:
    assert TREE.root == "430900000000"
    assert TREE.get("430900000000").name == "益阳市"
    assert len(TREE.of_tier(Tier.COUNTY)) == 8
    assert len(TREE.of_tier(Tier.TOWNSHIP)) == 98
    villages = TREE.of_tier(Tier.VILLAGE)
    assert 1_400 <= len(villages) <= 1_500
    assert all(v.synthetic for v in villages)
    assert not any(d.synthetic for d in TREE if d.tier is not Tier.VILLAGE)
    assert TREE.get("430903000000").name == "赫山区"
    assert TREE.children("430900000000") == tuple(sorted(d.code for d in TREE.of_tier(Tier.COUNTY)))


def test_synthetic_villages_are_deterministic() -> None:
    again = build_tree(read_divisions_csv(DIVISIONS_CSV))
    assert [(d.code, d.name) for d in again] == [(d.code, d.name) for d in TREE]


def test_loading_the_whole_tree_is_fast() -> None:
    started = time.perf_counter()
    build_tree(read_divisions_csv(DIVISIONS_CSV))
    # Generous bound: the goal is "well under a second" on a loaded CI machine.
    assert time.perf_counter() - started < 0.5


def test_alias_codes_are_accepted() -> None:
    alias = Division("4309A1000000", "示例功能区", Tier.COUNTY, "430900000000")
    alias_town = Division("4309A1001000", "示例街道", Tier.TOWNSHIP, "4309A1000000")
    tree = build_tree(read_divisions_csv(DIVISIONS_CSV), extra=[alias, alias_town])
    assert infer_tier("4309A1000000") is Tier.COUNTY
    assert tree.tier("4309A1001000") is Tier.TOWNSHIP
    assert tree.path_to_root("4309A1001000") == ["4309A1001000", "4309A1000000", "430900000000"]
    assert tree.lowest_common_ancestor("4309A1001000", "430903000000") == "430900000000"


@pytest.mark.parametrize("bad", ["", "4309", "430900000000x", "43090000000a", "999999999999"])
def test_unknown_codes_are_rejected_with_a_clear_message(bad: str) -> None:
    with pytest.raises(UnknownDivisionError) as info:
        TREE.get(bad)
    assert "unknown division code" in str(info.value) and "未知的区划代码" in str(info.value)


@given(codes)
def test_path_to_root_ends_at_root_and_descends_one_tier_per_step(code: str) -> None:
    path = TREE.path_to_root(code)
    assert path[-1] == TREE.root
    assert [TREE.tier(c) for c in path] == [Tier(t) for t in range(TREE.tier(code), -1, -1)]


@settings(max_examples=300)
@given(codes, codes)
def test_lca_laws(a: str, b: str) -> None:
    lca = TREE.lowest_common_ancestor(a, b)
    assert lca == TREE.lowest_common_ancestor(b, a)
    assert TREE.is_in_subtree(a, lca) and TREE.is_in_subtree(b, lca)
    # No child of the LCA holds both.
    assert not any(TREE.is_in_subtree(a, c) and TREE.is_in_subtree(b, c) for c in TREE.children(lca))
    assert TREE.lowest_common_ancestor(a, a) == a


@settings(max_examples=300)
@given(codes, codes)
def test_path_between_laws(a: str, b: str) -> None:
    path = TREE.path_between(a, b)
    assert path[0] == a and path[-1] == b
    assert len(path) == len(set(path))
    assert list(reversed(path)) == TREE.path_between(b, a)
    assert TREE.lowest_common_ancestor(a, b) in path
    for x, y in itertools.pairwise(path):
        assert TREE.parent(x) == y or TREE.parent(y) == x


@given(codes, codes, codes)
def test_subtree_membership_is_transitive(a: str, b: str, c: str) -> None:
    if TREE.is_in_subtree(a, b) and TREE.is_in_subtree(b, c):
        assert TREE.is_in_subtree(a, c)


def test_a_village_is_not_in_another_villages_subtree() -> None:
    v1, v2 = ZIYANG_VILLAGE, ZIYANG_VILLAGE_2
    assert not TREE.is_in_subtree(v1, v2)
    assert TREE.path_between(v1, v2) == [v1, ZIYANG_TOWN, v2]


COUNTIES = {
    "430902000000": "资阳区",
    "430903000000": "赫山区",
    "430921000000": "南县",
    "430922000000": "桃江县",
    "430923000000": "安化县",
    "430971000000": "益阳市大通湖管理区",  # statistical-only unit (not in GB/T 2260)
    "430972000000": "湖南益阳高新技术产业园区",  # statistical-only unit (not in GB/T 2260)
    "430981000000": "沅江市",
}


def test_the_shipped_division_table_holds_yiyangs_real_units() -> None:
    # The table on its own terms (tiers/data/README.md): 1 city, 8 county-level and 98 township-level
    # units, 12-digit statistical codes whose structure gives each unit's tier and parent.
    with DIVISIONS_CSV.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["code", "name", "level", "parent_code"]
    assert len(rows) == 107
    codes = [row["code"] for row in rows]
    assert len(set(codes)) == len(codes)
    assert all(re.fullmatch(r"4309\d{8}", code) and code.endswith("000") for code in codes)
    by_level: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        by_level.setdefault(row["level"], []).append(row)
        assert row["level"] == infer_tier(row["code"]).name.lower()
        assert (row["parent_code"] or None) == structural_parent(row["code"])
        assert row["name"].strip() == row["name"] and re.fullmatch(r"[\u4e00-\u9fff]+", row["name"])
    assert [(r["code"], r["name"]) for r in by_level["city"]] == [("430900000000", "益阳市")]
    assert {r["code"]: r["name"] for r in by_level["county"]} == COUNTIES
    townships = by_level["township"]
    assert len(townships) == 98
    assert {r["parent_code"] for r in townships} == set(COUNTIES)
    for row in townships:
        serial = int(row["code"][6:9])
        if 100 <= serial < 200:
            assert row["name"].endswith("镇"), row
        elif 200 <= serial < 400:
            assert row["name"].endswith("乡"), row
        elif serial < 100:
            assert row["name"].endswith(("街道", "地区")), row
    names = [(r["parent_code"], r["name"]) for r in townships]
    assert len(set(names)) == len(names)
    assert TREE.get("430903101000").name == "八字哨镇" and TREE.get("430902005000").name == "大码头街道"
    assert (DIVISIONS_CSV.parent / "LICENSE").read_text(encoding="utf-8").startswith("yiyang_divisions.csv")


def test_the_demo_federation_is_named_in_one_place() -> None:
    assert demo_node_codes(TREE) == list(DEMO_NODES)
    assert TREE.get(HESHAN_VILLAGE).name == "八字哨第1村" and TREE.get(ZIYANG_TOWN).name == "迎风桥镇"
