"""``POST /api/v1/identity/verify`` on a real node (pouchdb-server, SQLite registers, dlib): the contract,
every bad input of issue 12 with its bilingual answer, and that neither the photo nor plaintext personal
data is kept at rest. Also ``tongban registers generate``.
"""

from __future__ import annotations

import io
import json
from datetime import date
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from PIL import Image

from node.adapters.demo_people import load_demo_people
from node.adapters.face_verifier import DEFAULT_THRESHOLD, MODEL
from node.bootstrap import NodeContext
from node.domain.identifiers import make_id_number
from node.entrypoints import cli
from node.service_layer.registers import ensure_demo_people
from tests.conftest import Services, client_for, make_node, token_for
from tiers.demo import ZIYANG_VILLAGE

FACES = Path(__file__).parent / "data" / "faces"


def photo(name: str) -> bytes:
    return (FACES / name).read_bytes()


@pytest.fixture(scope="module")
def ziyang(services: Services, city_ca: Path, tmp_path_factory: pytest.TempPathFactory) -> NodeContext:
    """迎风桥第1村 (资阳区) with its register filled by the CLI, as an operator would."""
    node = make_node(services, city_ca, tmp_path_factory.mktemp("ziyang"), ZIYANG_VILLAGE)
    code = cli.main(
        ["registers", "generate", "--config", str(node.config.data_dir / "node.json"), "--people-per-village", "20"]
    )
    assert code == 0
    return node


@pytest.fixture(scope="module")
def client(ziyang: NodeContext) -> FlaskClient:
    return client_for(ziyang)


def person(name: str):  # the demo resident called ``name``
    return next(p for p in load_demo_people() if p.record.name == name)


ZHOU = "周建国"  # enrolled with three Obama photos; test_obama1.jpg was kept out


def post_photo(client: FlaskClient, headers: dict[str, str], id_number: str, data: bytes, name: str = "p.jpg"):
    return client.post(
        "/api/v1/identity/verify",
        data={"id_number": id_number, "photo": (io.BytesIO(data), name)},
        headers=headers,
        content_type="multipart/form-data",
    )


