"""What every blueprint shares about a request: the node's context, bearer tokens, errors as HTTP.

``DomainError`` kinds map to HTTP statuses through the one table :data:`STATUS`; JSON clients get
``{error, message_zh, message_en}`` from :func:`error_response`, people get the error page from
:func:`error_page`. API views take their caller from :func:`require_role`.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable
from dataclasses import replace
from functools import wraps
from typing import Any

from flask import Response, abort, current_app, g, jsonify, render_template, request
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException

from node.adapters.opsmodel import OpsModel
from node.adapters.readmodel import CaseRow
from node.adapters.sessions import Lifetimes, SessionStore
from node.bootstrap import NodeContext
from node.config import Thresholds
from node.domain.errors import DomainError, ErrorKind
from node.domain.permissions import (
    CaseNodes,
    masked_name,
    may_search_by_name,
    sees_personal_data,
)
from node.service_layer.cases import Actor
from node.service_layer.commands import ActOnCase

TOKEN_MAX_AGE_S = 12 * 3600
# API calls may see a role change up to this late; it spares every request a read of the account file.
# A revoked token or a disabled account is refused at once: the token's row is read on every call.
ACCOUNT_CACHE_S = 2.0
# Lifetimes of page sessions and API tokens; the app factory puts them in the config (tests shorten them).
PAGE_LIFETIMES_KEY = "TONGBAN_PAGE_SESSION"
API_LIFETIMES_KEY = "TONGBAN_API_TOKEN"
PAGE_LIFETIMES = Lifetimes(idle_s=30 * 60, absolute_s=12 * 3600)
API_LIFETIMES = Lifetimes(idle_s=TOKEN_MAX_AGE_S, absolute_s=TOKEN_MAX_AGE_S)
STATUS = {
    ErrorKind.INVALID: 400,
    ErrorKind.NOT_FOUND: 404,
    ErrorKind.FORBIDDEN: 403,
    ErrorKind.CONFLICT: 409,
    ErrorKind.UNAUTHENTICATED: 401,
}


def context() -> NodeContext:
    return current_app.extensions["tongban"]


def error_response(code: str, zh: str, en: str, status: int) -> tuple[Response, int]:
    return jsonify({"error": code, "message_zh": zh, "message_en": en}), status


def error_page(status: int, message: dict[str, str]) -> ResponseReturnValue:
    """The HTML error page; ``message`` holds the text in both languages (``{"zh": …, "en": …}``)."""
    return render_template("error.html", error=message, status=status), status


def json_http_error(exc: HTTPException) -> ResponseReturnValue:
    """An HTTP error of an API route (404, 405, 413, 429 …) as the API's bilingual JSON error."""
    messages = {
        404: ("not_found", "没有这个接口", "no such endpoint"),
        405: ("method_not_allowed", "不支持此请求方法", "method not allowed"),
        413: ("body_too_large", "请求体过大（上限 1 MB）", "request body too large (limit 1 MB)"),
        429: ("too_many_requests", "请求过于频繁，请稍后再试", "too many requests; try again later"),
    }
    code, zh, en = messages.get(exc.code or 500, ("http_error", "请求无效", exc.description or "bad request"))
    response, status = error_response(code, zh, en, exc.code or 400)
    # Retry-After of a 429 and Allow of a 405 tell the client what to do next: keep them.
    for header in ("Retry-After", "Allow"):
        value = exc.get_response().headers.get(header)
        if value:
            response.headers[header] = value
    return response, status


# Refusals of a request's shape (what its OpenAPI schema states): 400. Every other INVALID refusal is
# a rule the schema cannot state (a slot in the past, a photo with no face, an unanswered department):
# 422, so a request the description calls valid is never answered "malformed".
SHAPE_ERRORS = frozenset(
    {
        "invalid_json",
        "missing_field",
        "multipart_required",
        "field_too_long",
        "invalid_field",
        "id_number_format",
        "post_address_invalid",
    }
)


def domain_error_json(exc: DomainError) -> ResponseReturnValue:
    """A DomainError of an API route as bilingual JSON: 400 for the shape, 422 for a rule, else by kind."""
    if exc.kind is ErrorKind.INVALID and exc.code not in SHAPE_ERRORS:
        return jsonify(exc.to_dict()), 422
    return jsonify(exc.to_dict()), STATUS[exc.kind]


def json_body() -> dict[str, Any]:
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    if request.content_length is not None and request.content_length > limit:
        abort(413)
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise DomainError("invalid_json", "请求体必须是 JSON 对象", "the request body must be a JSON object")
    return body


# --- sessions, bearer tokens of the JSON API, the audit trail --------------------------------------------


def sessions() -> SessionStore:
    """The node's server-side sessions (see :mod:`node.adapters.sessions`); one per application."""
    store = current_app.extensions.get("tongban_sessions")
    if store is None:
        store = SessionStore(context().config.data_dir / "state.sqlite3")
        current_app.extensions["tongban_sessions"] = store
    return store


def keyed_hash(value: str) -> str:
    """An HMAC of ``value`` under the node's secret key: lets the audit trail group lines, names nobody."""
    key = hashlib.sha256(b"tongban-audit:" + str(current_app.config["SECRET_KEY"]).encode()).digest()
    return hmac.new(key, value.encode("utf-8"), hashlib.sha256).hexdigest()[:24]


def audit(event: str, subject: str, outcome: str) -> None:
    """One line in the security audit trail; the subject and the client address go in as keyed hashes."""
    sessions().record(event, keyed_hash(subject), keyed_hash(request.remote_addr or "-"), outcome)


def issue_token(username: str) -> str:
    return sessions().open(username, "api", current_app.config[API_LIFETIMES_KEY])


