"""What operators see and do: views of the queue over a connection, with typed results, and
the actions on jobs (``pgjobs status``, ``pgjobs jobs ...``, ``pgjobs schedules``).

The views read the tables (an ``operator`` role may); the actions go through the SQL admin
functions, which leave alone the jobs live workers hold unless ``force`` is given. Every
function takes a Connection mapped to the job schema's name (see
:func:`sqla_pgjobs.database.on_schema`) and runs in its transaction.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, case, exists, func, literal, or_, select

from sqla_pgjobs import functions as fn
from sqla_pgjobs.errors import InvalidArgumentError
from sqla_pgjobs.filters import job_filters
from sqla_pgjobs.schedules import InvalidScheduleError, parse_schedule
from sqla_pgjobs.tables import (
    cancel_requests,
    job_history,
    jobs,
    pauses,
    scheduled_jobs,
    workers,
)

if TYPE_CHECKING:
    import uuid
    from collections.abc import Sequence

    from sqlalchemy.engine import Connection
    from sqlalchemy.sql.elements import ColumnElement
    from sqlalchemy.sql.expression import FromClause

__all__ = [
    "RETRYABLE_OUTCOMES",
    "STATES",
    "ActionResult",
    "CancelResult",
    "Holder",
    "JobCount",
    "JobView",
    "PauseView",
    "QueueView",
    "ScheduleView",
    "Status",
    "WorkerView",
    "as_json",
    "cancel",
    "cancel_requested_at",
    "delete",
    "fail",
    "job_state",
    "list_jobs",
    "list_pauses",
    "list_queues",
    "list_schedules",
    "list_workers",
    "reschedule",
    "retry",
    "show_job",
    "state_condition",
    "status",
]

#: What a job is doing: waiting its turn, waiting for its run_at (or a retry), held by a
#: worker, or failed for good (its attempts are used up).
STATES = ("due", "delayed", "running", "failed")


# --- What the views return ----------------------------------------------------------------


@dataclass(frozen=True)
class JobView:
    """A job as operators see it: its row of ``app_jobs.jobs`` and its state."""

    id: int
    database_id: uuid.UUID | None
    queue_name: str | None
    task_identifier: str
    payload: Any
    priority: int
    run_at: datetime
    attempts: int
    max_attempts: int
    key: str | None
    last_error: str | None
    locked_at: datetime | None
    locked_by: str | None
    created_at: datetime
    updated_at: datetime
    state: str


@dataclass(frozen=True)
class JobCount:
    """How many jobs of one task, in one queue, are in one state."""

    task_identifier: str
    queue_name: str | None
    state: str
    jobs: int


@dataclass(frozen=True)
class Holder:
    """A worker id holding jobs, and since when it holds the oldest of them."""

    locked_by: str
    jobs: int
    oldest_lock: datetime


@dataclass(frozen=True)
class WorkerView:
    """A registered worker (one that heartbeats)."""

    worker_id: str
    alive: bool
    last_heartbeat: datetime
    seconds_since_heartbeat: float
    heartbeat_timeout: float  # seconds
    started_at: datetime
    info: Any


@dataclass(frozen=True)
class ScheduleView:
    """A scheduled job, with its schedule described and its next fire time in the
    schedule's own time zone (None when it will not fire again, or cannot be read)."""

    id: int
    task_identifier: str
    schedule_info: Any
    locked_by: str | None
    lease_expires_at: datetime | None
    last_scheduled: datetime | None
    schedule: str
    next_fire: str | None


@dataclass(frozen=True)
class QueueView:
    """A queue (``name`` None: jobs without a queue), its jobs by state, and whether it is
    paused (schema version 2)."""

    name: str | None
    paused: bool
    due: int
    delayed: int
    running: int
    failed: int


@dataclass(frozen=True)
class PauseView:
    """A paused queue or task: ``kind`` is ``queue`` or ``task``."""

    kind: str
    name: str
    paused_at: datetime
    paused_by: str


@dataclass(frozen=True)
class Status:
    """The queue at a glance."""

    totals: dict[str, int]
    by_task: list[JobCount]
    held: list[Holder]
    workers: list[WorkerView]
    schedules: list[ScheduleView]


def as_json(value: Any) -> Any:
    """A view (or a list of views) as plain data for ``json.dumps`` (times, UUIDs and
    intervals stay Python objects: give ``json.dumps`` a ``default`` for them)."""
    if isinstance(value, list):
        return [as_json(item) for item in value]
    return dataclasses.asdict(value)


