"""The node's document store (CouchDB API: Apache CouchDB 3 in production, pouchdb-server here).

Only the API subset both servers honour is used (ARCHITECTURE §3). Sequence values are opaque:
they are stored and passed back, never compared or computed with.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable
from typing import Any

import pycouchdb
import requests
from pycouchdb import exceptions as couch_errors

Doc = dict[str, Any]


class StoreUnavailable(Exception):
    """The document store did not answer."""


class DocStore:
    def __init__(self, base_url: str, db_name: str, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.db_name = db_name
        self.timeout = timeout
        self.server = pycouchdb.Server(self.base_url, timeout=timeout)
        # The store is on loopback: never look up proxy settings (requests does it on every call).
        self.server.resource.session.trust_env = False
        self._db: pycouchdb.client.Database | None = None

    @property
    def db(self) -> pycouchdb.client.Database:
        if self._db is None:
            try:
                if self.db_name not in self.server:
                    with contextlib.suppress(couch_errors.Conflict):  # another process of this node created it first
                        self.server.create(self.db_name)
                self._db = self.server.database(self.db_name)
            except requests.RequestException as exc:
                raise StoreUnavailable(f"document store at {self.base_url} unreachable: {exc}") from exc
        return self._db

    @property
    def db_url(self) -> str:
        return f"{self.base_url}/{self.db_name}"

    def reachable(self) -> bool:
        try:
            response = requests.get(self.base_url + "/", timeout=2)
            welcome = response.json()
            # CouchDB answers {"couchdb": "Welcome", …}; pouchdb-server {"express-pouchdb": "Welcome!", …}.
            return response.ok and ("couchdb" in welcome or "express-pouchdb" in welcome)
        except (requests.RequestException, ValueError):
            return False

    def info(self) -> Doc:
        return self._request("GET", "")

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        url = f"{self.db_url}/{path}" if path else self.db_url
        try:
            response = self.db.resource.session.request(method, url, timeout=self.timeout, **kwargs)
        except requests.RequestException as exc:
            raise StoreUnavailable(f"document store at {self.base_url} unreachable: {exc}") from exc
        if response.status_code == 404:
            raise couch_errors.NotFound(path)
        if response.status_code >= 400:
            raise couch_errors.GenericError(response.text)
        return response.json()

    def get(self, doc_id: str, **params: Any) -> Doc | None:
        try:
            return self.db.get(doc_id, **params)
        except couch_errors.NotFound:
            return None
        except requests.RequestException as exc:
            raise StoreUnavailable(str(exc)) from exc

    def put(self, doc: Doc) -> Doc:
        try:
            return self.db.save(doc)
        except requests.RequestException as exc:
            raise StoreUnavailable(str(exc)) from exc

    def bulk_docs(self, docs: Iterable[Doc], new_edits: bool = True) -> list[Doc]:
        """Write many documents at once; returns the per-document results (``ok``/``error``)."""
        body: dict[str, Any] = {"docs": list(docs)}
        if not new_edits:
            body["new_edits"] = False
        return self._request("POST", "_bulk_docs", data=json.dumps(body), headers={"Content-Type": "application/json"})

    def changes(self, since: Any = 0, limit: int | None = None, include_docs: bool = False) -> Doc:
        params: dict[str, Any] = {"since": json.dumps(since) if not isinstance(since, str | int) else since}
        if limit is not None:
            params["limit"] = limit
        if include_docs:
            params["include_docs"] = "true"
        params["style"] = "all_docs"
        return self._request("GET", "_changes", params=params)

    def revs_diff(self, revs: dict[str, list[str]]) -> dict[str, Doc]:
        """Which of ``revs`` (doc id → revisions) this database lacks: id → ``{"missing": [...]}``."""
        if not revs:
            return {}
        return self._request("POST", "_revs_diff", data=json.dumps(revs), headers={"Content-Type": "application/json"})

    def bulk_get(self, wanted: list[Doc], revs: bool = True, attachments: bool = True) -> list[Doc]:
        """The requested ``{"id", "rev"}`` revisions, with ``_revisions`` and inline base64 attachments.

        Revisions the store does not have are left out. pouchdb-server 4.2.0 answers them with
        ``{"missing": rev}`` (or ``{}`` for an unknown id without rev) instead of CouchDB's
        ``{"error": …}``; both shapes are skipped. Never sent empty: an empty ``docs`` list makes
        pouchdb-server 4.2.0 hang the request forever. ``latest=true`` is never sent: for a revision
        the document's tree does not hold, pouchdb-server 4.2.0 throws outside the request and the
        whole server process exits.
        """
        if not wanted:
            return []
        params = {"revs": "true" if revs else "false", "attachments": "true" if attachments else "false"}
        body = json.dumps({"docs": wanted})
        result = self._request(
            "POST", "_bulk_get", params=params, data=body, headers={"Content-Type": "application/json"}
        )
        return [entry["ok"] for item in result.get("results", []) for entry in item.get("docs", []) if "ok" in entry]

    def current_revs(self, doc_ids: list[str]) -> dict[str, str]:
        """The winning revision of each of ``doc_ids`` held here (deleted ones included); absent ids are left out."""
        if not doc_ids:
            return {}
        body = json.dumps({"keys": doc_ids})
        result = self._request("POST", "_all_docs", data=body, headers={"Content-Type": "application/json"})
        return {
            row["id"]: row["value"]["rev"]
            for row in result.get("rows", [])
            if isinstance(row.get("value"), dict) and "rev" in row["value"] and "id" in row
        }

    def all_docs(self, start_key: str, end_key: str, include_docs: bool = True) -> list[Doc]:
        params = {
            "startkey": json.dumps(start_key),
            "endkey": json.dumps(end_key),
            "include_docs": "true" if include_docs else "false",
        }
        result = self._request("GET", "_all_docs", params=params)
        return [row["doc"] if include_docs else row for row in result.get("rows", [])]

    def get_local(self, name: str) -> Doc | None:
        try:
            return self._request("GET", f"_local/{name}")
        except couch_errors.NotFound:
            return None

    def put_local(self, name: str, body: Doc) -> None:
        current = self.get_local(name)
        doc = {**body, "_id": f"_local/{name}"}
        if current and "_rev" in current:
            doc["_rev"] = current["_rev"]
        self._request("PUT", f"_local/{name}", data=json.dumps(doc), headers={"Content-Type": "application/json"})
