"""What the dashboard's pages read, as typed results: Core statements with bound
parameters only (no SQL is built from a request), each kept cheap on large tables.

- The overview's counts of live jobs come from :mod:`sqla_pgjobs.metrics.database_state`
  (exact on a small table, sampled above :data:`~sqla_pgjobs.metrics.database_state.
  EXACT_PAGES`), its finished runs from the history rows of the last day only: the history
  has no index on ``finished_at``, but its ids grow with it (rows are written when jobs
  finish), so the first id of the day is found by a binary search over the primary key
  (:func:`_first_history_id`, about 20 probes) and only the day's rows are read.
- Listings are keyset-paginated on ``id`` (newest first), which the primary key serves
  with any filter, and ``LIMIT``-ed. Their total is exact when one page holds every match,
  and otherwise the planner's estimate (``EXPLAIN``), which costs no scan.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, func, select
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import ClauseElement, Executable

from sqla_pgjobs import admin
from sqla_pgjobs import validation as check
from sqla_pgjobs.dashboard.charts import Bucket
from sqla_pgjobs.errors import InvalidArgumentError
from sqla_pgjobs.filters import job_filters
from sqla_pgjobs.history import HistoryView, history_of
from sqla_pgjobs.metrics import database_state
from sqla_pgjobs.tables import (
    job_history,
    job_queues,
    job_trace_contexts,
    jobs,
    scheduled_jobs,
)

if TYPE_CHECKING:
    import uuid
    from collections.abc import Mapping

    from sqlalchemy.engine import Connection
    from sqlalchemy.sql.compiler import SQLCompiler
    from sqlalchemy.sql.elements import ColumnElement
    from sqlalchemy.sql.selectable import Select

__all__ = [
    "DEFAULT_LIMIT",
    "MAX_LIMIT",
    "BadInput",
    "JobFilter",
    "JobPage",
    "Overview",
    "finished_jobs",
    "job_detail",
    "live_jobs",
    "matching_ids",
    "overview",
    "parse_filter",
    "queues",
    "schedules",
    "workers",
]

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
#: Below this many history rows (the planner's count) the day's finishes are found by
#: reading the table; above it, from the first id of the day on.
HISTORY_SCAN_ROWS = 50_000
#: History ids written out of order by at most this much are still counted: rows get
#: their ids when written, and a transaction's finished_at is its start, so a long one
#: can write an older time after a newer one.
HISTORY_ID_SLACK = 10_000
#: From this many jobs (the planner's count) on, a listing whose filter an optional index
#: would serve, and which is not built, says so (sql/indexes.sql).
INDEX_HINT_ROWS = 100_000
#: The charts' span: the last day, an hour a bar.
HOURS = 24


class BadInput(InvalidArgumentError):
    """A filter or form value the dashboard refuses (HTTP 400), naming the value and what
    is allowed."""


# --- Filters ------------------------------------------------------------------------------


@dataclass(frozen=True)
class JobFilter:
    """The jobs a listing or a bulk action is about, read from a query string or a form."""

    state: str | None = None  # live jobs: one of admin.STATES
    outcome: str | None = None  # finished jobs: one of validation.OUTCOMES
    task: str | None = None
    queue: str | None = None
    tenant: uuid.UUID | None = None
    key: str | None = None
    payload: Any = None  # JSON containment (@>)
    payload_text: str | None = None  # as typed, to show it back
    since: datetime | None = None
    until: datetime | None = None
    before: int | None = None  # keyset: ids below this one
    limit: int = DEFAULT_LIMIT

    def params(self) -> dict[str, str]:
        """The filter as query parameters (without the page position), to link to it."""
        values = {
            "state": self.state,
            "outcome": self.outcome,
            "task": self.task,
            "queue": self.queue,
            "tenant": str(self.tenant) if self.tenant else None,
            "key": self.key,
            "payload": self.payload_text,
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
            "limit": str(self.limit) if self.limit != DEFAULT_LIMIT else None,
        }
        return {name: value for name, value in values.items() if value is not None}

    @property
    def narrowed(self) -> bool:
        """Whether any filter is set (bulk actions need one, or an explicit "all")."""
        return any(
            value is not None
            for value in (
                self.state,
                self.outcome,
                self.task,
                self.queue,
                self.tenant,
                self.key,
                self.payload,
                self.since,
                self.until,
            )
        )


FILTER_FIELDS = (
    "state",
    "outcome",
    "task",
    "queue",
    "tenant",
    "key",
    "payload",
    "since",
    "until",
    "before",
    "limit",
)


def _time(name: str, text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise BadInput(
            name,
            text,
            "it must be an ISO 8601 time such as 2026-12-07T10:00 or "
            "2026-12-07T10:00+01:00 (UTC when it names no offset)",
        ) from None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _integer(name: str, text: str, low: int, high: int) -> int:
    try:
        value = int(text)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise BadInput(name, text, f"it must be a whole number from {low} to {high}")
    return value


def parse_filter(params: Mapping[str, str], *, finished: bool = False) -> JobFilter:
    """A :class:`JobFilter` from query parameters or form fields (empty ones are unset);
    a bad value raises :class:`BadInput` naming it and what is allowed."""
    raw = {name: params.get(name, "").strip() for name in FILTER_FIELDS}
    given = {name: value for name, value in raw.items() if value}
    state = given.get("state")
    outcome = given.get("outcome")
    if finished and state is not None:
        raise BadInput("state", state, "finished jobs are filtered by outcome, not state")
    if not finished and outcome is not None:
        raise BadInput("outcome", outcome, "live jobs are filtered by state, not outcome")
    if state is not None and state not in admin.STATES:
        raise BadInput("state", state, f"it must be one of {', '.join(admin.STATES)}")
    if outcome is not None and outcome not in check.OUTCOMES:
        raise BadInput("outcome", outcome, f"it must be one of {', '.join(check.OUTCOMES)}")
    payload: Any = None
    if "payload" in given:
        try:
            payload = json.loads(given["payload"])
        except ValueError:
            raise BadInput(
                "payload",
                given["payload"],
                'it must be JSON, such as {"account_id": 42} (jobs whose payload contains it)',
            ) from None
    try:
        tenant = check.check_tenant("tenant", given.get("tenant"))
        for name in ("task", "queue"):
            check.check_name(name, given.get(name), optional=True)
        check.check_key("key", given.get("key"))
    except InvalidArgumentError as exc:
        raise BadInput(exc.argument, exc.value, exc.allowed) from None
    since = _time("since", given["since"]) if "since" in given else None
    until = _time("until", given["until"]) if "until" in given else None
    before = _integer("before", given["before"], 1, 2**63 - 1) if "before" in given else None
    limit = _integer("limit", given["limit"], 1, MAX_LIMIT) if "limit" in given else DEFAULT_LIMIT
    return JobFilter(
        state=state,
        outcome=outcome,
        task=given.get("task"),
        queue=given.get("queue"),
        tenant=tenant,
        key=given.get("key"),
        payload=payload,
        payload_text=given.get("payload"),
        since=since,
        until=until,
        before=before,
        limit=limit,
    )


def _conditions(
    table: Any, f: JobFilter, tenant: uuid.UUID | None, time_column: str
) -> list[ColumnElement[bool]]:
    # The app has checked that f.tenant is None or the dashboard's own tenant.
    conditions = job_filters(
        table, task=f.task, queue=f.queue, tenant=f.tenant or tenant, key=f.key, payload=f.payload
    )
    if f.since is not None:
        conditions.append(table.c[time_column] >= f.since)
    if f.until is not None:
        conditions.append(table.c[time_column] < f.until)
    if f.state is not None and table is jobs:
        conditions.append(admin.state_condition(f.state))
    if f.outcome is not None and table is job_history:
        conditions.append(job_history.c.outcome == f.outcome)
    return conditions


# --- Estimates ----------------------------------------------------------------------------


class _Explain(Executable, ClauseElement):
    """``EXPLAIN (FORMAT JSON) <statement>``, with the statement's bound parameters."""

    inherit_cache = False

    def __init__(self, statement: Select[Any]) -> None:
        self.statement = statement


