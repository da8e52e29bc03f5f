"""Signing in to the pages: login, logout (here or everywhere), password change, CSRF, :func:`staff_page`.

A signed-in browser holds, in Flask's signed cookie, only the secret of a server-side session (see
:mod:`node.adapters.sessions`): every request looks the session up, so logging out, logging out
everywhere, a password change or an administrator disabling the account take effect at the next
request, and a copied cookie dies with its session. Sessions end after :data:`~http.PAGE_LIFETIMES`
(idle and absolute); a new one is opened at every sign-in (no fixation). The cookie is HttpOnly,
SameSite=Lax, and Secure when the request came over HTTPS or the environment sets
``TONGBAN_COOKIE_SECURE=1`` (a node behind a front that terminates TLS).

Sign-in is throttled per client address (Flask-Limiter, :mod:`limits`) and per account name (a
lockout after repeated wrong passwords, counted for unknown names too, so a lockout tells nothing);
each outcome goes to the audit trail. Every POST form of a page carries a per-session CSRF token.
The hooks below run for the page blueprints only (the JSON API takes bearer tokens, see
:mod:`node.entrypoints.web.http`): they apply the language choice, check the CSRF token and set the
security headers.
"""

from __future__ import annotations

import hmac
import os
import secrets
import time
from collections.abc import Callable
from functools import wraps
from typing import Any
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    Flask,
    Response,
    current_app,
    flash,
    g,
    has_request_context,
    jsonify,
    make_response,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.sessions import SecureCookieSessionInterface
from flask.typing import ResponseReturnValue
from flask_babel import lazy_gettext
from werkzeug.exceptions import HTTPException

from node.adapters.nodestate import Account
from node.adapters.sessions import Lockout
from node.domain.case import ACCEPTOR, ADMIN, APPROVER, OPS, SUPERVISOR
from node.domain.citizen_accounts import check_password
from node.domain.errors import DomainError, ErrorKind
from node.entrypoints.web.http import (
    PAGE_LIFETIMES_KEY,
    STATUS,
    audit,
    context,
    error_page,
    error_response,
    sessions,
)
from node.entrypoints.web.i18n import LOCALES, bilingual, both, lang
from node.entrypoints.web.labels import ROLE_LABELS
from node.entrypoints.web.limits import SIGN_IN_PER_ADDRESS, configured, limiter
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


LOCKOUT_KEY = "TONGBAN_LOCKOUT"
COOKIE_SECURE_ENV = "TONGBAN_COOKIE_SECURE"  # "1": the session cookie is always marked Secure


class SessionCookie(SecureCookieSessionInterface):
    """Flask's signed cookie, marked Secure whenever the request itself came over HTTPS."""

    def get_cookie_secure(self, app: Flask) -> bool:
        return bool(app.config["SESSION_COOKIE_SECURE"]) or (has_request_context() and request.is_secure)


def init_app(app: Flask) -> None:
    """Cookie flags and sign-in rules; assigned, not ``setdefault``: Flask already defines these keys."""
    app.session_interface = SessionCookie()
    # Lax: a cross-site POST does not carry the session cookie (the CSRF token is the main defence).
    app.config["SESSION_COOKIE_SAMESITE"] = "Lax"
    app.config["SESSION_COOKIE_HTTPONLY"] = True
    # Behind a front that terminates TLS the request looks like plain HTTP: the deployment says so.
    app.config["SESSION_COOKIE_SECURE"] = os.environ.get(COOKIE_SECURE_ENV, "") == "1"
    app.config.setdefault(LOCKOUT_KEY, Lockout())


def csrf_token() -> str:
    token = session.get("csrf")
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        session["csrf"] = token
    return token


def current_account() -> Account | None:
    """The account of the request's live server-side session, or None (a dead session is forgotten)."""
    if "account" not in g:
        secret = session.get("sid")
        username = (
            sessions().resolve(secret, "page", current_app.config[PAGE_LIFETIMES_KEY])
            if isinstance(secret, str) and len(secret) < 100
            else None
        )
        account = context().state.account(username) if username else None
        if account is None and "sid" in session:
            session.pop("sid", None)
        g.account = account
    return g.account


def _start_session(account: Account) -> None:
    """A new session for ``account``: the old cookie's session ends, the CSRF token is new."""
    chosen = lang()
    old = session.get("sid")
    if isinstance(old, str):
        sessions().end(old)
    session.clear()
    session["sid"] = sessions().open(account.username, "page", current_app.config[PAGE_LIFETIMES_KEY])
    session["lang"] = chosen
    g.account = account


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


@blueprint.app_errorhandler(DomainError)
def _domain_error(exc: DomainError) -> ResponseReturnValue:
    """A DomainError no view caught (e.g. a bad query parameter): the error page, or JSON off the pages."""
    if is_page_request():
        return error_page(STATUS[exc.kind], bilingual(exc))
    return jsonify(exc.to_dict()), STATUS[exc.kind]


