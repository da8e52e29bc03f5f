"""Identity verification by face: the ports, the result, and every reason a photo cannot be decided.

This module owns the ``IdentityVerifier`` interface (a photo and an ID number in, a ``Verification``
out), the ``ReferenceLookup`` port (whose reference face encodings are on file), the bounds a photo
must respect before anyone decodes it, and the bilingual ``DomainError`` for each reason a
verification cannot decide. The local dlib matcher (node/adapters/face_verifier.py) implements the
interface now; in production the same interface can call the public-security comparison service.

Nothing here keeps a photo: a verification yields a distance and a verdict, never the image.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from node.domain.errors import DomainError, ErrorKind

__all__ = [
    "ENCODING_SIZE",
    "MAX_ENCODINGS_PER_PERSON",
    "MAX_PHOTO_BYTES",
    "MAX_PHOTO_PIXELS",
    "IdentityVerifier",
    "LivenessCheck",
    "MappingReferences",
    "ReferenceLookup",
    "TurnDirection",
    "Verification",
    "face_encoding",
    "face_encodings",
]

ENCODING_SIZE = 128  # dlib's face descriptor
MAX_ENCODINGS_PER_PERSON = 8
MAX_PHOTO_BYTES = 10 * 1024 * 1024
MAX_PHOTO_PIXELS = 25_000_000
# A turn to the subject's own left or right, as seen in an unmirrored photo taken by a camera facing them.
TurnDirection = Literal["left", "right"]


# --- Reasons a verification cannot decide ----------------------------------------------------------------


def not_an_image() -> DomainError:
    return DomainError(
        "photo_not_image",
        "上传的文件不是可识别的图片（请使用 JPEG 或 PNG 照片）",
        "The uploaded file is not an image we can read (use a JPEG or PNG photo)",
    )


def corrupt_image() -> DomainError:
    return DomainError(
        "photo_corrupt",
        "照片文件已损坏或不完整，请重新拍摄或上传",
        "The photo file is damaged or incomplete; take or upload it again",
    )


def image_too_large(what_zh: str, what_en: str) -> DomainError:
    return DomainError(
        "photo_too_large",
        f"照片过大（{what_zh}），请使用不超过 10 MB、2500 万像素的照片",
        f"The photo is too large ({what_en}); use a photo of at most 10 MB and 25 megapixels",
    )


def no_face() -> DomainError:
    return DomainError(
        "photo_no_face",
        "照片中未检测到人脸，请正对镜头、光线充足后重拍",
        "No face was found in the photo; face the camera in good light and try again",
    )


def several_faces(count: int) -> DomainError:
    return DomainError(
        "photo_several_faces",
        f"照片中检测到 {count} 张人脸，核验照片中只能有申请人本人",
        f"The photo shows {count} faces; only the applicant may be in a verification photo",
    )


def face_too_small() -> DomainError:
    return DomainError(
        "photo_face_too_small",
        "照片中的人脸太小，请靠近镜头后重拍",
        "The face in the photo is too small; move closer to the camera and try again",
    )


def no_reference() -> DomainError:
    # The ID number is never echoed: errors end up in logs.
    return DomainError(
        "identity_no_reference",
        "人口库中没有该身份证号码的人脸比对信息，请改用身份证件人工核验",
        "The population register holds no reference face for this ID number; check the ID card by hand instead",
        ErrorKind.NOT_FOUND,
    )


# --- Encodings ------------------------------------------------------------------------------------------


def face_encoding(value: object) -> tuple[float, ...]:
    """A reference face encoding checked and normalised: exactly 128 finite floats."""
    if callable(getattr(value, "tolist", None)):  # a numpy array, without importing numpy here
        value = value.tolist()  # type: ignore[union-attr]
    if isinstance(value, str | bytes) or not isinstance(value, Sequence) or len(value) != ENCODING_SIZE:
        raise DomainError(
            "invalid_face_encoding",
            f"人脸特征值应为 {ENCODING_SIZE} 个数值",
            f"A face encoding must be {ENCODING_SIZE} numbers",
        )
    out: list[float] = []
    for item in value:
        if isinstance(item, bool) or not isinstance(item, int | float) or not math.isfinite(item):
            raise DomainError(
                "invalid_face_encoding",
                "人脸特征值中含有非有限数值",
                "A face encoding holds a value that is not a finite number",
            )
        out.append(float(item))
    return tuple(out)


def face_encodings(values: object) -> tuple[tuple[float, ...], ...]:
    """A person's reference encodings: a bounded list of valid encodings (possibly empty)."""
    if isinstance(values, str | bytes) or not isinstance(values, Sequence):
        raise DomainError("invalid_face_encoding", "人脸特征值列表格式错误", "Face encodings must be a list")
    if len(values) > MAX_ENCODINGS_PER_PERSON:
        raise DomainError(
            "invalid_face_encoding",
            f"每人最多保存 {MAX_ENCODINGS_PER_PERSON} 组人脸特征值",
            f"At most {MAX_ENCODINGS_PER_PERSON} face encodings are kept per person",
        )
    return tuple(face_encoding(item) for item in values)


