"""Face verification against the 20 photos of tests/data/faces: matching, refusals, liveness, demo data.

Each photo is read (decoded, downscaled, detected, encoded) at most once per session where a test only
needs its encoding; the tests that exercise ``verify`` itself go through the whole path on the bytes.
"""

from __future__ import annotations

import io
import itertools
import json
import math
import struct
import zlib
from collections import Counter
from datetime import date
from functools import cache
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from node.adapters.demo_people import (
    DEMO_ENROLMENT,
    build_demo_people,
    demo_people_listing,
    demo_references,
    load_demo_people,
)
from node.adapters.face_verifier import DEFAULT_THRESHOLD, MODEL, FaceSample, FaceVerifier, read_face
from node.domain.errors import DomainError, ErrorKind
from node.domain.identifiers import make_id_number, validate_id_number
from node.domain.identity import MAX_PHOTO_BYTES, MappingReferences, face_encoding
from tiers import Tier, yiyang

FACES = Path(__file__).parent / "data" / "faces"
PERSON_OF = {
    "obama_obama.jpg": "obama",
    "obama_obama2.jpg": "obama",
    "obama3.jpg": "obama",
    "obama-480p.jpg": "obama",
    "test_obama1.jpg": "obama",
    "obama_partial_face.jpg": "obama",
    "biden_biden.jpg": "biden",
    "biden_biden2.jpg": "biden",
    "kit_harington_john1.jpeg": "kit",
    "kit_harington_john2.jpeg": "kit",
    "test_johnsnow_test1.jpg": "kit",
    "rose_leslie_img1.jpg": "rose",
    "rose_leslie_img2.jpg": "rose",
    "alex_lacamoire_img1.jpg": "alex",
    "alex-lacamoire.png": "alex",
    "test_alex_lacamoire1.jpg": "alex",
    "lin-manuel-miranda.png": "lin",
}
SEVERAL = {"two_people.jpg": 2, "test_kit_with_rose.jpg": 2, "test_obama_and_biden.jpg": 2}


def photo(name: str) -> bytes:
    return (FACES / name).read_bytes()


@cache
def sample(name: str) -> FaceSample:
    return read_face(photo(name), with_yaw=True)


@cache
def demo() -> dict[str, str]:
    """Demo person key (obama, biden, ...) → ID number, through the photos they were enrolled with."""
    return {PERSON_OF[p.enrolled[0]]: p.record.id_number for p in load_demo_people()}


@pytest.fixture(scope="module")
def verifier() -> FaceVerifier:
    return FaceVerifier(demo_references())


def jpeg(image: Image.Image, **kwargs: object) -> bytes:
    out = io.BytesIO()
    image.save(out, "JPEG", **kwargs)
    return out.getvalue()


# --- The test photos and the threshold ------------------------------------------------------------------


def test_the_licence_of_the_photos_travels_with_them() -> None:
    licence = (FACES / "LICENSE").read_text(encoding="utf-8")
    assert "MIT License" in licence and "Adam Geitgey" in licence
    assert "Adam Geitgey" in (FACES / "README.md").read_text(encoding="utf-8")


def test_the_threshold_separates_every_pair_of_single_face_photos() -> None:
    genuine, impostor = [], []
    for a, b in itertools.combinations(sorted(PERSON_OF), 2):
        distance = float(np.linalg.norm(sample(a).encoding - sample(b).encoding))
        (genuine if PERSON_OF[a] == PERSON_OF[b] else impostor).append(distance)
    assert len(genuine) == 23 and len(impostor) == 113
    assert max(genuine) <= DEFAULT_THRESHOLD < min(impostor)


def test_faces_are_read_upright_and_measured_in_the_photos_own_pixels() -> None:
    # obama3.jpg (1434 × 2333) is downscaled to 800 px for detection; the face size is reported at full scale.
    assert sample("obama3.jpg").face_side_px > 120
    assert all(sample(name).encoding.shape == (128,) for name in ("obama3.jpg", "alex-lacamoire.png"))


# --- Verification ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["test_obama1.jpg", "biden_biden2.jpg", "kit_harington_john2.jpeg", "rose_leslie_img2.jpg"]
)
def test_a_photo_never_seen_at_enrolment_verifies_its_person(verifier: FaceVerifier, name: str) -> None:
    enrolled = {file for p in load_demo_people() for file in p.enrolled}
    assert name not in enrolled
    result = verifier.verify(photo(name), demo()[PERSON_OF[name]])
    assert result.match is True
    assert result.distance <= result.threshold == DEFAULT_THRESHOLD
    assert result.to_dict() == {
        "match": True,
        "distance": round(result.distance, 4),
        "threshold": DEFAULT_THRESHOLD,
        "model": MODEL,
    }


