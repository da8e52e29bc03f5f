"""``/sync/v1``: the parent side of replication links, for the node's children only.

Each request must be signed by a child of this node with a certificate of the city CA, for this
node (audience), with a nonce not seen before by any web process of this node (the node's nonce
log); the body is read only after the headers checked out and only up to :data:`MAX_BODY`. Anything
else gets 401/403/411/413 and nothing else. Every answer is signed with this node's key so the child
knows it comes from its parent. Input is validated: a bad value is a 400, never a 5xx; documents the
child may not author are refused, counted and recorded for city operations (see :mod:`sync.authority`).
A child may also ask again for events missing in the middle of its cases' histories (``missing_events``).
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import OrderedDict
from typing import Any

from flask import Blueprint, Response, g, jsonify, request
from flask.typing import ResponseReturnValue
from pycouchdb import exceptions as couch_errors

from node.adapters.docstore import StoreUnavailable
from node.adapters.eventstore import HEX64
from node.domain.errors import DomainError
from node.entrypoints.web.http import context, error_response
from sync.auth import HEADER_NONCE, ReplayCache, check_request_headers, sign_response, verify_request
from sync.authority import LinkPolicy, Refusal, refusals_as_quarantine
from sync.serving import LinkServer
from sync.trust import TrustFilter

blueprint = Blueprint("sync_api", __name__, url_prefix="/sync/v1")
MAX_LIMIT = 2_000
# A batch of events and certificates (attachments do not travel between nodes); the API's 1 MB is for people.
MAX_BODY = 16 * 1024 * 1024
MAX_IDS = 10_000
_LOCAL_NAME = re.compile(r"^[0-9A-Za-z_.\-]{1,200}$")
_SEQ = re.compile(r"^[0-9A-Za-z_\-]{1,400}$")  # CouchDB 3's opaque sequence strings
# A re-request of the steps missing in the middle of case histories: bounded per request.
MAX_GAP_CASES = 100
MAX_GAP_HASHES = 500
_GAP_CASE_NO = re.compile(r"^[0-9A-Za-z_\-]{1,80}$")
# Only for a context built without the node's shared nonce log (every bootstrapped web process has one).
_REPLAYS = ReplayCache()


class BadRequest(Exception):
    pass


class RecentLookups:
    """Revisions held here as a child's ``revs_diff`` just looked them up, for that child's ``bulk_docs`` to reuse.

    The parent must know which revision of each pushed event or certificate it holds (they are written once,
    never changed: :mod:`sync.authority`); the child asks ``revs_diff`` about the same ids just before it
    pushes them, and on pouchdb-server that look-up is the most expensive part of a push
    (docs/benchmarks.md, issue 10). Each entry serves one push, for at most ``ttl_s`` seconds; beyond
    ``capacity`` the oldest go. Anything not found here is looked up again. Per process, like the replay cache.

    The look-up is then up to ``ttl_s`` older than the write instead of milliseconds. What the child may push is
    authored in its subtree and reaches this node only through that child, so in that time it can only have been
    written by the child itself — and an entry serves one push, so a second push of the same id is looked up
    afresh — or, if this node lost it (a restore from backup), by its own parent's copy coming back down.
    """

    def __init__(self, ttl_s: float = 10.0, capacity: int = 50_000) -> None:
        self.ttl_s = ttl_s
        self.capacity = capacity
        self._held: OrderedDict[tuple[str, str], tuple[str | None, float]] = OrderedDict()
        self._lock = threading.Lock()

    def remember(self, child: str, held: dict[str, str | None]) -> None:
        now = time.monotonic()
        with self._lock:
            for doc_id, rev in held.items():
                self._held.pop((child, doc_id), None)
                self._held[child, doc_id] = (rev, now)
            while len(self._held) > self.capacity:
                self._held.popitem(last=False)

    def take(self, child: str, doc_ids: set[str]) -> dict[str, str | None]:
        """The fresh entries for ``doc_ids`` (removed: each serves once)."""
        oldest = time.monotonic() - self.ttl_s
        found: dict[str, str | None] = {}
        with self._lock:
            for doc_id in doc_ids:
                entry = self._held.pop((child, doc_id), None)
                if entry is not None and entry[1] >= oldest:
                    found[doc_id] = entry[0]
        return found


_LOOKUPS = RecentLookups()


def _refused_rows(refusals: list[Refusal]) -> None:
    node = context()
    node.readmodel.record_quarantine(refusals_as_quarantine(refusals))


def server() -> LinkServer:
    node = context()
    return LinkServer(
        node.store,
        node.tree,
        node.config.code,
        TrustFilter(node.readmodel, node.projector),
        policy=LinkPolicy(node.tree, node.identity.ca_pem),
        on_refused=_refused_rows,
    )


@blueprint.before_request
def authenticate_child() -> ResponseReturnValue | None:
    node = context()
    headers = dict(request.headers)
    try:
        caller = check_request_headers(headers, node.config.code, node.identity.ca_pem)
    except DomainError as exc:
        return jsonify(exc.to_dict()), 401
    if not server().is_child(caller):
        return error_response(
            "not_a_child",
            f"节点 {caller} 不是本节点的下级，不能同步",
            f"node {caller} is not a child of {node.config.code}; links run child → parent only",
            403,
        )
    length = request.content_length
    if request.method in ("POST", "PUT") and length is None:
        return error_response("length_required", "请求须注明长度", "Content-Length is required", 411)
    if length is not None and length > MAX_BODY:
        return error_response(
            "too_large", "请求过大", f"the body ({length} bytes) exceeds {MAX_BODY} bytes: send smaller batches", 413
        )
    request.max_content_length = MAX_BODY
    target = request.path + (f"?{request.query_string.decode()}" if request.query_string else "")
    try:
        verify_request(
            headers,
            request.method,
            target,
            request.get_data(),
            node.identity.ca_pem,
            node.config.code,
            node.nonces or _REPLAYS,
        )
    except DomainError as exc:
        return jsonify(exc.to_dict()), 401
    g.child = caller
    return None


@blueprint.after_request
def sign_answer(response: Response) -> Response:
    """Every answer is signed: the child takes nothing its parent did not say."""
    nonce = request.headers.get(HEADER_NONCE, "")
    if isinstance(nonce, str) and len(nonce) <= 64:
        response.headers.update(sign_response(context().identity, nonce, response.status_code, response.get_data()))
    return response


@blueprint.errorhandler(BadRequest)
def bad_request(exc: BadRequest) -> ResponseReturnValue:
    return error_response("bad_request", "同步请求格式不正确", f"malformed sync request: {exc}", 400)


@blueprint.errorhandler(DomainError)
def invalid(exc: DomainError) -> ResponseReturnValue:
    return jsonify(exc.to_dict()), 400


@blueprint.errorhandler(StoreUnavailable)
def store_unavailable(exc: StoreUnavailable) -> ResponseReturnValue:
    return error_response("store_unavailable", "本节点文档库暂不可用", "this node's store is unavailable", 503)


@blueprint.errorhandler(couch_errors.GenericError)
def store_refused(exc: couch_errors.GenericError) -> ResponseReturnValue:
    # The store refused a value the child gave (a sequence it never issued, …): the child's fault, not ours.
    return error_response("bad_request", "同步请求格式不正确", "the store refused the request's values", 400)


def _body() -> Any:
    try:
        return json.loads(request.get_data() or b"null")
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest("the body is not JSON") from exc


def _object(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadRequest("the body must be a JSON object")
    return value


def _since(raw: str) -> int | str:
    """The ``since`` sequence: a JSON number or string as the store hands them out, or 400."""
    try:
        value = json.loads(raw)
    except ValueError:
        value = None
    if isinstance(value, bool) or not (
        (isinstance(value, int) and value >= 0) or (isinstance(value, str) and _SEQ.match(value))
    ):
        raise DomainError(
            "invalid_query",
            "查询参数 since 必须是上次返回的 last_seq",
            "query parameter 'since' must be a last_seq the parent handed out",
        )
    return value


@blueprint.get("/changes")
def changes() -> ResponseReturnValue:
    since = _since(request.args.get("since", "0")[:400])
    raw_limit = request.args.get("limit", "500")
    if not raw_limit.isascii() or not raw_limit.isdigit() or len(raw_limit) > 6:
        raise DomainError("invalid_query", "查询参数 limit 必须是正整数", "query parameter 'limit' must be a number")
    limit = max(1, min(int(raw_limit), MAX_LIMIT))
    rows, last_seq = server().changes(g.child, since, limit)
    return jsonify({"results": rows, "last_seq": last_seq})


@blueprint.post("/revs_diff")
def revs_diff() -> ResponseReturnValue:
    body = _object(_body())
    if len(body) > MAX_IDS or not all(
        isinstance(revs, list) and len(revs) <= 100 and all(isinstance(r, str) and len(r) <= 64 for r in revs)
        for revs in body.values()
    ):
        raise BadRequest("expected {id: [rev, …]}")
    held: dict[str, str | None] = {}
    answer = server().revs_diff(body, held_out=held)
    _LOOKUPS.remember(g.child, held)
    return jsonify(answer)


@blueprint.post("/bulk_get")
def bulk_get() -> ResponseReturnValue:
    wanted = _object(_body()).get("docs", [])
    if not isinstance(wanted, list) or len(wanted) > MAX_IDS:
        raise BadRequest("docs must be a list")
    clean = [
        {k: w[k] for k in ("id", "rev") if k in w}
        for w in wanted
        if isinstance(w, dict) and isinstance(w.get("id"), str) and isinstance(w.get("rev", ""), str)
    ]
    return jsonify({"docs": server().bulk_get(g.child, clean)})


@blueprint.post("/bulk_docs")
def bulk_docs() -> ResponseReturnValue:
    docs = _object(_body()).get("docs", [])
    if not isinstance(docs, list) or len(docs) > MAX_IDS:
        raise BadRequest("docs must be a list")
    ids = {doc["_id"] for doc in docs if isinstance(doc, dict) and isinstance(doc.get("_id"), str)}
    failures, refused = server().accept_push(g.child, docs, known=_LOOKUPS.take(g.child, ids))
    context().wake()
    return jsonify({"failures": failures, "refused": refused})


@blueprint.post("/missing_events")
def missing_events() -> ResponseReturnValue:
    """Events the child lacks in the middle of its cases' histories, by the hashes its events name."""
    wanted = _object(_body()).get("cases")
    if not isinstance(wanted, dict) or len(wanted) > MAX_GAP_CASES:
        raise BadRequest(f"cases must be an object of at most {MAX_GAP_CASES} case numbers")
    total = 0
    for case_no, hashes in wanted.items():
        if not _GAP_CASE_NO.match(case_no):
            raise BadRequest("malformed case number")
        if not isinstance(hashes, list) or not all(isinstance(h, str) and HEX64.match(h) for h in hashes):
            raise BadRequest("each case's hashes must be a list of 64 lowercase hex digits")
        total += len(hashes)
    if total > MAX_GAP_HASHES:
        raise BadRequest(f"at most {MAX_GAP_HASHES} hashes per request")
    return jsonify({"docs": server().missing_events(g.child, wanted)})


def _local_name(name: str) -> str:
    if not _LOCAL_NAME.match(name):
        raise BadRequest("malformed checkpoint name")
    return LinkServer.local_name(g.child, name)


@blueprint.get("/local/<name>")
def get_local(name: str) -> ResponseReturnValue:
    doc = context().store.get_local(_local_name(name))
    if doc is None:
        return error_response("not_found", "没有该检查点", "no such checkpoint", 404)
    return jsonify(doc)


@blueprint.put("/local/<name>")
def put_local(name: str) -> ResponseReturnValue:
    # A checkpoint is the child's own data; store fields (_rev, _attachments, …) are not its to set.
    body = {k: v for k, v in _object(_body()).items() if not str(k).startswith("_")}
    if len(json.dumps(body)) > 1_000_000:
        raise BadRequest("checkpoint too large")
    context().store.put_local(_local_name(name), body)
    return jsonify({"ok": True})
