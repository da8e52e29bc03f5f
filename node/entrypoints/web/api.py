"""REST API under ``/api/v1``: sign-in, catalogue, cases, inbox, citizen progress, quarantine.

Thin: parse the request, call the service, turn the result (or the DomainError) into JSON.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from flask import Blueprint, Response, abort, current_app, g, jsonify, request
from flask.typing import ResponseReturnValue
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from werkzeug.exceptions import HTTPException

from node.bootstrap import NodeContext
from node.domain.errors import DomainError, ErrorKind
from node.entrypoints.web.commands import accept_case_from_json, act_on_case_from_json
from node.entrypoints.web.openapi import SPEC
from node.service_layer.cases import Actor
from node.service_layer.commands import PublishCatalogue

blueprint = Blueprint("api", __name__, url_prefix="/api/v1")

TOKEN_MAX_AGE_S = 12 * 3600
# API calls may see a role change up to this late; it spares every request a read of the account file.
ACCOUNT_CACHE_S = 2.0
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


def _serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.config["SECRET_KEY"], salt="tongban-api-token")


def issue_token(username: str) -> str:
    return _serializer().dumps({"u": username, "n": context().config.code})


def actor_from_token(token: str) -> Actor | None:
    try:
        data = _serializer().loads(token, max_age=TOKEN_MAX_AGE_S)
    except (BadSignature, SignatureExpired):
        return None
    if not isinstance(data, dict) or data.get("n") != context().config.code:
        return None
    account = context().state.account(str(data.get("u")), max_age_s=ACCOUNT_CACHE_S)
    return Actor.of(account) if account else None


def require_role(*roles: str) -> Callable[[Callable[..., ResponseReturnValue]], Callable[..., ResponseReturnValue]]:
    """Bearer token required; with ``roles``, the account must have one of them."""

    def decorator(view: Callable[..., ResponseReturnValue]) -> Callable[..., ResponseReturnValue]:
        @wraps(view)
        def wrapped(*args: Any, **kwargs: Any) -> ResponseReturnValue:
            header = request.headers.get("Authorization", "")
            actor = actor_from_token(header[7:]) if header.startswith("Bearer ") else None
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


def json_body() -> dict[str, Any]:
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    if request.content_length is not None and request.content_length > limit:
        abort(413)
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise DomainError("invalid_json", "请求体必须是 JSON 对象", "the request body must be a JSON object")
    return body


@blueprint.errorhandler(DomainError)
def _domain_error(exc: DomainError) -> ResponseReturnValue:
    return jsonify(exc.to_dict()), STATUS[exc.kind]


@blueprint.errorhandler(HTTPException)
def _http_error(exc: HTTPException) -> ResponseReturnValue:
    messages = {
        404: ("not_found", "没有这个接口", "no such endpoint"),
        405: ("method_not_allowed", "不支持此请求方法", "method not allowed"),
        413: ("body_too_large", "请求体过大（上限 1 MB）", "request body too large (limit 1 MB)"),
    }
    code, zh, en = messages.get(exc.code or 500, ("http_error", "请求无效", exc.description or "bad request"))
    return error_response(code, zh, en, exc.code or 400)


@blueprint.app_errorhandler(404)
def _unknown_path(exc: HTTPException) -> ResponseReturnValue:
    # Paths outside every route never reach the blueprint's handler; API clients still get JSON.
    if request.path.startswith("/api/"):
        return error_response("not_found", "没有这个接口", "no such endpoint", 404)
    return exc


@blueprint.get("/openapi.json")
def openapi() -> ResponseReturnValue:
    return jsonify(SPEC)


@blueprint.post("/auth/token")
def token() -> ResponseReturnValue:
    body = json_body()
    username, password = body.get("username"), body.get("password")
    if not isinstance(username, str) or not isinstance(password, str) or len(username) > 100 or len(password) > 200:
        return error_response("missing_field", "请输入用户名和密码", "username and password are required", 400)
    account = context().state.authenticate(username, password)
    if account is None:
        return error_response("bad_credentials", "用户名或密码错误", "wrong username or password", 401)
    return jsonify(
        {
            "token": issue_token(account.username),
            "token_type": "Bearer",
            "expires_in": TOKEN_MAX_AGE_S,
            "username": account.username,
            "role": account.role,
            "department": account.department,
            "node": context().config.code,
        }
    )


@blueprint.get("/catalog/matters")
def matters() -> ResponseReturnValue:
    catalogue = context().catalogue
    return jsonify(
        {
            "version": catalogue.version,
            "matters": [
                {
                    **matter.to_dict(),
                    "department_name": catalogue.department(matter.department).name_zh,
                }
                for matter in catalogue.matters()
            ],
        }
    )


@blueprint.put("/catalog")
@require_role("admin")
def publish() -> ResponseReturnValue:
    catalogue = context().bus.handle(PublishCatalogue(g.actor, json_body()))
    return jsonify({"version": catalogue.version, "matters": len(catalogue.matters())})


@blueprint.post("/cases")
@require_role("acceptor", "admin")
def accept() -> ResponseReturnValue:
    outcome = context().bus.handle(accept_case_from_json(g.actor, json_body()))
    if outcome.outcome == "incomplete":
        return jsonify({"outcome": "incomplete", "missing": outcome.missing, "notice": outcome.notice}), 200
    assert outcome.case is not None
    view = context().cases.staff_view(g.actor, outcome.case)
    return jsonify({"outcome": outcome.outcome, **view}), 201


@blueprint.get("/cases/<case_no>")
@require_role()
def get_case(case_no: str) -> ResponseReturnValue:
    cases = context().cases
    return jsonify(cases.staff_view(g.actor, cases.load(case_no)))


@blueprint.post("/cases/<case_no>/actions")
@require_role()
def act(case_no: str) -> ResponseReturnValue:
    cases = context().cases
    case = context().bus.handle(act_on_case_from_json(g.actor, case_no, json_body()))
    return jsonify(cases.staff_view(g.actor, case))


@blueprint.get("/inbox")
@require_role()
def inbox() -> ResponseReturnValue:
    rows = context().readmodel.inbox(context().config.code, g.actor.role, g.actor.department)
    return jsonify({"node": context().config.code, "role": g.actor.role, "cases": [row.to_dict() for row in rows]})


@blueprint.get("/cases")
@require_role()
def search() -> ResponseReturnValue:
    text = request.args.get("q", "")[:100]
    state = request.args.get("state") or None
    rows = context().readmodel.search(text=text, state=state)
    return jsonify({"cases": [row.to_dict() for row in rows]})


@blueprint.post("/public/progress")
def progress() -> ResponseReturnValue:
    body = json_body()
    case_no = body.get("case_no")
    identifier = body.get("id_number") or body.get("credit_code")
    if not isinstance(case_no, str) or not isinstance(identifier, str):
        return error_response(
            "missing_field", "请输入受理编号和证件号码", "case_no and id_number (or credit_code) are required", 400
        )
    return jsonify(context().cases.citizen_progress(case_no, identifier))


@blueprint.get("/quarantine")
@require_role("ops", "admin", "supervisor")
def quarantined() -> ResponseReturnValue:
    return jsonify({"node": context().config.code, "quarantined": context().readmodel.quarantined()})
