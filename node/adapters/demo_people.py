"""The demo's people with reference faces: node/data/demo_people.json, and how it is made from photos.

This module owns the enrolment plan of the demo (which synthetic resident is enrolled with which
photos of face_recognition's example set), building the data file from a folder of those photos
(``build_demo_people`` / ``python -m node.adapters.demo_people PHOTO_DIR``), and reading it back as
register records (``load_demo_people``), as the listing of ``tongban demo people --json``
(``demo_people_listing``) and as a ``ReferenceLookup`` (``demo_references``).

The product ships the 128-d encodings only, never a photo. Every person with two or more photos keeps
at least one out of enrolment, so a photo never seen at enrolment can be verified in the demo.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from importlib import resources
from pathlib import Path
from typing import Any

from node.domain.identifiers import make_id_number
from node.domain.identity import MappingReferences
from node.domain.registers import PersonRecord

__all__ = [
    "DEMO_ENROLMENT",
    "DemoPerson",
    "EnrolmentPlan",
    "build_demo_people",
    "demo_people_listing",
    "demo_references",
    "load_demo_people",
    "write_demo_people",
]

RESOURCE = "data/demo_people.json"
_ENCODING_DECIMALS = 8  # float32-level precision is all the encoder has


@dataclass(frozen=True)
class EnrolmentPlan:
    """One demo resident: synthetic identity, and the photos (file names) enrolled as references."""

    id_number: str
    name: str
    residence_code: str
    household_id: str
    enrolled: tuple[str, ...]


# Residents of 迎风桥第1村 (资阳区) and 八字哨第1村 (赫山区), the demo's two village nodes.
_ZIYANG_VILLAGE = "430902102201"
_HESHAN_VILLAGE = "430903101201"
DEMO_ENROLMENT: tuple[EnrolmentPlan, ...] = (
    EnrolmentPlan(
        make_id_number("430902", date(1961, 8, 4), 31),
        "周建国",
        _ZIYANG_VILLAGE,
        "HDEMO0001",
        ("obama_obama.jpg", "obama_obama2.jpg", "obama3.jpg"),  # kept out: obama-480p, test_obama1, partial
    ),
    EnrolmentPlan(
        make_id_number("430903", date(1952, 11, 20), 57),
        "彭志明",
        _HESHAN_VILLAGE,
        "HDEMO0002",
        ("biden_biden.jpg",),  # kept out: biden_biden2
    ),
    EnrolmentPlan(
        make_id_number("430902", date(1986, 12, 26), 113),
        "谭浩宇",
        _ZIYANG_VILLAGE,
        "HDEMO0003",
        ("kit_harington_john1.jpeg", "test_johnsnow_test1.jpg"),  # kept out: kit_harington_john2
    ),
    EnrolmentPlan(
        make_id_number("430903", date(1987, 2, 9), 204),
        "刘雨涵",
        _HESHAN_VILLAGE,
        "HDEMO0004",
        ("rose_leslie_img1.jpg",),  # kept out: rose_leslie_img2
    ),
    EnrolmentPlan(
        make_id_number("430902", date(1974, 6, 15), 75),
        "曾俊杰",
        _ZIYANG_VILLAGE,
        "HDEMO0005",
        ("alex_lacamoire_img1.jpg", "test_alex_lacamoire1.jpg"),  # kept out: alex-lacamoire.png
    ),
    EnrolmentPlan(
        make_id_number("430903", date(1980, 1, 16), 139),
        "贺文斌",
        _HESHAN_VILLAGE,
        "HDEMO0006",
        ("lin-manuel-miranda.png",),  # the only photo of this person
    ),
)


@dataclass(frozen=True)
class DemoPerson:
    record: PersonRecord
    enrolled: tuple[str, ...]

    def listing(self) -> dict[str, Any]:
        """The entry of ``tongban demo people --json``."""
        return {
            "id_number": self.record.id_number,
            "name": self.record.name,
            "residence_code": self.record.residence_code,
            "enrolled": list(self.enrolled),
        }


def build_demo_people(photo_dir: Path, plan: Sequence[EnrolmentPlan] = DEMO_ENROLMENT) -> list[dict[str, Any]]:
    """The content of demo_people.json: each planned resident with the encodings of their enrolled photos."""
    from node.adapters.face_verifier import encode_photos  # loads dlib's models: only when enrolling

    people = []
    for person in plan:
        encodings = encode_photos([(photo_dir / name).read_bytes() for name in person.enrolled])
        record = PersonRecord(
            id_number=person.id_number,
            name=person.name,
            residence_code=person.residence_code,
            household_id=person.household_id,
            face_encodings=tuple(tuple(round(x, _ENCODING_DECIMALS) for x in e) for e in encodings),
        )
        people.append({**record.to_dict(), "enrolled": list(person.enrolled)})
    return people


def write_demo_people(photo_dir: Path, out: Path) -> int:
    people = build_demo_people(photo_dir)
    out.write_text(json.dumps({"people": people}, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    return len(people)


def _parse(document: Any) -> list[DemoPerson]:
    people = []
    for entry in document["people"]:
        enrolled = entry.get("enrolled", [])
        if not isinstance(enrolled, list) or not all(isinstance(n, str) for n in enrolled):
            raise ValueError("demo_people.json: 'enrolled' must be a list of file names")
        fields = {k: v for k, v in entry.items() if k != "enrolled"}
        people.append(DemoPerson(PersonRecord.from_dict(fields), tuple(enrolled)))
    return people


def load_demo_people() -> list[DemoPerson]:
    """The shipped demo residents, validated as register records."""
    text = resources.files("node").joinpath(RESOURCE).read_text(encoding="utf-8")
    return _parse(json.loads(text))


def demo_people_listing() -> list[dict[str, Any]]:
    """``[{"id_number", "name", "residence_code", "enrolled": [file names]}]`` for ``tongban demo people --json``."""
    return [person.listing() for person in load_demo_people()]


def demo_references() -> MappingReferences:
    """The demo residents' reference encodings, for a ``FaceVerifier``."""
    return MappingReferences((p.record.id_number, p.record.face_encodings) for p in load_demo_people())


if __name__ == "__main__":  # python -m node.adapters.demo_people PHOTO_DIR [OUT]
    if len(sys.argv) not in (2, 3):
        sys.exit("usage: python -m node.adapters.demo_people PHOTO_DIR [OUT (default node/data/demo_people.json)]")
    target = Path(sys.argv[2]) if len(sys.argv) == 3 else Path(__file__).resolve().parent.parent / RESOURCE
    count = write_demo_people(Path(sys.argv[1]), target)
    print(f"{count} people written to {target}")
