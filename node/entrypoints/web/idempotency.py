"""The ``Idempotency-Key`` header of the API's creating requests (see :mod:`node.adapters.idempotency`).

Put :func:`idempotent` under ``require_role`` on every view that creates something. Without the
header a request runs as usual. With it:

- the first request with a key runs, and its answer is kept for 24 hours when it succeeded (2xx);
- the same key again from the same account with the same request (method, path, query and JSON
  body, whatever the order of its keys) gets the kept answer, same status and body, with
  ``Idempotent-Replayed: true``, and nothing runs again;
- the same key with another request: 422 ``idempotency_key_reused``;
- the same key while the first request still runs: 409 ``idempotency_key_in_use`` with Retry-After;
- a key that is not 1–100 characters of ``A–Z a–z 0–9 . _ : ~ -``: 400 ``invalid_idempotency_key``.

An answer with an error is not kept: such a request wrote nothing, so the key is free again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Callable
from functools import wraps
from typing import Any

from flask import Response, current_app, g, make_response, request
from flask.typing import ResponseReturnValue

from node.adapters.idempotency import IdempotencyStore, Stored
from node.entrypoints.web.http import context, error_response

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
KEY_PATTERN = re.compile(r"[A-Za-z0-9._:~-]{1,100}")
# The OpenAPI description of the header, for every operation that takes it.
HEADER_PARAMETER: dict[str, Any] = {
    "name": HEADER,
    "in": "header",
    "required": False,
    "description": "Makes a retry safe: the same key with the same request returns the first answer "
    "(kept 24 h, per account and node); with another request, 422.",
    "schema": {"type": "string", "pattern": "^[A-Za-z0-9._:~-]{1,100}$"},
}
log = logging.getLogger(__name__)


def store() -> IdempotencyStore:
    """The node's idempotency claims (in ``state.sqlite3``); one store per application."""
    found = current_app.extensions.get("tongban_idempotency")
    if found is None:
        found = IdempotencyStore(context().config.data_dir / "state.sqlite3", str(current_app.config["SECRET_KEY"]))
        current_app.extensions["tongban_idempotency"] = found
    return found


def fingerprint() -> str:
    """What makes two requests the same: method, path, query and body (JSON compared as data)."""
    raw = request.get_data(cache=True)
    try:
        body = json.dumps(json.loads(raw), sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()
    except ValueError:
        body = raw
    digest = hashlib.sha256()
    for part in (request.method.encode(), request.path.encode(), request.query_string, body):
        digest.update(len(part).to_bytes(8, "big") + part)
    return digest.hexdigest()


def idempotent(view: Callable[..., ResponseReturnValue]) -> Callable[..., ResponseReturnValue]:
    """Honour ``Idempotency-Key`` on a creating view (below ``require_role``: the key is per account)."""

    @wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> ResponseReturnValue:
        key = request.headers.get(HEADER)
        if key is None:
            return view(*args, **kwargs)
        if not KEY_PATTERN.fullmatch(key):
            return error_response(
                "invalid_idempotency_key",
                "Idempotency-Key 须为 1 到 100 个字母、数字或 . _ : ~ - 字符",
                "Idempotency-Key must be 1 to 100 letters, digits or . _ : ~ -",
                400,
            )
        # Per account; a public route's keys are per client address (nobody signed in to scope them by).
        username = g.actor.username if "actor" in g else f"public:{request.remote_addr or '-'}"
        claims = store()
        claim = claims.claim(username, key, fingerprint())
        if claim.replay is not None:
            replayed = Response(claim.replay.body, status=claim.replay.status, content_type=claim.replay.content_type)
            replayed.headers[REPLAYED_HEADER] = "true"
            return replayed
        if claim.mismatch:
            return error_response(
                "idempotency_key_reused",
                "该 Idempotency-Key 已用于另一个请求，请为新请求使用新的键",
                "this Idempotency-Key was used for another request; use a new key for a new request",
                422,
            )
        if claim.running:
            response, status = error_response(
                "idempotency_key_in_use",
                "使用该 Idempotency-Key 的请求仍在处理中，请稍后重试",
                "a request with this Idempotency-Key is still being processed; retry shortly",
                409,
            )
            response.headers["Retry-After"] = "1"
            return response, status
        try:
            response = make_response(view(*args, **kwargs))
        except BaseException:
            claims.release(username, key)
            raise
        try:
            if 200 <= response.status_code < 300:
                claims.complete(username, key, Stored(response.status_code, response.get_data(), response.content_type))
            else:
                claims.release(username, key)
        except Exception as exc:
            # The request has happened; not keeping its answer must not turn it into an error.
            log.error("idempotency key not kept (%s)", type(exc).__name__)
        return response

    return wrapped
