"""Tests of the matter catalogue: the seed data, routing to the handling node, implementation lists."""

from __future__ import annotations

import json
from contextlib import AbstractContextManager
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.domain.catalogue import (
    Catalogue,
    Material,
    Matter,
    handling_node,
    load_seed_catalogue,
    location_field,
    missing_materials,
)
from node.domain.errors import DomainError, ErrorKind
from tiers import Tier, yiyang
from tiers.demo import CITY, HESHAN, HESHAN_TOWN, ZIYANG, ZIYANG_TOWN

TREE = yiyang()
CATALOGUE = load_seed_catalogue()
ALL_CODES = sorted(d.code for d in TREE)

BAZISHAO = HESHAN_TOWN  # 赫山区八字哨镇
HESHAN_STREET = "430903001000"  # 赫山区赫山街道


def a_village(township: str) -> str:
    return TREE.children(township)[0]


def first(tier: Tier, rule: str) -> Matter:
    return next(m for m in CATALOGUE.matters() if m.authority_tier is tier and m.jurisdiction_rule == rule)


def raises(code: str) -> AbstractContextManager[pytest.ExceptionInfo[DomainError]]:
    return pytest.raises(DomainError, match=f"^{code}:")


# ---------------------------------------------------------------------------------------------------------------------
# The seed catalogue


def test_seed_is_large_and_varied_enough() -> None:
    matters = CATALOGUE.matters()
    assert len(matters) >= 32
    assert len(CATALOGUE.departments()) >= 10
    assert {m.authority_tier for m in matters} == set(Tier)
    for tier in (Tier.VILLAGE, Tier.TOWNSHIP, Tier.COUNTY, Tier.CITY):
        assert sum(m.authority_tier is tier for m in matters) >= 3, tier
    assert {m.jurisdiction_rule for m in matters} == {"residence", "property", "business_registration", "nearest"}
    immediate = [m for m in matters if m.handling_type == "immediate"]
    promised = [m for m in matters if m.handling_type == "promised"]
    assert len(immediate) >= 5 and all(m.promised_days <= 1 for m in immediate)
    assert any(m.promised_days < m.legal_days for m in promised)
    assert sum(m.fee_yuan == 0 for m in matters) > len(matters) // 2


def test_seed_departments_and_materials_are_consistent() -> None:
    departments = {d.code: d for d in CATALOGUE.departments()}
    for code in (
        "public_security",
        "civil_affairs",
        "human_resources",
        "medical_insurance",
        "market_regulation",
        "real_estate",
        "health",
        "education",
        "transport",
        "housing",
        "disabled_persons",
    ):
        assert departments[code].name_zh and departments[code].name_en
    names: dict[str, str] = {}
    for matter in CATALOGUE.matters():
        assert matter.department in departments
        assert matter.materials, matter.code
        assert any(m.required for m in matter.materials), matter.code
        for material in matter.materials:
            assert names.setdefault(material.code, material.name) == material.name
    assert names["M001"] == "居民身份证"
    assert {"户口簿", "申请表", "营业执照", "不动产权证书"} <= {n.removeprefix("居民") for n in names.values()}


def test_seed_file_says_codes_are_illustrative() -> None:
    assert "illustrative" in CATALOGUE.note.lower()
    assert CATALOGUE.get("430900-XK-0001").matter_type == "行政许可"


def test_unknown_matter() -> None:
    with raises("unknown_matter") as info:
        CATALOGUE.get("430900-XK-9999")
    assert info.value.kind is ErrorKind.NOT_FOUND
    assert info.value.message_zh and info.value.message_en


def test_round_trip_through_json() -> None:
    document = json.loads(json.dumps(CATALOGUE.to_dict(), ensure_ascii=False))
    document.update({"_id": "catalogue", "_rev": "1-abc"})  # store metadata is ignored
    again = Catalogue.from_dict(document)
    assert again == CATALOGUE
    assert again.matters() == CATALOGUE.matters()
    assert again.version == CATALOGUE.version