def test_the_wrong_persons_photo_is_refused(verifier: FaceVerifier) -> None:
    result = verifier.verify(photo("biden_biden2.jpg"), demo()["obama"])
    assert result.match is False
    assert result.distance > DEFAULT_THRESHOLD


def test_no_held_out_photo_matches_anyone_else() -> None:
    references = {p.record.id_number: np.asarray(p.record.face_encodings) for p in load_demo_people()}
    owner = {id_number: key for key, id_number in demo().items()}
    enrolled = {file for p in load_demo_people() for file in p.enrolled}
    for name in sorted(set(PERSON_OF) - enrolled):
        for id_number, encodings in references.items():
            distance = float(np.min(np.linalg.norm(encodings - sample(name).encoding, axis=1)))
            assert (distance <= DEFAULT_THRESHOLD) == (owner[id_number] == PERSON_OF[name]), (name, owner[id_number])


def test_an_exif_rotated_photo_is_turned_upright_before_detection(verifier: FaceVerifier) -> None:
    upright = Image.open(FACES / "rose_leslie_img2.jpg")
    # Stored sideways with orientation 6 ("rotate 90° clockwise to display"), as phone cameras do.
    sideways = upright.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    result = verifier.verify(jpeg(sideways, exif=exif.tobytes(), quality=92), demo()["rose"])
    assert result.match is True


def test_a_lowercase_x_check_digit_finds_the_same_reference() -> None:
    encoding = [0.01] * 128
    candidates = (make_id_number("430902", date(1990, 1, 1), sequence) for sequence in range(1000))
    id_number = next(number for number in candidates if number.endswith("X"))
    references = MappingReferences([(id_number, [encoding])])
    assert references.reference_encodings(id_number.lower()) == (tuple(encoding),)


# --- Reasons it cannot decide ---------------------------------------------------------------------------


def refusal(verifier: FaceVerifier, data: bytes, id_number: str | None = None) -> DomainError:
    with pytest.raises(DomainError) as caught:
        verifier.verify(data, id_number or demo()["obama"])
    error = caught.value
    body = error.to_dict()
    assert body["message_zh"] and body["message_en"] and body["error"] == error.code
    assert demo()["obama"] not in json.dumps(body, ensure_ascii=False)
    return error


def test_not_an_image(verifier: FaceVerifier) -> None:
    assert refusal(verifier, b"%PDF-1.7\n1 0 obj << >> endobj\n").code == "photo_not_image"
    assert refusal(verifier, b"").code == "photo_not_image"
    gif = io.BytesIO()
    Image.new("RGB", (200, 200)).save(gif, "GIF")
    assert refusal(verifier, gif.getvalue()).code == "photo_not_image"  # only JPEG and PNG are decoded