def test_registers_generate_holds_the_residence_subtree_only(ziyang: NodeContext, capsys) -> None:
    assert ziyang.registers is not None
    counts = ziyang.registers.counts()
    assert counts["people"] >= 20 + 3 and counts["with_face"] == 3  # the three demo residents of this village
    held = {p.record.name for p in load_demo_people() if ziyang.registers.person(p.record.id_number)}
    assert held == {"周建国", "谭浩宇", "曾俊杰"}  # 赫山区's residents are not held at a 资阳区 village
    # Running it again changes nothing but the rows it rewrites (idempotent), and --json says what it did.
    assert cli.main(["registers", "generate", "--config", str(ziyang.config.data_dir / "node.json"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["demo_people"] == 3 and summary["materials_added"] == 0


def test_a_photo_never_enrolled_verifies_its_person(ziyang: NodeContext, client: FlaskClient) -> None:
    zhou = person(ZHOU).record
    response = post_photo(client, token_for(client, ziyang, "acceptor"), zhou.id_number, photo("test_obama1.jpg"))
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["match"] is True
    assert 0 <= body["distance"] <= DEFAULT_THRESHOLD == body["threshold"]
    assert body["model"] == MODEL
    assert body["person"]["name"] == ZHOU and body["person"]["residence_code"] == ZIYANG_VILLAGE
    assert body["verification_id"]


def test_the_wrong_person_is_refused(ziyang: NodeContext, client: FlaskClient) -> None:
    zhou = person(ZHOU).record
    response = post_photo(client, token_for(client, ziyang, "acceptor"), zhou.id_number, photo("biden_biden2.jpg"))
    assert response.status_code == 200
    body = response.get_json()
    assert body["match"] is False and body["distance"] > body["threshold"]
    assert "person" not in body  # no register data without a match


def _jpeg(size: tuple[int, int], colour: tuple[int, int, int] = (200, 180, 160)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, "JPEG", quality=70)
    return out.getvalue()


def _bad_inputs() -> list[tuple[str, object, int, str]]:
    zhou = person(ZHOU).record.id_number
    truncated = photo("obama_obama.jpg")
    stranger = make_id_number("430902", date(1990, 5, 5), 18)
    return [
        ("not an image", (zhou, b"%PDF-1.4 not a photo at all"), 422, "photo_not_image"),
        ("truncated JPEG", (zhou, truncated[: len(truncated) // 2]), 422, "photo_corrupt"),
        ("30 megapixels", (zhou, _jpeg((6000, 5000))), 422, "photo_too_large"),
        ("no face", (zhou, _jpeg((640, 480))), 422, "photo_no_face"),
        ("several faces", (zhou, photo("two_people.jpg")), 422, "photo_several_faces"),
        ("ID not in the register", (stranger, photo("obama3.jpg")), 404, "identity_no_reference"),
        ("malformed ID number", ("43090219900505001", photo("obama3.jpg")), 400, "id_number_format"),
    ]


@pytest.mark.parametrize(
    ("what", "given", "status", "code"), _bad_inputs(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_each_bad_input_gets_a_bilingual_answer(
    ziyang: NodeContext, client: FlaskClient, what: str, given: tuple[str, bytes], status: int, code: str
) -> None:
    id_number, data = given
    before = ziyang.uses.uses_of(ziyang.cases.pii.lookup_key(id_number)) if ziyang.uses else []
    response = post_photo(client, token_for(client, ziyang, "acceptor"), id_number, data)
    assert response.status_code == status, (what, response.get_json())
    body = response.get_json()
    assert body["error"] == code
    assert body["message_zh"] and body["message_en"] and body["message_zh"] != body["message_en"]
    # Nothing half-written: an undecided verification leaves no verification and no use behind.
    assert ziyang.uses is not None
    assert ziyang.uses.uses_of(ziyang.cases.pii.lookup_key(id_number)) == before


def test_missing_fields_wrong_type_and_roles(ziyang: NodeContext, client: FlaskClient) -> None:
    zhou = person(ZHOU).record.id_number
    headers = token_for(client, ziyang, "acceptor")
    response = client.post(
        "/api/v1/identity/verify", data={"id_number": zhou}, headers=headers, content_type="multipart/form-data"
    )
    assert response.status_code == 400 and response.get_json()["error"] == "missing_field"
    response = client.post("/api/v1/identity/verify", json={"id_number": zhou}, headers=headers)
    assert response.status_code == 400 and response.get_json()["error"] == "multipart_required"
    assert post_photo(client, {}, zhou, photo("obama3.jpg")).status_code == 401
    response = post_photo(client, token_for(client, ziyang, "ops"), zhou, photo("obama3.jpg"))
    assert response.status_code == 403 and response.get_json()["error"] == "role_not_allowed"


def test_a_photo_over_the_upload_limit_is_refused_with_json(ziyang: NodeContext, client: FlaskClient) -> None:
    big = b"\xff\xd8" + b"\0" * (11 * 1024 * 1024)
    response = post_photo(client, token_for(client, ziyang, "acceptor"), person(ZHOU).record.id_number, big)
    assert response.status_code in (413, 422)
    assert response.get_json()["error"] in ("body_too_large", "photo_too_large")


def test_no_photo_and_no_plaintext_personal_data_at_rest(ziyang: NodeContext, client: FlaskClient) -> None:
    zhou = person(ZHOU).record
    sent = photo("obama-480p.jpg")
    assert post_photo(client, token_for(client, ziyang, "acceptor"), zhou.id_number, sent).get_json()["match"]
    needles = [sent[1000:1064], zhou.id_number.encode(), zhou.name.encode()]
    for path in ziyang.config.data_dir.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert not any(needle in data for needle in needles), path


def test_the_demo_federation_seeds_its_residents_without_a_cli_step(
    services: Services, city_ca: Path, tmp_path: Path
) -> None:
    node = make_node(services, city_ca, tmp_path / "demo", ZIYANG_VILLAGE, demo_accounts=True)
    assert node.registers is not None and node.registers.counts()["with_face"] == 3
    assert node.library is not None
    assert ensure_demo_people(node.config.code, node.tree, node.registers, node.library, node.cases.pii) == 3
    assert node.library.count() == 9  # three documents each, not added twice


def post_pair(client: FlaskClient, headers: dict[str, str], id_number: str, frontal: bytes, turned: bytes | None):
    data = {"id_number": id_number, "channel": "kiosk", "photo": (io.BytesIO(frontal), "front.jpg")}
    if turned is not None:
        data["photo_turned"] = (io.BytesIO(turned), "turned.jpg")
    return client.post("/api/v1/identity/verify", data=data, headers=headers, content_type="multipart/form-data")


def test_a_kiosk_needs_the_head_turn_and_a_flat_repeat_fails_it(ziyang: NodeContext, client: FlaskClient) -> None:
    zhou = person(ZHOU).record.id_number
    headers = token_for(client, ziyang, "acceptor")
    missing = post_pair(client, headers, zhou, photo("obama-480p.jpg"), None)
    assert missing.status_code == 422 and missing.get_json()["error"] == "liveness_required"
    # The demo pair: obama-480p.jpg facing the camera, then test_obama1.jpg with the head turned.
    alive = post_pair(client, headers, zhou, photo("obama-480p.jpg"), photo("test_obama1.jpg"))
    assert alive.status_code == 200, alive.get_json()
    body = alive.get_json()
    assert body["match"] is True and body["liveness"]["passed"] is True and body["channel"] == "kiosk"
    # The same frontal photo twice (a print held up twice) is the person, but shows no turn: refused.
    flat = post_pair(client, headers, zhou, photo("obama-480p.jpg"), photo("obama-480p.jpg"))
    assert flat.status_code == 200
    body = flat.get_json()
    assert body["match"] is False and body["liveness"]["passed"] is False
    assert body["liveness"]["message_zh"] and body["liveness"]["message_en"]
    assert "person" not in body


def test_the_web_workers_of_a_demo_node_seed_at_the_same_time_without_failing(tmp_path: Path) -> None:
    import threading

    from node.adapters.library import MaterialsLibrary
    from node.adapters.pii import PersonalData, create_keyring
    from node.adapters.registers import RegisterStore
    from tiers import yiyang

    create_keyring(tmp_path / "keys.json", "city")
    pii, tree, failures = PersonalData.load(tmp_path / "keys.json"), yiyang(), []

    def seed() -> None:  # what each gunicorn worker does at start-up on a demo node
        try:
            registers = RegisterStore(tmp_path / "registers.sqlite3", pii)
            library = MaterialsLibrary(tmp_path / "library.sqlite3", pii)
            ensure_demo_people(ZIYANG_VILLAGE, tree, registers, library, pii)
        except Exception as exc:  # the assertion below shows it
            failures.append(repr(exc))

    workers = [threading.Thread(target=seed) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert failures == []
    assert MaterialsLibrary(tmp_path / "library.sqlite3", pii).count() == 9
    assert RegisterStore(tmp_path / "registers.sqlite3", pii).counts()["with_face"] == 3
