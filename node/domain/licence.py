"""Electronic licences (电子证照): the record, its GB/T 36904 identifier, revocation and replacement.

This module owns the licence as data: the identifier and its check character, the record a
department issues (holder by key, never by raw ID number; issuer department and node; validity;
data items), the signing payload (canonical JSON) and the records that revoke or replace a licence,
and folding those into a status. Signatures are made and checked in :mod:`node.adapters.seal`.

Identifier (GB/T 36904-2018, as deployed identifiers in public sources show it; docs/seals.md)::

    1.2.156.3005.2 . <type code> . <issuer code> . <serial> . <version> . <check character>
    e.g. 1.2.156.3005.2.11100000000013338W008.11430903MB1234567X.2026120100001.001.K

- root ``1.2.156.3005.2``: the electronic-licence root code (电子证照根代码);
- type code (证照类型代码): the 18-character unified social credit code of the department that
  defines the licence type plus a 3-digit type number (21 characters);
- issuer code (颁发机构代码): the issuing department's 18-character unified social credit code;
- serial (顺序号): 1-40 characters of ``0-9A-Z``; version (版本号): three digits;
- check character: ISO/IEC 7064 (GB/T 17710) MOD 37,36 hybrid over type + issuer + serial + version.
  The standard's own text is not public; public implementations use MOD 37,36 but differ in detail,
  so this is an assumption (docs/seals.md).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum
from typing import Any

from node.domain.errors import DomainError, ErrorKind
from node.domain.identifiers import validate_credit_code

ROOT_CODE = "1.2.156.3005.2"
_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_VALUES = {ch: i for i, ch in enumerate(_ALPHABET)}
_TYPE_CODE = re.compile(r"^[0-9A-Z]{18}[0-9]{3}$")
_SERIAL = re.compile(r"^[0-9A-Z]{1,40}$")
_VERSION = re.compile(r"^[0-9]{3}$")
_HOLDER_KEY = re.compile(r"^[0-9A-Za-z:_-]{4,128}$")
_CODE = re.compile(r"^[0-9A-Za-z._-]{1,64}$")
MAX_ITEMS = 50
MAX_ITEM_CHARS = 500
MAX_REASON_CHARS = 500

RECORD_ISSUED = "licence_issued"
RECORD_REVOKED = "licence_revoked"
RECORD_REPLACED = "licence_replaced"


def _invalid(code: str, zh: str, en: str) -> DomainError:
    return DomainError(code, zh, en, ErrorKind.INVALID)


# --------------------------------------------------------------------------------------------
# identifier


def check_character(body: str) -> str:
    """ISO/IEC 7064 MOD 37,36 hybrid check character of ``body`` (characters 0-9, A-Z)."""
    product = 36
    for ch in body:
        if ch not in _VALUES:
            raise _invalid(
                "licence_id_invalid",
                f"电子证照标识含有非法字符 {ch!r}",
                f"the licence identifier holds an illegal character {ch!r}",
            )
        total = (product + _VALUES[ch]) % 36 or 36
        product = (total * 2) % 37
    return _ALPHABET[(37 - product) % 36]


def make_identifier(type_code: str, issuer_code: str, serial: str, version: int = 1) -> str:
    if not _TYPE_CODE.match(type_code or ""):
        raise _invalid(
            "licence_type_invalid",
            "证照类型代码应为 18 位统一社会信用代码加 3 位数字",
            "the licence type code must be an 18-character credit code and 3 digits",
        )
    issuer_code = validate_credit_code(issuer_code)
    if not _SERIAL.match(serial or ""):
        raise _invalid(
            "licence_serial_invalid", "顺序号应为 1-40 位数字或大写字母", "the serial must be 1-40 of 0-9A-Z"
        )
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= 999:
        raise _invalid("licence_version_invalid", "版本号应为 1-999", "the version must be 1-999")
    body = f"{type_code}{issuer_code}{serial}{version:03d}"
    return f"{ROOT_CODE}.{type_code}.{issuer_code}.{serial}.{version:03d}.{check_character(body)}"


@dataclass(frozen=True)
class LicenceId:
    type_code: str
    issuer_code: str
    serial: str
    version: int
    check: str

    def __str__(self) -> str:
        return f"{ROOT_CODE}.{self.type_code}.{self.issuer_code}.{self.serial}.{self.version:03d}.{self.check}"


def parse_identifier(text: str) -> LicenceId:
    """Parse and check an identifier; a wrong shape or check character raises ``licence_id_invalid``."""
    if not isinstance(text, str) or len(text) > 160 or not text.startswith(ROOT_CODE + "."):
        raise _invalid("licence_id_invalid", "不是电子证照标识", "not an electronic licence identifier")
    parts = text[len(ROOT_CODE) + 1 :].split(".")
    if len(parts) != 5:
        raise _invalid(
            "licence_id_invalid", "电子证照标识应有五段", "a licence identifier has five parts after the root"
        )
    type_code, issuer_code, serial, version, check = parts
    if not (_TYPE_CODE.match(type_code) and _SERIAL.match(serial) and _VERSION.match(version) and len(check) == 1):
        raise _invalid("licence_id_invalid", "电子证照标识格式不正确", "the licence identifier is malformed")
    try:
        validate_credit_code(issuer_code)
    except DomainError as exc:
        raise _invalid("licence_id_invalid", "颁发机构代码无效", "the issuer code is not a valid credit code") from exc
    if check_character(f"{type_code}{issuer_code}{serial}{version}") != check:
        raise _invalid(
            "licence_id_checksum", "电子证照标识校验位不正确", "the licence identifier's check character is wrong"
        )
    return LicenceId(type_code, issuer_code, serial, int(version), check)


# --------------------------------------------------------------------------------------------
# records


def canonical_json(value: Mapping[str, Any]) -> bytes:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode("utf-8")


def _text(value: object, limit: int, what: str) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > limit:
        raise _invalid("licence_field_invalid", f"{what}为空或过长", f"{what} is empty or longer than {limit}")
    return value


@dataclass(frozen=True)
class Licence:
    """An electronic licence as issued by a department (the signed part)."""

    identifier: str
    type_name: str
    holder_key: str  # key of the person or enterprise in the materials library, never a raw ID number
    holder_kind: str  # "person" or "enterprise"
    issuer_node: str
    issuer_department: str
    issuer_name: str
    issued_on: date
    valid_from: date
    valid_until: date | None  # None: long-term (长期有效)
    data_items: Mapping[str, str] = field(default_factory=dict)
    document_id: str | None = None  # the sealed result PDF showing this licence

    def __post_init__(self) -> None:
        parse_identifier(self.identifier)
        _text(self.type_name, 100, "证照类型名称 / type name")
        if not _HOLDER_KEY.match(self.holder_key or "") or re.fullmatch(r"[0-9]{17}[0-9Xx]", self.holder_key):
            raise _invalid(
                "licence_holder_invalid",
                "持证主体必须是材料库的主体键，不能是身份证号码",
                "the holder must be a materials-library key, never a raw ID number",
            )
        if self.holder_kind not in {"person", "enterprise"}:
            raise _invalid("licence_holder_invalid", "持证主体类型无效", "holder kind must be person or enterprise")
        if not (_CODE.match(self.issuer_node or "") and _CODE.match(self.issuer_department or "")):
            raise _invalid("licence_issuer_invalid", "颁发部门代码无效", "the issuer node or department is malformed")
        _text(self.issuer_name, 100, "颁发部门名称 / issuer name")
        if self.valid_until is not None and self.valid_until < self.valid_from:
            raise _invalid("licence_validity_invalid", "有效期截止早于起始", "validity ends before it starts")
        if len(self.data_items) > MAX_ITEMS:
            raise _invalid("licence_items_invalid", "数据项过多", f"more than {MAX_ITEMS} data items")
        for key, value in self.data_items.items():
            _text(key, 100, "数据项名称 / item name")
            if not isinstance(value, str) or len(value) > MAX_ITEM_CHARS:
                raise _invalid(
                    "licence_items_invalid", "数据项值无效", f"item {key!r} is not text of ≤ {MAX_ITEM_CHARS}"
                )

    @property
    def issuer(self) -> str:
        return f"{self.issuer_node}/{self.issuer_department}"

    def to_record(self) -> dict[str, Any]:
        return {
            "record_type": RECORD_ISSUED,
            "identifier": self.identifier,
            "type_name": self.type_name,
            "holder_key": self.holder_key,
            "holder_kind": self.holder_kind,
            "issuer_node": self.issuer_node,
            "issuer_department": self.issuer_department,
            "issuer_name": self.issuer_name,
            "issued_on": self.issued_on.isoformat(),
            "valid_from": self.valid_from.isoformat(),
            "valid_until": self.valid_until.isoformat() if self.valid_until else None,
            "data_items": dict(sorted(self.data_items.items())),
            "document_id": self.document_id,
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Licence:
        if not isinstance(record, Mapping) or record.get("record_type") != RECORD_ISSUED:
            raise _invalid("licence_record_invalid", "不是证照签发记录", "not a licence issue record")
        try:
            items = record.get("data_items") or {}
            if not isinstance(items, Mapping):
                raise TypeError("data_items")
            return cls(
                identifier=record["identifier"],
                type_name=record["type_name"],
                holder_key=record["holder_key"],
                holder_kind=record["holder_kind"],
                issuer_node=record["issuer_node"],
                issuer_department=record["issuer_department"],
                issuer_name=record["issuer_name"],
                issued_on=date.fromisoformat(record["issued_on"]),
                valid_from=date.fromisoformat(record["valid_from"]),
                valid_until=date.fromisoformat(record["valid_until"]) if record.get("valid_until") else None,
                data_items=dict(items),
                document_id=record.get("document_id"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise _invalid(
                "licence_record_invalid", "证照记录字段缺失或无效", f"licence record invalid: {exc}"
            ) from exc


def revocation_record(licence: Licence, reason: str, at: datetime) -> dict[str, Any]:
    """A revocation (注销/吊销) by the issuing department: an event, signed like the licence."""
    return {
        "record_type": RECORD_REVOKED,
        "identifier": licence.identifier,
        "issuer_node": licence.issuer_node,
        "issuer_department": licence.issuer_department,
        "reason": _text(reason, MAX_REASON_CHARS, "吊销原因 / reason"),
        "at": at.isoformat(),
    }


def replacement_record(old: Licence, new: Licence, reason: str, at: datetime) -> dict[str, Any]:
    """``new`` replaces ``old`` (换发/变更): same holder and issuer, a higher version or a new serial."""
    if old.holder_key != new.holder_key or old.issuer != new.issuer or old.identifier == new.identifier:
        raise DomainError(
            "licence_replacement_invalid",
            "换发的证照必须属于同一持证主体和颁发部门，且标识不同",
            "a replacement must have the same holder and issuer and a different identifier",
            ErrorKind.CONFLICT,
        )
    return {
        "record_type": RECORD_REPLACED,
        "identifier": old.identifier,
        "replaced_by": new.identifier,
        "issuer_node": old.issuer_node,
        "issuer_department": old.issuer_department,
        "reason": _text(reason, MAX_REASON_CHARS, "换发原因 / reason"),
        "at": at.isoformat(),
    }


class LicenceStatus(StrEnum):
    VALID = "valid"
    NOT_YET_VALID = "not_yet_valid"
    EXPIRED = "expired"
    REVOKED = "revoked"
    REPLACED = "replaced"


def status_of(licence: Licence, records: Iterable[Mapping[str, Any]], today: date) -> LicenceStatus:
    """Fold the (already signature-checked) records about ``licence`` into its status on ``today``.

    Records of other licences, or not from the licence's own issuer, are ignored: only the issuing
    department revokes or replaces what it issued.
    """
    revoked = replaced = False
    for record in records:
        if (
            record.get("identifier") != licence.identifier
            or record.get("issuer_node") != licence.issuer_node
            or record.get("issuer_department") != licence.issuer_department
        ):
            continue
        revoked = revoked or record.get("record_type") == RECORD_REVOKED
        replaced = replaced or record.get("record_type") == RECORD_REPLACED
    if revoked:
        return LicenceStatus.REVOKED
    if replaced:
        return LicenceStatus.REPLACED
    if today < licence.valid_from:
        return LicenceStatus.NOT_YET_VALID
    if licence.valid_until is not None and today > licence.valid_until:
        return LicenceStatus.EXPIRED
    return LicenceStatus.VALID
