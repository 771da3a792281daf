"""The shop's background tasks. (They record what they did in OUTBOX, standing in for
e-mail and a shipping API.)"""

from __future__ import annotations

from typing import Any

from sqla_pgjobs import Job, TaskRegistry

tasks = TaskRegistry()
OUTBOX: list[tuple[str, Any]] = []


@tasks.task("send_receipt", max_attempts=5)
def send_receipt(payload: dict[str, Any]) -> None:
    OUTBOX.append(("receipt", payload["order_id"]))


@tasks.task("ship_order")
def ship_order(payload: dict[str, Any]) -> None:
    OUTBOX.append(("shipped", payload["id"]))


@tasks.task("remind_unpaid")
async def remind_unpaid(payload: dict[str, Any], job: Job) -> None:
    OUTBOX.append(("reminder", payload["order_id"]))
