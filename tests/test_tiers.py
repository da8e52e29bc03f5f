"""The division tree: real data, synthetic villages, alias codes and the path/LCA laws."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tiers import Tier, UnknownDivisionError, infer_tier, yiyang
from tiers.tree import DIVISIONS_CSV, Division, build_tree, read_divisions_csv

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
    v1, v2 = "430902102201", "430902102202"
    assert not TREE.is_in_subtree(v1, v2)
    assert TREE.path_between(v1, v2) == [v1, "430902102000", v2]


def test_the_shipped_division_table_is_the_shared_one(shared_dir: Path) -> None:
    # The product reads its own copy; it must not drift from the project's reference data.
    assert DIVISIONS_CSV.read_bytes() == (shared_dir / "data" / "yiyang_divisions.csv").read_bytes()
