"""Request-rate limits of the routes anyone can call unauthenticated: sign-in and the citizen query.

Flask-Limiter counts in the node's Redis, so every gunicorn worker of the node shares the counters
(in memory if Redis is down, rather than failing sign-in). The limits are read from the app config at
request time, so a deployment or a test can change them; :data:`DEFAULTS` holds the values.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from flask import Flask, current_app, request
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address

from node.bootstrap import NodeContext

SIGN_IN_PER_ADDRESS = "TONGBAN_LIMIT_SIGN_IN"
QUERY_PER_ADDRESS = "TONGBAN_LIMIT_QUERY"
QUERY_PER_CASE = "TONGBAN_LIMIT_QUERY_CASE"
DEFAULTS = {
    # A window with a dozen staff behind one address signs in a few times a minute at most.
    SIGN_IN_PER_ADDRESS: "30 per minute;300 per hour",
    # A citizen checks a handful of cases; enumeration needs thousands of look-ups.
    QUERY_PER_ADDRESS: "10 per minute;60 per hour",
    # Guessing the ID number that goes with one case number: a few tries, then wait.
    QUERY_PER_CASE: "5 per 10 minutes;20 per day",
}

SCOPE_KEY = "TONGBAN_LIMIT_SCOPE"


def address_key() -> str:
    """The client address, within this node's counters."""
    return f"{current_app.config[SCOPE_KEY]}:{get_remote_address()}"


# One limiter for the module's decorators; the keys carry the node (a process running several apps,
# as the tests do, keeps each node's counters apart: Flask-Limiter's key prefix is per limiter).
limiter = Limiter(
    key_func=address_key,
    headers_enabled=True,
    in_memory_fallback_enabled=True,
    swallow_errors=True,
    strategy="moving-window",
)


def init_app(app: Flask, context: NodeContext) -> None:
    for key, value in DEFAULTS.items():
        app.config.setdefault(key, value)
    app.config["RATELIMIT_STORAGE_URI"] = context.config.redis_url or "memory://"
    # One set of counters per node (tests run many nodes of one code against one Redis).
    app.config[SCOPE_KEY] = f"tongban:{context.config.code}:{context.config.docstore_db}"
    limiter.init_app(app)


def configured(key: str) -> Callable[[], str]:
    """The limit named ``key`` in the app config, read at request time."""
    return lambda: str(current_app.config[key])


def case_number_key() -> str:
    """The case number asked about (form or JSON), hashed: the limiter's keys hold no case numbers."""
    body = request.get_json(silent=True) if request.is_json else None
    value = body.get("case_no") if isinstance(body, dict) else request.form.get("case_no")
    text = value.strip()[:80] if isinstance(value, str) else ""
    return f"{current_app.config[SCOPE_KEY]}:case:" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]
