"""The one error type the domain raises: a stable code plus a message in Chinese and in English."""

from __future__ import annotations

from enum import StrEnum


class ErrorKind(StrEnum):
    """What went wrong, in terms an entry point can map to its own protocol (HTTP status, exit code)."""

    INVALID = "invalid"  # the input is malformed or breaks a rule
    NOT_FOUND = "not_found"
    FORBIDDEN = "forbidden"  # the actor's role does not allow it
    CONFLICT = "conflict"  # not allowed in the current state, or a replay
    UNAUTHENTICATED = "unauthenticated"


class DomainError(Exception):
    def __init__(self, code: str, message_zh: str, message_en: str, kind: ErrorKind = ErrorKind.INVALID) -> None:
        super().__init__(f"{code}: {message_en}")
        self.code = code
        self.message_zh = message_zh
        self.message_en = message_en
        self.kind = kind

    def to_dict(self) -> dict[str, str]:
        return {"error": self.code, "message_zh": self.message_zh, "message_en": self.message_en}


def missing_field(key: str) -> DomainError:
    """A required field is absent or blank (the request's parser and the use cases say it the same way)."""
    return DomainError("missing_field", f"缺少必填字段 {key}", f"required field {key!r} is missing", ErrorKind.INVALID)
