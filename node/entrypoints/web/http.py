"""What every blueprint shares about a request: the node's context, bearer tokens, errors as HTTP.

``DomainError`` kinds map to HTTP statuses through the one table :data:`STATUS`; JSON clients get
``{error, message_zh, message_en}`` from :func:`error_response`, people get the error page from
:func:`error_page`. API views take their caller from :func:`require_role`.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from flask import Response, abort, current_app, g, jsonify, render_template, request
from flask.typing import ResponseReturnValue
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from node.adapters.opsmodel import OpsModel
from node.bootstrap import NodeContext
from node.config import Thresholds
from node.domain.errors import DomainError, ErrorKind
from node.service_layer.cases import Actor
from tiers import Capability, capabilities

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


def error_page(status: int, message: dict[str, str]) -> ResponseReturnValue:
    """The HTML error page; ``message`` holds the text in both languages (``{"zh": …, "en": …}``)."""
    return render_template("error.html", error=message, status=status), status


def json_body() -> dict[str, Any]:
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    if request.content_length is not None and request.content_length > limit:
        abort(413)
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise DomainError("invalid_json", "请求体必须是 JSON 对象", "the request body must be a JSON object")
    return body


# --- bearer tokens of the JSON API ---------------------------------------------------------------------


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


# --- city operations, read by the ops blueprint and by /metrics -----------------------------------------


def monitors() -> bool:
    """Whether this node monitors the federation's operations (the city does)."""
    return Capability.OPS_MONITORING in capabilities(context().division.tier)


def ops_model() -> OpsModel:
    """One per application (its engine pools connections); created on first use."""
    model = current_app.extensions.get("tongban_ops")
    if model is None:
        model = OpsModel.for_node(context().config.data_dir, cases=context().readmodel)
        current_app.extensions["tongban_ops"] = model
    return model


def thresholds() -> Thresholds:
    return Thresholds.load(context().config.data_dir)
