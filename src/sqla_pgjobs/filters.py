"""Which jobs an operator means: the filters shared by the listings of live jobs
(``app_jobs.jobs``), of finished ones (``app_jobs.job_history``) and by the actions on a
selection of jobs (``pgjobs jobs cancel --task ...``).

Both tables name these columns alike, so one function builds the conditions for either;
each value is checked first, and a bad one is refused with the option's name.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from sqlalchemy import cast
from sqlalchemy.dialects.postgresql import JSONB

from sqla_pgjobs import validation as check

if TYPE_CHECKING:
    import uuid

    from sqlalchemy import Table
    from sqlalchemy.sql.elements import ColumnElement

__all__ = ["job_filters"]


def job_filters(
    table: Table,
    *,
    task: str | None = None,
    queue: str | None = None,
    tenant: uuid.UUID | str | None = None,
    key: str | None = None,
    payload: Any = None,
) -> list[ColumnElement[bool]]:
    """The conditions on ``table`` (``jobs`` or ``job_history``) for every filter given:
    the task, the queue, the tenant (a UUID), the job key, and ``payload``, which keeps
    the jobs whose payload contains it (JSON containment: ``{"order_id": 42}`` matches
    ``{"order_id": 42, "lines": [...]}``; not indexed, so it reads every row the other
    filters leave)."""
    conditions: list[ColumnElement[bool]] = []
    if task is not None:
        conditions.append(table.c.task_identifier == check.check_name("task", task))
    if queue is not None:
        conditions.append(table.c.queue_name == check.check_name("queue", queue))
    if tenant is not None:
        conditions.append(table.c.database_id == check.check_tenant("tenant", tenant))
    if key is not None:
        conditions.append(table.c.key == check.check_key("key", key))
    if payload is not None:
        contained = json.loads(check.json_text("payload", payload) or "null")
        conditions.append(cast(table.c.payload, JSONB).contains(contained))
    return conditions
