"""The matter catalogue (事项目录): departments, matters, materials and implementation lists.

A *matter* (事项, GB/T 39554) is a kind of service a citizen or business can ask for: its authority
tier, jurisdiction rule, time limits (working days), materials, fees and delivery options. The
city authors one basic catalogue; a region's *implementation list* (实施清单) may delegate a
matter's authority downward or shorten its promised time limit for cases whose jurisdiction
location lies in the region's subtree.

Which node handles a case of a matter (routing) is :mod:`node.domain.jurisdiction`.

Everything here is pure: no Flask, no store, no network. A catalogue serialises to a JSON-able
dict (``to_dict``/``from_dict``) so it can be stored as a document and replicated.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal, InvalidOperation
from importlib import resources
from typing import Any, Literal

from node.domain.errors import DomainError, ErrorKind
from tiers.tree import DivisionTree, Tier, UnknownDivisionError, infer_tier

MaterialForm = Literal["original", "copy", "electronic"]
JurisdictionRule = Literal["residence", "property", "business_registration", "nearest"]
HandlingType = Literal["immediate", "promised"]

MATERIAL_FORMS: frozenset[str] = frozenset({"original", "copy", "electronic"})
MATERIAL_SOURCES: frozenset[str] = frozenset({"applicant", "shared_library", "issued_by_department"})
HANDLING_TYPES: frozenset[str] = frozenset({"immediate", "promised"})  # 即办件 / 承诺件
DELIVERY_OPTIONS: tuple[str, ...] = ("window", "post", "electronic")  # 窗口 / 邮寄 / 电子证照
FEE_DUE: tuple[str, ...] = ("on_acceptance", "after_approval")  # 受理时缴费 / 审批通过后缴费
# 通办 scope: where a matter may be accepted relative to its jurisdiction location
# (全国通办 / 跨省通办 / 全市通办 / 全县通办).
TONGBAN_SCOPES: frozenset[str] = frozenset({"national", "province", "city", "county"})
MATTER_TYPES: frozenset[str] = frozenset(
    {
        "行政许可",
        "行政处罚",
        "行政强制",
        "行政征收",
        "行政给付",
        "行政检查",
        "行政确认",
        "行政奖励",
        "行政裁决",
        "其他行政权力",
        "公共服务",
    }
)

# The request field that carries each rule's jurisdiction location; ``nearest`` needs none.
LOCATION_FIELDS: dict[str, str | None] = {
    "residence": "residence_code",
    "property": "property_code",
    "business_registration": "registered_code",
    "nearest": None,
}
SEED_RESOURCE = "data/catalogue.json"


def _invalid(code: str, zh: str, en: str) -> DomainError:
    return DomainError(code, zh, en, ErrorKind.INVALID)


def parse_tier(value: Tier | int | str) -> Tier:
    """A tier from a ``Tier``, its value (0–3) or its name (``"county"``); anything else is invalid."""
    if isinstance(value, Tier):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return Tier(value)
        except ValueError:
            pass
    elif isinstance(value, str) and value.upper() in Tier.__members__:
        return Tier[value.upper()]
    raise _invalid(
        "invalid_tier",
        f"无效的层级 {value!r}：应为 city（市）、county（县/区）、township（乡/镇/街道）或 village（村/社区）",
        f"invalid tier {value!r}: use city, county, township or village (or 0–3)",
    )


def tier_name(tier: Tier) -> str:
    """The lower-case name a tier is serialised as (``Tier.COUNTY`` → ``"county"``)."""
    return tier.name.lower()


def location_field(rule: str) -> str | None:
    """The request field naming the jurisdiction location of ``rule`` (``None`` for ``nearest``)."""
    try:
        return LOCATION_FIELDS[rule]
    except KeyError:
        raise _invalid(
            "invalid_jurisdiction_rule",
            f"无效的管辖规则 {rule!r}：应为 residence、property、business_registration 或 nearest",
            f"invalid jurisdiction rule {rule!r}: use residence, property, business_registration or nearest",
        ) from None


def known_division(tree: DivisionTree, code: object, what: str = "division") -> str:
    """``code`` if it names a division of ``tree``; otherwise the bilingual ``unknown_division`` error."""
    if not isinstance(code, str) or code not in tree:
        raise _invalid(
            "unknown_division",
            f"未知的区划代码 {code!r}（{what}）：请使用区划树中的 12 位代码，例如 430902000000",
            f"unknown division code {code!r} ({what}): use a 12-character code from the tier tree, e.g. 430902000000",
        )
    return code


def _require(condition: bool, what: str, zh: str, en: str) -> None:
    if not condition:
        raise _invalid("invalid_catalogue", f"目录数据无效（{what}）：{zh}", f"invalid catalogue entry ({what}): {en}")


def _non_negative_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


# ---------------------------------------------------------------------------------------------------------------------
# Value objects


@dataclass(frozen=True)
class Material:
    """One item of a matter's materials list (申请材料)."""

    code: str
    name: str
    form: MaterialForm
    copies: int
    source: str
    required: bool

    def __post_init__(self) -> None:
        what = f"material {self.code!r}"
        _require(isinstance(self.code, str) and bool(self.code), what, "材料编码不能为空", "empty material code")
        _require(isinstance(self.name, str) and bool(self.name), what, "材料名称不能为空", "empty material name")
        _require(self.form in MATERIAL_FORMS, what, f"材料形式 {self.form!r} 无效", f"unknown form {self.form!r}")
        _require(
            _non_negative_int(self.copies) and (self.copies >= 1 or self.form == "electronic"),
            what,
            "份数须为非负整数（纸质材料至少 1 份）",
            "copies must be a non-negative integer (at least 1 for paper)",
        )
        _require(
            self.source in MATERIAL_SOURCES, what, f"材料来源 {self.source!r} 无效", f"unknown source {self.source!r}"
        )
        _require(isinstance(self.required, bool), what, "required 须为布尔值", "required must be a boolean")

    def to_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "name": self.name,
            "form": self.form,
            "copies": self.copies,
            "source": self.source,
            "required": self.required,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Material:
        return cls(
            code=data["code"],
            name=data["name"],
            form=data["form"],
            copies=data["copies"],
            source=data["source"],
            required=data["required"],
        )