# --- Views --------------------------------------------------------------------------------


def job_state(source: FromClause = jobs) -> ColumnElement[str]:
    """The state of a row of ``app_jobs.jobs`` (one of :data:`STATES`), as a column of
    ``source`` (the table, or an alias or sample of it): the one rule for it (the views
    here and :mod:`sqla_pgjobs.metrics` use it)."""
    c = source.c
    return case(
        (c.locked_at.is_not(None), literal("running")),
        (c.attempts >= c.max_attempts, literal("failed")),
        (c.run_at > func.now(), literal("delayed")),
        else_=literal("due"),
    ).label("state")


def state_condition(state: str) -> ColumnElement[bool]:
    """The condition on ``app_jobs.jobs`` for jobs in ``state`` (one of :data:`STATES`):
    the rule of :func:`job_state`, written so that "running" can use the index of locked
    jobs."""
    unlocked = jobs.c.locked_at.is_(None)
    alive = jobs.c.attempts < jobs.c.max_attempts
    return {
        "running": jobs.c.locked_at.is_not(None),
        "failed": and_(unlocked, jobs.c.attempts >= jobs.c.max_attempts),
        "delayed": and_(unlocked, alive, jobs.c.run_at > func.now()),
        "due": and_(unlocked, alive, jobs.c.run_at <= func.now()),
    }[state]


def status(connection: Connection) -> Status:
    """Queue depth by task, queue and state; who holds what since when; the workers; the
    schedules."""
    state = job_state()
    depth = [
        JobCount(**row)
        for row in connection.execute(
            select(jobs.c.task_identifier, jobs.c.queue_name, state, func.count().label("jobs"))
            .group_by(jobs.c.task_identifier, jobs.c.queue_name, state)
            .order_by(jobs.c.task_identifier, jobs.c.queue_name, state)
        ).mappings()
    ]
    held = [
        Holder(**row)
        for row in connection.execute(
            select(
                jobs.c.locked_by,
                func.count().label("jobs"),
                func.min(jobs.c.locked_at).label("oldest_lock"),
            )
            .where(jobs.c.locked_at.is_not(None))
            .group_by(jobs.c.locked_by)
            .order_by(jobs.c.locked_by)
        ).mappings()
    ]
    totals = dict.fromkeys(STATES, 0)
    for count in depth:
        totals[count.state] += count.jobs
    return Status(totals, depth, held, list_workers(connection), list_schedules(connection))


def list_queues(connection: Connection) -> list[QueueView]:
    """Every queue that has jobs or is paused, with its jobs by state (jobs without a
    queue first, as ``name`` None); one scan of the jobs table."""
    state = job_state()
    counts: dict[str | None, dict[str, int]] = {}
    for row in connection.execute(
        select(jobs.c.queue_name, state, func.count().label("jobs")).group_by(
            jobs.c.queue_name, state
        )
    ).mappings():
        counts.setdefault(row["queue_name"], dict.fromkeys(STATES, 0))[row["state"]] = row["jobs"]
    paused = {pause.name for pause in list_pauses(connection) if pause.kind == "queue"}
    names = sorted(set(counts) | paused, key=lambda name: (name is not None, name or ""))
    return [
        QueueView(name, name in paused, **counts.get(name, dict.fromkeys(STATES, 0)))
        for name in names
    ]


def list_pauses(connection: Connection) -> list[PauseView]:
    """The paused queues and tasks, oldest pause first."""
    rows = connection.execute(select(pauses).order_by(pauses.c.paused_at, pauses.c.kind))
    return [PauseView(**row) for row in rows.mappings()]


def list_workers(connection: Connection) -> list[WorkerView]:
    """The registered workers, by id, and whether each is alive."""
    # app_jobs.alive_until: the schema's one rule for "alive" (a restart of PostgreSQL
    # counts as every worker's heartbeat).
    alive = fn.alive_until(workers.c.last_heartbeat, workers.c.heartbeat_timeout) >= func.now()
    rows = connection.execute(
        select(workers, alive.label("alive"), func.now().label("now")).order_by(workers.c.worker_id)
    ).mappings()
    return [
        WorkerView(
            worker_id=row["worker_id"],
            alive=bool(row["alive"]),
            last_heartbeat=row["last_heartbeat"],
            seconds_since_heartbeat=round((row["now"] - row["last_heartbeat"]).total_seconds(), 1),
            heartbeat_timeout=row["heartbeat_timeout"].total_seconds(),
            started_at=row["started_at"],
            info=row["info"],
        )
        for row in rows
    ]