@compiles(_Explain)
def _compile_explain(element: _Explain, compiler: SQLCompiler, **kw: Any) -> str:
    return "EXPLAIN (FORMAT JSON) " + compiler.process(element.statement, **kw)


def estimated_rows(connection: Connection, statement: Select[Any]) -> int:
    """The planner's estimate of the rows ``statement`` returns (no row is read)."""
    plan = connection.execute(_Explain(statement)).scalar_one()
    if isinstance(plan, str):
        plan = json.loads(plan)
    return int(plan[0]["Plan"]["Plan Rows"])


# --- Listings -----------------------------------------------------------------------------


@dataclass(frozen=True)
class JobPage:
    """One page of a listing: its rows, the id to continue before (None on the last page)
    and the matches in all, exact or estimated."""

    rows: list[Any]
    next_before: int | None
    total: int
    estimated: bool
    #: The optional indexes that would serve this filter and are not built (a large
    #: table only): the page says how to add them.
    missing_indexes: list[str] = field(default_factory=list)


def _page(
    connection: Connection,
    table: Any,
    columns: list[Any],
    conditions: list[ColumnElement[bool]],
    f: JobFilter,
) -> tuple[list[Any], int | None, int, bool]:
    where = list(conditions)
    if f.before is not None:
        where.append(table.c.id < f.before)
    rows = list(
        connection.execute(
            select(*columns)
            .where(and_(True, *where))
            .order_by(table.c.id.desc())
            .limit(f.limit + 1)
        ).mappings()
    )
    more = len(rows) > f.limit
    rows = rows[: f.limit]
    next_before = rows[-1]["id"] if more else None
    if f.before is None and not more:
        return rows, None, len(rows), False
    total = estimated_rows(connection, select(table.c.id).where(and_(True, *conditions)))
    return rows, next_before, max(total, len(rows)), True