@dataclass(frozen=True)
class Department:
    """A department (部门) by its tier-independent code; every tier has its own office of it."""

    code: str
    name_zh: str
    name_en: str

    def __post_init__(self) -> None:
        what = f"department {self.code!r}"
        _require(isinstance(self.code, str) and bool(self.code), what, "部门编码不能为空", "empty department code")
        _require(bool(self.name_zh) and bool(self.name_en), what, "部门须有中英文名称", "needs a zh and an en name")

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "name_zh": self.name_zh, "name_en": self.name_en}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Department:
        return cls(code=data["code"], name_zh=data["name_zh"], name_en=data["name_en"])


@dataclass(frozen=True)
class Matter:
    """A general matter (通办事项) of the catalogue. Time limits are in working days.

    ``fee_yuan`` may be given as a string or ``Decimal`` (or an int); it is kept as a ``Decimal``.
    ``authority_tier`` may be given as a ``Tier``, its value or its name; it is kept as a ``Tier``.
    """

    code: str
    name: str
    matter_type: str
    department: str
    authority_tier: Tier
    jurisdiction_rule: JurisdictionRule
    legal_days: int
    promised_days: int
    handling_type: HandlingType
    visits_required: int
    fee_yuan: Decimal
    online_depth: int
    materials: tuple[Material, ...]
    delivery_options: tuple[str, ...]
    tongban_scope: str
    version: int = 1
    # When the fee falls due (issue 15): at acceptance (受理时缴费) or once approved (审批通过后缴费).
    fee_due: str = "after_approval"

    def __post_init__(self) -> None:
        what = f"matter {self.code!r}"
        object.__setattr__(self, "authority_tier", parse_tier(self.authority_tier))
        object.__setattr__(self, "fee_yuan", _parse_fee(self.fee_yuan, what))
        object.__setattr__(self, "materials", tuple(self.materials))
        object.__setattr__(self, "delivery_options", tuple(self.delivery_options))
        _require(isinstance(self.code, str) and bool(self.code), what, "事项编码不能为空", "empty matter code")
        _require(isinstance(self.name, str) and bool(self.name), what, "事项名称不能为空", "empty matter name")
        _require(
            self.matter_type in MATTER_TYPES, what, f"事项类型 {self.matter_type!r} 无效", f"type {self.matter_type!r}"
        )
        _require(bool(self.department), what, "须指定部门", "needs a department")
        location_field(self.jurisdiction_rule)  # raises on an unknown rule
        _require(
            _non_negative_int(self.legal_days) and _non_negative_int(self.promised_days),
            what,
            "法定时限和承诺时限须为非负整数（工作日）",
            "legal_days and promised_days must be non-negative integers (working days)",
        )
        _require(
            self.promised_days <= self.legal_days,
            what,
            "承诺时限不得超过法定时限",
            "promised_days may not exceed legal_days",
        )
        _require(
            self.handling_type in HANDLING_TYPES,
            what,
            "办件类型须为 immediate（即办件）或 promised（承诺件）",
            "handling_type must be immediate or promised",
        )
        _require(
            self.handling_type != "immediate" or self.promised_days <= 1,
            what,
            "即办件的承诺时限只能为 0 或 1 个工作日",
            "an immediate matter promises 0 or 1 working day",
        )
        _require(_non_negative_int(self.visits_required), what, "跑动次数须为非负整数", "visits_required >= 0")
        _require(
            isinstance(self.online_depth, int) and 1 <= self.online_depth <= 4,
            what,
            "网办深度须为 1–4",
            "online_depth must be 1-4",
        )
        _require(
            all(isinstance(m, Material) for m in self.materials), what, "材料清单格式错误", "materials must be Material"
        )
        codes = [m.code for m in self.materials]
        _require(len(codes) == len(set(codes)), what, "材料编码重复", "duplicate material codes")
        _require(
            bool(self.delivery_options)
            and set(self.delivery_options) <= set(DELIVERY_OPTIONS)
            and len(set(self.delivery_options)) == len(self.delivery_options),
            what,
            "送达方式须为 window、post、electronic 中的若干项（不重复）",
            "delivery_options must be a non-empty subset of window, post, electronic",
        )
        _require(
            self.tongban_scope in TONGBAN_SCOPES,
            what,
            f"通办范围 {self.tongban_scope!r} 无效",
            f"unknown tongban_scope {self.tongban_scope!r}",
        )
        _require(_non_negative_int(self.version) and self.version >= 1, what, "版本号须为正整数", "version >= 1")
        _require(
            self.fee_due in FEE_DUE,
            what,
            "缴费时点须为 on_acceptance（受理时）或 after_approval（审批通过后）",
            "fee_due must be on_acceptance or after_approval",
        )

    @property
    def is_immediate(self) -> bool:
        return self.handling_type == "immediate"

    @property
    def location_field(self) -> str | None:
        """The request field that carries this matter's jurisdiction location."""
        return LOCATION_FIELDS[self.jurisdiction_rule]

    def material(self, code: str) -> Material:
        for material in self.materials:
            if material.code == code:
                return material
        raise _unknown_material(self, code)

    def to_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "name": self.name,
            "matter_type": self.matter_type,
            "department": self.department,
            "authority_tier": tier_name(self.authority_tier),
            "jurisdiction_rule": self.jurisdiction_rule,
            "legal_days": self.legal_days,
            "promised_days": self.promised_days,
            "handling_type": self.handling_type,
            "visits_required": self.visits_required,
            "fee_yuan": str(self.fee_yuan),
            "online_depth": self.online_depth,
            "materials": [m.to_dict() for m in self.materials],
            "delivery_options": list(self.delivery_options),
            "tongban_scope": self.tongban_scope,
            "version": self.version,
            "fee_due": self.fee_due,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Matter:
        try:
            return cls(
                code=data["code"],
                name=data["name"],
                matter_type=data["matter_type"],
                department=data["department"],
                authority_tier=data["authority_tier"],
                jurisdiction_rule=data["jurisdiction_rule"],
                legal_days=data["legal_days"],
                promised_days=data["promised_days"],
                handling_type=data["handling_type"],
                visits_required=data["visits_required"],
                fee_yuan=data["fee_yuan"],
                online_depth=data["online_depth"],
                materials=tuple(Material.from_dict(m) for m in data["materials"]),
                delivery_options=tuple(data["delivery_options"]),
                tongban_scope=data["tongban_scope"],
                version=data.get("version", 1),
                fee_due=data.get("fee_due", "after_approval"),
            )
        except KeyError as missing:
            raise _invalid(
                "invalid_catalogue",
                f"目录数据无效：事项 {data.get('code')!r} 缺少字段 {missing.args[0]}",
                f"invalid catalogue: matter {data.get('code')!r} lacks field {missing.args[0]}",
            ) from None