@blueprint.app_errorhandler(429)
def _too_many(exc: HTTPException) -> ResponseReturnValue:
    """Over a request-rate limit: the same words everywhere, and when to come back."""
    retry_after = exc.get_response().headers.get("Retry-After", "60")
    if is_page_request():
        response = make_response(error_page(429, both(lazy_gettext("请求过于频繁，请稍后再试"))))
    else:
        response, _status = error_response(
            "too_many_requests", "请求过于频繁，请稍后再试", "too many requests; try again later", 429
        )
        response.status_code = 429
    response.headers["Retry-After"] = retry_after
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
    """Where to go after signing in: only a path of this site, never another host.

    Browsers drop tabs and newlines from URLs and read ``\\`` as ``/``, so ``/<TAB>/evil`` would
    become ``//evil``: a target with any control character, space or backslash is refused whole.
    """
    if (
        target
        and len(target) <= 2000
        and target.startswith("/")
        and not target.startswith("//")
        and not any(ch <= " " or ch in "\\\x7f" for ch in target)
    ):
        parts = urlsplit(target)
        if not parts.scheme and not parts.netloc:
            return target
    return url_for("pages.home")


class SignInRefused(Exception):
    """Sign-in refused; ``status`` and the bilingual ``message`` say why (the same for every wrong name)."""

    def __init__(self, status: int, message: dict[str, str]) -> None:
        super().__init__(message["en"])
        self.status = status
        self.message = message


def sign_in(username: str, password: str, channel: str) -> Account:
    """Check a password under the lockout rule and audit the outcome; raises :class:`SignInRefused`.

    Failures are counted per name whether or not the account exists, so the lockout answers the same
    for names that exist and names that do not.
    """
    store = sessions()
    rule: Lockout = current_app.config[LOCKOUT_KEY]
    locked_until = store.locked_until(username)
    if locked_until is not None:
        audit(f"{channel}.locked_out", username, "refused")
        raise SignInRefused(429, _locked_message(locked_until))
    account = context().state.authenticate(username, password)
    if account is None:
        locks = store.failed(username, rule)
        audit(f"{channel}.failed", username, "locked" if locks else "wrong_password")
        if locks:
            raise SignInRefused(429, _locked_message(locks))
        raise SignInRefused(401, both(lazy_gettext("用户名或密码错误")))
    store.succeeded(username)
    audit(f"{channel}.signed_in", username, "ok")
    return account


def _locked_message(until: float) -> dict[str, str]:
    minutes = max(1, round((until - time.time()) / 60))
    return both(lazy_gettext("登录失败次数过多，账号已暂时锁定，请 %(minutes)s 分钟后再试", minutes=minutes))


@blueprint.route("/login", methods=["GET", "POST"])
@limiter.shared_limit(configured(SIGN_IN_PER_ADDRESS), scope="sign-in", methods=["POST"])
def login() -> ResponseReturnValue:
    next_url = request.values.get("next", "")[:2000]
    if request.method == "GET":
        return render_template("login.html", next_url=next_url, username="")
    username = request.form.get("username", "")[:100]
    password = request.form.get("password", "")[:200]
    if not username or not password:
        error = both(lazy_gettext("请输入用户名和密码"))
        return render_template("login.html", next_url=next_url, username=username, error=error), 400
    try:
        account = sign_in(username, password, "page")
    except SignInRefused as refused:
        page = render_template("login.html", next_url=next_url, username=username, error=refused.message)
        return page, refused.status
    _start_session(account)
    flash(both(lazy_gettext("登录成功，欢迎 %(name)s", name=account.display_name)), "success")
    return redirect(safe_next(next_url))


@blueprint.post("/logout")
def logout() -> ResponseReturnValue:
    """End this browser's session; with ``everywhere``, every session and API token of the account."""
    account = current_account()
    secret = session.get("sid")
    if account is not None and request.form.get("everywhere"):
        ended = sessions().end_all(account.username)
        audit("page.signed_out_everywhere", account.username, str(ended))
    elif isinstance(secret, str):
        sessions().end(secret)
    chosen = lang()
    session.clear()
    session["lang"] = chosen
    flash(both(lazy_gettext("已退出登录")), "info")
    return redirect(url_for("pages.home"))


@blueprint.route("/account/password", methods=["GET", "POST"])
def change_password() -> ResponseReturnValue:
    """Change one's own password: every other session and API token of the account ends."""
    account = current_account()
    if account is None:
        return redirect(url_for("auth.login", next=request.path))
    if request.method == "GET":
        return render_template("password.html")
    current = request.form.get("current_password", "")[:200]
    new = request.form.get("new_password", "")[:200]
    if new != request.form.get("repeat_password", "")[:200]:
        return render_template("password.html", error=both(lazy_gettext("两次输入的新密码不一致"))), 400
    try:
        replace_password(account, current, new)
    except DomainError as exc:
        return render_template("password.html", error=bilingual(exc)), STATUS[exc.kind]
    _start_session(account)
    flash(both(lazy_gettext("密码已修改，其他设备上的登录已全部退出")), "success")
    return redirect(url_for("pages.home"), 303)


def replace_password(account: Account, current: str, new: str) -> None:
    """Check the current password and the rules for the new one, store it, end all the account's sessions."""
    if context().state.authenticate(account.username, current) is None:
        raise DomainError("bad_credentials", "当前密码错误", "the current password is wrong", ErrorKind.UNAUTHENTICATED)
    check_password(new, phone="")
    if account.username.lower() in new.lower():
        raise DomainError(
            "password_contains_username", "密码不能包含用户名", "the password must not contain the user name"
        )
    if new == current:
        raise DomainError(
            "password_unchanged", "新密码不能与当前密码相同", "the new password must differ from the current one"
        )
    context().state.set_password(account.username, new)
    ended = sessions().end_all(account.username)
    audit("password.changed", account.username, str(ended))