# --- Results --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LivenessCheck:
    """The head-turn check: the estimated yaw (degrees, + = nose towards the image's right) of each photo."""

    passed: bool
    frontal_yaw: float
    turned_yaw: float
    min_turn: float
    message_zh: str | None = None  # why it failed, when it did
    message_en: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "frontal_yaw": round(self.frontal_yaw, 1),
            "turned_yaw": round(self.turned_yaw, 1),
            "min_turn": self.min_turn,
            "message_zh": self.message_zh,
            "message_en": self.message_en,
        }


@dataclass(frozen=True)
class Verification:
    """What a verification decided. ``distance`` is the smallest distance to the person's references.

    With a liveness check, ``match`` holds only when both photos match and the head really turned;
    ``distance`` is then the larger of the two photos' distances.
    """

    match: bool
    distance: float
    threshold: float
    model: str
    liveness: LivenessCheck | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "match": self.match,
            "distance": round(self.distance, 4),
            "threshold": self.threshold,
            "model": self.model,
        }
        if self.liveness is not None:
            out["liveness"] = self.liveness.to_dict()
        return out


# --- Ports ----------------------------------------------------------------------------------------------


class ReferenceLookup(Protocol):
    """Who has which reference face encodings (from the population register held at this node)."""

    def reference_encodings(self, id_number: str) -> Sequence[Sequence[float]]:
        """The person's reference encodings; empty when the register holds none for this number."""
        ...


class IdentityVerifier(Protocol):
    """Decides whether a photo shows the holder of an ID number.

    Raises ``DomainError`` (codes ``photo_not_image``, ``photo_corrupt``, ``photo_too_large``,
    ``photo_no_face``, ``photo_several_faces``, ``photo_face_too_small``, ``identity_no_reference``)
    when it cannot decide; a decided non-match is a ``Verification`` with ``match=False``.
    """

    model: str
    threshold: float

    def verify(self, photo: bytes, id_number: str) -> Verification: ...

    def verify_with_liveness(
        self, frontal_photo: bytes, turned_photo: bytes, id_number: str, *, direction: TurnDirection | None = None
    ) -> Verification: ...


class MappingReferences:
    """A ``ReferenceLookup`` over an in-memory map from ID number to encodings (demo data, registers, tests)."""

    def __init__(self, entries: Iterable[tuple[str, Sequence[Sequence[float]]]]) -> None:
        self._by_id: dict[str, tuple[tuple[float, ...], ...]] = {}
        for id_number, encodings in entries:
            self._by_id[id_number] = face_encodings(list(encodings))

    def reference_encodings(self, id_number: str) -> Sequence[Sequence[float]]:
        # GB 11643 allows a lowercase check "x"; the register keeps the normalised form.
        return self._by_id.get(id_number[:17] + id_number[17:].upper(), ())

    def __len__(self) -> int:
        return len(self._by_id)

    def __repr__(self) -> str:
        return f"MappingReferences({len(self._by_id)} people)"
