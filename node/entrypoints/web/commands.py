"""Requests to commands: the JSON body of the API and the form of the staff pages, checked for shape.

Everything a request carries is untrusted: each value is checked for its type and bounded in
length here, with the same bilingual errors whichever door it came through. What needs the
catalogue, the tree or the case (an ID number's check digit, the handling node, whether an action
is allowed) is the use case's to check.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from werkzeug.datastructures import MultiDict

from node.domain.catalogue import LOCATION_FIELDS
from node.domain.errors import DomainError, ErrorKind, missing_field
from node.service_layer.commands import MAX_REASON, AcceptCase, AcceptPackage, ActOnCase, Actor, Applicant

LOCATION_KEYS = tuple(key for key in LOCATION_FIELDS.values() if key is not None)
MAX_MATERIALS = 100


def _invalid(code: str, zh: str, en: str) -> DomainError:
    return DomainError(code, zh, en, ErrorKind.INVALID)


def _text(value: object, key: str, limit: int = 200, required: bool = True) -> str | None:
    """A stripped, bounded text; blank counts as absent."""
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise missing_field(key)
        return None
    if not isinstance(value, str):
        raise _invalid("invalid_field", f"字段 {key} 必须是文本", f"field {key!r} must be a string")
    value = value.strip()
    if len(value) > limit:
        raise _invalid("field_too_long", f"字段 {key} 超过 {limit} 个字符", f"field {key!r} exceeds {limit} characters")
    return value


def _materials(raw: object) -> tuple[str, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list) or not all(isinstance(m, str) for m in raw) or len(raw) > MAX_MATERIALS:
        raise _invalid(
            "invalid_materials", "materials 必须是材料编码列表", "materials must be a list of material codes"
        )
    return tuple(dict.fromkeys(raw))


def _applicant(kind: object, name: object, id_number: object, credit_code: object) -> Applicant:
    checked_name = str(_text(name, "name", limit=100))
    if kind == "person":
        return Applicant("person", checked_name, str(id_number or ""))
    if kind == "enterprise":
        return Applicant("enterprise", checked_name, str(credit_code or ""))
    raise _invalid(
        "invalid_applicant_kind",
        "申请人类型必须是 person（个人）或 enterprise（企业）",
        "applicant.kind must be 'person' or 'enterprise'",
    )


def _location(key: str, value: object) -> str | None:
    if value is not None and not isinstance(value, str):
        raise _invalid("invalid_field", f"字段 {key} 必须是区划代码文本", f"field {key!r} must be a division code")
    return value


def _locations(values: Mapping[str, object]) -> tuple[tuple[str, str], ...]:
    checked = ((key, _location(key, values.get(key))) for key in LOCATION_KEYS)
    return tuple((key, value) for key, value in checked if value is not None)


def _level(value: object) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise _invalid("invalid_level", "评价等级必须是 1 到 5", "evaluation level must be 1..5")
    return value


def _method(value: object) -> str | None:
    if value is not None and not isinstance(value, str):
        raise _invalid(
            "invalid_method", "送达方式必须是 window、post 或 electronic", "method must be window, post or electronic"
        )
    return value


def accept_case_from_json(actor: Actor, body: Mapping[str, Any]) -> AcceptCase:
    """``POST /api/v1/cases``: ``matter_code``, ``applicant`` {kind, name, id_number | credit_code}, …"""
    matter_code = str(_text(body.get("matter_code"), "matter_code", limit=64))
    raw = body.get("applicant")
    if not isinstance(raw, dict):
        raise _invalid("missing_field", "缺少申请人信息 applicant", "field 'applicant' (an object) is missing")
    return AcceptCase(
        actor=actor,
        matter_code=matter_code,
        applicant=_applicant(raw.get("kind"), raw.get("name"), raw.get("id_number"), raw.get("credit_code")),
        materials=_materials(body.get("materials")),
        locations=_locations(body),
        settle_on_spot=bool(body.get("settle_on_spot")),
        refuse_reason=_text(body.get("refuse_reason"), "refuse_reason", limit=MAX_REASON, required=False),
    )


def accept_package_from_json(actor: Actor, package_code: str, body: Mapping[str, Any]) -> AcceptPackage:
    """``POST /api/v1/packages/<code>/cases``: one applicant, one set of materials, the locations."""
    raw = body.get("applicant")
    if not isinstance(raw, dict):
        raise _invalid("missing_field", "缺少申请人信息 applicant", "field 'applicant' (an object) is missing")
    return AcceptPackage(
        actor=actor,
        package_code=str(_text(package_code, "package_code", limit=40)),
        applicant=_applicant(raw.get("kind"), raw.get("name"), raw.get("id_number"), raw.get("credit_code")),
        materials=_materials(body.get("materials")),
        locations=_locations(body),
    )


def accept_case_from_form(actor: Actor, form: MultiDict[str, str]) -> AcceptCase:
    """The acceptance page's form: the applicant's fields are flat (``applicant_kind``, ``applicant_id`` …)."""
    identifier = form.get("applicant_id", "").strip().upper()
    return AcceptCase(
        actor=actor,
        matter_code=str(_text(form.get("matter_code"), "matter_code", limit=64)),
        applicant=_applicant(form.get("applicant_kind", "person"), form.get("applicant_name"), identifier, identifier),
        materials=_materials(form.getlist("materials")),
        locations=_locations({key: form.get(key, "").strip() or None for key in LOCATION_KEYS}),
        settle_on_spot=bool(form.get("settle_on_spot")),
        refuse_reason=_text(form.get("refuse_reason"), "refuse_reason", limit=MAX_REASON, required=False),
    )


def _act(actor: Actor, case_no: str, values: Mapping[str, Any], materials: object, level: object) -> ActOnCase:
    return ActOnCase(
        actor=actor,
        case_no=case_no,
        action=str(_text(values.get("action"), "action", limit=40)),
        reason=_text(values.get("reason"), "reason", limit=MAX_REASON, required=False),
        materials=None if materials is None else _materials(materials),
        summary=_text(values.get("summary"), "summary", limit=MAX_REASON, required=False),
        certificate_id=_text(values.get("certificate_id"), "certificate_id", limit=100, required=False),
        method=_method(values.get("method")),
        new_handling_node=_text(values.get("new_handling_node"), "new_handling_node", limit=12, required=False),
        level=_level(level),
    )


def act_on_case_from_json(actor: Actor, case_no: str, body: Mapping[str, Any]) -> ActOnCase:
    """``POST /api/v1/cases/<case_no>/actions``: ``action`` and the fields that action uses."""
    return _act(actor, case_no, body, body.get("materials"), body.get("level"))


def act_on_case_from_form(actor: Actor, case_no: str, form: MultiDict[str, str]) -> ActOnCase:
    """An action button's form on the case page; blank fields count as absent."""
    values = {key: form.get(key, "").strip() or None for key in ("action", "method")}
    level = form.get("level", "")
    return _act(
        actor,
        case_no,
        {**form.to_dict(), **values},
        form.getlist("materials") if "materials" in form else None,
        (int(level) if level.isdigit() else level) if level else None,
    )
