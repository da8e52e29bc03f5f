"""Catalogue pages (/catalogue): browse the published matter catalogue; at the city an admin edits it.

Every signed-in staff member can read every matter. At the tier that authors the catalogue (the
city), an admin edits a matter or adds one; saving publishes the next catalogue version, which
replicates to every node. Below the city the same pages are read-only.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, flash, g, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from flask_babel import lazy_gettext
from werkzeug.datastructures import MultiDict

from node.domain.catalogue import (
    DELIVERY_OPTIONS,
    HANDLING_TYPES,
    LOCATION_FIELDS,
    MATERIAL_FORMS,
    MATERIAL_SOURCES,
    MATTER_TYPES,
    TONGBAN_SCOPES,
    tier_name,
)
from node.domain.errors import DomainError
from node.entrypoints.web.auth import current_account, staff_page
from node.entrypoints.web.http import STATUS, context, error_page
from node.entrypoints.web.i18n import bilingual, both
from node.entrypoints.web.labels import node_name
from node.entrypoints.web.pages import matter_groups
from node.service_layer.catalogue import may_author
from node.service_layer.commands import PublishDelegation, PublishMatter
from tiers import Tier

blueprint = Blueprint("catalogue", __name__, url_prefix="/catalogue")

# Blank material rows offered under a matter's materials, for adding new ones.
BLANK_MATERIAL_ROWS = 3
MAX_MATERIAL_ROWS = 60
INT_FIELDS = ("legal_days", "promised_days", "visits_required", "online_depth")
TEXT_FIELDS = ("name", "matter_type", "department", "authority_tier", "jurisdiction_rule", "handling_type")


def can_author() -> bool:
    account = current_account()
    return account is not None and may_author(account.role, context().division.tier)


@blueprint.context_processor
def _helpers() -> dict[str, Any]:
    return {
        "can_author": can_author(),
        "MATTER_TYPES": sorted(MATTER_TYPES),
        "HANDLING_TYPES": sorted(HANDLING_TYPES),
        "JURISDICTION_RULES": list(LOCATION_FIELDS),
        "MATERIAL_FORMS": sorted(MATERIAL_FORMS),
        "MATERIAL_SOURCES": sorted(MATERIAL_SOURCES),
        "DELIVERY_OPTIONS": DELIVERY_OPTIONS,
        "TONGBAN_SCOPES": sorted(TONGBAN_SCOPES),
        "TIERS": [tier_name(tier) for tier in Tier],
        "tier_name": tier_name,
    }


# The labels of the fields that take a whole number, for the error that names one.
NUMBER_FIELD_LABELS = {
    "legal_days": lazy_gettext("法定时限（工作日）"),
    "promised_days": lazy_gettext("承诺时限（工作日）"),
    "visits_required": lazy_gettext("到现场次数"),
    "online_depth": lazy_gettext("网办深度（1–4）"),
}


@blueprint.get("/")
@staff_page()
def index() -> ResponseReturnValue:
    return render_template("catalogue.html", catalogue=context().catalogue, groups=matter_groups())


def _render_matter(
    values: dict[str, Any],
    is_new: bool,
    based_on: int,
    status: int = 200,
    error: dict[str, str] | None = None,
    delegation: dict[str, str] | None = None,
) -> ResponseReturnValue:
    blank = {"code": "", "name": "", "form": "original", "copies": 1, "source": "applicant", "required": True}
    rows = [*values.get("materials", []), *([blank] * (BLANK_MATERIAL_ROWS if can_author() else 0))]
    catalogue = context().catalogue
    delegations = [
        {"region": region, "region_name": node_name(region), **line.to_dict()}
        for region, lines in catalogue.implementation.regions
        for line in lines
        if line.matter_code == values.get("code")
    ]
    page = render_template(
        "catalogue_matter.html",
        values=values,
        material_rows=rows,
        is_new=is_new,
        based_on=based_on,
        departments=catalogue.departments(),
        delegations=delegations,
        delegation=delegation or {},
        error=error,
    )
    return page, status


@blueprint.get("/matters/<code>")
@staff_page()
def matter(code: str) -> ResponseReturnValue:
    catalogue = context().catalogue
    try:
        found = catalogue.get(code)
    except DomainError as exc:
        return error_page(STATUS[exc.kind], bilingual(exc))
    return _render_matter(found.to_dict(), is_new=False, based_on=catalogue.version)


@blueprint.get("/new")
@staff_page()
def new_matter() -> ResponseReturnValue:
    if not can_author():
        return error_page(403, both(lazy_gettext("只有市级节点的管理员可以编辑事项目录")))
    # Prefilled from an existing matter so that every choice starts valid; name and code start empty.
    first = context().catalogue.matters()[0]
    values = {**first.to_dict(), "code": "", "name": "", "fee_yuan": "0", "materials": []}
    return _render_matter(values, is_new=True, based_on=context().catalogue.version)


def _whole_number(form: MultiDict[str, str], field: str) -> int:
    text = form.get(field, "").strip()
    if not text.isdigit():
        label = both(NUMBER_FIELD_LABELS[field])
        raise DomainError(
            "invalid_catalogue",
            f"「{label['zh']}」须填写非负整数，收到 {text!r}",
            f"{label['en']} must be a whole number, got {text!r}",
        )
    return int(text)


def materials_from_form(form: MultiDict[str, str]) -> list[dict[str, Any]]:
    """The material rows of the edit form; blank rows and rows ticked for removal are dropped."""
    materials = []
    for index in range(MAX_MATERIAL_ROWS):
        prefix = f"m{index}_"
        material_code = form.get(prefix + "code", "").strip()
        name = form.get(prefix + "name", "").strip()
        if (not material_code and not name) or form.get(prefix + "remove"):
            continue
        copies = form.get(prefix + "copies", "").strip()
        materials.append(
            {
                "code": material_code,
                "name": name,
                "form": form.get(prefix + "form", ""),
                "copies": int(copies) if copies.isdigit() else -1,  # the catalogue explains a bad count
                "source": form.get(prefix + "source", ""),
                "required": bool(form.get(prefix + "required")),
            }
        )
    return materials


def matter_from_form(form: MultiDict[str, str], code: str, materials: list[dict[str, Any]]) -> dict[str, Any]:
    """The matter's catalogue entry from the edit form (the catalogue itself validates the values)."""
    data: dict[str, Any] = {"code": code, **{field: form.get(field, "").strip() for field in TEXT_FIELDS}}
    data["fee_yuan"] = form.get("fee_yuan", "").strip() or "0"
    data["delivery_options"] = form.getlist("delivery_options")
    data["tongban_scope"] = form.get("tongban_scope", "")
    data["materials"] = materials
    for field in INT_FIELDS:
        data[field] = _whole_number(form, field)
    return data


