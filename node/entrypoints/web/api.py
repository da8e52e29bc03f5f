"""REST API under ``/api/v1``: sign-in, catalogue, cases, inbox, citizen progress, quarantine.

Thin: parse the request, call the service, turn the result (or the DomainError) into JSON. Who
may do what to a case is the service layer's to decide (node.domain.permissions, with the actor in
the command); here only what the answer shows is shaped by role.

Creating requests take an ``Idempotency-Key`` (:mod:`node.entrypoints.web.idempotency`). Once the
store has a request's events, the answer is a success: if the read model has not shown them yet
(its projection failed, the agent catches up), the answer says ``view_catching_up: true``.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, g, jsonify, request
from flask.typing import ResponseReturnValue
from jsonschema import Draft202012Validator
from werkzeug.exceptions import HTTPException

from node.domain.case import Case, CaseState
from node.domain.errors import DomainError, ErrorKind
from node.domain.events import event_doc_id
from node.entrypoints.web.auth import SignInRefused, replace_password, sign_in
from node.entrypoints.web.commands import accept_case_from_json, act_on_case_from_json
from node.entrypoints.web.http import (
    STATUS,
    TOKEN_MAX_AGE_S,
    audit,
    bearer_secret,
    case_rows,
    case_view,
    citizen_progress,
    context,
    error_response,
    issue_token,
    json_body,
    json_http_error,
    query_param,
    require_role,
    sessions,
)
from node.entrypoints.web.idempotency import idempotent
from node.entrypoints.web.limits import (
    QUERY_PER_ADDRESS,
    QUERY_PER_CASE,
    SIGN_IN_PER_ADDRESS,
    case_number_key,
    configured,
    limiter,
)
from node.entrypoints.web.openapi import CATALOGUE_SCHEMA, spec_for
from node.service_layer.commands import PublishCatalogue

blueprint = Blueprint("api", __name__, url_prefix="/api/v1")

CASE_STATES = frozenset(state.value for state in CaseState)
CATALOGUE_VALIDATOR = Draft202012Validator(CATALOGUE_SCHEMA)
log = logging.getLogger(__name__)


@blueprint.errorhandler(DomainError)
def _domain_error(exc: DomainError) -> ResponseReturnValue:
    return jsonify(exc.to_dict()), STATUS[exc.kind]


blueprint.register_error_handler(HTTPException, json_http_error)


@blueprint.app_errorhandler(404)
def _unknown_path(exc: HTTPException) -> ResponseReturnValue:
    # Paths outside every route never reach the blueprint's handler; API clients still get JSON.
    if request.path.startswith("/api/"):
        return error_response("not_found", "没有这个接口", "no such endpoint", 404)
    return exc


@blueprint.get("/openapi.json")
def openapi() -> ResponseReturnValue:
    node = context()
    return jsonify(spec_for(node.catalogue, node.tree, node.config.code))


@blueprint.post("/auth/token")
@limiter.shared_limit(configured(SIGN_IN_PER_ADDRESS), scope="sign-in")
def token() -> ResponseReturnValue:
    body = json_body()
    username, password = body.get("username"), body.get("password")
    if (
        not isinstance(username, str)
        or not isinstance(password, str)
        or not 0 < len(username) <= 100
        or not 0 < len(password) <= 200
    ):
        return error_response("missing_field", "请输入用户名和密码", "username and password are required", 400)
    try:
        account = sign_in(username, password, "api")
    except SignInRefused as refused:
        code = "bad_credentials" if refused.status == 401 else "account_locked"
        return error_response(code, refused.message["zh"], refused.message["en"], refused.status)
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


@blueprint.post("/auth/logout")
@require_role()
def logout() -> ResponseReturnValue:
    """End this token; with ``{"everywhere": true}``, every page session and token of the account."""
    body = request.get_json(silent=True) if request.get_data(cache=True).strip() else {}
    if not isinstance(body, dict) or not isinstance(body.get("everywhere", False), bool | None):
        raise DomainError("invalid_json", "请求体须为 {everywhere: true|false}", "the body must be {everywhere: bool}")
    everywhere = body.get("everywhere") is True
    if everywhere:
        ended = sessions().end_all(g.actor.username)
        audit("api.signed_out_everywhere", g.actor.username, str(ended))
    else:
        sessions().end(bearer_secret() or "")
        ended = 1
    return jsonify({"ended": ended})


@blueprint.post("/auth/password")
@require_role()
def change_password() -> ResponseReturnValue:
    """Change one's own password; every session and token of the account ends (this one too)."""
    body = json_body()
    current, new = body.get("current_password"), body.get("new_password")
    if not isinstance(current, str) or not isinstance(new, str) or len(current) > 200:
        raise DomainError("missing_field", "请输入当前密码和新密码", "current_password and new_password are required")
    account = context().state.account(g.actor.username)
    if account is None:
        raise DomainError("unauthenticated", "请先登录", "sign in first", ErrorKind.UNAUTHENTICATED)
    replace_password(account, current, new)
    return jsonify({"changed": True})