def live_jobs(connection: Connection, f: JobFilter, tenant: uuid.UUID | None) -> JobPage:
    """Jobs in the queue matching ``f``, newest first."""
    conditions = _conditions(jobs, f, tenant, "created_at")
    rows, next_before, total, estimated = _page(
        connection, jobs, [*jobs.c, admin.job_state()], conditions, f
    )
    return JobPage(
        [admin.JobView(**row) for row in rows],
        next_before,
        total,
        estimated,
        _missing_indexes(connection, f),
    )


def _missing_indexes(connection: Connection, f: JobFilter) -> list[str]:
    """The optional indexes (sql/indexes.sql) that would serve ``f``, not built (or left
    invalid) on a jobs table of INDEX_HINT_ROWS or more."""
    from sqla_pgjobs.database import mapped_schema
    from sqla_pgjobs.schema import built_indexes

    serving = [
        name
        for name, used in (("failed", f.state == "failed"), ("payload", f.payload is not None))
        if used
    ]
    if not serving:
        return []
    rows = _planned_rows(connection, "jobs")
    if rows is None or rows < INDEX_HINT_ROWS:
        return []
    built = built_indexes(connection, mapped_schema(connection))
    return [name for name in serving if not built.get(name)]


def finished_jobs(connection: Connection, f: JobFilter, tenant: uuid.UUID | None) -> JobPage:
    """Finished runs (the history) matching ``f``, newest first."""
    conditions = _conditions(job_history, f, tenant, "finished_at")
    rows, next_before, total, estimated = _page(
        connection, job_history, list(job_history.c), conditions, f
    )
    return JobPage([HistoryView(**row) for row in rows], next_before, total, estimated)


def matching_ids(
    connection: Connection, f: JobFilter, tenant: uuid.UUID | None, *, cap: int
) -> list[int]:
    """The ids of at most ``cap`` live jobs matching ``f`` (the bulk actions' selection),
    oldest first."""
    conditions = _conditions(jobs, f, tenant, "created_at")
    rows = connection.execute(
        select(jobs.c.id).where(and_(True, *conditions)).order_by(jobs.c.id).limit(cap)
    )
    return [row.id for row in rows]


