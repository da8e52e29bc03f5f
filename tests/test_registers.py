"""Reference registers: record validation, masking, round trips, and the synthetic population generator."""

from __future__ import annotations

import logging
import math
from collections import Counter, defaultdict
from datetime import date

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.domain.errors import DomainError
from node.domain.identifiers import birth_date_of, make_credit_code, make_id_number, validate_credit_code
from node.domain.registers import (
    EnterpriseRecord,
    PersonRecord,
    generate_population,
    mask_name,
    reference_lookup,
)
from tiers import Tier, yiyang

ID = make_id_number("430902", date(1985, 3, 14), 123)
CREDIT = make_credit_code("91430902MA4L00001")
GENERATED_ON = date(2026, 1, 1)


def person(**changes: object) -> PersonRecord:
    fields: dict[str, object] = {
        "id_number": ID,
        "name": "张三丰",
        "residence_code": "430902102201",
        "household_id": "H430902102201-0001",
        "face_encodings": ([0.1] * 128,),
        "status": "active",
    }
    fields.update(changes)
    return PersonRecord(**fields)  # type: ignore[arg-type]


def enterprise(**changes: object) -> EnterpriseRecord:
    fields: dict[str, object] = {
        "credit_code": CREDIT,
        "name": "益阳市资阳区鑫达农业科技有限公司",
        "legal_representative_id": ID,
        "legal_representative_name": "张三丰",
        "registered_address_code": "430902102201",
    }
    fields.update(changes)
    return EnterpriseRecord(**fields)  # type: ignore[arg-type]


def code_of(call: object) -> str:
    with pytest.raises(DomainError) as caught:
        call()  # type: ignore[operator]
    assert caught.value.message_zh and caught.value.message_en
    return caught.value.code


# --- Person records -------------------------------------------------------------------------------------


def test_a_person_record_round_trips_through_a_dict() -> None:
    record = person()
    data = record.to_dict()
    assert data["face_encodings"] == [[0.1] * 128]
    assert PersonRecord.from_dict(data) == record
    assert record.birth_date == date(1985, 3, 14) and record.is_male


def test_a_lowercase_x_is_normalised() -> None:
    with_x = next(
        make_id_number("430902", date(1990, 1, 1), s)
        for s in range(1000)
        if make_id_number("430902", date(1990, 1, 1), s).endswith("X")
    )
    assert person(id_number=with_x.lower()).id_number == with_x


def test_repr_and_logs_never_show_the_name_or_the_id_number(caplog: pytest.LogCaptureFixture) -> None:
    record = person()
    shown = [repr(record), str(record), f"{record}", repr([record])]
    with caplog.at_level(logging.INFO):
        logging.getLogger("test").info("register record %s", record)
    shown.append(caplog.text)
    for text in shown:
        assert ID not in text and "张三丰" not in text and "三丰" not in text
        assert "430902**" in text and "张**" in text


@pytest.mark.parametrize(
    ("changes", "code"),
    [
        ({"id_number": ID[:17] + ("0" if ID[17] != "0" else "1")}, "id_number_checksum"),
        ({"id_number": "43090219850314123"}, "id_number_format"),
        ({"id_number": None}, "id_number_format"),
        ({"name": "Zhang San"}, "invalid_person_name"),
        ({"name": "张"}, "invalid_person_name"),
        ({"name": "张" * 21}, "invalid_person_name"),
        ({"name": "张三\n"}, "invalid_person_name"),
        ({"residence_code": "4309021022"}, "invalid_division_code"),
        ({"residence_code": "430902102201\n"}, "invalid_division_code"),
        ({"household_id": ""}, "invalid_household_id"),
        ({"household_id": "H" * 41}, "invalid_household_id"),
        ({"household_id": "户1"}, "invalid_household_id"),
        ({"face_encodings": ([0.1] * 127,)}, "invalid_face_encoding"),
        ({"face_encodings": ([0.1] * 127 + [math.nan],)}, "invalid_face_encoding"),
        ({"face_encodings": ([0.1] * 128,) * 9}, "invalid_face_encoding"),
        ({"face_encodings": "nope"}, "invalid_face_encoding"),
        ({"status": "alive"}, "invalid_register_status"),
    ],
)
def test_a_bad_person_record_is_refused_with_a_reason(changes: dict[str, object], code: str) -> None:
    assert code_of(lambda: person(**changes)) == code


