"""What the shop does: the job is enqueued in the same transaction as the order."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from shop.models import Order
from shop.tasks import remind_unpaid, send_receipt

if TYPE_CHECKING:
    from sqlalchemy.orm import Session


def place_order(session: Session, customer: str) -> Order:
    order = Order(customer=customer)
    session.add(order)
    session.flush()
    session.execute(send_receipt.job({"order_id": order.id, "customer": customer}))
    session.execute(
        remind_unpaid.job(
            {"order_id": order.id},
            run_at=datetime.now(UTC) + timedelta(days=1),
            job_key=f"remind:{order.id}",
        )
    )
    return order


def pay(session: Session, order: Order) -> None:
    order.status = "paid"
    session.flush()