def finished_ids(
    connection: Connection, f: JobFilter, tenant: uuid.UUID | None, *, cap: int
) -> list[int]:
    """The job ids of at most ``cap`` finished runs matching ``f`` that retry can enqueue
    again (failed, cancelled or discarded, and no longer in the queue), newest first."""
    conditions = _conditions(job_history, f, tenant, "finished_at")
    conditions.append(job_history.c.outcome.in_(admin.RETRYABLE_OUTCOMES))
    newest = (
        select(job_history.c.job_id, func.max(job_history.c.id).label("last"))
        .where(and_(True, *conditions))
        .group_by(job_history.c.job_id)
        .order_by(func.max(job_history.c.id).desc())
        .limit(cap)
    )
    return [row.job_id for row in connection.execute(newest)]


def owned_ids(connection: Connection, job_ids: list[int], tenant: uuid.UUID | None) -> list[int]:
    """Of ``job_ids``, those of ``tenant`` (live or finished): a dashboard limited to a
    tenant acts on nothing else. All of them when there is no tenant."""
    if tenant is None:
        return job_ids
    live = select(jobs.c.id).where(jobs.c.id.in_(job_ids), jobs.c.database_id == tenant)
    done = select(job_history.c.job_id).where(
        job_history.c.job_id.in_(job_ids), job_history.c.database_id == tenant
    )
    found = {row[0] for row in connection.execute(live.union(done))}
    return [job_id for job_id in job_ids if job_id in found]


# --- The overview -------------------------------------------------------------------------


@dataclass
class TaskRow:
    """One task in one queue: its live jobs by state and its finishes."""

    task_identifier: str
    queue_name: str | None
    due: int = 0
    delayed: int = 0
    running: int = 0
    failed: int = 0
    finished_hour: int = 0
    finished_day: int = 0
    not_completed_day: int = 0


@dataclass(frozen=True)
class Overview:
    """The overview page: counts by task and queue, totals, the last day's finishes per
    hour, the oldest due job's wait, workers and late schedules."""

    rows: list[TaskRow]
    totals: dict[str, int]
    estimated: bool
    buckets: list[Bucket]
    finished_hour: int
    finished_day: int
    oldest_due_seconds: float
    workers_alive: int
    workers_registered: int
    schedules: int
    schedules_late: int
    paused_queues: list[str] = field(default_factory=list)
    now: datetime = field(default_factory=lambda: datetime.now(UTC))


def _first_history_id(connection: Connection, cutoff: datetime) -> int | None:
    """The first history id finished at or after ``cutoff``, by binary search over the
    primary key (None: read the whole table, it is small)."""
    rows = _planned_rows(connection, "job_history")
    if rows is None or rows < HISTORY_SCAN_ROWS:
        return None
    low, high = connection.execute(
        select(func.min(job_history.c.id), func.max(job_history.c.id))
    ).one()
    if low is None:
        return None
    high += 1
    while low < high:
        middle = (low + high) // 2
        finished = connection.execute(
            select(job_history.c.finished_at)
            .where(job_history.c.id >= middle)
            .order_by(job_history.c.id)
            .limit(1)
        ).scalar()
        if finished is not None and finished < cutoff:
            low = middle + 1
        else:
            high = middle
    return int(max(low - HISTORY_ID_SLACK, 0))


def _planned_rows(connection: Connection, table: str) -> float | None:
    """The planner's row count of the job schema's ``table`` (None: never analyzed)."""
    from sqla_pgjobs.database import mapped_schema
    from sqla_pgjobs.schema import quote_schema

    qualified = f"{quote_schema(mapped_schema(connection))}.{table}"
    rows: float | None = connection.execute(
        select(database_state.pg_class.c.reltuples).where(
            database_state.pg_class.c.oid == func.to_regclass(qualified)
        )
    ).scalar()
    return rows


def _live_counts(
    connection: Connection, tenant: uuid.UUID | None
) -> tuple[list[admin.JobCount], bool]:
    if tenant is None:
        counted = database_state.job_counts(connection)
        return counted.counts, counted.estimated
    # One tenant's jobs: counted exactly (there is no index on database_id, so this reads
    # the table; a dashboard per tenant on a very large table is the slow case).
    state = admin.job_state()
    rows = connection.execute(
        select(jobs.c.task_identifier, jobs.c.queue_name, state, func.count().label("jobs"))
        .where(jobs.c.database_id == tenant)
        .group_by(jobs.c.task_identifier, jobs.c.queue_name, state)
    ).mappings()
    return [admin.JobCount(**row) for row in rows], False