def test_from_dict_refuses_what_is_not_a_record() -> None:
    assert code_of(lambda: PersonRecord.from_dict(["not", "a", "dict"])) == "invalid_register_record"
    data = person().to_dict()
    del data["name"]
    assert code_of(lambda: PersonRecord.from_dict(data)) == "invalid_person_name"


def test_mask_name() -> None:
    assert mask_name("欧阳明华") == "欧***" and mask_name("李") == "李" and mask_name("") == ""


def test_only_active_people_have_references() -> None:
    deceased_id = make_id_number("430903", date(1940, 2, 2), 41)
    without_face = make_id_number("430902", date(1990, 1, 1), 10)
    lookup = reference_lookup(
        [person(), person(id_number=deceased_id, status="deceased"), person(id_number=without_face, face_encodings=())]
    )
    assert lookup.reference_encodings(ID) == ((0.1,) * 128,)
    assert lookup.reference_encodings(deceased_id) == ()
    assert len(lookup) == 1


# --- Enterprise records ---------------------------------------------------------------------------------


def test_an_enterprise_record_round_trips_and_masks_its_representative() -> None:
    record = enterprise()
    assert EnterpriseRecord.from_dict(record.to_dict()) == record
    assert ID not in repr(record) and "张三丰" not in repr(record) and CREDIT in repr(record)


@pytest.mark.parametrize(
    ("changes", "code"),
    [
        ({"credit_code": CREDIT[:17] + ("0" if CREDIT[17] != "0" else "1")}, "credit_code_checksum"),
        ({"credit_code": "91430902MA4L0000I"}, "credit_code_format"),
        ({"name": "公"}, "invalid_enterprise_name"),
        ({"name": "公司" * 51}, "invalid_enterprise_name"),
        ({"name": "某某\x00公司"}, "invalid_enterprise_name"),
        ({"legal_representative_id": "123"}, "id_number_format"),
        ({"legal_representative_name": "X"}, "invalid_person_name"),
        ({"registered_address_code": ""}, "invalid_division_code"),
        ({"status": "open"}, "invalid_register_status"),
    ],
)
def test_a_bad_enterprise_record_is_refused_with_a_reason(changes: dict[str, object], code: str) -> None:
    assert code_of(lambda: enterprise(**changes)) == code


# --- Synthetic population -------------------------------------------------------------------------------

TREE = yiyang()
VILLAGES = [d.code for d in TREE.of_tier(Tier.VILLAGE) if d.code.startswith(("430902", "430903"))][:40]
COUNTY_NAMES = {"430902": "资阳区", "430903": "赫山区"}


@pytest.fixture(scope="module")
def population():  # type: ignore[no-untyped-def]
    return generate_population(VILLAGES, county_names=COUNTY_NAMES, today=GENERATED_ON)


def test_the_generator_is_deterministic(population) -> None:  # type: ignore[no-untyped-def]
    again = generate_population(VILLAGES, county_names=COUNTY_NAMES, today=GENERATED_ON)
    assert [p.to_dict() for p in again.people] == [p.to_dict() for p in population.people]
    assert [e.to_dict() for e in again.enterprises] == [e.to_dict() for e in population.enterprises]
    other_seed = generate_population(VILLAGES[:1], seed=1, today=GENERATED_ON)
    assert other_seed.people[0].to_dict() != population.people[0].to_dict()


def test_one_divisions_people_do_not_depend_on_the_others_listed(population) -> None:  # type: ignore[no-untyped-def]
    alone = generate_population([VILLAGES[5]], county_names=COUNTY_NAMES, today=GENERATED_ON)
    within = [p.to_dict() for p in population.people if p.residence_code == VILLAGES[5]]
    assert [p.to_dict() for p in alone.people] == within


def test_every_person_is_valid_unique_and_registered_in_their_county(population) -> None:  # type: ignore[no-untyped-def]
    people = population.people
    assert len(people) >= 60 * len(VILLAGES)
    assert len({p.id_number for p in people}) == len(people)
    for p in people:
        assert p.residence_code in TREE and TREE.tier(p.residence_code) == Tier.VILLAGE
        assert p.id_number[:6] == p.residence_code[:6]
        assert date(1900, 1, 1) < birth_date_of(p.id_number, today=GENERATED_ON) <= GENERATED_ON
        assert 2 <= len(p.name) <= 4
    ages = [(GENERATED_ON - p.birth_date).days / 365.25 for p in people]
    assert min(ages) >= 0 and max(ages) < 125
    assert 25 < sum(ages) / len(ages) < 60
    share_male = sum(p.is_male for p in people) / len(people)
    assert 0.4 < share_male < 0.6


