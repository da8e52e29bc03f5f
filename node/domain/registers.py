"""Reference registers (人口库 and 法人库): person and enterprise records, and a synthetic population.

This module owns the two record types as plain, validated value objects (bounded sizes, valid GB 11643
ID numbers, valid GB 32100 credit codes, 128 finite floats per face encoding) with ``to_dict`` /
``from_dict`` for storage and replication, and ``generate_population``: a deterministic, realistic
synthetic population for a list of division codes (the demo tree's villages).

Names and ID numbers are personal data: they are encrypted at rest by the PersonalData adapter, and
these records never show them in ``repr`` (masked), so a record that reaches a log leaks nothing.

Assumptions (no public source was at hand for a national register schema): statuses are the common
户籍 states (正常 / 迁出 / 死亡 / 注销) and 市场主体 states (存续 / 停业 / 吊销 / 注销); a household
is an opaque identifier shared by its members; a generated person's ID region is their county.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from node.domain.errors import DomainError
from node.domain.identifiers import (
    birth_date_of,
    make_credit_code,
    make_id_number,
    mask_id_number,
    validate_credit_code,
    validate_id_number,
)
from node.domain.identity import MappingReferences, face_encodings
from tiers import DivisionTree

__all__ = [
    "ENTERPRISE_STATUSES",
    "PERSON_STATUSES",
    "EnterpriseRecord",
    "PersonRecord",
    "Population",
    "generate_population",
    "held_at",
    "mask_name",
    "reference_lookup",
]

PERSON_STATUSES: dict[str, str] = {"active": "正常", "moved_out": "迁出", "deceased": "死亡", "cancelled": "注销"}
ENTERPRISE_STATUSES: dict[str, str] = {"active": "存续", "suspended": "停业", "revoked": "吊销", "cancelled": "注销"}

_DIVISION_CODE = re.compile(r"[0-9A-Z]{12}", re.ASCII)
_HOUSEHOLD_ID = re.compile(r"[0-9A-Za-z_-]{1,40}", re.ASCII)
# Han characters plus the middle dot of transliterated minority and foreign names (e.g. 阿依古丽·买买提).
_PERSON_NAME = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\U00020000-\U0002ebef·]{2,20}")
_MAX_ENTERPRISE_NAME = 100


def _invalid(code: str, zh: str, en: str) -> DomainError:
    return DomainError(code, zh, en)


def mask_name(name: str) -> str:
    """Keep the first character only: 张三丰 → 张**."""
    return name[:1] + "*" * (len(name) - 1) if name else ""


def _person_name(value: object, what_zh: str = "姓名", what_en: str = "name") -> str:
    if not isinstance(value, str) or not _PERSON_NAME.fullmatch(value):
        raise _invalid(
            "invalid_person_name",
            f"{what_zh}应为 2 至 20 个汉字（可含间隔号·）",
            f"The {what_en} must be 2 to 20 Chinese characters (the middle dot · allowed)",
        )
    return value


def _division_code(value: object, what_zh: str, what_en: str) -> str:
    if not isinstance(value, str) or not _DIVISION_CODE.fullmatch(value):
        raise _invalid(
            "invalid_division_code",
            f"{what_zh}应为 12 位区划代码",
            f"The {what_en} must be a 12-character division code",
        )
    return value


def _status(value: object, allowed: Mapping[str, str]) -> str:
    if not isinstance(value, str) or value not in allowed:
        names = "、".join(f"{k}（{v}）" for k, v in allowed.items())
        raise _invalid(
            "invalid_register_status", f"状态无效，应为 {names}", f"Invalid status; use one of {list(allowed)}"
        )
    return value


def _mapping(data: object, what: str) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise _invalid("invalid_register_record", f"{what}记录格式错误", f"A {what} record must be an object")
    return data


@dataclass(frozen=True, repr=False)
class PersonRecord:
    """One resident in the population register (人口库)."""

    id_number: str
    name: str
    residence_code: str  # registered residence (户籍地), a division code of the tree
    household_id: str
    face_encodings: tuple[tuple[float, ...], ...] = ()
    status: str = "active"

    def __post_init__(self) -> None:
        object.__setattr__(self, "id_number", validate_id_number(self.id_number))
        _person_name(self.name)
        _division_code(self.residence_code, "户籍地", "registered residence")
        if not isinstance(self.household_id, str) or not _HOUSEHOLD_ID.fullmatch(self.household_id):
            raise _invalid(
                "invalid_household_id",
                "户号应为 1 至 40 位字母、数字、下划线或连字符",
                "The household ID must be 1 to 40 letters, digits, underscores or hyphens",
            )
        object.__setattr__(self, "face_encodings", face_encodings(self.face_encodings))
        _status(self.status, PERSON_STATUSES)

    @property
    def birth_date(self) -> date:
        return birth_date_of(self.id_number)

    @property
    def is_male(self) -> bool:
        # GB 11643: the 17th character (sequence code's last digit) is odd for men.
        return int(self.id_number[16]) % 2 == 1

    def __repr__(self) -> str:
        return (
            f"PersonRecord(id_number={mask_id_number(self.id_number)!r}, name={mask_name(self.name)!r}, "
            f"residence_code={self.residence_code!r}, household_id={self.household_id!r}, "
            f"face_encodings={len(self.face_encodings)}, status={self.status!r})"
        )

    __str__ = __repr__

    def to_dict(self) -> dict[str, Any]:
        return {
            "id_number": self.id_number,
            "name": self.name,
            "residence_code": self.residence_code,
            "household_id": self.household_id,
            "face_encodings": [list(e) for e in self.face_encodings],
            "status": self.status,
        }

    @classmethod
    def from_dict(cls, data: object) -> PersonRecord:
        data = _mapping(data, "人口")
        return cls(
            id_number=data.get("id_number"),  # type: ignore[arg-type]
            name=data.get("name"),  # type: ignore[arg-type]
            residence_code=data.get("residence_code"),  # type: ignore[arg-type]
            household_id=data.get("household_id"),  # type: ignore[arg-type]
            face_encodings=data.get("face_encodings", ()),
            status=data.get("status", "active"),
        )


@dataclass(frozen=True, repr=False)
class EnterpriseRecord:
    """One market entity in the legal-person register (法人库)."""

    credit_code: str
    name: str
    legal_representative_id: str
    legal_representative_name: str
    registered_address_code: str  # registration place (登记注册地), a division code of the tree
    status: str = "active"

    def __post_init__(self) -> None:
        object.__setattr__(self, "credit_code", validate_credit_code(self.credit_code))
        if (
            not isinstance(self.name, str)
            or not 2 <= len(self.name) <= _MAX_ENTERPRISE_NAME
            or not self.name.isprintable()
            or self.name != self.name.strip()
        ):
            raise _invalid(
                "invalid_enterprise_name",
                f"企业名称应为 2 至 {_MAX_ENTERPRISE_NAME} 个可打印字符",
                f"The enterprise name must be 2 to {_MAX_ENTERPRISE_NAME} printable characters",
            )
        object.__setattr__(self, "legal_representative_id", validate_id_number(self.legal_representative_id))
        _person_name(self.legal_representative_name, "法定代表人姓名", "legal representative's name")
        _division_code(self.registered_address_code, "登记注册地", "registered address")
        _status(self.status, ENTERPRISE_STATUSES)

    def __repr__(self) -> str:
        return (
            f"EnterpriseRecord(credit_code={self.credit_code!r}, name={self.name!r}, "
            f"legal_representative_id={mask_id_number(self.legal_representative_id)!r}, "
            f"legal_representative_name={mask_name(self.legal_representative_name)!r}, "
            f"registered_address_code={self.registered_address_code!r}, status={self.status!r})"
        )

    __str__ = __repr__

    def to_dict(self) -> dict[str, Any]:
        return {
            "credit_code": self.credit_code,
            "name": self.name,
            "legal_representative_id": self.legal_representative_id,
            "legal_representative_name": self.legal_representative_name,
            "registered_address_code": self.registered_address_code,
            "status": self.status,
        }

    @classmethod
    def from_dict(cls, data: object) -> EnterpriseRecord:
        data = _mapping(data, "法人")
        return cls(
            credit_code=data.get("credit_code"),  # type: ignore[arg-type]
            name=data.get("name"),  # type: ignore[arg-type]
            legal_representative_id=data.get("legal_representative_id"),  # type: ignore[arg-type]
            legal_representative_name=data.get("legal_representative_name"),  # type: ignore[arg-type]
            registered_address_code=data.get("registered_address_code"),  # type: ignore[arg-type]
            status=data.get("status", "active"),
        )


def reference_lookup(people: Iterable[PersonRecord]) -> MappingReferences:
    """The ``ReferenceLookup`` of a register: reference faces of people whose status is active only.

    Someone moved out, deceased or cancelled has no reference, so a photo can never verify as them.
    """
    return MappingReferences(
        (p.id_number, p.face_encodings) for p in people if p.status == "active" and p.face_encodings
    )


def held_at(node: str, residence_code: str, tree: DivisionTree) -> bool:
    """Whether ``node`` holds the record of someone registered at ``residence_code``.

    A record is held where it is needed: at the residence's own node and every node above it up to the
    city (the residence subtree's path), so a village verifies its residents with the uplink down and a
    county or the city can serve anyone living below it. A residence outside the tree is held at the city only.
    """
    if residence_code not in tree:
        return node == tree.root
    return node in tree and tree.is_in_subtree(residence_code, node)


# --- Synthetic population --------------------------------------------------------------------------------

# The most common surnames, most frequent first (the first few repeated to weight them), with the
# Hunan-frequent 谭、彭、曾、邓、贺 included.
_SURNAMES = (
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈姚卢"
    "姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛郝龚邵万钱严覃武戴莫孔向汤"
)
_SURNAME_WEIGHTS = tuple(max(1.0, 12.0 - i * 0.25) for i in range(len(_SURNAMES)))
_COMPOUND_SURNAMES = ("欧阳", "司马", "诸葛", "上官")
_MALE_CHARS = "伟强磊军勇杰涛斌超明刚平辉鹏华飞鑫波宇浩凯健俊帆帅旭宁龙林洋志国建文海峰东亮成振家晨博轩子睿"
_FEMALE_CHARS = "芳娜敏静丽艳娟霞秀玲桂英红梅琳雪婷倩颖欣怡萱佳雨思涵悦慧兰萍燕丹琴云洁月诗妍梓"
_FIRM_WORDS = "鑫达恒泰华盛宏远兴旺金源德丰永安瑞祥嘉禾润泽宏图益众湘丰资江银城桃花明珠新乐康"
_FIRM_TRADES = (
    ("农业科技", "有限公司"),
    ("种养", "专业合作社"),
    ("商贸", "有限公司"),
    ("建材", "有限公司"),
    ("餐饮管理", "有限公司"),
    ("竹木制品", "有限公司"),
    ("茶业", "有限公司"),
    ("物流", "有限公司"),
    ("电子商务", "有限公司"),
)
_HOUSEHOLD_SIZES = (1, 2, 3, 4, 5, 6)
_HOUSEHOLD_WEIGHTS = (15, 25, 25, 18, 11, 6)
# GB 11714 organisation code check (the 9 characters at positions 9-17 of a credit code).
_ORG_WEIGHTS = (3, 7, 9, 10, 5, 8, 4, 2)


@dataclass
class Population:
    """What ``generate_population`` made: people (grouped into households) and enterprises."""

    people: list[PersonRecord] = field(default_factory=list)
    enterprises: list[EnterpriseRecord] = field(default_factory=list)

    def __repr__(self) -> str:
        return f"Population({len(self.people)} people, {len(self.enterprises)} enterprises)"


def _org_code(rng: random.Random) -> str:
    body = f"{rng.randrange(10**8):08d}"
    check = 11 - sum(int(c) * w for c, w in zip(body, _ORG_WEIGHTS, strict=True)) % 11
    return body + {10: "X", 11: "0"}.get(check, str(check))


class _Generator:
    def __init__(self, today: date, seed: int) -> None:
        self.today = today
        self.seed = seed
        self.used_ids: set[str] = set()
        self.used_credit_codes: set[str] = set()

    def surname(self, rng: random.Random) -> str:
        if rng.random() < 0.005:
            return rng.choice(_COMPOUND_SURNAMES)
        return rng.choices(_SURNAMES, weights=_SURNAME_WEIGHTS)[0]

    def given_name(self, rng: random.Random, male: bool) -> str:
        chars = _MALE_CHARS if male else _FEMALE_CHARS
        return "".join(rng.choice(chars) for _ in range(1 if rng.random() < 0.3 else 2))

    def id_number(self, rng: random.Random, county6: str, birth: date, male: bool) -> str:
        # Sequence codes are unique per region and birth date; the last digit's parity is the sex.
        for _ in range(1000):
            sequence = rng.randrange(500) * 2 + (1 if male else 0)
            candidate = make_id_number(county6, birth, sequence)
            if candidate not in self.used_ids:
                self.used_ids.add(candidate)
                return candidate
        raise RuntimeError(f"no free ID sequence for {county6} on {birth}")  # 500 per day and sex: unreachable

    def birth(self, rng: random.Random, age_low: int, age_high: int) -> date:
        age_days = rng.randint(age_low * 365 + 1, age_high * 365 + 364)
        return self.today - timedelta(days=age_days)

    def person(
        self, rng: random.Random, division: str, household: str, surname: str, male: bool, birth: date
    ) -> PersonRecord:
        return PersonRecord(
            id_number=self.id_number(rng, division[:6], birth, male),
            name=surname + self.given_name(rng, male),
            residence_code=division,
            household_id=household,
        )

    def household(self, rng: random.Random, division: str, number: int) -> list[PersonRecord]:
        household = f"H{division}{number:05d}"
        size = rng.choices(_HOUSEHOLD_SIZES, weights=_HOUSEHOLD_WEIGHTS)[0]
        head_male = rng.random() < 0.7
        surname = self.surname(rng)
        head_birth = self.birth(rng, 22 if size > 1 else 18, 85)
        head_age = (self.today - head_birth).days // 365
        members = [self.person(rng, division, household, surname, head_male, head_birth)]
        if size >= 2:
            spouse_birth = min(
                head_birth + timedelta(days=rng.randint(-6 * 365, 6 * 365)), self.today - timedelta(days=20 * 365)
            )
            members.append(self.person(rng, division, household, self.surname(rng), not head_male, spouse_birth))
        # Children born when the head was 20 to 40, never in the future; grandparents only for younger heads.
        grandparents = 0
        if size >= 5 and head_age < 55:
            grandparents = min(2, size - 4)
        for _ in range(size - len(members) - grandparents):
            child_birth = head_birth + timedelta(days=rng.randint(20 * 365, 40 * 365))
            if child_birth > self.today - timedelta(days=30):
                child_birth = self.today - timedelta(days=rng.randint(30, 3 * 365))
            members.append(self.person(rng, division, household, surname, rng.random() < 0.52, child_birth))
        for index in range(grandparents):
            elder_birth = head_birth - timedelta(days=rng.randint(20 * 365, 35 * 365))
            elder_male = index == 0
            elder_surname = surname if elder_male else self.surname(rng)
            members.append(self.person(rng, division, household, elder_surname, elder_male, elder_birth))
        return members

    def enterprise(
        self, rng: random.Random, division: str, county_name: str, adults: Sequence[PersonRecord]
    ) -> EnterpriseRecord:
        for _ in range(100):
            # 9 = market regulation (工商), 1 = enterprise (2 = individual business, 3 = farmers' cooperative).
            trade, form = rng.choice(_FIRM_TRADES)
            kind = "93" if form == "专业合作社" else "91"
            code = make_credit_code(kind + division[:6] + _org_code(rng))
            if code not in self.used_credit_codes:
                self.used_credit_codes.add(code)
                break
        else:  # pragma: no cover - 10^8 organisation codes
            raise RuntimeError("no free credit code")
        brand = "".join(rng.sample(_FIRM_WORDS, 2))
        representative = rng.choice(adults)
        return EnterpriseRecord(
            credit_code=code,
            name=f"益阳市{county_name}{brand}{trade}{form}",
            legal_representative_id=representative.id_number,
            legal_representative_name=representative.name,
            registered_address_code=division,
        )


def generate_population(
    division_codes: Iterable[str],
    *,
    people_per_division: int = 60,
    enterprises_per_division: int = 2,
    county_names: Mapping[str, str] | None = None,
    seed: int = 20260101,
    today: date = date(2026, 1, 1),
) -> Population:
    """A realistic synthetic population living in the given divisions (usually villages), deterministic.

    Each division gets households of 1-6 people until it holds at least ``people_per_division``, then
    ``enterprises_per_division`` enterprises whose legal representative is one of its adults. ID
    numbers carry the division's county (its first 6 digits) and a birth date that fits the person's
    place in the household; credit codes carry the same county. ``county_names`` (county code → name,
    e.g. {"430902": "资阳区"}) goes into enterprise names. The same arguments always give the same
    population; one division's people do not depend on which other divisions are listed before it,
    except that a clashing ID or credit code is redrawn.
    """
    if people_per_division < 0 or enterprises_per_division < 0:
        raise ValueError("counts must not be negative")
    generator = _Generator(today, seed)
    population = Population()
    seen: set[str] = set()
    for division in division_codes:
        _division_code(division, "区划", "division")
        if division in seen:
            continue
        seen.add(division)
        rng = random.Random(f"{seed}:{division}")
        residents: list[PersonRecord] = []
        number = 0
        while len(residents) < people_per_division:
            number += 1
            residents.extend(generator.household(rng, division, number))
        population.people.extend(residents)
        adult_cutoff = today.replace(year=today.year - 18) if not (today.month == 2 and today.day == 29) else today
        adults = [p for p in residents if p.birth_date <= adult_cutoff]
        if adults:
            county_name = (county_names or {}).get(division[:6], "")
            for _ in range(enterprises_per_division):
                population.enterprises.append(generator.enterprise(rng, division, county_name, adults))
    return population
