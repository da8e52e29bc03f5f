"""The shared materials library (申办材料共享库): library records and the rules of reusing them.

This module owns the record of one material held once for its owner (keyed by the look-up key of a
person's ID number or an enterprise's credit code, never the number itself) — its catalogue
material code, how much it can be trusted (its grade), the SHA-256 of its file, issuer and
validity — and the pure rules acceptance needs: which of a matter's
materials are on file and valid on a date, and reusing one, which creates a *link* from the case to
the library record (never a copy of the file) or refuses with a bilingual reason: expired, revoked,
not yet valid, someone else's, the wrong type, or too weak a grade for what the matter asks.

Grades, strongest first: ``issued`` (issued by a department, e.g. a licence it granted),
``checked`` (a window clerk checked it against the original), ``uploaded`` (a file the applicant
uploaded), ``self_declared`` (the applicant's own declaration). What a material needs — an assumption
written down here, no public rule was at hand: a material the catalogue says a department issues or
the shared library supplies, or one required as an original, needs ``checked`` or better; a copy or
an electronic material needs ``uploaded`` or better. A self-declared record never stands in for a material on its own.

The file itself is an encrypted attachment kept by an adapter; here only its hash travels.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum
from typing import Any

from node.domain.catalogue import Material, Matter
from node.domain.errors import DomainError, ErrorKind

__all__ = [
    "GRADE_LABELS",
    "LibraryMaterial",
    "MaterialGrade",
    "MaterialLink",
    "OnFile",
    "materials_on_file",
    "required_grade",
    "reuse",
    "validate_owner_key",
]


class MaterialGrade(StrEnum):
    ISSUED = "issued"
    CHECKED = "checked"
    UPLOADED = "uploaded"
    SELF_DECLARED = "self_declared"


GRADE_LABELS: dict[MaterialGrade, tuple[str, str]] = {
    MaterialGrade.ISSUED: ("部门出具", "issued by a department"),
    MaterialGrade.CHECKED: ("窗口核验原件", "checked against the original"),
    MaterialGrade.UPLOADED: ("申请人上传", "uploaded by the applicant"),
    MaterialGrade.SELF_DECLARED: ("申请人自述", "self-declared"),
}
_GRADE_STRENGTH = {
    MaterialGrade.SELF_DECLARED: 0,
    MaterialGrade.UPLOADED: 1,
    MaterialGrade.CHECKED: 2,
    MaterialGrade.ISSUED: 3,
}
_MATERIAL_ID = re.compile(r"[0-9A-Za-z_:.-]{1,80}", re.ASCII)
_MATERIAL_CODE = re.compile(r"[0-9A-Za-z_.-]{1,40}", re.ASCII)
_SHA256 = re.compile(r"[0-9a-f]{64}", re.ASCII)
_OWNER_KEY = re.compile(r"[0-9A-Za-z:_-]{4,128}", re.ASCII)
_RAW_ID_NUMBER = re.compile(r"[0-9]{17}[0-9Xx]", re.ASCII)
_MAX_ISSUER = 100
RECORD_STATUSES = frozenset({"valid", "revoked"})


def _invalid(code: str, zh: str, en: str, kind: ErrorKind = ErrorKind.INVALID) -> DomainError:
    return DomainError(code, zh, en, kind)


def _bad_record(zh: str, en: str) -> DomainError:
    return _invalid("invalid_library_material", f"材料库记录无效：{zh}", f"Invalid library material: {en}")


def validate_owner_key(value: object) -> str:
    """The owner's library key: the PersonalData adapter's look-up key (HMAC) of their ID number or credit code.

    The same rule as a licence's holder key (node/domain/licence.py): 4-128 of ``0-9A-Za-z:_-``, and
    never a raw ID number — the library matches people by number (一号匹配) without holding the number.
    """
    if not isinstance(value, str) or not _OWNER_KEY.fullmatch(value) or _RAW_ID_NUMBER.fullmatch(value):
        raise _bad_record(
            "所有人须为材料库主体键（身份证号码或信用代码的查询键），不能是身份证号码本身",
            "the owner must be a library key (the look-up key of an ID number or credit code), never a raw ID number",
        )
    return value


def _date(value: object, what_zh: str, what_en: str) -> date:
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    if isinstance(value, str) and len(value) == 10:
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    raise _bad_record(f"{what_zh}应为 YYYY-MM-DD 日期", f"{what_en} must be a YYYY-MM-DD date")


@dataclass(frozen=True, repr=False)
class LibraryMaterial:
    """One material held once in the library for its owner; cases link to it, never copy it."""

    material_id: str
    owner_key: str
    material_code: str  # the catalogue's material code (M001 居民身份证 …)
    grade: MaterialGrade
    sha256: str
    issuer: str  # a department code, or the node/window that checked or received it
    issued_on: date
    valid_until: date | None = None  # None: does not expire
    status: str = "valid"

    def __post_init__(self) -> None:
        if not isinstance(self.material_id, str) or not _MATERIAL_ID.fullmatch(self.material_id):
            raise _bad_record("材料编号格式错误", "the material id must be 1-80 letters, digits or _:.-")
        object.__setattr__(self, "owner_key", validate_owner_key(self.owner_key))
        if not isinstance(self.material_code, str) or not _MATERIAL_CODE.fullmatch(self.material_code):
            raise _bad_record("材料类型编码格式错误", "the material code must be 1-40 letters, digits or _.-")
        try:
            object.__setattr__(self, "grade", MaterialGrade(self.grade))
        except ValueError:
            raise _bad_record(
                "材料等级应为 issued、checked、uploaded 或 self_declared",
                "the grade must be issued, checked, uploaded or self_declared",
            ) from None
        if not isinstance(self.sha256, str) or not _SHA256.fullmatch(self.sha256):
            raise _bad_record("SHA-256 应为 64 位小写十六进制", "sha256 must be 64 lowercase hex digits")
        if (
            not isinstance(self.issuer, str)
            or not 1 <= len(self.issuer) <= _MAX_ISSUER
            or not self.issuer.isprintable()
        ):
            raise _bad_record(
                f"出具单位应为 1 至 {_MAX_ISSUER} 个字符", f"the issuer must be 1-{_MAX_ISSUER} characters"
            )
        object.__setattr__(self, "issued_on", _date(self.issued_on, "出具日期", "issued_on"))
        if self.valid_until is not None:
            object.__setattr__(self, "valid_until", _date(self.valid_until, "有效期", "valid_until"))
            if self.valid_until < self.issued_on:
                raise _bad_record("有效期早于出具日期", "valid_until is before issued_on")
        if self.status not in RECORD_STATUSES:
            raise _bad_record("状态应为 valid 或 revoked", "the status must be valid or revoked")

    def __repr__(self) -> str:
        return (
            f"LibraryMaterial(material_id={self.material_id!r}, owner_key={self.owner_key[:8] + '…'!r}, "
            f"material_code={self.material_code!r}, grade={self.grade.value!r}, issuer={self.issuer!r}, "
            f"valid_until={self.valid_until}, status={self.status!r})"
        )

    __str__ = __repr__

    def problem_on(self, day: date) -> DomainError | None:
        """Why this record cannot be used on ``day``; None when it is valid then."""
        if self.status == "revoked":
            return _invalid(
                "material_revoked", "该材料已被撤销，不能复用", "This material has been revoked and cannot be reused",
                ErrorKind.CONFLICT,
            )  # fmt: skip
        if day < self.issued_on:
            return _invalid(
                "material_not_yet_valid",
                f"该材料自 {self.issued_on.isoformat()} 起才有效",
                f"This material is valid only from {self.issued_on.isoformat()}",
                ErrorKind.CONFLICT,
            )
        if self.valid_until is not None and day > self.valid_until:
            return _invalid(
                "material_expired",
                f"该材料已于 {self.valid_until.isoformat()} 过期，请重新提交",
                f"This material expired on {self.valid_until.isoformat()}; hand in a current one",
                ErrorKind.CONFLICT,
            )
        return None

    def is_valid_on(self, day: date) -> bool:
        return self.problem_on(day) is None

    def to_dict(self) -> dict[str, Any]:
        return {
            "material_id": self.material_id,
            "owner_key": self.owner_key,
            "material_code": self.material_code,
            "grade": self.grade.value,
            "sha256": self.sha256,
            "issuer": self.issuer,
            "issued_on": self.issued_on.isoformat(),
            "valid_until": None if self.valid_until is None else self.valid_until.isoformat(),
            "status": self.status,
        }

    @classmethod
    def from_dict(cls, data: object) -> LibraryMaterial:
        if not isinstance(data, Mapping):
            raise _bad_record("记录应为对象", "a record must be an object")
        return cls(
            material_id=data.get("material_id"),  # type: ignore[arg-type]
            owner_key=data.get("owner_key"),  # type: ignore[arg-type]
            material_code=data.get("material_code"),  # type: ignore[arg-type]
            grade=data.get("grade"),  # type: ignore[arg-type]
            sha256=data.get("sha256"),  # type: ignore[arg-type]
            issuer=data.get("issuer"),  # type: ignore[arg-type]
            issued_on=data.get("issued_on"),  # type: ignore[arg-type]
            valid_until=data.get("valid_until"),
            status=data.get("status", "valid"),
        )


def required_grade(material: Material) -> MaterialGrade:
    """The weakest grade a library record may have to stand in for ``material`` (see the module doc)."""
    if material.source in {"issued_by_department", "shared_library"} or material.form == "original":
        return MaterialGrade.CHECKED
    return MaterialGrade.UPLOADED


def _strong_enough(record: LibraryMaterial, material: Material) -> bool:
    return _GRADE_STRENGTH[record.grade] >= _GRADE_STRENGTH[required_grade(material)]


@dataclass(frozen=True)
class OnFile:
    """One material of a matter, and what the owner's library holds for it on the given day.

    ``usable`` is the best record that may be reused (strongest grade, then latest expiry); when there
    is none, ``problem`` says why the best record on file cannot be (expired, too weak …) or is None
    when nothing of this type is on file at all.
    """

    material: Material
    usable: LibraryMaterial | None
    problem: DomainError | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "material_code": self.material.code,
            "name": self.material.name,
            "required": self.material.required,
            "on_file": self.usable is not None,
            "material_id": None if self.usable is None else self.usable.material_id,
            "grade": None if self.usable is None else self.usable.grade.value,
            "valid_until": None
            if self.usable is None or self.usable.valid_until is None
            else self.usable.valid_until.isoformat(),
            "problem": None if self.problem is None else self.problem.to_dict(),
        }


def _preference(record: LibraryMaterial) -> tuple[int, date, date]:
    return (_GRADE_STRENGTH[record.grade], record.valid_until or date.max, record.issued_on)


def _grade_too_low(record: LibraryMaterial, material: Material) -> DomainError:
    need_zh, need_en = GRADE_LABELS[required_grade(material)]
    have_zh, have_en = GRADE_LABELS[record.grade]
    return _invalid(
        "material_grade_too_low",
        f"「{material.name}」须为{need_zh}或更高等级，材料库中的为{have_zh}",
        f"'{material.name}' must be {need_en} or stronger; the library holds one {have_en}",
        ErrorKind.CONFLICT,
    )


def materials_on_file(matter: Matter, library: Iterable[LibraryMaterial], owner_key: str, day: date) -> list[OnFile]:
    """For each material of ``matter`` (in list order), the owner's best reusable record on ``day``.

    Records of other owners in ``library`` are ignored, so a caller may pass a whole node's library.
    """
    owner = validate_owner_key(owner_key)
    by_code: dict[str, list[LibraryMaterial]] = {}
    for record in library:
        if record.owner_key == owner:
            by_code.setdefault(record.material_code, []).append(record)
    out = []
    for material in matter.materials:
        candidates = sorted(by_code.get(material.code, ()), key=_preference, reverse=True)
        usable = next((r for r in candidates if r.is_valid_on(day) and _strong_enough(r, material)), None)
        problem = None
        if usable is None and candidates:
            best = candidates[0]
            problem = best.problem_on(day) or _grade_too_low(best, material)
        out.append(OnFile(material, usable, problem))
    return out


@dataclass(frozen=True)
class MaterialLink:
    """A case's use of a library record: a reference and the hash it had, never the file.

    The link is also the use log's entry — who (``node``, ``actor``), where and for which case used
    the owner's material — which the owner can read back.
    """

    case_id: str
    material_code: str
    material_id: str
    sha256: str
    grade: MaterialGrade
    node: str
    actor: str
    linked_on: date

    def to_dict(self) -> dict[str, Any]:
        return {
            "case_id": self.case_id,
            "material_code": self.material_code,
            "material_id": self.material_id,
            "sha256": self.sha256,
            "grade": self.grade.value,
            "node": self.node,
            "actor": self.actor,
            "linked_on": self.linked_on.isoformat(),
        }


def reuse(
    record: LibraryMaterial,
    *,
    matter: Matter,
    material_code: str,
    owner_key: str,
    case_id: str,
    node: str,
    actor: str,
    day: date,
) -> MaterialLink:
    """Link ``record`` to a case as its ``material_code`` material, or refuse with the reason."""
    material = matter.material(material_code)  # an unknown code is the catalogue's own error
    if record.owner_key != validate_owner_key(owner_key):
        raise _invalid(
            "material_not_owned",
            "该材料属于他人，不能用于本申请人的办件",
            "This material belongs to someone else and cannot be used for this applicant's case",
            ErrorKind.FORBIDDEN,
        )
    if record.material_code != material.code:
        raise _invalid(
            "material_type_mismatch",
            f"该材料不是「{material.name}」",
            f"This material is not a '{material.name}'",
        )
    problem = record.problem_on(day)
    if problem is not None:
        raise problem
    if not _strong_enough(record, material):
        raise _grade_too_low(record, material)
    for value, what in ((case_id, "case_id"), (node, "node"), (actor, "actor")):
        if not isinstance(value, str) or not 1 <= len(value) <= 100 or not value.isprintable():
            raise _invalid("invalid_material_link", f"{what} 无效", f"invalid {what}")
    return MaterialLink(
        case_id=case_id,
        material_code=material.code,
        material_id=record.material_id,
        sha256=record.sha256,
        grade=record.grade,
        node=node,
        actor=actor,
        linked_on=day,
    )