def test_households_have_one_to_six_members_and_a_plausible_shape(population) -> None:  # type: ignore[no-untyped-def]
    households: dict[str, list[PersonRecord]] = defaultdict(list)
    for p in population.people:
        households[p.household_id].append(p)
    sizes = Counter(len(members) for members in households.values())
    assert set(sizes) == {1, 2, 3, 4, 5, 6}
    for members in households.values():
        assert len({m.residence_code for m in members}) == 1
        head = members[0]
        assert (GENERATED_ON - head.birth_date).days >= 18 * 365
        if len(members) >= 2:  # the spouse is an adult of the other sex
            assert members[1].is_male != head.is_male
            assert (GENERATED_ON - members[1].birth_date).days >= 20 * 365 - 5


def test_names_are_common_chinese_names(population) -> None:  # type: ignore[no-untyped-def]
    surnames = Counter(p.name[0] for p in population.people)
    assert len(surnames) > 40
    top = {s for s, _ in surnames.most_common(10)}
    assert len(top & set("王李张刘陈杨黄赵吴周徐孙马朱胡")) >= 5
    assert len({p.name for p in population.people}) > 0.8 * len(population.people)


def test_enterprises_have_valid_codes_and_a_generated_legal_representative(population) -> None:  # type: ignore[no-untyped-def]
    enterprises = population.enterprises
    assert len(enterprises) == 2 * len(VILLAGES)
    assert len({e.credit_code for e in enterprises}) == len(enterprises)
    by_id = {p.id_number: p for p in population.people}
    for e in enterprises:
        assert validate_credit_code(e.credit_code) == e.credit_code
        assert e.credit_code[2:8] == e.registered_address_code[:6]
        representative = by_id[e.legal_representative_id]
        assert representative.name == e.legal_representative_name
        assert representative.residence_code == e.registered_address_code
        assert (GENERATED_ON - representative.birth_date).days >= 18 * 365
        assert e.name.startswith("益阳市" + COUNTY_NAMES[e.registered_address_code[:6]])
        assert e.name.endswith(("有限公司", "专业合作社"))


def test_organisation_codes_inside_credit_codes_carry_their_gb_11714_check(population) -> None:  # type: ignore[no-untyped-def]
    weights = (3, 7, 9, 10, 5, 8, 4, 2)
    for e in population.enterprises:
        org = e.credit_code[8:17]
        check = 11 - sum(int(c) * w for c, w in zip(org[:8], weights, strict=True)) % 11
        assert org[8] == {10: "X", 11: "0"}.get(check, str(check))


def test_generator_input_is_checked() -> None:
    assert code_of(lambda: generate_population(["43090210220"])) == "invalid_division_code"
    with pytest.raises(ValueError):
        generate_population(VILLAGES[:1], people_per_division=-1)
    assert generate_population(VILLAGES[:1], people_per_division=0, enterprises_per_division=0).people == []


# --- Untrusted input from other nodes -------------------------------------------------------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)


def _mutated(base: dict[str, object]) -> st.SearchStrategy[object]:
    return st.one_of(
        _json,
        st.builds(
            lambda key, value: {**base, key: value},
            st.sampled_from(sorted(base)),
            _json,
        ),
    )


@settings(max_examples=100, deadline=None)
@given(data=_mutated(person().to_dict()))
def test_any_person_document_is_a_record_or_a_reason(data: object) -> None:
    try:
        record = PersonRecord.from_dict(data)
    except DomainError as error:
        assert error.message_zh and error.message_en
    else:
        assert PersonRecord.from_dict(record.to_dict()) == record


@settings(max_examples=100, deadline=None)
@given(data=_mutated(enterprise().to_dict()))
def test_any_enterprise_document_is_a_record_or_a_reason(data: object) -> None:
    try:
        record = EnterpriseRecord.from_dict(data)
    except DomainError as error:
        assert error.message_zh and error.message_en
    else:
        assert EnterpriseRecord.from_dict(record.to_dict()) == record
