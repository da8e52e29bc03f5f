"""Local face verification with face_recognition (dlib HOG detector, ResNet 128-d encoder).

This adapter owns turning untrusted photo bytes into one face encoding — safe decoding, EXIF
orientation, downscaling before detection, exactly one large-enough face — and comparing it with
the person's reference encodings (smallest Euclidean distance against a threshold chosen from the
ROC measured by bench/bench_faces.py, see docs/benchmarks.md). It implements
``node.domain.identity.IdentityVerifier``; a production deployment may put the public-security
comparison service behind the same interface instead.

The head-turn liveness check (``verify_with_liveness``) asks for a frontal photo and a second one with
the head turned, estimates each face's yaw from dlib's 68 landmarks (where the nose tip sits between
the two ends of the jaw line) and requires both photos to match the same person. What it stops: a
single printed photo or a phone screen held up to the camera, even when tilted or turned — a flat
picture turned about the vertical axis keeps the nose at the same fraction of the jaw width, so it
never shows a turn. What it does NOT stop, honestly:

- two real photos of the person, one frontal and one turned (from social media, or filmed earlier),
  shown one after the other — a random requested direction (``direction``) halves the odds of a
  pre-made pair, it does not rule it out;
- a video replay or a real-time deepfake on a screen, a 3D mask, or a look-alike the model confuses;
- an uploaded file that never came from a camera: online, nothing binds the photos to this moment,
  so the channel must capture both photos itself seconds apart (the kiosk does; a browser upload
  should go through the camera capture of the page);
- someone standing next to a willing or unconscious holder: there is no check of intent.

It is a cheap first line for the kiosk and online channel, not certified presentation-attack
detection (as tested under ISO/IEC 30107-3); production should use the public-security service's liveness.
"""

from __future__ import annotations

import io
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version

import dlib
import face_recognition
import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from node.domain import identity
from node.domain.identity import LivenessCheck, ReferenceLookup, TurnDirection, Verification

# face_recognition switches Pillow to decoding truncated files (grey-filled) for the whole process when it
# is imported; an upload cut short must be refused instead, so the default is restored.
ImageFile.LOAD_TRUNCATED_IMAGES = False

__all__ = [
    "DEFAULT_THRESHOLD",
    "DETECTION_MAX_SIDE",
    "MODEL",
    "FaceSample",
    "FaceVerifier",
    "encode_photos",
    "read_face",
]


def _model_version() -> str:
    try:
        library = version("face_recognition")
    except PackageNotFoundError:  # pragma: no cover - installed from source without metadata
        library = face_recognition.__version__
    return f"dlib-resnet128/hog (face_recognition {library}, dlib {dlib.__version__})"


MODEL = _model_version()
# Chosen from the ROC of bench/bench_faces.py on tests/data/faces (docs/benchmarks.md): the lowest
# measured threshold with no false accept and no false reject (0.45 and 0.50 rejected 2 of 23 genuine pairs).
# Lower than the library's customary 0.6 because dlib separates East Asian faces less well.
DEFAULT_THRESHOLD = 0.55
# Detection time grows with the pixel count (0.15 s at 400 px, 1.5 s at 2,000 px on 2 cores); at 800 px
# the HOG detector without upsampling still finds faces of about 1/10 of the image height.
DETECTION_MAX_SIDE = 800
# A small photo is searched again with one upsampling so a small face is reported as such, not as absent.
_UPSAMPLE_BELOW_SIDE = 480
# Below this side (in the photo's own pixels) the encoder sees too little detail to be trusted.
MIN_FACE_SIDE_PX = 80
# Yaw rules of the liveness check, in estimated degrees (see ``_estimated_yaw``).
FRONTAL_MAX_YAW = 12.0
TURNED_MIN_YAW = 18.0
MIN_TURN = 18.0
_ALLOWED_FORMATS = ("JPEG", "PNG")
# dlib's detector and predictors are shared module globals; one call at a time keeps them safe under threads.
_DLIB_LOCK = threading.Lock()


@dataclass(frozen=True)
class FaceSample:
    """The one face of a photo: its encoding, its size in the photo's own pixels and its estimated yaw."""

    encoding: np.ndarray
    face_side_px: int
    yaw: float | None


