"""Questions for a person (人工客服) that the assistant could not answer, and the staff's answers.

The question and the answer may hold personal data: both are stored sealed. The asker reads the
answer with the question's id and a secret handed out once; only the secret's hash is kept.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import text

from node.adapters.ratings_store import Opener, Sealer
from node.adapters.sqlite import sqlite_engine
from node.domain.errors import DomainError, ErrorKind

QUESTIONS_DB = "questions.sqlite3"
# Open questions a node keeps at most: beyond, new ones are refused (a flood must not fill the disk).
MAX_OPEN_QUESTIONS = 5000

_SCHEMA = """CREATE TABLE IF NOT EXISTS questions (
    question_id TEXT PRIMARY KEY,
    secret_hash TEXT NOT NULL,
    body TEXT NOT NULL,
    asked_at TEXT NOT NULL,
    answer TEXT,
    answered_by TEXT,
    answered_at TEXT)"""


@dataclass(frozen=True)
class Question:
    question_id: str
    question: str
    asked_at: datetime
    answer: str | None = None
    answered_by: str | None = None
    answered_at: datetime | None = None

    def for_asker(self) -> dict[str, Any]:
        return {
            "question_id": self.question_id,
            "question": self.question,
            "asked_at": self.asked_at.isoformat(timespec="seconds"),
            "answered": self.answer is not None,
            "answer": self.answer,
            "answered_at": self.answered_at.isoformat(timespec="seconds") if self.answered_at else None,
        }


def _not_found() -> DomainError:
    return DomainError(
        "question_not_found",
        "没有找到该问题，请核对编号和查询码",
        "no such question; check its number and code",
        ErrorKind.NOT_FOUND,
    )


class QuestionStore:
    def __init__(self, path: Path, seal: Sealer, open_sealed: Opener) -> None:
        self.engine = sqlite_engine(Path(path))
        self._seal = seal
        self._open = open_sealed
        with self.engine.begin() as conn:
            conn.exec_driver_sql(_SCHEMA)

    def ask(self, question: str, now: datetime) -> tuple[Question, str]:
        """Keep ``question``; answers it and the one-time secret the asker reads the answer with."""
        secret = secrets.token_urlsafe(12)
        question_id = uuid.uuid4().hex[:16]
        with self.engine.begin() as conn:
            waiting = conn.execute(text("SELECT COUNT(*) FROM questions WHERE answer IS NULL")).scalar_one()
            if waiting >= MAX_OPEN_QUESTIONS:
                raise DomainError(
                    "question_queue_full",
                    "人工客服暂时繁忙，请稍后再问或拨打服务热线",
                    "the staff desk is busy; ask again later or call the service line",
                    ErrorKind.CONFLICT,
                )
            conn.execute(
                text(
                    "INSERT INTO questions (question_id, secret_hash, body, asked_at) VALUES (:id, :hash, :body, :at)"
                ),
                {"id": question_id, "hash": _hash(secret), "body": self._seal({"q": question}), "at": now.isoformat()},
            )
        return Question(question_id, question, now), secret

    def for_asker(self, question_id: str, secret: str) -> Question:
        row = self._row(question_id)
        if row is None or not hmac.compare_digest(row["secret_hash"], _hash(secret)):
            raise _not_found()
        return self._question(row)

    def waiting(self, limit: int = 100) -> list[Question]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                text("SELECT * FROM questions WHERE answer IS NULL ORDER BY asked_at LIMIT :n"), {"n": limit}
            ).mappings()
            return [self._question(row) for row in rows]

    def answer(self, question_id: str, answer: str, by: str, now: datetime) -> Question:
        with self.engine.begin() as conn:
            changed = conn.execute(
                text(
                    "UPDATE questions SET answer = :answer, answered_by = :by, answered_at = :at"
                    " WHERE question_id = :id AND answer IS NULL"
                ),
                {"id": question_id, "answer": self._seal({"a": answer}), "by": by, "at": now.isoformat()},
            ).rowcount
        if not changed:
            if self._row(question_id) is None:
                raise _not_found()
            raise DomainError(
                "question_answered", "该问题已经答复过", "this question has been answered already", ErrorKind.CONFLICT
            )
        row = self._row(question_id)
        assert row is not None
        return self._question(row)

    def _row(self, question_id: str) -> Any:
        with self.engine.connect() as conn:
            return (
                conn.execute(text("SELECT * FROM questions WHERE question_id = :id"), {"id": question_id})
                .mappings()
                .first()
            )

    def _question(self, row: Any) -> Question:
        body = self._open(row["body"]) or {}
        answer = self._open(row["answer"]) if row["answer"] else None
        return Question(
            question_id=row["question_id"],
            question=str(body.get("q", "")),
            asked_at=datetime.fromisoformat(row["asked_at"]),
            answer=str(answer.get("a", "")) if answer else None,
            answered_by=row["answered_by"],
            answered_at=datetime.fromisoformat(row["answered_at"]) if row["answered_at"] else None,
        )


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()