def _parse_fee(value: object, what: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, Decimal | str | int | float):
        _require(False, what, "收费金额格式错误", "fee_yuan must be a decimal string")
    try:
        fee = value if isinstance(value, Decimal) else Decimal(str(value))
    except InvalidOperation:
        fee = Decimal("NaN")
    _require(fee.is_finite() and fee >= 0, what, "收费金额须为非负数", "fee_yuan must be a non-negative amount")
    return fee


def _unknown_material(matter: Matter, code: str) -> DomainError:
    return _invalid(
        "unknown_material",
        f"事项「{matter.name}」的材料清单中没有编码为 {code!r} 的材料",
        f"matter {matter.code} has no material with code {code!r}",
    )


def missing_materials(matter: Matter, handed_in: Iterable[str]) -> list[Material]:
    """The required materials of ``matter`` not among ``handed_in`` (material codes), in list order.

    A code that is not on the matter's materials list raises ``DomainError("unknown_material")``.
    """
    known = {m.code for m in matter.materials}
    given = set()
    for code in handed_in:
        if code not in known:
            raise _unknown_material(matter, code)
        given.add(code)
    return [m for m in matter.materials if m.required and m.code not in given]


# ---------------------------------------------------------------------------------------------------------------------
# Implementation lists (实施清单)


