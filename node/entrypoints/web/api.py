"""REST API under ``/api/v1``: sign-in, catalogue, cases, inbox, citizen progress, quarantine.

Thin: parse the request, call the service, turn the result (or the DomainError) into JSON.
"""

from __future__ import annotations

from flask import Blueprint, g, jsonify, request
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException

from node.domain.errors import DomainError
from node.entrypoints.web.commands import accept_case_from_json, act_on_case_from_json
from node.entrypoints.web.http import (
    STATUS,
    TOKEN_MAX_AGE_S,
    context,
    error_response,
    issue_token,
    json_body,
    require_role,
)
from node.entrypoints.web.openapi import SPEC
from node.service_layer.commands import PublishCatalogue

blueprint = Blueprint("api", __name__, url_prefix="/api/v1")


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
