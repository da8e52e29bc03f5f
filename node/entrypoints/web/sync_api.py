"""``/sync/v1``: the parent side of replication links, for the node's children only.

Each request must be signed by a child of this node with a certificate of the city CA; anything
else gets 401/403 and nothing else.
"""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, g, jsonify, request
from flask.typing import ResponseReturnValue

from node.domain.errors import DomainError
from node.entrypoints.web.http import DIGITS, context, error_response, query_param
from sync.auth import verify_request
from sync.serving import LinkServer
from sync.trust import TrustFilter

blueprint = Blueprint("sync_api", __name__, url_prefix="/sync/v1")
MAX_LIMIT = 2_000
MAX_BODY = 64 * 1024 * 1024  # a batch of documents with attachments; the API's 1 MB limit is for people


def server() -> LinkServer:
    node = context()
    return LinkServer(node.store, node.tree, node.config.code, TrustFilter(node.readmodel, node.projector))


@blueprint.before_request
def authenticate_child() -> ResponseReturnValue | None:
    request.max_content_length = MAX_BODY
    target = request.path + (f"?{request.query_string.decode()}" if request.query_string else "")
    try:
        caller = verify_request(
            dict(request.headers), request.method, target, request.get_data(), context().identity.ca_pem
        )
    except DomainError as exc:
        return jsonify(exc.to_dict()), 401
    if not server().is_child(caller):
        return error_response(
            "not_a_child",
            f"节点 {caller} 不是本节点的下级，不能同步",
            f"node {caller} is not a child of {context().config.code}; links run child → parent only",
            403,
        )
    g.child = caller
    return None


def _since(raw: str) -> int | str:
    """The ``since`` sequence: a JSON number or string as the store hands them out, or 400."""
    try:
        value = json.loads(raw)
    except ValueError:
        value = None
    if isinstance(value, bool) or not isinstance(value, int | str) or (isinstance(value, int) and value < 0):
        raise DomainError(
            "invalid_query",
            "查询参数 since 必须是上次返回的 last_seq",
            "query parameter 'since' must be a last_seq the parent handed out",
        )
    return value


def _body() -> Any:
    return json.loads(request.get_data() or b"null")


@blueprint.get("/changes")
def changes() -> ResponseReturnValue:
    since = _since(query_param("since", default="0", max_length=400))
    limit = max(1, min(int(query_param("limit", default="500", max_length=6, pattern=DIGITS)), MAX_LIMIT))
    rows, last_seq = server().changes(g.child, since, limit)
    return jsonify({"results": rows, "last_seq": last_seq})


@blueprint.post("/revs_diff")
def revs_diff() -> ResponseReturnValue:
    return jsonify(server().revs_diff(_body() or {}))


@blueprint.post("/bulk_get")
def bulk_get() -> ResponseReturnValue:
    return jsonify({"docs": server().bulk_get(g.child, list((_body() or {}).get("docs", [])))})


@blueprint.post("/bulk_docs")
def bulk_docs() -> ResponseReturnValue:
    failures, refused = server().accept_push(g.child, list((_body() or {}).get("docs", [])))
    context().wake()
    return jsonify({"failures": failures, "refused": refused})


@blueprint.get("/local/<name>")
def get_local(name: str) -> ResponseReturnValue:
    doc = context().store.get_local(LinkServer.local_name(g.child, name))
    if doc is None:
        return error_response("not_found", "没有该检查点", "no such checkpoint", 404)
    return jsonify(doc)


@blueprint.put("/local/<name>")
def put_local(name: str) -> ResponseReturnValue:
    context().store.put_local(LinkServer.local_name(g.child, name), dict(_body() or {}))
    return jsonify({"ok": True})
