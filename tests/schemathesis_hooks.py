"""Schemathesis hooks for tests/test_schemathesis.py (loaded through SCHEMATHESIS_HOOKS in its subprocess).

- The two formats of the OpenAPI description that carry a check digit (``gb11643`` resident ID
  numbers, ``gb32100`` credit codes) get strategies that draw valid values, as a client would send.
- Every request signs in with a bearer token. Sign-out and password change end the caller's
  tokens, so those two operations get a fresh token of a throwaway account each time; actions on
  cases use the token of an approver (who may act on the cases the test accepted beforehand);
  everything else uses the administrator's token. Fresh tokens are opened in the node's session
  table directly (what sign-in does after the password check), so the run does not hit the sign-in
  rate limit.
"""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path
from typing import Any

import schemathesis
from hypothesis import strategies as st

from node.adapters.sessions import Lifetimes, SessionStore
from node.domain.identifiers import make_credit_code, make_id_number

CREDIT_ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
FRESH_TOKEN_PATHS = frozenset({"/api/v1/auth/logout", "/api/v1/auth/password"})

schemathesis.openapi.format(
    "gb11643",
    st.builds(
        lambda born, serial: make_id_number("430903", born, serial),
        st.dates(date(1930, 1, 1), date(2015, 12, 31)),
        st.integers(0, 999),
    ),
)
schemathesis.openapi.format(
    "gb32100",
    st.builds(
        lambda body: make_credit_code("91430903" + body),
        st.text(alphabet=CREDIT_ALPHABET, min_size=9, max_size=9),
    ),
)


@schemathesis.auth(refresh_interval=None)
class NodeToken:
    """The test's staff token; a fresh throwaway token for the operations that end tokens."""

    def get(self, case: Any, ctx: Any) -> str:
        if case.path in FRESH_TOKEN_PATHS:
            store = SessionStore(Path(os.environ["TONGBAN_ST_STATE"]))
            return store.open(os.environ["TONGBAN_ST_THROWAWAY"], "api", Lifetimes(idle_s=600, absolute_s=600))
        if case.path == "/api/v1/cases/{case_no}/actions":
            return os.environ["TONGBAN_ST_ACTOR_TOKEN"]
        return os.environ["TONGBAN_ST_TOKEN"]

    def set(self, case: Any, data: str, ctx: Any) -> None:
        case.headers = case.headers or {}
        case.headers["Authorization"] = f"Bearer {data}"
