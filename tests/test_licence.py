"""Electronic licences (node/domain/licence.py), signed by the issuing department (node/adapters/seal.py)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from node.adapters.seal import DepartmentSeal, sign_record, verify_signed_record
from node.adapters.seal_keys import CertificateAuthority, TrustBundle
from node.domain import licence as lic
from node.domain.errors import DomainError
from node.domain.identifiers import make_credit_code
from node.domain.seal import SealRejected, VerdictStatus

NODE = "430903000000"
TYPE_CODE = "11100000000013338W008"
ISSUER_CODE = make_credit_code("11430903MB1234567")


def _mod37_36_valid(text: str) -> bool:
    """ISO/IEC 7064 hybrid check written independently: processing body + check ends on 1."""
    product = 36
    total = 0
    for ch in text:
        total = (product + int(ch, 36)) % 36 or 36
        product = (total * 2) % 37
    return total == 1


def test_identifier_shape_and_check_character() -> None:
    identifier = lic.make_identifier(TYPE_CODE, ISSUER_CODE, "2026120100001", 1)
    root, rest = identifier[: len(lic.ROOT_CODE)], identifier[len(lic.ROOT_CODE) + 1 :]
    assert root == "1.2.156.3005.2"
    type_code, issuer, serial, version, check = rest.split(".")
    assert (type_code, issuer, serial, version) == (TYPE_CODE, ISSUER_CODE, "2026120100001", "001")
    assert len(check) == 1 and _mod37_36_valid(type_code + issuer + serial + version + check)
    parsed = lic.parse_identifier(identifier)
    assert str(parsed) == identifier and parsed.version == 1


def test_every_single_character_change_is_caught() -> None:
    identifier = lic.make_identifier(TYPE_CODE, ISSUER_CODE, "A1B2C3", 7)
    body_start = len(lic.ROOT_CODE) + 1
    caught = 0
    for position in range(body_start, len(identifier)):
        if identifier[position] == ".":
            continue
        for replacement in "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ":
            if replacement == identifier[position]:
                continue
            changed = identifier[:position] + replacement + identifier[position + 1 :]
            with pytest.raises(DomainError):
                lic.parse_identifier(changed)
            caught += 1
    assert caught > 1000
    # swapping two neighbours of the serial is caught too (MOD 37,36 catches transpositions)
    swapped = identifier.replace("A1B2C3", "1AB2C3")
    with pytest.raises(DomainError):
        lic.parse_identifier(swapped)


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "1.2.156.3005.2",
        "1.2.156.3005.3.X.Y.Z.001.A",
        "1.2.156.3005.2.short.X.Y.001.A",
        "1.2.156.3005.2." + "A" * 200,
    ],
)
def test_malformed_identifiers_are_refused(bad: str) -> None:
    with pytest.raises(DomainError) as err:
        lic.parse_identifier(bad)
    assert err.value.code in {"licence_id_invalid", "licence_id_checksum"}


def test_make_identifier_refuses_bad_parts() -> None:
    for args in (("SHORT", ISSUER_CODE, "1"), (TYPE_CODE, "91430903MA4L00000X", "1"), (TYPE_CODE, ISSUER_CODE, "a-b")):
        with pytest.raises(DomainError):
            lic.make_identifier(*args)


def make_licence(**changes: object) -> lic.Licence:
    fields: dict[str, object] = {
        "identifier": lic.make_identifier(TYPE_CODE, ISSUER_CODE, "2026120100001"),
        "type_name": "食品经营许可证",
        "holder_key": "enterprise:91430903MA4L",
        "holder_kind": "enterprise",
        "issuer_node": NODE,
        "issuer_department": "market",
        "issuer_name": "益阳市赫山区市场监督管理局",
        "issued_on": date(2026, 12, 1),
        "valid_from": date(2026, 12, 1),
        "valid_until": date(2031, 11, 30),
        "data_items": {"经营场所": "龙岭大道 1 号", "主体业态": "食品销售经营者"},
        "document_id": "R-430903-2026-000001",
    }
    fields.update(changes)
    return lic.Licence(**fields)  # type: ignore[arg-type]


def test_licence_record_round_trip_and_holder_is_never_an_id_number() -> None:
    licence = make_licence()
    assert lic.Licence.from_record(licence.to_record()) == licence
    with pytest.raises(DomainError) as err:
        make_licence(holder_key="430903199001011234")
    assert err.value.code == "licence_holder_invalid"
    with pytest.raises(DomainError):
        make_licence(valid_until=date(2020, 1, 1))
    with pytest.raises(DomainError):
        make_licence(data_items={str(i): "x" for i in range(60)})
    with pytest.raises(DomainError):
        lic.Licence.from_record({"record_type": "licence_issued", "identifier": "x"})


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    return CertificateAuthority.create(tmp_path_factory.mktemp("ca"), "430900000000", "益阳市")


@pytest.fixture(scope="module")
def seal(tmp_path_factory: pytest.TempPathFactory, ca: CertificateAuthority) -> DepartmentSeal:
    return DepartmentSeal.ensure(tmp_path_factory.mktemp("seals"), NODE, "market", "益阳市赫山区市场监督管理局", ca)


def test_signed_by_the_issuing_department_and_checked_offline(
    seal: DepartmentSeal, ca: CertificateAuthority, tmp_path: Path
) -> None:
    licence = make_licence()
    signed = sign_record(seal, licence.to_record())
    trust = TrustBundle.from_ca(ca)
    assert lic.Licence.from_record(verify_signed_record(signed, trust)) == licence
    signed["record"]["valid_until"] = "2099-12-31"
    with pytest.raises(SealRejected) as err:
        verify_signed_record(signed, trust)
    assert err.value.status is VerdictStatus.TAMPERED
    # another department of the same node may not issue in this department's name
    health = DepartmentSeal.ensure(tmp_path, NODE, "health", "卫健局", ca)
    with pytest.raises(DomainError):
        sign_record(health, licence.to_record())


def test_revocation_and_replacement_are_signed_records_folded_into_status(
    seal: DepartmentSeal, ca: CertificateAuthority
) -> None:
    trust = TrustBundle.from_ca(ca)
    licence = make_licence()
    today = date(2027, 6, 1)
    assert lic.status_of(licence, [], today) is lic.LicenceStatus.VALID
    assert lic.status_of(licence, [], date(2032, 1, 1)) is lic.LicenceStatus.EXPIRED
    assert lic.status_of(licence, [], date(2026, 1, 1)) is lic.LicenceStatus.NOT_YET_VALID

    at = datetime(2027, 5, 1, tzinfo=UTC)
    revoked = verify_signed_record(sign_record(seal, lic.revocation_record(licence, "经营场所已注销", at)), trust)
    assert lic.status_of(licence, [revoked], today) is lic.LicenceStatus.REVOKED

    newer = make_licence(identifier=lic.make_identifier(TYPE_CODE, ISSUER_CODE, "2026120100001", 2))
    replaced = verify_signed_record(
        sign_record(seal, lic.replacement_record(licence, newer, "变更经营场所", at + timedelta(days=1))), trust
    )
    assert replaced["replaced_by"] == newer.identifier
    assert lic.status_of(licence, [replaced], today) is lic.LicenceStatus.REPLACED
    assert lic.status_of(newer, [replaced], today) is lic.LicenceStatus.VALID

    # a revocation naming another issuer does not touch the licence
    foreign = {**revoked, "issuer_department": "health"}
    assert lic.status_of(licence, [foreign], today) is lic.LicenceStatus.VALID
    with pytest.raises(DomainError):
        lic.replacement_record(licence, make_licence(holder_key="enterprise:other"), "x", at)
    with pytest.raises(DomainError):
        lic.revocation_record(licence, "", at)