def overview(connection: Connection, tenant: uuid.UUID | None) -> Overview:
    """Everything on the overview page, in one transaction."""
    now: datetime = connection.execute(select(func.now())).scalar_one()
    counts, estimated = _live_counts(connection, tenant)
    by_key: dict[tuple[str, str | None], TaskRow] = {}

    def row_for(task: str, queue: str | None) -> TaskRow:
        return by_key.setdefault((task, queue), TaskRow(task, queue))

    totals = dict.fromkeys(admin.STATES, 0)
    for count in counts:
        row = row_for(count.task_identifier, count.queue_name)
        setattr(row, count.state, getattr(row, count.state) + count.jobs)
        totals[count.state] += count.jobs

    day_start = now - timedelta(hours=HOURS)
    first_hour = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=HOURS - 1)
    # The last 24 hours reach back into the hour before the charts' first bar.
    conditions: list[ColumnElement[bool]] = [job_history.c.finished_at >= day_start]
    first_id = _first_history_id(connection, day_start)
    if first_id is not None:
        conditions.append(job_history.c.id >= first_id)
    if tenant is not None:
        conditions.append(job_history.c.database_id == tenant)
    hour = func.date_trunc("hour", job_history.c.finished_at).label("hour")
    completed = job_history.c.outcome == "completed"
    finishes = connection.execute(
        select(
            job_history.c.task_identifier,
            job_history.c.queue_name,
            hour,
            func.count().label("runs"),
            func.count().filter(completed).label("completed"),
            func.count()
            .filter(job_history.c.finished_at >= now - timedelta(hours=1))
            .label("last_hour"),
            func.count().filter(job_history.c.finished_at >= day_start).label("last_day"),
            func.count()
            .filter(and_(job_history.c.finished_at >= day_start, ~completed))
            .label("not_completed_day"),
        )
        .where(*conditions)
        .group_by(job_history.c.task_identifier, job_history.c.queue_name, hour)
    ).mappings()
    hourly: dict[datetime, list[int]] = {}
    finished_hour = finished_day = 0
    for finish in finishes:
        row = row_for(finish["task_identifier"], finish["queue_name"])
        row.finished_hour += finish["last_hour"]
        row.finished_day += finish["last_day"]
        row.not_completed_day += finish["not_completed_day"]
        finished_hour += finish["last_hour"]
        finished_day += finish["last_day"]
        tally = hourly.setdefault(finish["hour"].astimezone(UTC), [0, 0])
        tally[0] += finish["completed"]
        tally[1] += finish["runs"] - finish["completed"]
    # The wait of each run that started: from its run_at to its (last) start.
    wait = func.extract("epoch", job_history.c.started_at - job_history.c.run_at)
    waits = {
        row.hour.astimezone(UTC): (max(0.0, row.p50), max(0.0, row.p95))
        for row in connection.execute(
            select(
                hour,
                func.percentile_cont(0.5).within_group(wait).label("p50"),
                func.percentile_cont(0.95).within_group(wait).label("p95"),
            )
            .where(*conditions, job_history.c.started_at.is_not(None), hour >= first_hour)
            .group_by(hour)
        )
    }
    buckets = []
    for index in range(HOURS):
        start = (first_hour + timedelta(hours=index)).astimezone(UTC)
        done, not_done = hourly.get(start, [0, 0])
        p50, p95 = waits.get(start, (None, None))
        buckets.append(Bucket(start, done, not_done, p50, p95))

    workers = database_state.worker_counts(connection)
    lag = database_state.schedule_lag(connection)
    paused = [p.name for p in admin.list_pauses(connection) if p.kind == "queue"]
    rows = sorted(by_key.values(), key=lambda r: (r.task_identifier, r.queue_name or ""))
    return Overview(
        rows=rows,
        totals=totals,
        estimated=estimated,
        buckets=buckets,
        finished_hour=finished_hour,
        finished_day=finished_day,
        oldest_due_seconds=_oldest_due(connection, tenant),
        workers_alive=workers.alive,
        workers_registered=workers.registered,
        schedules=lag.schedules,
        schedules_late=lag.overdue,
        paused_queues=paused,
        now=now,
    )