def _based_on(form: MultiDict[str, str]) -> int:
    return int(form.get("based_on", "")) if form.get("based_on", "").isdigit() else 0


def published(version: int, code: str) -> dict[str, str]:
    return both(lazy_gettext("已发布事项目录第 %(version)s 版（事项 %(code)s）", version=version, code=code))


def _save(code: str, is_new: bool) -> ResponseReturnValue:
    form = request.form
    based_on = _based_on(form)
    values: dict[str, Any] = {key: form.get(key, "") for key in form if key != "csrf_token"}
    values["code"] = code
    values["delivery_options"] = form.getlist("delivery_options")
    values["materials"] = materials_from_form(form)
    try:
        if not code:
            message = both(lazy_gettext("请填写事项编码"))
            raise DomainError("missing_field", message["zh"], message["en"])
        entry = matter_from_form(form, code, values["materials"])
        catalogue = context().bus.handle(PublishMatter(g.actor, entry, based_on, is_new))
    except DomainError as exc:
        return _render_matter(values, is_new, based_on, STATUS[exc.kind], bilingual(exc))
    flash(published(catalogue.version, code), "success")
    return redirect(url_for("catalogue.matter", code=code), 303)


@blueprint.post("/matters/<code>")
@staff_page()
def save_matter(code: str) -> ResponseReturnValue:
    return _save(code, is_new=False)


@blueprint.post("/new")
@staff_page()
def add_matter() -> ResponseReturnValue:
    return _save(request.form.get("code", "").strip()[:64], is_new=True)


@blueprint.post("/matters/<code>/delegations")
@staff_page()
def save_delegation(code: str) -> ResponseReturnValue:
    """Set or remove one region's line of the implementation list (实施清单) for this matter."""
    form = request.form
    try:
        found = context().catalogue.get(code)
    except DomainError as exc:
        return error_page(STATUS[exc.kind], bilingual(exc))
    region = form.get("region", "").strip().upper()[:12]
    tier = form.get("authority_tier", "").strip()
    days = form.get("promised_days", "").strip()
    typed = {"region": region, "authority_tier": tier, "promised_days": days}
    try:
        line: dict[str, Any] = {"matter_code": code, "authority_tier": tier or None, "promised_days": None}
        if days:
            line["promised_days"] = _whole_number(form, "promised_days")
        remove = form.get("action") == "remove"
        new_catalogue = context().bus.handle(PublishDelegation(g.actor, region, line, _based_on(form), remove))
    except DomainError as exc:
        return _render_matter(
            found.to_dict(), False, _based_on(form), STATUS[exc.kind], bilingual(exc), delegation=typed
        )
    flash(published(new_catalogue.version, code), "success")
    return redirect(url_for("catalogue.matter", code=code) + "#delegations", 303)
