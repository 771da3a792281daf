"""The shop's tables. Paying an order enqueues its shipping, whoever updates the row."""

from __future__ import annotations

from sqlalchemy import String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from sqla_pgjobs.triggers import JobTrigger, RowId


class Base(DeclarativeBase):
    pass


class Order(Base):
    __tablename__ = "orders"
    __table_args__ = (
        JobTrigger(
            "ship_order",
            on=("update",),
            update_columns=("status",),
            when="NEW.status = 'paid' AND OLD.status IS DISTINCT FROM 'paid'",
            payload=RowId(),
            key="ship:{id}",
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    customer: Mapped[str] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(20), default="new")
