"""Which sub-cases make up which 一件事 package at this node: a small index kept from the sub-cases' first events.

The package itself is folded from its sub-cases (node.domain.packages); this index only finds them.
It is rebuilt from the cases whenever they are projected, so losing it loses nothing.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text

from node.adapters.sqlite import sqlite_engine

PACKAGES_DB = "packages.sqlite3"

_SCHEMA = """CREATE TABLE IF NOT EXISTS package_cases (
    package_no TEXT NOT NULL,
    case_no TEXT NOT NULL PRIMARY KEY,
    package_code TEXT NOT NULL,
    position INTEGER NOT NULL,
    accepted_on TEXT NOT NULL)"""


class PackageIndex:
    def __init__(self, path: Path) -> None:
        self.engine = sqlite_engine(Path(path))
        with self.engine.begin() as conn:
            conn.exec_driver_sql(_SCHEMA)
            conn.exec_driver_sql("CREATE INDEX IF NOT EXISTS package_cases_no ON package_cases (package_no)")

    def add(self, package_no: str, case_no: str, package_code: str, position: int, accepted_on: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT OR IGNORE INTO package_cases (package_no, case_no, package_code, position, accepted_on)"
                    " VALUES (:package, :case, :code, :position, :on)"
                ),
                {"package": package_no, "case": case_no, "code": package_code, "position": position, "on": accepted_on},
            )

    def cases(self, package_no: str) -> tuple[str, list[str], str] | None:
        """The package's code, its sub-case numbers in order and the day it was accepted; None if unknown here."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                text("SELECT * FROM package_cases WHERE package_no = :no ORDER BY position, case_no"),
                {"no": package_no},
            ).mappings().all()
        if not rows:
            return None
        return rows[0]["package_code"], [row["case_no"] for row in rows], min(row["accepted_on"] for row in rows)

    def package_of(self, case_no: str) -> str | None:
        with self.engine.connect() as conn:
            return conn.execute(
                text("SELECT package_no FROM package_cases WHERE case_no = :case"), {"case": case_no}
            ).scalar_one_or_none()