def test_a_truncated_jpeg(verifier: FaceVerifier) -> None:
    data = photo("obama-480p.jpg")
    assert refusal(verifier, data[: len(data) // 2]).code == "photo_corrupt"


def test_a_30_megapixel_photo_is_refused_before_decoding(verifier: FaceVerifier) -> None:
    big = jpeg(Image.new("RGB", (6000, 5000), (180, 150, 130)), quality=20)
    assert len(big) < MAX_PHOTO_BYTES
    assert refusal(verifier, big).code == "photo_too_large"


def test_a_decompression_bomb_png_is_refused(verifier: FaceVerifier) -> None:
    # A tiny PNG whose header claims 60,000 × 60,000 pixels (3.6 gigapixels): refused from the header alone.
    small = io.BytesIO()
    Image.new("RGB", (8, 8)).save(small, "PNG")
    data = bytearray(small.getvalue())
    ihdr = data.index(b"IHDR")
    data[ihdr + 4 : ihdr + 12] = struct.pack(">II", 60_000, 60_000)
    data[ihdr + 17 : ihdr + 21] = struct.pack(">I", zlib.crc32(bytes(data[ihdr : ihdr + 17])))
    assert refusal(verifier, bytes(data)).code == "photo_too_large"


def test_more_than_10_mb_is_refused(verifier: FaceVerifier) -> None:
    assert refusal(verifier, b"\xff\xd8\xff" + bytes(MAX_PHOTO_BYTES)).code == "photo_too_large"


def test_a_photo_without_a_face(verifier: FaceVerifier) -> None:
    noise = Image.fromarray(np.random.default_rng(7).integers(0, 255, (300, 400, 3), dtype=np.uint8))
    assert refusal(verifier, jpeg(noise)).code == "photo_no_face"


def test_a_photo_with_several_faces(verifier: FaceVerifier) -> None:
    error = refusal(verifier, photo("two_people.jpg"))
    assert error.code == "photo_several_faces"
    assert "2" in error.message_zh and "2 faces" in error.message_en


def test_a_face_too_small(verifier: FaceVerifier) -> None:
    image = Image.open(FACES / "obama-480p.jpg")
    small = image.resize((image.width * 11 // 20, image.height * 11 // 20))  # the face is about 60 px
    assert refusal(verifier, jpeg(small, quality=95)).code == "photo_face_too_small"


def test_an_id_number_without_a_reference(verifier: FaceVerifier) -> None:
    stranger = make_id_number("430902", date(1990, 5, 5), 11)
    error = refusal(verifier, photo("test_obama1.jpg"), stranger)
    assert error.code == "identity_no_reference" and error.kind == ErrorKind.NOT_FOUND
    assert stranger not in error.message_en


@pytest.mark.parametrize(
    "bad",
    [[0.0] * 127, [0.0] * 127 + [math.nan], [0.0] * 127 + [math.inf], [True] * 128, "0" * 128, [0.0] * 129],
)
def test_malformed_reference_encodings_are_refused(bad: object) -> None:
    with pytest.raises(DomainError) as caught:
        face_encoding(bad)
    assert caught.value.code == "invalid_face_encoding"


# --- Liveness -------------------------------------------------------------------------------------------


def test_a_frontal_and_a_turned_photo_of_the_person_pass(verifier: FaceVerifier) -> None:
    result = verifier.verify_with_liveness(
        photo("obama-480p.jpg"), photo("test_obama1.jpg"), demo()["obama"], direction="left"
    )
    assert result.match is True and result.liveness is not None and result.liveness.passed
    assert abs(result.liveness.frontal_yaw) < 12 <= 18 <= abs(result.liveness.turned_yaw)
    assert result.to_dict()["liveness"]["passed"] is True


def test_the_head_turned_the_other_way_than_asked_fails(verifier: FaceVerifier) -> None:
    result = verifier.verify_with_liveness(
        photo("obama-480p.jpg"), photo("test_obama1.jpg"), demo()["obama"], direction="right"
    )
    assert result.match is False and result.liveness is not None and not result.liveness.passed
    assert "other way" in (result.liveness.message_en or "")


def test_two_frontal_photos_fail(verifier: FaceVerifier) -> None:
    result = verifier.verify_with_liveness(photo("obama-480p.jpg"), photo("obama_obama.jpg"), demo()["obama"])
    assert result.match is False and result.liveness is not None and not result.liveness.passed
    assert result.distance <= DEFAULT_THRESHOLD  # the faces match; only the turn is missing


def test_a_flat_picture_turned_in_front_of_the_camera_shows_no_head_turn(verifier: FaceVerifier) -> None:
    # A print turned ~45° about the vertical axis is, to first order, squeezed horizontally.
    image = Image.open(FACES / "obama-480p.jpg")
    squeezed = jpeg(image.resize((round(image.width * 0.7), image.height)), quality=95)
    result = verifier.verify_with_liveness(photo("obama-480p.jpg"), squeezed, demo()["obama"])
    assert result.liveness is not None and not result.liveness.passed and result.match is False


def test_a_turned_photo_of_someone_else_fails(verifier: FaceVerifier) -> None:
    result = verifier.verify_with_liveness(photo("obama-480p.jpg"), photo("kit_harington_john2.jpeg"), demo()["obama"])
    assert result.match is False and result.distance > DEFAULT_THRESHOLD


def test_a_turned_first_photo_fails(verifier: FaceVerifier) -> None:
    result = verifier.verify_with_liveness(photo("test_obama1.jpg"), photo("obama_obama2.jpg"), demo()["obama"])
    assert result.match is False and result.liveness is not None
    assert result.liveness.message_en == "Liveness check failed: the first photo must face the camera"


# --- The shipped demo people ----------------------------------------------------------------------------


def test_demo_people_listing_follows_the_contract() -> None:
    listing = demo_people_listing()
    tree = yiyang()
    assert len(listing) == len(DEMO_ENROLMENT) == 6
    counties = set()
    for person in listing:
        assert set(person) == {"id_number", "name", "residence_code", "enrolled"}
        assert validate_id_number(person["id_number"]) == person["id_number"]
        assert tree.tier(person["residence_code"]) == Tier.VILLAGE
        county = person["residence_code"][:6]
        assert person["id_number"][:6] == county
        counties.add(county)
        own_photos = {name for name, who in PERSON_OF.items() if who == PERSON_OF[person["enrolled"][0]]}
        assert set(person["enrolled"]) <= own_photos
        if len(own_photos) >= 2:
            assert own_photos - set(person["enrolled"]), person["enrolled"]
    assert counties == {"430902", "430903"}  # 资阳区 and 赫山区
    assert json.loads(json.dumps(listing, ensure_ascii=False)) == listing


def test_the_shipped_encodings_are_those_of_the_enrolled_photos() -> None:
    # build_demo_people is what regenerates node/data/demo_people.json; here it is checked against the
    # cached encodings instead of being rerun (each photo is encoded once per session).
    shipped = load_demo_people()
    for person in shipped:
        assert len(person.record.face_encodings) == len(person.enrolled)
        for name, encoding in zip(person.enrolled, person.record.face_encodings, strict=True):
            assert float(np.linalg.norm(np.asarray(encoding) - sample(name).encoding)) < 1e-3, name
    assert "photo" not in json.dumps([p.record.to_dict() for p in shipped])


def test_build_demo_people_encodes_the_plan_from_a_folder(tmp_path: Path) -> None:
    (tmp_path / "rose_leslie_img1.jpg").write_bytes(photo("rose_leslie_img1.jpg"))
    plan = [p for p in DEMO_ENROLMENT if p.enrolled == ("rose_leslie_img1.jpg",)]
    [built] = build_demo_people(tmp_path, plan)
    assert built["enrolled"] == ["rose_leslie_img1.jpg"] and built["id_number"] == demo()["rose"]
    distance = np.linalg.norm(np.asarray(built["face_encodings"][0]) - sample("rose_leslie_img1.jpg").encoding)
    assert distance < 1e-3


def test_the_shipped_demo_data_holds_encodings_not_photos() -> None:
    path = Path(__file__).parents[1] / "node" / "data" / "demo_people.json"
    document = json.loads(path.read_text(encoding="utf-8"))
    for entry in document["people"]:
        assert set(entry) == {
            "id_number",
            "name",
            "residence_code",
            "household_id",
            "face_encodings",
            "status",
            "enrolled",
        }
        assert all(len(encoding) == 128 for encoding in entry["face_encodings"])
    assert path.stat().st_size < 100_000
    assert not list(path.parent.glob("*.jpg")) and not list(path.parent.glob("*.png"))


def test_several_face_photos_are_counted(verifier: FaceVerifier) -> None:
    for name in ("test_kit_with_rose.jpg",):
        error = refusal(verifier, photo(name))
        assert error.code == "photo_several_faces"
    assert set(SEVERAL) | set(PERSON_OF) == {
        p.name for p in FACES.iterdir() if p.suffix != ".md" and p.name != "LICENSE"
    }


def test_damaged_uploads_never_crash(verifier: FaceVerifier) -> None:
    small = Image.open(FACES / "obama-480p.jpg")
    small.thumbnail((200, 200))
    sources = [jpeg(small, quality=80)]
    png = io.BytesIO()
    small.save(png, "PNG")
    sources.append(png.getvalue())
    rng = np.random.default_rng(12)
    outcomes = Counter()
    for source in sources:
        for _ in range(25):
            damaged = bytearray(source)
            for position in rng.integers(0, len(damaged), size=int(rng.integers(1, 12))):
                damaged[position] = int(rng.integers(0, 256))
            if rng.random() < 0.3:
                damaged = damaged[: int(rng.integers(1, len(damaged)))]
            try:
                verifier.verify(bytes(damaged), demo()["obama"])
                outcomes["decided"] += 1
            except DomainError as error:
                outcomes[error.code] += 1
    assert set(outcomes) <= {
        "decided",
        "photo_corrupt",
        "photo_not_image",
        "photo_no_face",
        "photo_face_too_small",
        "photo_several_faces",
        "photo_too_large",
    }
    assert outcomes["photo_corrupt"] > 0