def test_round_trip_keeps_implementation_lists() -> None:
    matter = first(Tier.COUNTY, "residence")
    delegated = CATALOGUE.with_implementation_list(
        {HESHAN: [{"matter_code": matter.code, "authority_tier": "township", "promised_days": 1}]}
    )
    assert delegated.version == CATALOGUE.version + 1
    again = Catalogue.from_dict(json.loads(json.dumps(delegated.to_dict())))
    assert again == delegated
    assert again != CATALOGUE
    assert again.handling_node(matter, TREE, CITY, a_village(BAZISHAO)) == BAZISHAO


@given(st.sampled_from(CATALOGUE.matters()))
def test_matter_round_trip(matter: Matter) -> None:
    assert Matter.from_dict(json.loads(json.dumps(matter.to_dict()))) == matter


def test_fee_is_decimal() -> None:
    fees = {m.fee_yuan for m in CATALOGUE.matters()}
    assert all(isinstance(fee, Decimal) for fee in fees)
    assert Decimal("20") in fees  # 居民身份证换领工本费


# ---------------------------------------------------------------------------------------------------------------------
# Routing: the handling node


def test_location_field() -> None:
    assert location_field("residence") == "residence_code"
    assert location_field("property") == "property_code"
    assert location_field("business_registration") == "registered_code"
    assert location_field("nearest") is None
    with raises("invalid_jurisdiction_rule"):
        location_field("moon")


def test_residence_in_a_heshan_village_goes_to_heshan_for_a_county_matter() -> None:
    matter = first(Tier.COUNTY, "residence")
    village = a_village(BAZISHAO)
    # accepted in a village of another county: 全市通办
    assert handling_node(matter, TREE, a_village(ZIYANG_TOWN), village) == HESHAN
    assert handling_node(matter, TREE, CITY, BAZISHAO) == HESHAN
    assert handling_node(matter, TREE, CITY, HESHAN) == HESHAN


def test_residence_at_township_and_village_tiers() -> None:
    village = a_village(BAZISHAO)
    assert handling_node(first(Tier.TOWNSHIP, "residence"), TREE, CITY, village) == BAZISHAO
    assert handling_node(first(Tier.VILLAGE, "residence"), TREE, CITY, village) == village


def test_city_matter_goes_to_the_city() -> None:
    for rule in ("residence", "nearest", "business_registration"):
        matter = first(Tier.CITY, rule)
        assert handling_node(matter, TREE, a_village(BAZISHAO), a_village(HESHAN_STREET)) == CITY
        assert handling_node(matter, TREE, a_village(BAZISHAO), HESHAN) == CITY


def test_nearest_uses_the_accepting_node() -> None:
    matter = first(Tier.COUNTY, "nearest")
    village = a_village(BAZISHAO)
    # any location given is ignored: the accepting node decides
    assert handling_node(matter, TREE, village, a_village(ZIYANG_TOWN)) == HESHAN
    assert handling_node(matter, TREE, village, None) == HESHAN
    township_matter = first(Tier.TOWNSHIP, "nearest")
    assert handling_node(township_matter, TREE, village) == BAZISHAO
    with raises("location_too_coarse"):
        handling_node(township_matter, TREE, HESHAN)


def test_property_and_business_registration_rules() -> None:
    shop = a_village(ZIYANG_TOWN)  # 资阳区迎风桥镇
    assert handling_node(first(Tier.COUNTY, "business_registration"), TREE, CITY, shop) == ZIYANG
    assert handling_node(first(Tier.TOWNSHIP, "business_registration"), TREE, CITY, shop) == ZIYANG_TOWN
    house = a_village(BAZISHAO)
    assert handling_node(first(Tier.COUNTY, "property"), TREE, a_village(ZIYANG_TOWN), house) == HESHAN
    assert handling_node(first(Tier.TOWNSHIP, "property"), TREE, HESHAN, house) == BAZISHAO
    assert handling_node(first(Tier.VILLAGE, "property"), TREE, HESHAN, house) == house


@pytest.mark.parametrize(
    ("rule", "field"),
    [("residence", "residence_code"), ("property", "property_code"), ("business_registration", "registered_code")],
)
def test_location_required_names_the_field(rule: str, field: str) -> None:
    matter = first(Tier.COUNTY, rule)
    for missing in (None, ""):
        with raises("location_required") as info:
            handling_node(matter, TREE, a_village(BAZISHAO), missing)
        assert field in info.value.message_zh and field in info.value.message_en
        assert info.value.kind is ErrorKind.INVALID