def _decode(photo: bytes, max_side: int) -> tuple[np.ndarray, float]:
    """The photo as an upright RGB array no larger than ``max_side``, and the scale from the original."""
    if not isinstance(photo, bytes | bytearray | memoryview):
        raise identity.not_an_image()
    if len(photo) > identity.MAX_PHOTO_BYTES:
        raise identity.image_too_large(f"{len(photo) / 1048576:.1f} MB", f"{len(photo) / 1048576:.1f} MB")
    if not photo:
        raise identity.not_an_image()
    try:
        # formats= keeps Pillow from trying every decoder it has on untrusted bytes.
        image = Image.open(io.BytesIO(photo), formats=_ALLOWED_FORMATS)
    except UnidentifiedImageError:
        raise identity.not_an_image() from None
    except Image.DecompressionBombError:
        raise identity.image_too_large("像素过多", "too many pixels") from None
    except (OSError, SyntaxError, ValueError):
        raise identity.corrupt_image() from None
    with image:
        width, height = image.size
        if width * height > identity.MAX_PHOTO_PIXELS:
            megapixels = width * height / 1e6
            raise identity.image_too_large(f"{megapixels:.1f} 百万像素", f"{megapixels:.1f} megapixels")
        if width < 1 or height < 1:
            raise identity.corrupt_image()
        try:
            # JPEG: let libjpeg decode at 1/2, 1/4 or 1/8 scale when that still covers max_side. The
            # request keeps the photo's aspect: Pillow scales by the smaller ratio of the two sides.
            shrink = max(1.0, max(width, height) / max_side)
            image.draft("RGB", (math.ceil(width / shrink), math.ceil(height / shrink)))
            image.load()
            upright = ImageOps.exif_transpose(image)
            rgb = upright.convert("RGB")
        except Image.DecompressionBombError:
            raise identity.image_too_large("像素过多", "too many pixels") from None
        except Exception:
            # Truncated files raise OSError("image file is truncated") as long as LOAD_TRUNCATED_IMAGES is off;
            # malformed headers, EXIF or chunks raise SyntaxError, ValueError, struct.error and others from
            # deep inside Pillow's plugins. Whatever it is, the upload is damaged: refused, never a crash.
            raise identity.corrupt_image() from None
    # The original's longer side against the decoded one, orientation-independent.
    original_long = max(width, height)
    rgb.thumbnail((max_side, max_side), Image.Resampling.BICUBIC)
    scale = max(rgb.size) / original_long
    return np.asarray(rgb), scale


