"""Property/fuzz tests on API inputs: any body gets a 2xx or a bilingual 4xx, never a 5xx or a partial write."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from node.bootstrap import NodeContext
from tests.conftest import client_for, token_for
from tests.test_api_cases import accept_body

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
# Mutations of a valid body: each field replaced by junk or dropped.
fields = ["matter_code", "applicant", "materials", "residence_code", "settle_on_spot", "refuse_reason"]


def event_ids(node: NodeContext) -> set[str]:
    return {r["id"] for r in node.store.changes(since=0)["results"] if r["id"].startswith("event:")}


def check_error_shape(response: Any) -> None:
    assert response.status_code < 500, response.get_data(as_text=True)
    if response.status_code >= 400:
        body = response.get_json()
        assert set(body) == {"error", "message_zh", "message_en"}
        assert body["message_zh"] and body["message_en"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.sampled_from(fields),
    json_values,
    st.booleans(),
)
def test_accept_never_fails_badly(county_node: NodeContext, field: str, junk: Any, drop: bool) -> None:
    client = client_for(county_node)
    headers = token_for(client, county_node, "acceptor")
    body = accept_body()
    if drop:
        body.pop(field, None)
    else:
        body[field] = junk
    before = event_ids(county_node)
    response = client.post("/api/v1/cases", json=body, headers=headers)
    check_error_shape(response)
    written = event_ids(county_node) - before
    if response.status_code == 201:
        assert written and all(response.get_json()["case_no"] in doc_id for doc_id in written)
    else:
        assert written == set()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.dictionaries(
        st.sampled_from(["action", "reason", "method", "level", "new_handling_node", "summary"]), json_values
    )
)
def test_actions_never_fail_badly(county_node: NodeContext, body: dict[str, Any]) -> None:
    client = client_for(county_node)
    acceptor = token_for(client, county_node, "acceptor")
    approver = token_for(client, county_node, "approver.civil_affairs")
    if not hasattr(county_node, "_fuzz_case"):
        county_node._fuzz_case = client.post("/api/v1/cases", json=accept_body(), headers=acceptor).get_json()[
            "case_no"
        ]  # type: ignore[attr-defined]
    case_no = county_node._fuzz_case  # type: ignore[attr-defined]
    before = event_ids(county_node)
    response = client.post(f"/api/v1/cases/{case_no}/actions", json=body, headers=approver)
    check_error_shape(response)
    if response.status_code >= 400:
        assert event_ids(county_node) == before


def test_random_case_numbers_and_tokens_are_refused_cleanly(county_node: NodeContext) -> None:
    client = client_for(county_node)
    headers = token_for(client, county_node, "acceptor")
    for case_no in ["x", "430903000000-20240101-999", "a" * 200, "../../_all_docs", "%00"]:
        check_error_shape(client.get(f"/api/v1/cases/{case_no}", headers=headers))
    for token in ["", "Bearer", "Bearer x.y.z", "Basic abc"]:
        response = client.get("/api/v1/inbox", headers={"Authorization": token})
        assert response.status_code == 401
        check_error_shape(response)
