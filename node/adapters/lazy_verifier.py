"""An ``IdentityVerifier`` that loads dlib's models on its first verification, not when the process starts.

face_recognition loads its detector, landmark predictors and encoder when imported: about 135 MB per
process. Every web worker of every node is built with a verifier, but most of them never verify a face
(a city's ops dashboard, a county's approvers), so the composition root hands out this wrapper and the
models are loaded once, by the first request that needs them (that request takes about 1.5 s longer).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from node.domain.identity import ReferenceLookup, TurnDirection, Verification

if TYPE_CHECKING:
    from node.adapters.face_verifier import FaceVerifier

__all__ = ["LazyFaceVerifier"]


class LazyFaceVerifier:
    """:class:`node.adapters.face_verifier.FaceVerifier`, built on first use (thread-safe)."""

    def __init__(self, references: ReferenceLookup) -> None:
        self._references = references
        self._inner: FaceVerifier | None = None
        self._lock = threading.Lock()

    def _verifier(self) -> FaceVerifier:
        if self._inner is None:
            with self._lock:
                if self._inner is None:
                    from node.adapters.face_verifier import FaceVerifier  # imports dlib and loads its models

                    self._inner = FaceVerifier(self._references)
        return self._inner

    @property
    def model(self) -> str:
        return self._verifier().model

    @property
    def threshold(self) -> float:
        return self._verifier().threshold

    @property
    def loaded(self) -> bool:
        return self._inner is not None

    def verify(self, photo: bytes, id_number: str) -> Verification:
        return self._verifier().verify(photo, id_number)

    def verify_with_liveness(
        self, frontal_photo: bytes, turned_photo: bytes, id_number: str, *, direction: TurnDirection | None = None
    ) -> Verification:
        return self._verifier().verify_with_liveness(frontal_photo, turned_photo, id_number, direction=direction)
