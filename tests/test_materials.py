"""The materials library's rules on the seed catalogue: what is on file and valid, reuse as a link, refusals."""

from __future__ import annotations

import hashlib
import hmac
from datetime import date

import pytest

from node.domain.catalogue import load_seed_catalogue
from node.domain.errors import DomainError, ErrorKind
from node.domain.identifiers import make_credit_code, make_id_number
from node.domain.materials import (
    LibraryMaterial,
    MaterialGrade,
    materials_on_file,
    required_grade,
    reuse,
)

RAW_ID = make_id_number("430902", date(1985, 3, 14), 123)
# Library keys as the PersonalData adapter makes them: HMAC-SHA256 hex of the ID number or credit code.
OWNER = hmac.new(b"test-key", RAW_ID.encode(), hashlib.sha256).hexdigest()
OTHER = hmac.new(b"test-key", make_id_number("430903", date(1990, 7, 1), 222).encode(), hashlib.sha256).hexdigest()
FIRM = hmac.new(b"test-key", make_credit_code("91430902MA4L00001").encode(), hashlib.sha256).hexdigest()
TODAY = date(2026, 12, 1)
MARRIAGE = load_seed_catalogue().get("430900-QR-0006")  # 内地居民结婚登记: M001, M002, M008, M003


def record(**changes: object) -> LibraryMaterial:
    fields: dict[str, object] = {
        "material_id": "mat-0001",
        "owner_key": OWNER,
        "material_code": "M001",
        "grade": "checked",
        "sha256": hashlib.sha256(b"id card scan").hexdigest(),
        "issuer": "430902102201",
        "issued_on": date(2020, 5, 1),
        "valid_until": date(2030, 5, 1),
    }
    fields.update(changes)
    return LibraryMaterial(**fields)  # type: ignore[arg-type]


def reason(call: object) -> DomainError:
    with pytest.raises(DomainError) as caught:
        call()  # type: ignore[operator]
    assert caught.value.message_zh and caught.value.message_en
    return caught.value


def link(material: LibraryMaterial, code: str = "M001", owner: str = OWNER, day: date = TODAY):  # type: ignore[no-untyped-def]
    return reuse(
        material, matter=MARRIAGE, material_code=code, owner_key=owner, case_id="case-1", node="430902102201",
        actor="clerk-1", day=day,
    )  # fmt: skip


def test_a_record_round_trips_and_hides_its_owner() -> None:
    material = record()
    assert LibraryMaterial.from_dict(material.to_dict()) == material
    assert material.to_dict()["valid_until"] == "2030-05-01"
    assert OWNER not in repr(material) and OWNER[:8] in repr(material)
    assert record(owner_key=FIRM, material_code="M004").owner_key == FIRM


@pytest.mark.parametrize(
    "changes",
    [
        {"owner_key": RAW_ID},  # never the raw ID number
        {"owner_key": RAW_ID.lower()},
        {"owner_key": "abc"},
        {"owner_key": "k" * 129},
        {"owner_key": "key with spaces"},
        {"grade": "notarised"},
        {"sha256": "ABC"},
        {"sha256": "A" * 64},
        {"material_id": ""},
        {"material_id": "x" * 81},
        {"material_code": "M 001"},
        {"issuer": ""},
        {"issuer": "x" * 101},
        {"issued_on": "2020-13-01"},
        {"issued_on": "yesterday"},
        {"valid_until": date(2019, 1, 1)},
        {"status": "lost"},
    ],
)
def test_a_bad_record_is_refused(changes: dict[str, object]) -> None:
    assert reason(lambda: record(**changes)).code == "invalid_library_material"


def test_what_is_on_file_and_valid_for_a_matter() -> None:
    library = [
        record(),  # 居民身份证, checked, valid
        record(material_id="mat-0002", material_code="M002", grade="uploaded"),  # 户口簿: an original, too weak
        record(material_id="mat-0003", material_code="M008", grade="issued", valid_until=date(2026, 6, 30)),
        record(material_id="mat-0004", material_code="M003", owner_key=OTHER),  # someone else's form
    ]
    on_file = {item.material.code: item for item in materials_on_file(MARRIAGE, library, OWNER, TODAY)}
    assert list(on_file) == [m.code for m in MARRIAGE.materials]
    assert on_file["M001"].usable == library[0] and on_file["M001"].problem is None
    assert on_file["M002"].usable is None and on_file["M002"].problem is not None
    assert on_file["M002"].problem.code == "material_grade_too_low"
    assert on_file["M008"].usable is None and on_file["M008"].problem.code == "material_expired"  # type: ignore[union-attr]
    assert on_file["M003"].usable is None and on_file["M003"].problem is None  # nothing of the owner's on file
    assert on_file["M001"].to_dict()["on_file"] is True and on_file["M008"].to_dict()["on_file"] is False


def test_the_best_record_is_chosen() -> None:
    weaker = record(material_id="mat-a", grade="checked", valid_until=date(2031, 1, 1))
    stronger = record(material_id="mat-b", grade="issued", valid_until=date(2027, 1, 1))
    expired = record(material_id="mat-c", grade="issued", valid_until=date(2025, 1, 1))
    [first, *_] = materials_on_file(MARRIAGE, [weaker, expired, stronger], OWNER, TODAY)
    assert first.usable == stronger


def test_reuse_creates_a_link_not_a_copy() -> None:
    material = record()
    linked = link(material)
    assert linked.material_id == material.material_id and linked.sha256 == material.sha256
    assert linked.to_dict() == {
        "case_id": "case-1",
        "material_code": "M001",
        "material_id": "mat-0001",
        "sha256": material.sha256,
        "grade": "checked",
        "node": "430902102201",
        "actor": "clerk-1",
        "linked_on": "2026-12-01",
    }


def test_an_expired_material_is_refused() -> None:
    error = reason(lambda: link(record(valid_until=date(2026, 11, 30))))
    assert error.code == "material_expired" and "2026-11-30" in error.message_zh
    assert link(record(valid_until=TODAY)).linked_on == TODAY  # valid through its last day


def test_another_persons_material_is_refused() -> None:
    error = reason(lambda: link(record(owner_key=OTHER)))
    assert error.code == "material_not_owned" and error.kind == ErrorKind.FORBIDDEN
    assert OTHER not in error.message_en and OWNER not in error.message_en


def test_revoked_not_yet_valid_wrong_type_and_weak_grade_are_refused() -> None:
    assert reason(lambda: link(record(status="revoked"))).code == "material_revoked"
    assert reason(lambda: link(record(issued_on=date(2027, 1, 1)))).code == "material_not_yet_valid"
    assert reason(lambda: link(record(material_code="M002"))).code == "material_type_mismatch"
    assert reason(lambda: link(record(grade="uploaded"))).code == "material_grade_too_low"
    assert reason(lambda: link(record(grade="self_declared"))).code == "material_grade_too_low"
    assert reason(lambda: link(record(), code="M999")).code == "unknown_material"


def test_required_grades() -> None:
    grades = {m.code: required_grade(m) for m in MARRIAGE.materials}
    assert grades["M001"] == MaterialGrade.CHECKED  # an original
    assert grades["M008"] == MaterialGrade.CHECKED  # issued by a department
    birth = load_seed_catalogue().get("430900-JF-0003")  # 临时救助审批: M055 is a copy from the applicant
    assert required_grade(birth.material("M055")) == MaterialGrade.UPLOADED
