"""The child's view of its parent: a replication :class:`~sync.replicator.Peer` over the parent's node API.

Every request is signed with the child's key (see :mod:`sync.auth`); the parent answers only with
what the child's subtree may hold, and every answer taken must be signed by the parent's own key.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

import requests

from node.adapters.docstore import StoreUnavailable
from node.adapters.pki import NodeIdentity
from node.domain.errors import DomainError
from sync.auth import HEADER_NONCE, sign_request, verify_response
from tiers import yiyang

Doc = dict[str, Any]
PREFIX = "/sync/v1"


class LinkRefused(Exception):
    """The parent refused the request (authentication or authorisation); retrying will not help."""


class NodeApiPeer:
    def __init__(
        self, parent_url: str, identity: NodeIdentity, timeout: float = 60.0, parent: str | None = None
    ) -> None:
        self.base_url = parent_url.rstrip("/")
        self.identity = identity
        # The node whose key must sign every answer: by default this node's parent in the division tree.
        self.parent = parent or yiyang().parent(identity.node_code) or ""
        self.timeout = timeout
        self.id = f"node-api:{self.base_url}"
        self.session = requests.Session()

    def _call(self, method: str, path: str, query: dict[str, Any] | None = None, body: Any = None) -> Any:
        target = PREFIX + path + (("?" + urlencode(query)) if query else "")
        data = json.dumps(body).encode() if body is not None else b""
        signed = sign_request(self.identity, method, target, data, self.parent)
        headers = {"Content-Type": "application/json", **signed}
        try:
            response = self.session.request(
                method, self.base_url + target, data=data or None, headers=headers, timeout=self.timeout
            )
        except requests.RequestException as exc:
            raise StoreUnavailable(f"parent node at {self.base_url} unreachable: {exc}") from exc
        if response.status_code in (401, 403):
            raise LinkRefused(f"parent refused {method} {path}: {response.status_code} {response.text[:200]}")
        if response.status_code >= 500:
            raise StoreUnavailable(f"parent node answered {response.status_code} to {method} {path}")
        try:
            verify_response(
                dict(response.headers),
                signed[HEADER_NONCE],
                response.status_code,
                response.content,
                self.identity.ca_pem,
                self.parent,
            )
        except DomainError as exc:
            raise LinkRefused(f"answer to {method} {path} not from the parent {self.parent}: {exc.message_en}") from exc
        if response.status_code == 404 and path.startswith("/local/"):
            return None
        if response.status_code >= 400:
            raise LinkRefused(f"parent rejected {method} {path}: {response.status_code} {response.text[:200]}")
        return response.json()

    def changes(self, since: Any, limit: int) -> tuple[list[Doc], Any]:
        result = self._call("GET", "/changes", {"since": json.dumps(since), "limit": limit})
        return result["results"], result["last_seq"]

    def revs_diff(self, revs: dict[str, list[str]]) -> dict[str, Doc]:
        return self._call("POST", "/revs_diff", body=revs) if revs else {}

    def bulk_get(self, wanted: list[Doc]) -> list[Doc]:
        return self._call("POST", "/bulk_get", body={"docs": wanted})["docs"] if wanted else []

    def bulk_docs(self, docs: list[Doc], new_edits: bool = False) -> list[Doc]:
        result = self._call("POST", "/bulk_docs", body={"docs": docs, "new_edits": False})
        return list(result["failures"])

    def missing_events(self, wanted: dict[str, list[str]]) -> list[Doc]:
        """Events missing in the middle of case histories (case number → predecessor hashes), see
        :meth:`sync.serving.LinkServer.missing_events`."""
        return self._call("POST", "/missing_events", body={"cases": wanted})["docs"] if wanted else []

    def get_local(self, name: str) -> Doc | None:
        return self._call("GET", f"/local/{name}")

    def put_local(self, name: str, body: Doc) -> None:
        self._call("PUT", f"/local/{name}", body=body)