def _estimated_yaw(landmarks: dict[str, list[tuple[int, int]]]) -> float:
    """Head yaw in degrees, + when the nose points towards the image's right.

    The nose tip's position between the jaw line's two ends (0.5 when frontal) is read as the sine of
    the yaw. It is a rough, uncalibrated estimate — good enough to tell "facing" from "clearly turned".
    """
    jaw = landmarks["chin"]
    left, right = jaw[0][0], jaw[-1][0]
    nose_x = landmarks["nose_tip"][len(landmarks["nose_tip"]) // 2][0]
    if right <= left:
        return 0.0
    fraction = (nose_x - left) / (right - left)
    return math.degrees(math.asin(max(-1.0, min(1.0, 2 * fraction - 1))))


def read_face(photo: bytes, *, max_side: int = DETECTION_MAX_SIDE, with_yaw: bool = False) -> FaceSample:
    """The single face of a photo, encoded; raises the reasons of node.domain.identity otherwise."""
    pixels, scale = _decode(photo, max_side)
    with _DLIB_LOCK:
        boxes = face_recognition.face_locations(pixels, number_of_times_to_upsample=0, model="hog")
        if not boxes and max(pixels.shape[:2]) <= _UPSAMPLE_BELOW_SIDE:
            boxes = face_recognition.face_locations(pixels, number_of_times_to_upsample=1, model="hog")
        if not boxes:
            raise identity.no_face()
        if len(boxes) > 1:
            raise identity.several_faces(len(boxes))
        top, right, bottom, left = boxes[0]
        face_side = round(min(bottom - top, right - left) / scale)
        if face_side < MIN_FACE_SIDE_PX:
            raise identity.face_too_small()
        encoding = face_recognition.face_encodings(pixels, boxes, num_jitters=1, model="small")[0]
        yaw = None
        if with_yaw:
            yaw = _estimated_yaw(face_recognition.face_landmarks(pixels, boxes, model="large")[0])
    return FaceSample(encoding=encoding, face_side_px=face_side, yaw=yaw)


def _not_turned(frontal_yaw: float, turned_yaw: float, direction: TurnDirection | None) -> tuple[str, str] | None:
    """Why the pair does not show a head turn, in Chinese and English; None when it does."""
    if abs(frontal_yaw) > FRONTAL_MAX_YAW:
        return "第一张照片须正对镜头", "the first photo must face the camera"
    if abs(turned_yaw) < TURNED_MIN_YAW or abs(turned_yaw - frontal_yaw) < MIN_TURN:
        return "第二张照片中头部转动不够", "the head is not turned enough in the second photo"
    # Turning to one's own left moves the nose towards the right of an unmirrored photo.
    if direction is not None and (turned_yaw > 0) != (direction == "left"):
        return "头部转动方向与要求不符", "the head turned the other way from the one asked"
    return None


class FaceVerifier:
    """``IdentityVerifier`` with face_recognition: one face per photo, min distance to the references."""

    model: str = MODEL

    def __init__(
        self,
        references: ReferenceLookup,
        *,
        threshold: float = DEFAULT_THRESHOLD,
        max_side: int = DETECTION_MAX_SIDE,
    ) -> None:
        if not 0 < threshold < 2:
            raise ValueError(f"threshold must be in (0, 2), got {threshold}")
        self.references = references
        self.threshold = threshold
        self.max_side = max_side

    def _references(self, id_number: str) -> np.ndarray:
        # Looked up first: a person without a reference gets that answer, not a photo complaint.
        encodings = self.references.reference_encodings(id_number) if isinstance(id_number, str) else ()
        if not encodings:
            raise identity.no_reference()
        return np.asarray(encodings, dtype=np.float64)

    @staticmethod
    def _distance(sample: FaceSample, references: np.ndarray) -> float:
        return float(np.min(np.linalg.norm(references - sample.encoding, axis=1)))

    def verify(self, photo: bytes, id_number: str) -> Verification:
        references = self._references(id_number)
        distance = self._distance(read_face(photo, max_side=self.max_side), references)
        return Verification(distance <= self.threshold, distance, self.threshold, self.model)

    def verify_with_liveness(
        self,
        frontal_photo: bytes,
        turned_photo: bytes,
        id_number: str,
        *,
        direction: TurnDirection | None = None,
    ) -> Verification:
        """Both photos must show the person, the first facing the camera, the second with the head turned."""
        references = self._references(id_number)
        frontal = read_face(frontal_photo, max_side=self.max_side, with_yaw=True)
        turned = read_face(turned_photo, max_side=self.max_side, with_yaw=True)
        assert frontal.yaw is not None and turned.yaw is not None
        distance = max(self._distance(frontal, references), self._distance(turned, references))
        reason = _not_turned(frontal.yaw, turned.yaw, direction)
        liveness = LivenessCheck(
            passed=reason is None,
            frontal_yaw=frontal.yaw,
            turned_yaw=turned.yaw,
            min_turn=MIN_TURN,
            message_zh=None if reason is None else f"活体检测未通过：{reason[0]}",
            message_en=None if reason is None else f"Liveness check failed: {reason[1]}",
        )
        return Verification(
            match=distance <= self.threshold and liveness.passed,
            distance=distance,
            threshold=self.threshold,
            model=self.model,
            liveness=liveness,
        )


def encode_photos(photos: Sequence[bytes], *, max_side: int = DETECTION_MAX_SIDE) -> list[tuple[float, ...]]:
    """Reference encodings for enrolment, one per photo (each must show exactly one usable face)."""
    return [tuple(float(x) for x in read_face(photo, max_side=max_side).encoding) for photo in photos]