def test_location_too_coarse() -> None:
    matter = first(Tier.TOWNSHIP, "residence")
    with raises("location_too_coarse") as info:
        handling_node(matter, TREE, a_village(BAZISHAO), HESHAN)
    assert "residence_code" in info.value.message_en and info.value.message_zh
    with raises("location_too_coarse"):
        handling_node(first(Tier.COUNTY, "property"), TREE, HESHAN, CITY)


def test_unknown_division() -> None:
    matter = first(Tier.COUNTY, "residence")
    for bad in ("430903999999", "not-a-code", "4309"):
        with raises("unknown_division"):
            handling_node(matter, TREE, a_village(BAZISHAO), bad)
        with raises("unknown_division"):
            handling_node(matter, TREE, bad, HESHAN)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(CATALOGUE.matters()), st.sampled_from(ALL_CODES), st.sampled_from(ALL_CODES))
def test_handling_node_is_the_ancestor_at_the_authority_tier(matter: Matter, accepting: str, location: str) -> None:
    where = accepting if matter.jurisdiction_rule == "nearest" else location
    if TREE.tier(where) < matter.authority_tier:
        with raises("location_too_coarse"):
            handling_node(matter, TREE, accepting, location)
        return
    node = handling_node(matter, TREE, accepting, location)
    assert TREE.tier(node) is matter.authority_tier
    assert TREE.is_in_subtree(where, node)  # ancestor-or-self of the jurisdiction location


# ---------------------------------------------------------------------------------------------------------------------
# Implementation lists (实施清单)


def test_delegation_lowers_the_tier_only_inside_the_region() -> None:
    matter = first(Tier.COUNTY, "residence")
    delegated = CATALOGUE.with_implementation_list(
        {HESHAN: [{"matter_code": matter.code, "authority_tier": "township"}]}
    )
    inside = a_village(BAZISHAO)
    outside = a_village(ZIYANG_TOWN)
    assert handling_node(matter, TREE, outside, inside, delegated.implementation) == BAZISHAO
    assert handling_node(matter, TREE, outside, inside, delegated) == BAZISHAO
    assert handling_node(matter, TREE, inside, outside, delegated) == ZIYANG
    assert handling_node(matter, TREE, inside, inside) == HESHAN  # without the list
    # inside the region the county code alone no longer says which township handles it
    with raises("location_too_coarse"):
        delegated.handling_node(matter.code, TREE, CITY, HESHAN)
    assert delegated.handling_node(matter.code, TREE, CITY, ZIYANG) == ZIYANG
    # the base catalogue is untouched
    assert CATALOGUE.handling_node(matter.code, TREE, CITY, inside) == HESHAN


def test_delegation_by_the_city_and_nested_regions() -> None:
    matter = first(Tier.COUNTY, "property")
    delegated = CATALOGUE.with_implementation_list(
        {
            CITY: [{"matter_code": matter.code, "promised_days": matter.promised_days - 1}],
            BAZISHAO: [{"matter_code": matter.code, "authority_tier": Tier.TOWNSHIP, "promised_days": 0}],
        }
    )
    here, there = a_village(BAZISHAO), a_village(HESHAN_STREET)
    assert delegated.handling_node(matter, TREE, CITY, here) == BAZISHAO
    assert delegated.handling_node(matter, TREE, CITY, there) == HESHAN
    assert delegated.effective_matter(matter.code, TREE, here).promised_days == 0
    assert delegated.effective_matter(matter.code, TREE, there).promised_days == matter.promised_days - 1
    assert delegated.effective_matter(matter.code, TREE, there).authority_tier is Tier.COUNTY


def test_later_lists_replace_a_regions_lines() -> None:
    matter = first(Tier.COUNTY, "residence")
    once = CATALOGUE.with_implementation_list({HESHAN: [{"matter_code": matter.code, "authority_tier": "township"}]})
    twice = once.with_implementation_list({HESHAN: [{"matter_code": matter.code, "authority_tier": "county"}]})
    assert twice.handling_node(matter, TREE, CITY, a_village(BAZISHAO)) == HESHAN
    assert twice.version == CATALOGUE.version + 2