@dataclass(frozen=True)
class Override:
    """One line of a region's implementation list; ``None`` leaves the basic catalogue's value."""

    matter_code: str
    authority_tier: Tier | None = None
    promised_days: int | None = None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"matter_code": self.matter_code}
        if self.authority_tier is not None:
            data["authority_tier"] = tier_name(self.authority_tier)
        if self.promised_days is not None:
            data["promised_days"] = self.promised_days
        return data


_OVERRIDE_KEYS = frozenset({"matter_code", "authority_tier", "promised_days"})


@dataclass(frozen=True)
class ImplementationList:
    """Validated overrides keyed by region division code (sorted, so equal lists compare equal).

    Where regions nest (the city's list and a county's), every override on the path from the root
    to the jurisdiction location applies, outermost first; since each may only delegate downward
    and only shorten, the most-delegated tier and the shortest promise win.
    """

    regions: tuple[tuple[str, tuple[Override, ...]], ...] = ()
    _index: dict[str, dict[str, Override]] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._index.update({region: {o.matter_code: o for o in lines} for region, lines in self.regions})

    def __bool__(self) -> bool:
        return bool(self.regions)

    def override(self, region: str, matter_code: str) -> Override | None:
        return self._index.get(region, {}).get(matter_code)

    def effective(self, matter: Matter, tree: DivisionTree, location: str) -> Matter:
        """``matter`` as it applies to a case whose jurisdiction location is ``location``."""
        if not self.regions:
            return matter
        tier, promised = matter.authority_tier, matter.promised_days
        changed = False
        for region in reversed(tree.path_to_root(known_division(tree, location))):
            line = self.override(region, matter.code)
            if line is None:
                continue
            if line.authority_tier is not None and line.authority_tier > tier:
                tier, changed = line.authority_tier, True
            if line.promised_days is not None and line.promised_days < promised:
                promised, changed = line.promised_days, True
        return replace(matter, authority_tier=tier, promised_days=promised) if changed else matter

    def to_dict(self) -> dict[str, list[dict[str, Any]]]:
        return {region: [line.to_dict() for line in lines] for region, lines in self.regions}


