"""SQLAlchemy storage of payment orders and payment anomalies (the real ``PaymentRepository``).

Orders are JSON documents in one table with the columns the queries need beside them; each save is
a compare-and-set on the order's revision, so concurrent notifies and reconciliation settle an
order once. With SQLite, give it an engine in WAL mode with a busy timeout
(``node.adapters.sqlite.sqlite_engine``): notifies and reconciliation write concurrently.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Column,
    DateTime,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from node.domain.payment import WAITING, Anomaly, DuplicatePaymentCode, PaymentOrder

metadata = MetaData()
orders_table = Table(
    "payment_orders",
    metadata,
    Column("order_id", String(64), primary_key=True),
    Column("payment_code", String(20), nullable=False, unique=True),
    Column("case_no", String(64), nullable=False, index=True),
    Column("state", String(24), nullable=False, index=True),
    Column("last_change_at", DateTime(timezone=True), nullable=False),
    Column("revision", Integer, nullable=False),
    Column("data", Text, nullable=False),
)
anomalies_table = Table(
    "payment_anomalies",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("kind", String(32), nullable=False),
    Column("order_id", String(64), nullable=False),
    Column("gateway_version", Integer, nullable=False),
    Column("detail", Text, nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("kind", "order_id", "gateway_version"),
)


def _row_values(order: PaymentOrder) -> dict[str, Any]:
    return {
        "state": order.state.value,
        "last_change_at": order.last_change_at,
        "revision": order.revision,
        "data": json.dumps(order.to_dict(), ensure_ascii=False),
    }


class SqlPaymentRepository:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        metadata.create_all(engine)

    def add(self, order: PaymentOrder) -> None:
        values = {"order_id": order.order_id, "payment_code": order.payment_code, "case_no": order.case_no}
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(orders_table).values(**values, **_row_values(order)))
        except IntegrityError as error:
            if "payment_code" in str(error.orig):
                raise DuplicatePaymentCode(order.payment_code) from None
            raise

    def get(self, order_id: str) -> PaymentOrder | None:
        with self.engine.connect() as conn:
            data = conn.execute(select(orders_table.c.data).where(orders_table.c.order_id == order_id)).scalar()
        return PaymentOrder.from_dict(json.loads(data)) if data is not None else None

    def save(self, order: PaymentOrder, expected_revision: int) -> bool:
        with self.engine.begin() as conn:
            result = conn.execute(
                update(orders_table)
                .where(orders_table.c.order_id == order.order_id, orders_table.c.revision == expected_revision)
                .values(**_row_values(order))
            )
        return result.rowcount == 1

    def _many(self, *conditions: Any) -> list[PaymentOrder]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(orders_table.c.data).where(*conditions)).scalars().all()
        return [PaymentOrder.from_dict(json.loads(data)) for data in rows]

    def for_case(self, case_no: str) -> list[PaymentOrder]:
        return self._many(orders_table.c.case_no == case_no)

    def waiting(self, changed_before: datetime) -> list[PaymentOrder]:
        # sqlite keeps no time zone: compare in Python rather than trust its text ordering of offsets
        orders = self._many(orders_table.c.state.in_([s.value for s in WAITING]))
        return [o for o in orders if o.last_change_at < changed_before]

    def record_anomaly(self, anomaly: Anomaly) -> bool:
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(anomalies_table).values(**anomaly.__dict__))
        except IntegrityError:
            return False
        return True

    def anomalies(self) -> list[Anomaly]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(anomalies_table).order_by(anomalies_table.c.id)).mappings().all()
        return [Anomaly(r["kind"], r["order_id"], r["gateway_version"], r["detail"], r["at"]) for r in rows]
