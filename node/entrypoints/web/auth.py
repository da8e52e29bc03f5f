"""Signing in to the pages: session login and logout, CSRF, the current account, :func:`staff_page`.

Staff sign in with Flask's signed session cookie; every POST form of a page carries a per-session
CSRF token, and every page re-reads the account so that a changed role or a deleted account takes
effect at once. The hooks below run for the page blueprints only (the JSON API takes bearer
tokens, see :mod:`node.entrypoints.web.http`): they apply the language choice, check the CSRF
token and set the security headers.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable
from functools import wraps
from typing import Any

from flask import (
    Blueprint,
    Flask,
    Response,
    current_app,
    flash,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.blueprints import BlueprintSetupState
from flask.typing import ResponseReturnValue
from flask_babel import lazy_gettext

from node.adapters.nodestate import Account
from node.domain.case import ACCEPTOR, ADMIN, APPROVER, OPS, SUPERVISOR
from node.entrypoints.web.http import context, error_page
from node.entrypoints.web.i18n import LOCALES, both, lang
from node.entrypoints.web.labels import ROLE_LABELS
from node.service_layer.cases import Actor

blueprint = Blueprint("auth", __name__)

STAFF_ROLES = (ACCEPTOR, APPROVER, SUPERVISOR, OPS, ADMIN)
ACCEPT_ROLES = (ACCEPTOR, ADMIN)
# Blueprints whose views are pages signed in by session; set by the app factory.
PAGE_BLUEPRINTS_KEY = "TONGBAN_PAGE_BLUEPRINTS"


def use_for_pages(app: Flask, names: set[str]) -> None:
    """Run the page hooks for the blueprints called ``names`` (nested ones as ``parent.child``)."""
    app.config[PAGE_BLUEPRINTS_KEY] = frozenset(names)


def is_page_request() -> bool:
    return request.blueprint in current_app.config.get(PAGE_BLUEPRINTS_KEY, ())


@blueprint.record_once
def _configure(state: BlueprintSetupState) -> None:
    # Lax: a cross-site POST does not carry the session cookie (the CSRF token is the main defence).
    state.app.config.setdefault("SESSION_COOKIE_SAMESITE", "Lax")


def csrf_token() -> str:
    token = session.get("csrf")
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        session["csrf"] = token
    return token


def current_account() -> Account | None:
    if "account" not in g:
        username = session.get("user")
        account = context().state.account(username) if isinstance(username, str) else None
        if account is None:
            session.pop("user", None)
        g.account = account
    return g.account


@blueprint.before_app_request
def _page_request() -> ResponseReturnValue | None:
    if not is_page_request():
        return None
    chosen = request.args.get("lang")
    if chosen in LOCALES:
        session["lang"] = chosen
    if request.method == "POST":
        sent = request.form.get("csrf_token", "")
        expected = session.get("csrf")
        if not isinstance(expected, str) or not hmac.compare_digest(sent.encode(), expected.encode()):
            return error_page(400, both(lazy_gettext("表单已失效，请刷新页面后重新提交")))
    return None


@blueprint.after_app_request
def _page_headers(response: Response) -> Response:
    if not is_page_request():
        return response
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    if current_account() is not None or request.method == "POST":
        response.headers["Cache-Control"] = "no-store"  # personal data must not linger in shared caches
    return response


def staff_page(*roles: str) -> Callable[[Callable[..., ResponseReturnValue]], Callable[..., ResponseReturnValue]]:
    """Signed-in staff only; with ``roles``, only those roles. Sets ``g.actor``."""

    def decorator(view: Callable[..., ResponseReturnValue]) -> Callable[..., ResponseReturnValue]:
        @wraps(view)
        def wrapped(*args: Any, **kwargs: Any) -> ResponseReturnValue:
            account = current_account()
            if account is None:
                flash(both(lazy_gettext("请先登录")), "info")
                target = request.full_path.rstrip("?") if request.method == "GET" else request.path
                return redirect(url_for("auth.login", next=target))
            if account.role not in (roles or STAFF_ROLES):
                role = ROLE_LABELS.get(account.role, account.role)
                return error_page(403, both(lazy_gettext("您的角色（%(role)s）无权访问此页面", role=role)))
            g.actor = Actor.of(account)
            return view(*args, **kwargs)

        return wrapped

    return decorator


def safe_next(target: str | None) -> str:
    """Where to go after signing in: only same-site paths, never another host."""
    if target and target.startswith("/") and not target.startswith(("//", "/\\")):
        return target
    return url_for("pages.home")


@blueprint.route("/login", methods=["GET", "POST"])
def login() -> ResponseReturnValue:
    next_url = request.values.get("next", "")
    if request.method == "GET":
        return render_template("login.html", next_url=next_url, username="")
    username = request.form.get("username", "")[:100]
    password = request.form.get("password", "")[:200]
    account = context().state.authenticate(username, password) if username and password else None
    if account is None:
        error = both(lazy_gettext("用户名或密码错误"))
        return render_template("login.html", next_url=next_url, username=username, error=error), 401
    chosen = lang()
    session.clear()  # a new session on sign-in: no fixation, a fresh CSRF token
    session["user"] = account.username
    session["lang"] = chosen
    flash(both(lazy_gettext("登录成功，欢迎 %(name)s", name=account.display_name)), "success")
    return redirect(safe_next(next_url))


@blueprint.post("/logout")
def logout() -> ResponseReturnValue:
    chosen = lang()
    session.clear()
    session["lang"] = chosen
    flash(both(lazy_gettext("已退出登录")), "info")
    return redirect(url_for("pages.home"))