def _validated_override(region: str, line: Mapping[str, Any], matters: Mapping[str, Matter]) -> Override:
    if not isinstance(line, Mapping) or "matter_code" not in line or set(line) - _OVERRIDE_KEYS:
        raise _invalid(
            "invalid_implementation_list",
            f"区域 {region} 的实施清单条目格式错误：只允许 matter_code、authority_tier、promised_days",
            f"implementation list line for {region} must have matter_code and only authority_tier/promised_days",
        )
    matter = matters.get(line["matter_code"])
    if matter is None:
        raise _unknown_matter(line["matter_code"])
    region_tier = infer_tier(region)
    tier = None
    if line.get("authority_tier") is not None:
        tier = parse_tier(line["authority_tier"])
        if tier < matter.authority_tier:
            raise _invalid(
                "invalid_delegation",
                f"事项「{matter.name}」的办理权限只能下放：不能从{matter.authority_tier.label_zh}级上收到{tier.label_zh}级",
                f"matter {matter.code} may only be delegated downward, not from {tier_name(matter.authority_tier)} "
                f"up to {tier_name(tier)}",
            )
        if tier < region_tier:
            raise _invalid(
                "invalid_delegation",
                f"区域 {region} 只能把事项「{matter.name}」下放到本级或下级，不能指定{tier.label_zh}级",
                f"region {region} can only delegate matter {matter.code} to its own tier or below, "
                f"not to {tier_name(tier)}",
            )
    promised = line.get("promised_days")
    if promised is not None and (not _non_negative_int(promised) or promised > matter.promised_days):
        raise _invalid(
            "invalid_promised_days",
            f"实施清单只能缩短事项「{matter.name}」的承诺时限（现为 {matter.promised_days} 个工作日），"
            f"不能设为 {promised!r}",
            f"an implementation list may only shorten the promised time of {matter.code} "
            f"({matter.promised_days} working days), not set it to {promised!r}",
        )
    return Override(matter.code, tier, promised)


def _validated_region(region: object) -> str:
    try:
        if not isinstance(region, str):
            raise UnknownDivisionError(repr(region))
        infer_tier(region)
    except UnknownDivisionError:
        raise _invalid(
            "unknown_division",
            f"实施清单的区域代码 {region!r} 不是有效的 12 位区划代码",
            f"implementation-list region {region!r} is not a 12-character division code",
        ) from None
    return region


# ---------------------------------------------------------------------------------------------------------------------
# The catalogue


def _unknown_matter(code: object) -> DomainError:
    return DomainError(
        "unknown_matter",
        f"事项目录中没有编码为 {code!r} 的事项",
        f"no matter with code {code!r} in the catalogue",
        ErrorKind.NOT_FOUND,
    )


