"""What every page template sees: the node, the account, the language switch, the label helpers.

The app factory registers :func:`template_context` once for the whole app; a blueprint adds only
what its own pages need.
"""

from __future__ import annotations

from typing import Any

from flask import get_flashed_messages, request, url_for

from node.entrypoints.web.auth import ACCEPT_ROLES, csrf_token, current_account
from node.entrypoints.web.http import context, monitors
from node.entrypoints.web.i18n import lang
from node.entrypoints.web.labels import (
    action_label,
    china_time,
    department_name,
    flag_label,
    node_name,
    option_label,
    role_label,
    state_label,
    tier_text,
)

# Pages reached by POST only: the language switch leads to the page one can GET instead.
POST_ONLY_FALLBACK = {
    "pages.act": ("pages.case", ("case_no",)),
    "catalogue.save_matter": ("catalogue.index", ()),
    "catalogue.add_matter": ("catalogue.index", ()),
    "ops.pages.acknowledge": ("ops.pages.dashboard", ()),
}
PAGE_PREFIXES = ("pages.", "auth.", "catalogue.", "ops.pages.")


def lang_url(target: str) -> str:
    """The current page in the other language."""
    endpoint = request.endpoint or ""
    view_args = dict(request.view_args or {})
    if endpoint in POST_ONLY_FALLBACK:
        fallback, kept = POST_ONLY_FALLBACK[endpoint]
        return url_for(fallback, **{key: view_args.get(key, "") for key in kept}, lang=target)
    rule = request.url_rule
    if not endpoint.startswith(PAGE_PREFIXES) or rule is None or "GET" not in (rule.methods or ()):
        return url_for("pages.home", lang=target)
    return url_for(endpoint, **{**request.args.to_dict(), **view_args, "lang": target})


def template_context() -> dict[str, Any]:
    return {
        "lang": lang(),
        "other_lang": "en" if lang() == "zh" else "zh",
        "lang_url": lang_url,
        "csrf_token": csrf_token,
        "account": current_account(),
        "role_label": role_label,
        "state_label": state_label,
        "flag_label": flag_label,
        "action_label": action_label,
        "option_label": option_label,
        "china_time": china_time,
        "node": context().division,
        "node_name": node_name,
        "tier_label": tier_text(context().division.tier),
        "tier_text": tier_text,
        "department_name": department_name,
        "ACCEPT_ROLES": ACCEPT_ROLES,
        # Only the tier that monitors the federation (the city) serves the ops dashboard.
        "MONITORS": monitors(),
        "flashes": get_flashed_messages(with_categories=True),
    }