def list_jobs(
    connection: Connection,
    *,
    task: str | None = None,
    queue: str | None = None,
    tenant: uuid.UUID | str | None = None,
    state: str | None = None,
    key: str | None = None,
    payload: Any = None,
    limit: int = 100,
) -> list[JobView]:
    """Jobs matching every filter given (see :func:`sqla_pgjobs.filters.job_filters`), in
    the order workers take them."""
    if state is not None and state not in STATES:
        raise InvalidArgumentError("state", state, f"it must be one of {', '.join(STATES)}")
    conditions = job_filters(jobs, task=task, queue=queue, tenant=tenant, key=key, payload=payload)
    if state is not None:
        conditions.append(state_condition(state))
    rows = connection.execute(
        select(jobs, job_state())
        .where(and_(True, *conditions))
        .order_by(jobs.c.priority, jobs.c.run_at, jobs.c.id)
        .limit(limit)
    ).mappings()
    return [JobView(**row) for row in rows]


def show_job(connection: Connection, job_id: int) -> JobView | None:
    """One job, or None when there is no such job (completed jobs are deleted)."""
    row = (
        connection.execute(select(jobs, job_state()).where(jobs.c.id == job_id))
        .mappings()
        .one_or_none()
    )
    return JobView(**row) if row is not None else None


def cancel_requested_at(connection: Connection, job_id: int) -> datetime | None:
    """When a cancel request for the running job ``job_id`` was made, or None when there
    is none (its worker stops it and ends it as cancelled; schema version 2)."""
    found: datetime | None = connection.execute(
        select(cancel_requests.c.requested_at).where(cancel_requests.c.job_id == job_id)
    ).scalar()
    return found


def list_schedules(connection: Connection) -> list[ScheduleView]:
    """Every scheduled job, by id, with its next fire time."""
    now = datetime.now(UTC)
    views = []
    for row in connection.execute(select(scheduled_jobs).order_by(scheduled_jobs.c.id)):
        try:
            schedule = parse_schedule(row.schedule_info)
        except InvalidScheduleError as exc:
            described, next_fire = f"invalid: {exc}", None
        else:
            after = max(now, row.last_scheduled) if row.last_scheduled else now
            fire = schedule.next_fire(after)
            described = schedule.describe()
            next_fire = fire.astimezone(schedule.tz).isoformat() if fire else None
        views.append(
            ScheduleView(
                id=row.id,
                task_identifier=row.task_identifier,
                schedule_info=row.schedule_info,
                locked_by=row.locked_by,
                lease_expires_at=row.lease_expires_at,
                last_scheduled=row.last_scheduled,
                schedule=described,
                next_fire=next_fire,
            )
        )
    return views


# --- Actions ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ActionResult:
    """The jobs an action changed, and those it left alone: held by a live worker (use
    ``force``), or no such job. ``requeued``: for :func:`retry`, the finished jobs enqueued
    again from their history, each with the id of its new job."""

    done: list[int]
    skipped: list[int]
    requeued: dict[int, int] = dataclasses.field(default_factory=dict)


#: The outcomes :func:`retry` enqueues a finished job again for.
RETRYABLE_OUTCOMES = ("failed", "cancelled", "discarded")


def retry(connection: Connection, job_ids: Sequence[int], *, force: bool = False) -> ActionResult:
    """Run failed or waiting jobs again now, with their attempts reset. A job no longer in
    the queue whose last finish was failed, cancelled or discarded is enqueued again from
    its history row (same task, payload, queue, priority, key, tenant and max attempts), as
    a new job: ``requeued`` maps its id to the new one."""
    statement = fn.reschedule_jobs(job_ids, run_at=datetime.now(UTC), attempts=0, force=force)
    acted = _acted(connection, statement, job_ids)
    requeued = _enqueue_again(connection, acted.skipped)
    skipped = [job_id for job_id in acted.skipped if job_id not in requeued]
    return ActionResult(acted.done, skipped, requeued)


