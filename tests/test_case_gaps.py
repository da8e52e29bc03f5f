"""A withheld step of a case's history is visible everywhere, then re-requested from the parent and closed.

Real nodes over HTTP (the fixture of tests/test_hostile_child.py): the county decides a case in two
steps; on its way down one step is withheld from the village (a pull source that drops it: what a
compromised or broken hop does). The village's read model, case page, inbox, API answer, /metrics and
its ops report at the city all show the case as incomplete; the city's alert opens if it lasts. Then
the village's link asks its township for the missing step by its hash through the signed sync API,
writes it through the same guard as a pull, and the case is complete everywhere.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from node.adapters.mqtt import ops_topic
from node.bootstrap import NodeContext
from node.config import Thresholds
from node.domain.events import Event
from node.entrypoints.agent import node_report
from node.entrypoints.ops_reports import parse_ops
from node.entrypoints.web.commands import accept_case_from_json, act_on_case_from_json
from node.service_layer.alerts import evaluate_alerts
from node.service_layer.ops import node_health
from sync.auth import sign_request
from sync.link import CheckpointCache, Link
from sync.node_peer import PREFIX, NodeApiPeer
from tests.conftest import client_for, token_for
from tests.test_api_cases import accept_body
from tests.test_hostile_child import nodes  # noqa: F401  (the fixture)
from tests.test_pages import sign_in
from tests.test_sync_link import ACCEPTOR, APPROVER, CITY, COUNTY_B, TOWN_B, VILLAGE_B1, sync_all

Doc = dict[str, Any]


class Withholding:
    """A parent as the village sees it, minus the documents it withholds (changes feed and fetches alike)."""

    def __init__(self, inner: Any, withheld: set[str]) -> None:
        self.inner = inner
        self.withheld = withheld
        self.id = inner.id

    def changes(self, since: Any, limit: int) -> tuple[list[Doc], Any]:
        rows, last_seq = self.inner.changes(since, limit)
        return [row for row in rows if row["id"] not in self.withheld], last_seq

    def bulk_get(self, wanted: list[Doc]) -> list[Doc]:
        return self.inner.bulk_get([w for w in wanted if w.get("id") not in self.withheld])

    def missing_events(self, wanted: dict[str, list[str]]) -> list[Doc]:
        return [doc for doc in self.inner.missing_events(wanted) if doc["_id"] not in self.withheld]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


_hashes = st.lists(st.one_of(st.text(max_size=70), st.text(alphabet="0123456789abcdef", min_size=64, max_size=64)))
_bodies = st.one_of(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=20), lambda inner: st.lists(inner, max_size=3)
    ),
    st.builds(lambda cases: {"cases": cases}, st.dictionaries(st.text(max_size=90), _hashes, max_size=5)),
    st.builds(
        lambda serials, hashes: {"cases": {f"{VILLAGE_B1}-20261201-{n}": hashes for n in serials}},
        st.lists(st.integers(0, 10**6), max_size=120),
        _hashes,
    ),
)


def report_at_city(federation: dict[str, NodeContext], link: Link, at: float) -> None:
    """The village's ops report as its agent publishes it, taken in by the city's collector."""
    payload = json.loads(json.dumps({"kind": "link", "node": VILLAGE_B1, **node_report(federation[VILLAGE_B1], link)}))
    report = parse_ops(ops_topic(VILLAGE_B1), payload, at)
    assert report is not None
    ops = federation[CITY].ops
    assert ops is not None
    ops.record(links=[report])


def village_health(federation: dict[str, NodeContext], now: float) -> Any:
    city = federation[CITY]
    assert city.ops is not None
    health = node_health(city.ops.snapshot(), city.tree, now, Thresholds())
    return next(node for node in health if node.code == VILLAGE_B1)


def test_a_withheld_step_is_shown_counted_and_re_requested_until_the_case_is_complete(
    nodes: dict[str, NodeContext],  # noqa: F811
) -> None:
    village, town, county, city = nodes[VILLAGE_B1], nodes[TOWN_B], nodes[COUNTY_B], nodes[CITY]
    case_no = village.bus.handle(accept_case_from_json(ACCEPTOR, accept_body(residence_code=VILLAGE_B1))).case_no
    assert case_no
    sync_all(nodes)
    county.bus.handle(act_on_case_from_json(APPROVER, case_no, {"action": "request_supplement", "reason": "缺户口簿"}))
    county.bus.handle(act_on_case_from_json(APPROVER, case_no, {"action": "reject", "reason": "逾期未补正"}))
    withheld = next(d for d in county.cases.events.case_docs(case_no) if d["type"] == "supplement_requested")
    withheld_hash = Event.from_doc(withheld).hash
    Link(county).sync()
    Link(town).sync()
    town.projector.catch_up()
    assert town.store.get(withheld["_id"]) is not None

    # The village's pull passes the rejection but not the supplement request before it.
    link = Link(village)
    link.pull_source = CheckpointCache(Withholding(link.pull_source.inner, {withheld["_id"]}))
    link.gaps.parent = Withholding(link.gaps.parent, {withheld["_id"]})  # the same hop answers re-requests
    link.sync()
    village.projector.catch_up()
    assert village.store.get(withheld["_id"]) is None
    assert village.cases.load(case_no).state.value == "rejected"

    # The read model marks it, with the hash of the missing step (no personal data).
    assert village.readmodel.incomplete_cases() == {case_no: [withheld_hash]}
    assert village.readmodel.held_counts().incomplete == 1

    # The case page shows the bilingual banner; the inbox marks the case.
    client = client_for(village)
    sign_in(client, village, "acceptor")
    page = client.get(f"/cases/{case_no}").get_data(as_text=True)
    assert "案卷不完整" in page and "Incomplete case history" in page and 'id="case-incomplete"' in page
    inbox = client.get("/inbox").get_data(as_text=True)
    assert case_no in inbox and "badge-incomplete" in inbox
    rows = client.get("/inbox.json").get_json()["cases"]
    assert [row["incomplete"] for row in rows if row["case_no"] == case_no] == [True]

    # The API answer says so and names the missing hash.
    api = client_for(village)
    answer = api.get(f"/api/v1/cases/{case_no}", headers=token_for(api, village, "acceptor")).get_json()
    assert answer["incomplete"] is True and answer["missing_predecessors"] == [withheld_hash]

    # /metrics counts it.
    assert "tongban_cases_incomplete 1" in client.get("/metrics").get_data(as_text=True)

    # City operations: the village's report is counted per node, on the dashboard and at /metrics,
    # and an alert opens once the gap has lasted past the threshold.
    t0 = time.time()
    report_at_city(nodes, link, t0)
    assert village_health(nodes, t0).incomplete == 1
    limit = Thresholds().incomplete_alert_s
    report_at_city(nodes, link, t0 + limit + 1)
    assert city.ops is not None
    evaluate_alerts(city.ops, city.tree, t0 + limit + 1, Thresholds(), CITY, True)
    assert [a["node"] for a in city.ops.alerts("open") if a["kind"] == "incomplete_cases"] == [VILLAGE_B1]
    ops_client = client_for(city)
    sign_in(ops_client, city, "ops")
    dashboard = ops_client.get("/ops").get_data(as_text=True)
    figure = re.search(r'<dd id="incomplete-cases"[^>]*>(\d+)</dd>', dashboard)
    assert figure and figure.group(1) == "1"
    assert "tongban_ops_incomplete_cases 1" in ops_client.get("/metrics").get_data(as_text=True)

    # A hop that keeps withholding: the re-request brings nothing, and the case is not asked again at once.
    assert link.fill_gaps() == 0
    assert link.gaps.stats.requested == 1
    assert link.fill_gaps() == 0
    assert link.gaps.stats.requested == 1, "asked again without a pause"

    # Through the honest township the signed re-request fetches the missing step and closes the gap.
    link = Link(village)
    assert link.fill_gaps() == 1
    village.projector.catch_up()
    assert village.store.get(withheld["_id"])["_rev"] == withheld["_rev"]
    assert village.readmodel.incomplete_cases() == {}
    case = village.cases.load(case_no)
    assert not case.incomplete and case.state.value == "rejected"
    assert "supplement_requested" in [entry["type"] for entry in case.timeline]
    page = client.get(f"/cases/{case_no}").get_data(as_text=True)
    assert "案卷不完整" not in page
    assert (
        api.get(f"/api/v1/cases/{case_no}", headers=token_for(api, village, "acceptor")).get_json()["incomplete"]
        is False
    )
    assert "tongban_cases_incomplete 0" in client.get("/metrics").get_data(as_text=True)
    # The next report clears the count at the city and the alert closes.
    report_at_city(nodes, link, t0 + limit + 20)
    evaluate_alerts(city.ops, city.tree, t0 + limit + 20, Thresholds(), CITY, True)
    assert village_health(nodes, t0 + limit + 20).incomplete == 0
    assert not [a for a in city.ops.alerts("open") if a["kind"] == "incomplete_cases"]
    # Nothing was refused on the way, and the federation converges.
    assert not [row for row in village.readmodel.quarantined() if row["doc_id"].startswith("refused:")]
    sync_all(nodes)


def test_the_re_request_route_is_signed_bounded_and_serves_only_the_childs_cases(
    nodes: dict[str, NodeContext],  # noqa: F811
) -> None:
    village, town = nodes[VILLAGE_B1], nodes[TOWN_B]
    url = village.config.parent_url
    assert url
    target = f"{PREFIX}/missing_events"

    def ask(body: Any, signed: bool = True) -> requests.Response:
        data = json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        if signed:
            headers.update(sign_request(village.identity, "POST", target, data, TOWN_B))
        return requests.post(url + target, data=data, headers=headers, timeout=30)

    hash_ = "a" * 64
    assert ask({"cases": {f"{VILLAGE_B1}-20261201-1": [hash_]}}, signed=False).status_code == 401
    for bad in (
        {"cases": [1, 2]},
        {"cases": {f"{VILLAGE_B1}-20261201-1": ["not-a-hash"]}},
        {"cases": {"../_design/x": [hash_]}},
        {"cases": {f"{VILLAGE_B1}-20261201-{i}": [hash_] for i in range(101)}},
        {"cases": {f"{VILLAGE_B1}-20261201-{i}": [hash_] * 10 for i in range(60)}},
        [1],
    ):
        answer = ask(bad)
        assert answer.status_code == 400, (bad if not isinstance(bad, dict) else list(bad)[:1], answer.text[:200])
    # A case of the township's own, outside the village's subtree: nothing of it is served.
    own = town.bus.handle(accept_case_from_json(ACCEPTOR, accept_body(residence_code=TOWN_B))).case_no
    assert own
    docs = town.cases.events.case_docs(own)
    assert docs
    hashes = [Event.from_doc(doc).hash for doc in docs]
    answer = ask({"cases": {own: hashes}})
    assert answer.status_code == 200 and answer.json() == {"docs": []}
    # The same request through the peer: the answer is signed by the township and empty.
    assert NodeApiPeer(url, village.identity).missing_events({own: hashes}) == []

    # Random bodies: never a 5xx, never a document outside the village's cases.
    before = {row["id"]: row["value"]["rev"] for row in town.store.all_docs("", "\ufff0", include_docs=False)}

    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(_bodies)
    def one(body: Any) -> None:
        answer = ask(body)
        assert answer.status_code < 500, answer.text[:300]
        if answer.status_code == 200:
            assert all(doc["case_no"] != own for doc in answer.json()["docs"])

    one()
    after = {row["id"]: row["value"]["rev"] for row in town.store.all_docs("", "\ufff0", include_docs=False)}
    assert after == before