def _oldest_due(connection: Connection, tenant: uuid.UUID | None) -> float:
    if tenant is None:
        return database_state.oldest_due_seconds(connection)
    row = connection.execute(
        select(func.min(jobs.c.run_at), func.now()).where(
            admin.state_condition("due"), jobs.c.database_id == tenant
        )
    ).one()
    return 0.0 if row[0] is None else max(0.0, (row[1] - row[0]).total_seconds())


# --- One job ------------------------------------------------------------------------------


@dataclass(frozen=True)
class TimelineEntry:
    at: datetime
    what: str


@dataclass(frozen=True)
class JobDetail:
    """A job: its live row (None once finished), its finishes, its trace id, and what
    happened when."""

    job_id: int
    live: admin.JobView | None
    finishes: list[HistoryView]
    trace_id: str | None
    trace_context: Any
    cancel_requested: datetime | None
    timeline: list[TimelineEntry]

    @property
    def task_identifier(self) -> str:
        return self.live.task_identifier if self.live else self.finishes[-1].task_identifier

    @property
    def payload(self) -> Any:
        return self.live.payload if self.live else self.finishes[-1].payload

    @property
    def state(self) -> str:
        return self.live.state if self.live else self.finishes[-1].outcome

    @property
    def tenant(self) -> uuid.UUID | None:
        return self.live.database_id if self.live else self.finishes[-1].database_id

    @property
    def retryable(self) -> bool:
        """Whether retry applies: a live job not running, or a finish that did not
        complete (enqueued again as a new job)."""
        if self.live is not None:
            return self.live.state != "running"
        return self.finishes[-1].outcome in admin.RETRYABLE_OUTCOMES


def _trace_id(context: Any) -> str | None:
    if isinstance(context, str):
        try:
            context = json.loads(context)
        except ValueError:
            return None
    parent = context.get("traceparent") if isinstance(context, dict) else None
    if isinstance(parent, str) and parent.count("-") == 3:
        return parent.split("-")[1]
    return None


def _attempts(count: int) -> str:
    return f"{count} attempt" if count == 1 else f"{count} attempts"


def job_detail(connection: Connection, job_id: int, tenant: uuid.UUID | None) -> JobDetail | None:
    """One job (live or finished), or None when there is no such job (for ``tenant``)."""
    live = admin.show_job(connection, job_id)
    finishes = history_of(connection, job_id)
    if live is None and not finishes:
        return None
    owner = live.database_id if live else finishes[-1].database_id
    if tenant is not None and owner != tenant:
        return None
    context = connection.execute(
        select(job_trace_contexts.c.context).where(job_trace_contexts.c.job_id == job_id)
    ).scalar()
    requested = admin.cancel_requested_at(connection, job_id)
    timeline: list[TimelineEntry] = []
    first = live or finishes[0]
    timeline.append(TimelineEntry(first.created_at, "enqueued"))
    for finish in finishes:
        if finish.first_started_at and finish.first_started_at != finish.started_at:
            timeline.append(TimelineEntry(finish.first_started_at, "first attempt started"))
        if finish.started_at:
            timeline.append(
                TimelineEntry(
                    finish.started_at, f"attempt {finish.attempts} started on {finish.worker_id}"
                )
            )
        timeline.append(
            TimelineEntry(
                finish.finished_at, f"{finish.outcome} after {_attempts(finish.attempts)}"
            )
        )
    if live is not None:
        if live.locked_at:
            timeline.append(
                TimelineEntry(
                    live.locked_at, f"attempt {live.attempts} started on {live.locked_by}"
                )
            )
        elif live.state in ("due", "delayed"):
            label = "runs" if live.attempts == 0 else f"attempt {live.attempts + 1} runs"
            timeline.append(TimelineEntry(live.run_at, f"{label} at the earliest"))
    if requested is not None:
        timeline.append(TimelineEntry(requested, "cancel requested"))
    timeline.sort(key=lambda entry: entry.at)
    return JobDetail(
        job_id=job_id,
        live=live,
        finishes=finishes,
        trace_id=_trace_id(context),
        trace_context=context,
        cancel_requested=requested,
        timeline=timeline,
    )


# --- Workers, schedules, queues ------------------------------------------------------------