def _enqueue_again(connection: Connection, job_ids: Sequence[int]) -> dict[int, int]:
    """Enqueue again the listed jobs that are no longer in the queue and whose last
    recorded finish is one of RETRYABLE_OUTCOMES; their new ids."""
    if not job_ids:
        return {}
    # The last finish of each job: a window rather than DISTINCT ON, whose spelling
    # SQLAlchemy 2.1 changed (select().distinct(column) is deprecated there).
    newest_first = func.row_number().over(
        partition_by=job_history.c.job_id, order_by=job_history.c.id.desc()
    )
    last = (
        select(job_history, newest_first.label("newest_first"))
        .where(job_history.c.job_id.in_(job_ids))
        .where(~exists().where(jobs.c.id == job_history.c.job_id))
        .subquery()
    )
    finishes = connection.execute(
        select(last).where(last.c.newest_first == 1, last.c.outcome.in_(RETRYABLE_OUTCOMES))
    ).mappings()
    new_ids: dict[int, int] = {}
    for finish in finishes:
        statement = fn.add_job(
            finish["task_identifier"],
            finish["payload"],
            db_id=finish["database_id"],
            job_key=finish["key"],
            queue_name=finish["queue_name"],
            max_attempts=finish["max_attempts"],
            priority=finish["priority"],
        )
        new_ids[finish["job_id"]] = connection.execute(statement).one().id
    return new_ids


@dataclass(frozen=True)
class CancelResult:
    """What :func:`cancel` did with each job, by result (one of
    :data:`sqla_pgjobs.functions.CANCEL_RESULTS`), ids in order."""

    by_result: dict[str, list[int]]

    def ids(self, *results: str) -> list[int]:
        """The jobs with any of these results, in order."""
        return sorted(job_id for result in results for job_id in self.by_result.get(result, []))


def cancel(
    connection: Connection,
    job_ids: Sequence[int] | None = None,
    *,
    task: str | None = None,
    queue: str | None = None,
    tenant: uuid.UUID | str | None = None,
    key: str | None = None,
    payload: Any = None,
) -> CancelResult:
    """Cancel the listed jobs, or, with filters instead (see :func:`sqla_pgjobs.filters.
    job_filters`), every job matching them that may still run, in one statement (see
    :func:`sqla_pgjobs.functions.cancel_jobs` for what becomes of each)."""
    conditions = job_filters(jobs, task=task, queue=queue, tenant=tenant, key=key, payload=payload)
    if (job_ids is None) == (not conditions):
        raise InvalidArgumentError(
            "job_ids",
            job_ids,
            "cancel takes job ids or filters (task, queue, tenant, key, payload), not both "
            "and not neither",
        )
    if job_ids is None:
        may_run = or_(jobs.c.locked_at.is_not(None), jobs.c.attempts < jobs.c.max_attempts)
        statement = fn.cancel_jobs(select(jobs.c.id).where(may_run, *conditions))
    else:
        statement = fn.cancel_jobs(job_ids)
    by_result: dict[str, list[int]] = {}
    for row in connection.execute(statement):
        by_result.setdefault(row.result, []).append(row.job_id)
    return CancelResult(by_result)


def fail(
    connection: Connection,
    job_ids: Sequence[int],
    *,
    message: str | None = None,
    force: bool = False,
) -> ActionResult:
    """Mark jobs failed for good, with ``message`` as their error: they are kept, and never
    run again."""
    return _acted(connection, fn.permanently_fail_jobs(job_ids, message, force=force), job_ids)


def reschedule(
    connection: Connection,
    job_ids: Sequence[int],
    *,
    run_at: datetime | None = None,
    priority: int | None = None,
    force: bool = False,
) -> ActionResult:
    """Move jobs in time (``run_at``), in priority, or both."""
    if run_at is None and priority is None:
        raise InvalidArgumentError("run_at", run_at, "reschedule needs run_at or priority")
    statement = fn.reschedule_jobs(job_ids, run_at=run_at, priority=priority, force=force)
    return _acted(connection, statement, job_ids)


def delete(connection: Connection, job_ids: Sequence[int], *, force: bool = False) -> ActionResult:
    """Delete jobs without running them (recorded in the history as discarded)."""
    return _acted(connection, fn.discard_jobs(job_ids, force=force), job_ids)


def _acted(
    connection: Connection, statement: fn.JobStatement, job_ids: Sequence[int]
) -> ActionResult:
    done = sorted(row.id for row in connection.execute(statement))
    return ActionResult(done, sorted(set(job_ids) - set(done)))
