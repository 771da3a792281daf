"""What operators see and do: the state of the queue, listing and acting on jobs.

The listings read the tables (an ``operator`` role may); the actions go through the SQL
admin functions, which leave alone the jobs live workers hold unless ``force`` is given.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, case, func, literal, select

from sqla_pgjobs import functions as fn
from sqla_pgjobs.errors import InvalidArgumentError
from sqla_pgjobs.tables import jobs, workers

if TYPE_CHECKING:
    from collections.abc import Sequence

    from sqlalchemy.engine import Connection
    from sqlalchemy.sql.elements import ColumnElement

__all__ = ["STATES", "ActionResult", "act", "job_state", "list_jobs", "show_job", "status"]

#: What a job is doing: waiting its turn, waiting for its run_at (or a retry), held by a
#: worker, or failed for good (its attempts are used up).
STATES = ("due", "delayed", "running", "failed")


def job_state() -> ColumnElement[str]:
    return case(
        (jobs.c.locked_at.is_not(None), literal("running")),
        (jobs.c.attempts >= jobs.c.max_attempts, literal("failed")),
        (jobs.c.run_at > func.now(), literal("delayed")),
        else_=literal("due"),
    ).label("state")


def _worker_alive() -> ColumnElement[bool]:
    # As the schema's lock_is_held: a restart of PostgreSQL counts as everyone's heartbeat.
    heard = func.greatest(workers.c.last_heartbeat, func.pg_postmaster_start_time())
    return (heard >= func.now() - workers.c.heartbeat_timeout).label("alive")


def status(connection: Connection) -> dict[str, Any]:
    """Queue depth by task, queue and state; who holds what since when; the workers."""
    state = job_state()
    depth = (
        connection.execute(
            select(jobs.c.task_identifier, jobs.c.queue_name, state, func.count().label("jobs"))
            .group_by(jobs.c.task_identifier, jobs.c.queue_name, state)
            .order_by(jobs.c.task_identifier, jobs.c.queue_name, state)
        )
        .mappings()
        .all()
    )
    held = (
        connection.execute(
            select(
                jobs.c.locked_by,
                func.count().label("jobs"),
                func.min(jobs.c.locked_at).label("oldest_lock"),
            )
            .where(jobs.c.locked_at.is_not(None))
            .group_by(jobs.c.locked_by)
            .order_by(jobs.c.locked_by)
        )
        .mappings()
        .all()
    )
    registered = (
        connection.execute(
            select(workers, _worker_alive(), func.now().label("now")).order_by(workers.c.worker_id)
        )
        .mappings()
        .all()
    )
    totals = {name: 0 for name in STATES}
    for row in depth:
        totals[row["state"]] += row["jobs"]
    return {
        "totals": totals,
        "by_task": [dict(row) for row in depth],
        "held": [dict(row) for row in held],
        "workers": [
            {
                "worker_id": w["worker_id"],
                "alive": bool(w["alive"]),
                "last_heartbeat": w["last_heartbeat"],
                "seconds_since_heartbeat": round(
                    (w["now"] - w["last_heartbeat"]).total_seconds(), 1
                ),
                "heartbeat_timeout": w["heartbeat_timeout"].total_seconds(),
                "started_at": w["started_at"],
                "info": w["info"],
            }
            for w in registered
        ],
    }


def list_jobs(
    connection: Connection,
    *,
    task: str | None = None,
    queue: str | None = None,
    tenant: uuid.UUID | str | None = None,
    state: str | None = None,
    key: str | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """Jobs matching every filter given, oldest first by (priority, run_at, id)."""
    if state is not None and state not in STATES:
        raise InvalidArgumentError("state", state, f"it must be one of {', '.join(STATES)}")
    conditions: list[ColumnElement[bool]] = []
    if task is not None:
        conditions.append(jobs.c.task_identifier == task)
    if queue is not None:
        conditions.append(jobs.c.queue_name == queue)
    if tenant is not None:
        conditions.append(jobs.c.database_id == _tenant(tenant))
    if key is not None:
        conditions.append(jobs.c.key == key)
    if state is not None:
        conditions.append(_state_condition(state))
    rows = (
        connection.execute(
            select(jobs, job_state())
            .where(and_(True, *conditions))
            .order_by(jobs.c.priority, jobs.c.run_at, jobs.c.id)
            .limit(limit)
        )
        .mappings()
        .all()
    )
    return [dict(row) for row in rows]


def _tenant(tenant: uuid.UUID | str) -> uuid.UUID:
    try:
        return tenant if isinstance(tenant, uuid.UUID) else uuid.UUID(tenant)
    except ValueError:
        raise InvalidArgumentError("tenant", tenant, "it must be a UUID") from None


def _state_condition(state: str) -> ColumnElement[bool]:
    unlocked = jobs.c.locked_at.is_(None)
    alive = jobs.c.attempts < jobs.c.max_attempts
    return {
        "running": jobs.c.locked_at.is_not(None),
        "failed": and_(unlocked, jobs.c.attempts >= jobs.c.max_attempts),
        "delayed": and_(unlocked, alive, jobs.c.run_at > func.now()),
        "due": and_(unlocked, alive, jobs.c.run_at <= func.now()),
    }[state]


def show_job(connection: Connection, job_id: int) -> dict[str, Any] | None:
    row = (
        connection.execute(select(jobs, job_state()).where(jobs.c.id == job_id))
        .mappings()
        .one_or_none()
    )
    return dict(row) if row is not None else None


@dataclass(frozen=True)
class ActionResult:
    done: list[int]
    skipped: list[int]  # held by a live worker (use force), or no such job


ACTIONS = ("retry", "fail", "reschedule", "delete")


def act(
    connection: Connection,
    action: str,
    job_ids: Sequence[int],
    *,
    force: bool = False,
    message: str | None = None,
    run_at: datetime | None = None,
    priority: int | None = None,
) -> ActionResult:
    """Retry (now, attempts reset), fail for good, reschedule, or delete jobs."""
    if action == "retry":
        statement = fn.reschedule_jobs(job_ids, run_at=datetime.now(UTC), attempts=0, force=force)
    elif action == "fail":
        statement = fn.permanently_fail_jobs(job_ids, message, force=force)
    elif action == "reschedule":
        if run_at is None and priority is None:
            raise InvalidArgumentError("run_at", run_at, "reschedule needs run_at or priority")
        statement = fn.reschedule_jobs(job_ids, run_at=run_at, priority=priority, force=force)
    elif action == "delete":
        statement = fn.complete_jobs(job_ids, force=force)
    else:
        raise InvalidArgumentError("action", action, f"it must be one of {', '.join(ACTIONS)}")
    done = sorted(row.id for row in connection.execute(statement))
    return ActionResult(done, sorted(set(job_ids) - set(done)))


def in_seconds(seconds: float) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)
