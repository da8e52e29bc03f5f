"""Personal data at rest (issue 11): keys, key ids and rotation, file modes, masks, and no name or ID number
in plaintext anywhere a node keeps or sends things — against real nodes, a real store and a real broker.
"""

from __future__ import annotations

import base64
import json
import stat
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
import requests
from cryptography.fernet import Fernet
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import select

from node.adapters.pii import IDENTIFIER as ID_INDEX
from node.adapters.pii import NAME as NAME_INDEX
from node.adapters.pii import MissingKey, PersonalData, create_keyring, rotate_keyring
from node.adapters.readmodel import cases
from node.bootstrap import NodeContext, bootstrap
from node.config import ConfigError
from node.domain.identifiers import make_id_number, mask_id_number
from node.entrypoints.web.commands import accept_case_from_json
from node.runtime.provisioning import DEMO_ACCOUNTS, ensure_city_authority, seed_demo_accounts
from node.runtime.services import agent_spec, free_port, gunicorn_spec
from node.runtime.supervisor import Supervisor
from node.service_layer.cases import Actor
from tests.conftest import HARNESS_MQTT_USER, TEST_PASSWORD, Services, client_for, make_node, token_for, wait_for
from tests.test_api_cases import RESIDENT, accept_body
from tiers.demo import HESHAN, HESHAN_VILLAGE

ROOT = Path(__file__).resolve().parents[1]
NAME = "欧阳秀英"  # the applicant whose traces the tests look for
ID_NUMBER = make_id_number("430903", date(1977, 3, 29), 417)


def tongban(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "node.entrypoints.cli", *args], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def raw_rows(node: NodeContext) -> list[dict[str, object]]:
    with node.readmodel.engine.connect() as conn:
        return [dict(row._mapping) for row in conn.execute(select(cases))]


def applicant_body(name: str = NAME, id_number: str = ID_NUMBER) -> dict[str, object]:
    return accept_body(applicant={"kind": "person", "id_number": id_number, "name": name})


# --- keys are made by provisioning only ------------------------------------------------------------------


def test_a_missing_key_is_an_error_never_a_new_key(services: Services, city_ca: Path, tmp_path: Path) -> None:
    with pytest.raises(MissingKey, match="provision"):
        PersonalData.load(tmp_path / "nowhere" / "local.key")
    assert not (tmp_path / "nowhere").exists()  # nothing was created on the way

    node = make_node(services, city_ca, tmp_path / "county", HESHAN)
    node.config.local_key_path.unlink()
    with pytest.raises(ConfigError, match=r"local\.key"):
        bootstrap(node.config, connect_mqtt=False)
    assert not node.config.local_key_path.exists()
    run = tongban("readmodel", "rebuild", "--config", str(node.config.config_path))
    assert run.returncode == 2 and "keyring missing" in run.stderr and "Traceback" not in run.stderr

    # Provisioning again does not replace a key that exists (the city's keyring stays byte for byte).
    before = (city_ca / "data.key").read_bytes()
    ensure_city_authority(city_ca)
    assert (city_ca / "data.key").read_bytes() == before