@blueprint.post("/accounts/<username>/<any(disable, enable):change>")
@require_role("admin")
def set_account_state(username: str, change: str) -> ResponseReturnValue:
    """An administrator disables (or re-enables) a staff account; disabling ends all its sessions and tokens."""
    if len(username) > 100:
        raise DomainError("invalid_account", "账号名过长", "the user name is too long")
    if username == g.actor.username:
        raise DomainError(
            "own_account", "不能停用或启用自己的账号", "one's own account cannot be changed here", ErrorKind.FORBIDDEN
        )
    if not context().state.set_disabled(username, change == "disable"):
        raise DomainError("no_such_account", "没有这个账号", "no such account", ErrorKind.NOT_FOUND)
    ended = sessions().end_all(username) if change == "disable" else 0
    audit(f"account.{change}d", username, f"by:{g.actor.username}")
    return jsonify({"username": username, "disabled": change == "disable", "sessions_ended": ended})


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
@require_role()
@idempotent
def publish() -> ResponseReturnValue:
    """A body that breaks the published schema: 400; a catalogue whose content contradicts itself: 422."""
    body = json_body()
    problem = next(iter(sorted(CATALOGUE_VALIDATOR.iter_errors(body), key=lambda e: list(e.absolute_path))), None)
    if problem is not None:
        where = "/".join(str(part) for part in problem.absolute_path) or "(root)"
        return error_response(
            "invalid_catalogue",
            f"目录文档不符合接口说明：{where}",
            f"the catalogue document breaks the API description at {where}: {problem.message[:200]}",
            400,
        )
    try:
        catalogue = context().bus.handle(PublishCatalogue(g.actor, body))
    except DomainError as refused:
        if refused.kind is not ErrorKind.INVALID:
            raise
        return error_response(refused.code, refused.message_zh, refused.message_en, 422)
    return jsonify({"version": catalogue.version, "matters": len(catalogue.matters())})


def _view_catching_up(case: Case) -> bool:
    """Whether the read model (inbox, search) does not show the case's newest event yet."""
    try:
        known = context().readmodel.known_event_ids([case.case_no]).get(case.case_no, set())
    except Exception:
        return True
    return event_doc_id(case.case_no, case.last_hlc) not in known


def _written(case: Case) -> dict[str, Any]:
    """The answer to a request whose events are in the store: never an error from here on.

    An error now would make the client retry a command that has happened; if even the view cannot be
    built, the answer names the case and its state, and says the view is catching up.
    """
    catching_up = _view_catching_up(case)
    try:
        view = case_view(g.actor, context().cases.staff_view(g.actor, case))
    except Exception as exc:
        log.error("case %s written; its view could not be built (%s)", case.case_no, type(exc).__name__)
        view, catching_up = {"case_no": case.case_no, "state": case.state.value}, True
    return {**view, **history_gap(case), "view_catching_up": catching_up}


@blueprint.post("/cases")
@require_role()
@idempotent
def accept() -> ResponseReturnValue:
    outcome = context().bus.handle(accept_case_from_json(g.actor, json_body()))
    if outcome.outcome == "incomplete":
        return jsonify({"outcome": "incomplete", "missing": outcome.missing, "notice": outcome.notice}), 200
    assert outcome.case is not None
    return jsonify({"outcome": outcome.outcome, **_written(outcome.case)}), 201


@blueprint.get("/cases/<case_no>")
@require_role()
def get_case(case_no: str) -> ResponseReturnValue:
    cases = context().cases
    case = cases.load(case_no)
    return jsonify({**case_view(g.actor, cases.staff_view(g.actor, case)), **history_gap(case)})


def history_gap(case: Case) -> dict[str, Any]:
    """Whether the case's history has a gap, and the predecessor hashes missing (no personal data)."""
    return {"incomplete": case.incomplete, "missing_predecessors": list(case.missing_predecessors)}


@blueprint.post("/cases/<case_no>/actions")
@require_role()
@idempotent
def act(case_no: str) -> ResponseReturnValue:
    case = context().bus.handle(act_on_case_from_json(g.actor, case_no, json_body()))
    return jsonify(_written(case))


@blueprint.get("/inbox")
@require_role()
def inbox() -> ResponseReturnValue:
    rows = context().readmodel.inbox(context().config.code, g.actor.role, g.actor.department)
    return jsonify({"node": context().config.code, "role": g.actor.role, "cases": case_rows(g.actor, rows)})


@blueprint.get("/cases")
@require_role()
def search() -> ResponseReturnValue:
    text = query_param("q", max_length=100)
    state = query_param("state", choices=CASE_STATES) or None
    rows = context().readmodel.search(text=text, state=state)
    return jsonify({"cases": case_rows(g.actor, rows, text)})


@blueprint.post("/public/progress")
@limiter.shared_limit(configured(QUERY_PER_ADDRESS), scope="citizen-query")
@limiter.shared_limit(configured(QUERY_PER_CASE), scope="citizen-query-case", key_func=case_number_key)
def progress() -> ResponseReturnValue:
    body = json_body()
    case_no = body.get("case_no")
    identifier = body.get("id_number") or body.get("credit_code")
    if not isinstance(case_no, str) or not isinstance(identifier, str):
        return error_response(
            "missing_field", "请输入受理编号和证件号码", "case_no and id_number (or credit_code) are required", 400
        )
    return jsonify(citizen_progress(case_no, identifier))


@blueprint.get("/quarantine")
@require_role("ops", "admin", "supervisor")
def quarantined() -> ResponseReturnValue:
    return jsonify({"node": context().config.code, "quarantined": context().readmodel.quarantined()})