class Catalogue:
    """Departments and matters at one ``version``, plus the regions' implementation lists."""

    def __init__(
        self,
        departments: Iterable[Department],
        matters: Iterable[Matter],
        version: int = 1,
        implementation: ImplementationList | None = None,
        note: str = "",
        packages: Sequence[Mapping[str, Any]] = (),
    ) -> None:
        self.version = version
        self.note = note
        # 一件事 packages as the document holds them; node.domain.packages reads and validates them.
        self.package_data: tuple[dict[str, Any], ...] = tuple(dict(p) for p in packages)
        self.implementation = implementation or ImplementationList()
        self._departments: dict[str, Department] = {}
        for department in departments:
            _require(department.code not in self._departments, department.code, "部门重复", "duplicate department")
            self._departments[department.code] = department
        self._matters: dict[str, Matter] = {}
        material_names: dict[str, str] = {}
        for matter in matters:
            _require(matter.code not in self._matters, matter.code, "事项编码重复", "duplicate matter code")
            _require(
                matter.department in self._departments,
                matter.code,
                f"未知部门 {matter.department!r}",
                f"unknown department {matter.department!r}",
            )
            for material in matter.materials:
                # One code, one material city-wide: the shared materials library matches on it.
                name = material_names.setdefault(material.code, material.name)
                _require(
                    name == material.name,
                    matter.code,
                    f"材料编码 {material.code} 同时用于「{name}」和「{material.name}」",
                    f"material code {material.code} names both {name!r} and {material.name!r}",
                )
            self._matters[matter.code] = matter
        _require(_non_negative_int(version) and version >= 1, "version", "版本号须为正整数", "version must be >= 1")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Catalogue) and self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Catalogue(version={self.version}, departments={len(self._departments)}, matters={len(self._matters)})"

    def __contains__(self, code: object) -> bool:
        return code in self._matters

    def __iter__(self) -> Iterator[Matter]:
        return iter(self._matters.values())

    def __len__(self) -> int:
        return len(self._matters)

    def get(self, code: str) -> Matter:
        try:
            return self._matters[code]
        except (KeyError, TypeError):
            raise _unknown_matter(code) from None

    def matters(self) -> list[Matter]:
        return list(self._matters.values())

    def departments(self) -> list[Department]:
        return list(self._departments.values())

    def department(self, code: str) -> Department:
        try:
            return self._departments[code]
        except KeyError:
            raise DomainError(
                "unknown_department",
                f"事项目录中没有编码为 {code!r} 的部门",
                f"no department with code {code!r} in the catalogue",
                ErrorKind.NOT_FOUND,
            ) from None

    def with_implementation_list(
        self, overrides: Mapping[str, Sequence[Mapping[str, Any]]], *, version: int | None = None
    ) -> Catalogue:
        """A new catalogue with regions' implementation lists applied (validated; nothing is changed in place).

        ``overrides`` maps a region's division code to its lines
        ``{"matter_code", "authority_tier"?, "promised_days"?}``. A region's new list replaces its
        previous one line by line (same matter code), other regions' lists are kept. Authority may
        only be delegated downward (and not above the region's own tier); promised days may only be
        shortened. The result's version is ``version`` or the current one plus one, since its
        content differs.
        """
        regions: dict[str, dict[str, Override]] = {
            region: {o.matter_code: o for o in lines} for region, lines in self.implementation.regions
        }
        for region, lines in overrides.items():
            code = _validated_region(region)
            if isinstance(lines, str | bytes | Mapping):
                raise _invalid(
                    "invalid_implementation_list",
                    f"区域 {code} 的实施清单须为条目列表",
                    f"the implementation list of {code} must be a list of lines",
                )
            target = regions.setdefault(code, {})
            for line in lines:
                validated = _validated_override(code, line, self._matters)
                target[validated.matter_code] = validated
        implementation = ImplementationList(
            tuple(
                (region, tuple(lines[k] for k in sorted(lines))) for region, lines in sorted(regions.items()) if lines
            )
        )
        return Catalogue(
            self.departments(),
            self.matters(),
            version=self.version + 1 if version is None else version,
            implementation=implementation,
            note=self.note,
            packages=self.package_data,
        )

    def effective_matter(self, code_or_matter: str | Matter, tree: DivisionTree, location: str) -> Matter:
        """The matter as it applies at jurisdiction location ``location`` under the implementation lists."""
        matter = self.get(code_or_matter) if isinstance(code_or_matter, str) else code_or_matter
        known_division(tree, location)
        return self.implementation.effective(matter, tree, location)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "kind": "catalogue",
            "version": self.version,
            "departments": [d.to_dict() for d in self._departments.values()],
            "matters": [m.to_dict() for m in self._matters.values()],
            "implementation": self.implementation.to_dict(),
        }
        if self.note:
            data["note"] = self.note
        if self.package_data:
            data["packages"] = [dict(p) for p in self.package_data]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Catalogue:
        """Read a catalogue document; store metadata such as ``_id``/``_rev`` is ignored."""
        try:
            departments = [Department.from_dict(d) for d in data["departments"]]
            matters = [Matter.from_dict(m) for m in data["matters"]]
            version = data.get("version", 1)
        except (KeyError, TypeError) as problem:
            raise _invalid(
                "invalid_catalogue",
                f"目录文档格式错误：{problem}",
                f"malformed catalogue document: {problem!r}",
            ) from None
        packages = data.get("packages") or []
        if not isinstance(packages, list) or not all(isinstance(p, Mapping) for p in packages):
            raise _invalid("invalid_catalogue", "目录文档的 packages 应为对象列表", "catalogue packages must be a list")
        base = cls(departments, matters, version=version, note=data.get("note", ""), packages=packages)
        implementation = data.get("implementation") or {}
        if not implementation:
            return base
        return base.with_implementation_list(implementation, version=version)


def load_seed_catalogue() -> Catalogue:
    """The seed catalogue shipped with the product (``node/data/catalogue.json``; codes are illustrative)."""
    text = resources.files("node").joinpath(SEED_RESOURCE).read_text(encoding="utf-8")
    return Catalogue.from_dict(json.loads(text))