@dataclass(frozen=True)
class WorkerRow:
    view: admin.WorkerView
    jobs_held: int
    oldest_lock: datetime | None


def workers(connection: Connection, tenant: uuid.UUID | None) -> list[WorkerRow]:
    """The registered workers and the jobs each holds (of ``tenant`` only, when given), and
    the holders of jobs that never registered (the Node worker heartbeats nothing)."""
    conditions: list[ColumnElement[bool]] = [jobs.c.locked_at.is_not(None)]
    if tenant is not None:
        conditions.append(jobs.c.database_id == tenant)
    held = {
        row.locked_by: (row.jobs, row.oldest)
        for row in connection.execute(
            select(
                jobs.c.locked_by,
                func.count().label("jobs"),
                func.min(jobs.c.locked_at).label("oldest"),
            )
            .where(*conditions)
            .group_by(jobs.c.locked_by)
        )
    }
    rows = []
    for view in admin.list_workers(connection):
        count, oldest = held.pop(view.worker_id, (0, None))
        rows.append(WorkerRow(view, count, oldest))
    for worker_id, (count, oldest) in sorted(held.items()):
        # Held by a worker id that never registered (the Node worker heartbeats nothing).
        unregistered = admin.WorkerView(worker_id, False, oldest, 0.0, 0.0, oldest, None)
        rows.append(WorkerRow(unregistered, count, oldest))
    return rows


@dataclass(frozen=True)
class ScheduleRow:
    view: admin.ScheduleView
    lag_seconds: float | None  # how late its next fire after the last one is; None: not late


def schedules(connection: Connection, tenant: uuid.UUID | None) -> list[ScheduleRow]:
    """The scheduled jobs (of ``tenant`` only, when given), with their next fire time in
    their time zone and how late they are."""
    from sqla_pgjobs.schedules import InvalidScheduleError, parse_schedule

    views = admin.list_schedules(connection)
    if tenant is not None:
        ids = {
            row.id
            for row in connection.execute(
                select(scheduled_jobs.c.id).where(scheduled_jobs.c.database_id == tenant)
            )
        }
        views = [view for view in views if view.id in ids]
    now = datetime.now(UTC)
    rows = []
    for view in views:
        lag = None
        if view.last_scheduled is not None:
            try:
                fire = parse_schedule(view.schedule_info).next_fire(view.last_scheduled)
            except InvalidScheduleError:
                fire = None
            if fire is not None and fire < now:
                lag = (now - fire).total_seconds()
        rows.append(ScheduleRow(view, lag))
    return rows


@dataclass(frozen=True)
class QueueRow:
    name: str | None
    paused: bool
    paused_at: datetime | None
    paused_by: str | None
    job_count: int | None  # app_jobs.job_queues (kept exact by the schema), named queues
    due: int
    delayed: int
    running: int
    failed: int


def queues(connection: Connection, tenant: uuid.UUID | None) -> tuple[list[QueueRow], bool]:
    """Every queue that has jobs or is paused, with its jobs by state (estimated on a
    large table, as on the overview); whether the counts are estimates."""
    counts, estimated = _live_counts(connection, tenant)
    by_queue: dict[str | None, dict[str, int]] = {}
    for count in counts:
        states = by_queue.setdefault(count.queue_name, dict.fromkeys(admin.STATES, 0))
        states[count.state] += count.jobs
    exact: dict[str | None, int] = {}
    if tenant is None:
        exact = {
            row.queue_name: row.job_count
            for row in connection.execute(select(job_queues.c.queue_name, job_queues.c.job_count))
        }
    paused = {pause.name: pause for pause in admin.list_pauses(connection) if pause.kind == "queue"}
    names = sorted(
        set(by_queue) | set(exact) | (set(paused) if tenant is None else set()),
        key=lambda name: (name is not None, name or ""),
    )
    rows = []
    for name in names:
        states = by_queue.get(name, dict.fromkeys(admin.STATES, 0))
        pause = paused.get(name) if name is not None else None
        rows.append(
            QueueRow(
                name=name,
                paused=pause is not None,
                paused_at=pause.paused_at if pause else None,
                paused_by=pause.paused_by if pause else None,
                job_count=exact.get(name),
                **states,
            )
        )
    return rows, estimated