def test_racing_provisioners_create_one_key(tmp_path: Path) -> None:
    path = tmp_path / "identity" / "local.key"
    start = threading.Barrier(8)
    results: list[bool] = []

    def provision() -> None:
        start.wait()
        results.append(create_keyring(path, "node"))

    threads = [threading.Thread(target=provision) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [False] * 7 + [True]
    assert mode(path) == 0o600 and mode(path.parent) == 0o700
    ring = json.loads(path.read_text())
    assert ring["current"] == "n1" and list(ring["keys"]) == ["n1"]
    assert [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")] == []


def test_every_value_names_its_key_and_older_keys_still_open_what_they_made(tmp_path: Path) -> None:
    path = tmp_path / "data.key"
    assert create_keyring(path, "city")
    city = PersonalData.load(path)
    sealed, key = city.seal({"name": NAME}), city.lookup_key(ID_NUMBER)
    assert sealed.startswith("c1:") and city.key_id == "c1" and len(key) == 64
    assert rotate_keyring(path) == "c2"
    assert city.key_id == "c2" and city.seal({"name": NAME}).startswith("c2:")  # the loaded ring follows the file
    assert city.open(sealed) == {"name": NAME}
    assert city.matches(ID_NUMBER, key, "c1") and not city.matches(ID_NUMBER, key, "c2")
    assert not city.matches(ID_NUMBER[:-1] + "0", key, "c1") and not city.matches(ID_NUMBER, key, "c9")
    assert city.lookup_keys(ID_NUMBER)["c1"] == key and city.lookup_key(ID_NUMBER) != key

    # A keyring of the first format (no key ids) and what it sealed still open, as key "c0".
    legacy_keys = {"hmac": base64.b64encode(b"k" * 32).decode(), "fernet": Fernet.generate_key().decode()}
    (tmp_path / "legacy.key").write_text(json.dumps(legacy_keys))
    legacy = PersonalData.load(tmp_path / "legacy.key")
    old_token = Fernet(legacy_keys["fernet"].encode()).encrypt(json.dumps({"name": NAME}).encode()).decode()
    assert legacy.key_id == "c0" and legacy.open(old_token) == {"name": NAME}
    assert legacy.matches(ID_NUMBER, legacy.lookup_key(ID_NUMBER))
    assert legacy.open("c1:" + old_token) is None and legacy.open("garbage") is None

    # Blind indexes: normalised, separate for names and ID numbers, under every key for a search.
    node_path = tmp_path / "local.key"
    create_keyring(node_path, "node")
    node = PersonalData.load(node_path)
    assert node.index(NAME_INDEX, " 欧阳 秀英 ") == node.index(NAME_INDEX, NAME) != node.index(ID_INDEX, NAME)
    assert node.index(ID_INDEX, ID_NUMBER.lower()) == node.index(ID_INDEX, ID_NUMBER)
    assert node.index(NAME_INDEX, "阿沛•阿旺晋美") == node.index(NAME_INDEX, "阿沛·阿旺晋美")
    rotate_keyring(node_path)
    assert [i[:3] for i in node.indexes(NAME_INDEX, NAME)] == ["n1:", "n2:"]

    (tmp_path / "broken.key").write_text("{")
    with pytest.raises(MissingKey, match="unreadable"):
        PersonalData.load(tmp_path / "broken.key")


# --- files ------------------------------------------------------------------------------------------------


def test_the_nodes_files_are_its_users_alone(services: Services, city_ca: Path, tmp_path: Path) -> None:
    node = make_node(services, city_ca, tmp_path / "county", HESHAN, demo_accounts=True)
    client = client_for(node)
    # Demo passwords: sealed with the node's key in the file, opened by `tongban demo accounts`; they sign in.
    accounts = seed_demo_accounts(node.config)
    acceptor = next(a for a in accounts if a["username"] == "acceptor")
    signed_in = client.post("/api/v1/auth/token", json={"username": "acceptor", "password": acceptor["password"]})
    assert signed_in.status_code == 200, signed_in.get_json()
    headers = {"Authorization": f"Bearer {signed_in.get_json()['token']}"}
    assert client.post("/api/v1/cases", json=applicant_body(), headers=headers).status_code == 201
    data = node.config.data_dir
    assert mode(data) == 0o700 and mode(node.config.identity_dir) == 0o700
    private = [
        data / "node.json",  # holds the web's SECRET_KEY
        node.config.data_key_path,
        node.config.local_key_path,
        city_ca / "data.key",
        data / DEMO_ACCOUNTS,
        *sorted(data.glob("*.sqlite3*")),
        *sorted(data.glob("*.lock")),
    ]
    assert {p.name for p in private} >= {
        "readmodel.sqlite3",
        "readmodel.sqlite3-wal",
        "state.sqlite3",
        "state.sqlite3-wal",
        "state.lock",
    }
    assert {p.name: oct(mode(p)) for p in private} == {p.name: oct(0o600) for p in private}

    stored = (data / DEMO_ACCOUNTS).read_text(encoding="utf-8")
    assert accounts and all(a["password"] and a["password"] not in stored for a in accounts)
    assert all(a["password_sealed"].startswith("n1:") and "password" not in a for a in json.loads(stored))


# --- who sees what, masks ---------------------------------------------------------------------------------


def test_staff_see_the_name_ops_see_it_masked_and_the_read_model_holds_neither(county_node: NodeContext) -> None:
    client = client_for(county_node)
    acceptor = token_for(client, county_node, "acceptor")
    ops = token_for(client, county_node, "ops")
    case_no = client.post("/api/v1/cases", json=applicant_body(), headers=acceptor).get_json()["case_no"]
    masked = ID_NUMBER[:6] + "*" * 11 + ID_NUMBER[-1]
    assert mask_id_number(ID_NUMBER) == masked

    seen = client.get(f"/api/v1/cases/{case_no}", headers=acceptor).get_json()
    assert seen["applicant"]["name"] == NAME and seen["applicant"]["masked"] == masked
    shown_to_ops = client.get(f"/api/v1/cases/{case_no}", headers=ops).get_json()
    assert shown_to_ops["applicant"] == {"kind": "person", "name": "欧**", "masked": masked}
    assert NAME not in json.dumps(shown_to_ops, ensure_ascii=False) and ID_NUMBER[6:17] not in str(shown_to_ops)

    # Search: the exact full name (spaces and width do not matter) and the ID number, through the blind index.
    def found(query: str, headers: dict[str, str]) -> list[str]:
        answer = client.get("/api/v1/cases", query_string={"q": query}, headers=headers)
        assert answer.status_code == 200, answer.get_json()
        return [row["case_no"] for row in answer.get_json()["cases"]]

    assert found(NAME, acceptor) == [case_no] and found(" 欧阳 秀英 ", acceptor) == [case_no]
    assert found(ID_NUMBER, acceptor) == [case_no] and found(ID_NUMBER.lower(), acceptor) == [case_no]
    assert found("欧阳", acceptor) == []  # substring search on names is given up (docs/personal-data.md)
    assert found(NAME, ops) == [] and found(ID_NUMBER, ops) == []
    [row] = client.get("/api/v1/cases", query_string={"q": case_no}, headers=ops).get_json()["cases"]
    assert row["applicant_name"] == "欧**"

    # At rest: sealed with the node's key, indexed with it, each naming its key.
    [stored] = raw_rows(county_node)
    assert NAME not in json.dumps(stored, ensure_ascii=False) and ID_NUMBER not in json.dumps(stored)
    assert {k: str(stored[k])[:3] for k in ("applicant_sealed", "name_index", "applicant_key")} == {
        "applicant_sealed": "n1:",
        "name_index": "n1:",
        "applicant_key": "n1:",
    }
    # The event carries the city's key id beside its look-up key and sealed applicant, and the short mask.
    applicant = county_node.cases.load(case_no).applicant
    assert applicant["key_id"] == "c1" and applicant["sealed"].startswith("c1:") and applicant["masked"] == masked


# --- rotation ---------------------------------------------------------------------------------------------


def test_rotating_the_node_key_re_keys_the_read_model_and_old_data_still_reads(county_node: NodeContext) -> None:
    client = client_for(county_node)
    acceptor = token_for(client, county_node, "acceptor")
    before = client.post("/api/v1/cases", json=applicant_body(), headers=acceptor).get_json()["case_no"]
    config = county_node.config

    # Rotated without re-keying yet (a rotation in progress): rows under the old key are still found.
    rotate_keyring(config.local_key_path)
    assert client.get("/api/v1/cases", query_string={"q": NAME}, headers=acceptor).get_json()["cases"][0][
        "case_no"
    ] == before

    run = tongban("keys", "rotate", "--scope", "node", "--config", str(config.config_path))
    assert run.returncode == 0, run.stderr
    assert "key n3 is current" in run.stdout and "1 read-model rows re-sealed" in run.stdout
    ring = json.loads(config.local_key_path.read_text())
    assert ring["current"] == "n3" and set(ring["keys"]) == {"n1", "n2", "n3"} and mode(config.local_key_path) == 0o600
    [row] = raw_rows(county_node)
    assert {str(row[k])[:3] for k in ("applicant_sealed", "name_index", "applicant_key")} == {"n3:"}

    # The running process picked up the new key: a case written now uses it; both are found and read.
    after = client.post("/api/v1/cases", json=applicant_body(), headers=acceptor).get_json()["case_no"]
    assert {str(r["name_index"])[:3] for r in raw_rows(county_node)} == {"n3:"}
    for query in (NAME, ID_NUMBER):
        found = client.get("/api/v1/cases", query_string={"q": query}, headers=acceptor).get_json()["cases"]
        assert sorted(r["case_no"] for r in found) == sorted([before, after])
        assert {r["applicant_name"] for r in found} == {NAME}
    assert client.get(f"/api/v1/cases/{before}", headers=acceptor).get_json()["applicant"]["name"] == NAME


def copy_case(source: NodeContext, target: NodeContext, case_no: str) -> None:
    """As replication would: the case's signed documents and the writer's certificate."""
    cert = source.store.get(f"cert:{source.config.code}:{source.identity.cert_sha256}")
    docs = [*source.cases.events.case_docs(case_no), cert]
    target.store.bulk_docs([{k: v for k, v in d.items() if k != "_rev"} for d in docs])
    target.projector.catch_up()


def test_rotating_the_city_key_keeps_older_events_readable(services: Services, tmp_path: Path) -> None:
    ca_dir = tmp_path / "ca"  # its own city: the session's CA is shared with other tests
    ensure_city_authority(ca_dir)
    village = make_node(services, ca_dir, tmp_path / "village", HESHAN_VILLAGE)
    county = make_node(services, ca_dir, tmp_path / "county", HESHAN)
    acceptor = Actor("acceptor", "acceptor", None)
    old = village.bus.handle(accept_case_from_json(acceptor, accept_body())).case_no
    copy_case(village, county, old)

    run = tongban(
        "keys", "rotate", "--scope", "city", "--config", str(village.config.config_path),
        "--config", str(county.config.config_path),
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "city key c2 is current; installed at 2 nodes" in run.stdout
    for ring_path in (ca_dir / "data.key", village.config.data_key_path, county.config.data_key_path):
        ring = json.loads(ring_path.read_text())
        assert ring["current"] == "c2" and set(ring["keys"]) == {"c1", "c2"} and mode(ring_path) == 0o600

    new = village.bus.handle(accept_case_from_json(acceptor, accept_body())).case_no
    assert village.cases.load(old).applicant["key_id"] == "c1"
    applicant = village.cases.load(new).applicant
    assert applicant["key_id"] == "c2" and applicant["sealed"].startswith("c2:")
    copy_case(village, county, new)

    # The county reads both, its staff see both names, and the applicant's query matches both.
    rows = county.readmodel.inbox(HESHAN, "approver", "civil_affairs")
    assert sorted(r.case_no for r in rows) == sorted([old, new]) and {r.applicant_name for r in rows} == {"李秀英"}
    client = client_for(county)
    for case_no in (old, new):
        answer = client.post("/api/v1/public/progress", json={"case_no": case_no, "id_number": RESIDENT})
        assert answer.status_code == 200, answer.get_json()
    wrong = client.post("/api/v1/public/progress", json={"case_no": new, "id_number": ID_NUMBER})
    assert wrong.status_code == 404


# --- no personal data in logs, MQTT, files, the store or /metrics ------------------------------------------


def needles() -> dict[str, list[bytes]]:
    """Every form the name and the ID number could take in a file or a message."""
    forms: dict[str, list[bytes]] = {}
    for label, value in (("name", NAME), ("id number", ID_NUMBER), ("birth date + sequence", ID_NUMBER[6:17])):
        forms[label] = [
            value.encode(),
            json.dumps(value).strip('"').encode(),  # \u6b27\u9633… as JSON with ensure_ascii writes it
            urllib.parse.quote(value).encode(),
            urllib.parse.quote(value).lower().encode(),
            value.encode("utf-16-le"),
        ]
    return forms


def leaks(blob: bytes) -> list[str]:
    return [label for label, forms in needles().items() if any(form in blob for form in forms)]


@pytest.fixture
def running_node(services: Services, city_ca: Path, tmp_path: Path) -> Iterator[tuple[NodeContext, str, Path]]:
    node = make_node(services, city_ca, tmp_path / "county", HESHAN)
    for username in ("acceptor", "ops"):
        node.state.add_account(username, TEST_PASSWORD, username)
    port = free_port()
    logs = tmp_path / "logs"
    supervisor = Supervisor(tmp_path / "run", progress=lambda _line: None)
    try:
        supervisor.start(
            [
                gunicorn_spec("web", node.config.config_path, port, logs, workers=1),
                agent_spec("agent", node.config.config_path, node.config.data_dir, logs),
            ]
        )
        yield node, f"http://127.0.0.1:{port}", logs
    finally:
        supervisor.stop_all()


def test_an_acceptance_leaves_no_name_or_id_number_in_logs_mqtt_files_store_or_metrics(
    running_node: tuple[NodeContext, str, Path], services: Services
) -> None:
    node, base, logs = running_node
    messages: list[tuple[str, bytes]] = []
    listener = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"pii-listener-{time.time_ns()}")
    listener.on_connect = lambda client, *_: client.subscribe("#", qos=1)
    listener.on_message = lambda _client, _userdata, message: messages.append((message.topic, message.payload))
    listener.username_pw_set(HARNESS_MQTT_USER, services.mqtt_password(HARNESS_MQTT_USER))  # no anonymous clients
    listener.connect("127.0.0.1", services.mqtt_port)
    listener.loop_start()
    try:
        http = requests.Session()
        http.trust_env = False

        def token(username: str) -> dict[str, str]:
            answer = http.post(f"{base}/api/v1/auth/token", json={"username": username, "password": TEST_PASSWORD})
            assert answer.status_code == 200, answer.text
            return {"Authorization": f"Bearer {answer.json()['token']}"}

        acceptor, ops = token("acceptor"), token("ops")
        created = http.post(f"{base}/api/v1/cases", json=applicant_body(), headers=acceptor, timeout=30)
        assert created.status_code == 201, created.text
        case_no = created.json()["case_no"]
        # Everything a user would do with it: see it, find it by name and number, the applicant's query.
        assert http.get(f"{base}/api/v1/cases/{case_no}", headers=acceptor).json()["applicant"]["name"] == NAME
        assert http.get(f"{base}/api/v1/cases/{case_no}", headers=ops).json()["applicant"]["name"] == "欧**"
        for query in (NAME, ID_NUMBER):
            found = http.get(f"{base}/api/v1/cases", params={"q": query}, headers=acceptor).json()["cases"]
            assert [row["case_no"] for row in found] == [case_no]
        progress = http.post(f"{base}/api/v1/public/progress", json={"case_no": case_no, "id_number": ID_NUMBER})
        assert progress.status_code == 200, progress.text
        wrong_check = ID_NUMBER[:-1] + ("1" if ID_NUMBER[-1] != "1" else "2")
        refused = http.post(f"{base}/api/v1/cases", json=applicant_body(id_number=wrong_check), headers=acceptor)
        assert refused.status_code == 400  # a wrong check digit: the error must not echo the number either
        metrics = http.get(f"{base}/metrics", timeout=30)
        assert metrics.status_code == 200 and "tongban_" in metrics.text
        # The web's notice of the new case has gone out, and the agent has seen the case.
        assert wait_for(lambda: any(case_no.encode() in payload for _topic, payload in messages), timeout=20)
        assert wait_for(lambda: node.readmodel.checkpoint("changes") != 0, timeout=20)
    finally:
        listener.loop_stop()
        listener.disconnect()

    assert leaks(metrics.content) == [] and leaks(refused.content) == []
    assert [(topic, leaks(payload)) for topic, payload in messages if leaks(payload)] == []
    documents = [row["doc"] for row in node.store.changes(since=0, include_docs=True)["results"]]
    assert any(d.get("case_no") == case_no for d in documents)  # the case is there, sealed
    assert [d["_id"] for d in documents if leaks(json.dumps(d, ensure_ascii=False).encode())] == []
    files = [p for p in (*logs.rglob("*"), *node.config.data_dir.rglob("*")) if p.is_file()]
    assert any(p.name == "readmodel.sqlite3" for p in files) and any(p.suffix == ".log" for p in files)
    assert {str(p): leaks(p.read_bytes()) for p in files if leaks(p.read_bytes())} == {}