@pytest.mark.parametrize(
    ("region", "line", "code"),
    [
        (HESHAN, {"authority_tier": "city"}, "invalid_delegation"),  # upward
        (BAZISHAO, {"authority_tier": "county"}, "invalid_delegation"),  # above the region itself
        (HESHAN, {"authority_tier": "hamlet"}, "invalid_tier"),
        (HESHAN, {"authority_tier": 7}, "invalid_tier"),
        (HESHAN, {"authority_tier": True}, "invalid_tier"),
        (HESHAN, {"promised_days": 10_000}, "invalid_promised_days"),  # may only shorten
        (HESHAN, {"promised_days": -1}, "invalid_promised_days"),
        (HESHAN, {"promised_day": 1}, "invalid_implementation_list"),  # a typo is not silently ignored
        ("nowhere", {"promised_days": 1}, "unknown_division"),
    ],
)
def test_invalid_implementation_lists_are_rejected(region: str, line: dict[str, object], code: str) -> None:
    matter = first(Tier.COUNTY, "residence")
    with raises(code) as info:
        CATALOGUE.with_implementation_list({region: [{"matter_code": matter.code, **line}]})
    assert info.value.message_zh and info.value.message_en


def test_implementation_list_for_unknown_matter() -> None:
    with raises("unknown_matter"):
        CATALOGUE.with_implementation_list({HESHAN: [{"matter_code": "430900-XK-9999", "promised_days": 1}]})


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from([m for m in CATALOGUE.matters() if m.authority_tier <= Tier.TOWNSHIP]),
    st.sampled_from([d.code for d in TREE if d.tier is Tier.COUNTY]),
    st.sampled_from([c for c in ALL_CODES if TREE.tier(c) is Tier.VILLAGE]),
)
def test_delegation_to_villages_stays_inside_the_region(matter: Matter, region: str, location: str) -> None:
    delegated = CATALOGUE.with_implementation_list({region: [{"matter_code": matter.code, "authority_tier": 3}]})
    node = delegated.handling_node(matter, TREE, location, location)
    if TREE.is_in_subtree(location, region):
        assert node == location
    else:
        assert node == handling_node(matter, TREE, location, location)
        assert TREE.tier(node) is matter.authority_tier


# ---------------------------------------------------------------------------------------------------------------------
# Materials


def test_missing_materials() -> None:
    matter = CATALOGUE.get("430900-QR-0001")  # 出生登记
    required = [m.code for m in matter.materials if m.required]
    optional = [m.code for m in matter.materials if not m.required]
    assert optional, "the birth registration lists an optional 结婚证"
    assert [m.code for m in missing_materials(matter, [])] == required
    assert missing_materials(matter, required) == []
    assert missing_materials(matter, iter(required + optional)) == []
    assert [m.code for m in missing_materials(matter, required[1:])] == required[:1]
    with raises("unknown_material") as info:
        missing_materials(matter, [*required, "M999"])
    assert "M999" in info.value.message_en and info.value.kind is ErrorKind.INVALID


@given(st.sampled_from(CATALOGUE.matters()), st.data())
def test_missing_materials_property(matter: Matter, data: st.DataObject) -> None:
    codes = [m.code for m in matter.materials]
    handed_in = data.draw(st.lists(st.sampled_from(codes), max_size=len(codes) + 2))
    missing = missing_materials(matter, handed_in)
    assert all(m.required and m.code not in handed_in for m in missing)
    assert {m.code for m in missing} | set(handed_in) >= {m.code for m in matter.materials if m.required}


def test_invalid_entries_are_rejected() -> None:
    with raises("invalid_catalogue"):
        Material("M001", "居民身份证", "scan", 1, "applicant", True)  # type: ignore[arg-type]
    document = CATALOGUE.get("430900-XK-0001").to_dict()
    for change in (
        {"promised_days": document["legal_days"] + 1},
        {"online_depth": 5},
        {"fee_yuan": "-1"},
        {"delivery_options": ["pigeon"]},
        {"authority_tier": "province"},
    ):
        with pytest.raises(DomainError):
            Matter.from_dict({**document, **change})
    whole = CATALOGUE.to_dict()
    whole["matters"][0]["department"] = "ministry_of_magic"
    with raises("invalid_catalogue"):
        Catalogue.from_dict(whole)
