"""Schemathesis over every operation of ``/api/v1/openapi.json`` on a live city node (issue 11).

All checks, positive and negative data, in every phase (examples, coverage, fuzzing, stateful),
against gunicorn serving a city node (the ops routes are served there), signed in as an
administrator. It holds the description and the server to each other: a request the description
calls valid is never refused as malformed, one it calls invalid is refused, nothing answers 5xx,
every answer matches its declared status, content type and schema. Afterwards, nothing was written
halfway: every case in the store folds from a complete chain and the read model shows all of it.

Bounded: ``MAX_EXAMPLES`` per operation and a fixed seed (``TONGBAN_SCHEMATHESIS_SEED`` picks
another) keep the run to a couple of minutes. Settings: ``tests/schemathesis.toml``; formats and
tokens: ``tests/schemathesis_hooks.py``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from node.adapters.readmodel import READMODEL_DB
from node.bootstrap import NodeContext
from tests.conftest import TEST_PASSWORD, Services
from tests.test_api_cases import RESIDENT
from tests.test_idempotency import LiveNode, start_live_node
from tiers.demo import CITY

MAX_EXAMPLES = 15
SEED = int(os.environ.get("TONGBAN_SCHEMATHESIS_SEED", "20261201"))
TIMEOUT_S = 600
HERE = Path(__file__).resolve().parent
THROWAWAY = "st-throwaway"
APPROVER = "approver.human_resources"
# 就业失业登记 (human resources): handled at the city itself, so its approver acts on these cases there.
CITY_MATTER = {
    "matter_code": "430900-GG-0005",
    "applicant": {"kind": "person", "id_number": RESIDENT, "name": "李秀英"},
    "materials": ["M001", "M003"],
}


@pytest.fixture
def city(services: Services, city_ca: Path, tmp_path: Path) -> Iterator[LiveNode]:
    live = start_live_node(services, city_ca, tmp_path, CITY)
    live.node.state.add_account(THROWAWAY, TEST_PASSWORD, "acceptor")
    try:
        yield live
    finally:
        live.stop()


def store_cases(node: NodeContext) -> dict[str, set[str]]:
    """Case number → its event document ids, as the store holds them."""
    cases: dict[str, set[str]] = {}
    for row in node.store.changes(since=0)["results"]:
        if row["id"].startswith("event:"):
            cases.setdefault(row["id"].split(":")[1], set()).add(row["id"])
    return cases


ANY_CONVERTER = re.compile(r"<any\(([^)]*)\):[a-z_]+>")
CONVERTER = re.compile(r"<(?:[a-z]+(?:\([^)]*\))?:)?([a-z_]+)>")


def api_routes(node: NodeContext) -> set[tuple[str, str]]:
    """(OpenAPI path, method) of every route of the node's Flask app under /api/v1."""
    from node.entrypoints.web import create_app

    routes = set()
    for rule in create_app(node).url_map.iter_rules():
        if not rule.rule.startswith("/api/v1/"):
            continue
        choice = ANY_CONVERTER.search(rule.rule)
        paths = [ANY_CONVERTER.sub(c.strip(), rule.rule) for c in choice.group(1).split(",")] if choice else [rule.rule]
        for path in paths:
            openapi_path = CONVERTER.sub(lambda m: "{" + m.group(1) + "}", path)
            routes |= {(openapi_path, method) for method in rule.methods or () if method not in ("HEAD", "OPTIONS")}
    return routes


@pytest.mark.slow
def test_every_operation_holds_to_the_description(city: LiveNode, tmp_path: Path) -> None:
    spec = requests.get(f"{city.base}/api/v1/openapi.json", timeout=30).json()
    # Every route the node serves under /api/v1 is described (so schemathesis reaches all of them).
    described = {(path, method.upper()) for path, item in spec["paths"].items() for method in item}
    assert api_routes(city.node) <= described, api_routes(city.node) - described
    assert ("/api/v1/ops/alerts/{alert_id}/ack", "POST") in described

    city.node.state.add_account(APPROVER, TEST_PASSWORD, "approver", "human_resources")
    # Cases to act on: schemathesis draws case numbers from these half of the time (and links new ones).
    cases = [city.post("/api/v1/cases", "acceptor", CITY_MATTER).json()["case_no"] for _ in range(3)]
    config = tmp_path / "schemathesis.toml"
    config.write_text(
        (HERE / "schemathesis.toml").read_text()
        + "\n[dictionaries.cases]\nvalues = ["
        + ", ".join(f'"{case_no}"' for case_no in cases)
        + ']\n\n[parameters]\n"path.case_no" = { dictionary = "cases", probability = 0.5 }\n'
    )
    token = city.headers("admin")["Authorization"].removeprefix("Bearer ")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")]),
        "SCHEMATHESIS_HOOKS": "tests.schemathesis_hooks",
        "TONGBAN_ST_TOKEN": token,
        "TONGBAN_ST_ACTOR_TOKEN": city.headers(APPROVER)["Authorization"].removeprefix("Bearer "),
        "TONGBAN_ST_STATE": str(city.node.config.data_dir / "state.sqlite3"),
        "TONGBAN_ST_THROWAWAY": THROWAWAY,
    }
    command = [
        str(Path(sys.executable).with_name("schemathesis")),
        "--config-file",
        str(config),
        "run",
        f"{city.base}/api/v1/openapi.json",
        "--checks",
        "all",
        "--mode",
        "all",
        "--phases",
        "examples,coverage,fuzzing,stateful",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--seed",
        str(SEED),
        # One worker: with two threads, hypothesis' lambda descriptions (ast.parse) sometimes trip
        # CPython 3.11's "AST constructor recursion depth mismatch" inside schemathesis' coverage phase.
        "--workers",
        "1",
        "--request-timeout",
        "30",
        "--report-dir",
        str(tmp_path / "report"),
        "--output-truncate",
        "false",
    ]
    run = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=TIMEOUT_S, check=False
    )
    report = run.stdout[-20000:] + run.stderr[-3000:]
    (tmp_path / "schemathesis.out").write_text(run.stdout + run.stderr)
    assert run.returncode == 0, report
    assert " passed" in report and "Tested: " in report, report

    # Nothing written halfway: each case folds from its chain, and the read model shows every event.
    node = city.node
    written = store_cases(node)
    shown = node.readmodel.known_event_ids(list(written))
    for case_no, ids in written.items():
        assert node.cases.load(case_no).case_no == case_no
        assert not node.cases.verifier.verified_case(case_no).quarantined, case_no
        assert ids <= shown.get(case_no, set()), f"{case_no}: store and read model differ"
    assert (node.config.data_dir / READMODEL_DB).exists()