def bearer_secret() -> str | None:
    header = request.headers.get("Authorization", "")
    return header[7:] if header.startswith("Bearer ") and len(header) < 200 else None


def actor_from_token(token: str) -> Actor | None:
    username = sessions().resolve(token, "api", current_app.config[API_LIFETIMES_KEY])
    account = context().state.account(username, max_age_s=ACCOUNT_CACHE_S) if username else None
    return Actor.of(account) if account else None


def citizen_progress(case_no: str, identifier: str) -> dict[str, Any]:
    """The citizen query behind both the page and the API: audited, one answer for every failure.

    Whether the case number does not exist, is malformed, or does not go with this ID number, the
    caller learns only "no match" (DomainError ``case_not_found``, 404): nothing to tell an enumerator which
    half was wrong. Every look-up leaves an audit line with the case number as a keyed hash.
    """
    try:
        result = context().cases.citizen_progress(case_no, identifier)
    except DomainError:
        audit("citizen.progress", case_no, "no_match")
        raise DomainError(
            "case_not_found",
            "未找到与该身份证件号码匹配的案件，请核对受理编号和证件号码",
            "no case matches this case number and ID number; check both",
            ErrorKind.NOT_FOUND,
        ) from None
    audit("citizen.progress", case_no, "found")
    return result


# --- who sees what (node.domain.permissions) --------------------------------------------------------------


def case_view(actor: Actor, view: dict[str, Any]) -> dict[str, Any]:
    """A staff view of a case with the applicant's name masked unless ``actor`` may see it."""
    nodes = CaseNodes.of(view["accepting_node"], view["handling_node"], view.get("handlers_history") or ())
    applicant = view.get("applicant")
    if isinstance(applicant, dict) and not sees_personal_data(actor.role, context().config.code, nodes):
        view["applicant"] = {**applicant, "name": masked_name(str(applicant.get("name") or ""))}
    return view


def case_rows(actor: Actor, rows: list[CaseRow], text: str = "") -> list[dict[str, Any]]:
    """Search or inbox rows as dicts: names masked where ``actor`` may not see them, and a search by
    text that only matched an applicant's name left out for roles that may not search by name."""
    here = context().config.code
    shown = []
    for row in rows:
        if text and not may_search_by_name(actor.role) and text not in row.case_no and text not in row.matter_name:
            continue
        data = row.to_dict()
        if not sees_personal_data(actor.role, here, CaseNodes.of(row.accepting_node, row.handling_node)):
            data["applicant_name"] = masked_name(row.applicant_name)
        shown.append(data)
    return shown


def checked_action(command: ActOnCase, signed_request: object) -> ActOnCase:
    """The action with the reference of the applicant's signed request, if the form gave it apart.

    The rules themselves (who may withdraw or evaluate) are the service layer's: ``CaseService.act``
    checks them with the actor in the command, whichever entry point built it.
    """
    if command.signed_request is None and isinstance(signed_request, str) and signed_request.strip():
        return replace(command, signed_request=signed_request)
    return command


# --- query parameters -----------------------------------------------------------------------------------

DIGITS = re.compile(r"[0-9]+")


def query_param(
    name: str,
    default: str = "",
    max_length: int = 100,
    choices: frozenset[str] | None = None,
    pattern: re.Pattern[str] | None = None,
) -> str:
    """A query parameter, or DomainError ``invalid_query`` (400, both languages) when it breaks its bounds."""
    values = request.args.getlist(name)
    if not values:
        return default
    value = values[0]
    problem = None
    if len(values) > 1:
        problem = ("只能出现一次", "may appear only once")
    elif len(value) > max_length:
        problem = (f"最长 {max_length} 个字符", f"is longer than {max_length} characters")
    elif any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        problem = ("不能含控制字符", "must not contain control characters")
    elif choices is not None and value not in choices:
        problem = ("取值无效", f"must be one of {', '.join(sorted(choices))}")
    elif pattern is not None and not pattern.fullmatch(value):
        problem = ("格式无效", "has an invalid format")
    if problem:
        raise DomainError("invalid_query", f"查询参数 {name} {problem[0]}", f"query parameter {name!r} {problem[1]}")
    return value


def require_role(*roles: str) -> Callable[[Callable[..., ResponseReturnValue]], Callable[..., ResponseReturnValue]]:
    """Bearer token required; with ``roles``, the account must have one of them."""

    def decorator(view: Callable[..., ResponseReturnValue]) -> Callable[..., ResponseReturnValue]:
        @wraps(view)
        def wrapped(*args: Any, **kwargs: Any) -> ResponseReturnValue:
            secret = bearer_secret()
            actor = actor_from_token(secret) if secret else None
            if actor is None:
                return error_response(
                    "unauthenticated", "请先登录", "sign in first (Authorization: Bearer <token>)", 401
                )
            if roles and actor.role not in roles:
                return error_response(
                    "role_not_allowed",
                    "您的角色无权执行此操作",
                    f"role {actor.role!r} may not do this; needs one of {', '.join(roles)}",
                    403,
                )
            g.actor = actor
            return view(*args, **kwargs)

        return wrapped

    return decorator


# --- city operations, read by the ops blueprint and by /metrics -----------------------------------------


def monitors() -> bool:
    """Whether this node monitors the federation's operations (decided once, in its config)."""
    return context().monitors_operations


def ops_model() -> OpsModel:
    """The web process's ops model, built by the composition root at a node that monitors."""
    model = context().ops
    if model is None:
        raise RuntimeError("ops_model() at a node that does not monitor operations")
    return model


def thresholds() -> Thresholds:
    return Thresholds.load(context().config.data_dir)
