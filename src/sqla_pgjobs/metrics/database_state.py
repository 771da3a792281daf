"""The state of a job database, for monitoring: jobs by task, queue and state, the age of
the oldest due job, live workers, late schedules. Functions over a connection mapped to the
job schema's name (:func:`sqla_pgjobs.database.on_schema`), with typed results;
``pgjobs metrics`` runs :func:`collect` on every scrape.

Each query stays cheap however large ``app_jobs.jobs`` grows (measured on 1,000,000 jobs:
``benchmarks/run.py``, "collector"):

- **Jobs by task, queue and state** can only be counted exactly by reading every row (0.8 s
  for 1,000,000 jobs on a 2-core machine). So the table is counted exactly while it is at
  most :data:`EXACT_PAGES` pages (8 KiB each: about 40,000 small jobs), and above that
  estimated from a sample of about :data:`SAMPLE_PAGES` random pages (``TABLESAMPLE
  SYSTEM``: every page is read with the same probability, counts are scaled by its
  inverse), whose cost does not grow with the table. The estimate's relative error is
  about one over the square root of the sampled jobs of a group: a few percent for a group
  holding 1% of the table, more for smaller groups; a group can be missing from one
  estimate and present in the next. :attr:`JobCounts.estimated` says which it was.
  Running jobs are always counted exactly (below).
- **Running jobs**: from ``jobs_locked_at_idx``, the partial index of locked jobs (a few per
  worker), exactly.
- **The oldest due job**: the head of each priority in ``jobs_available_idx`` (priority,
  run_at, id), which holds only the jobs that may run: one index probe per distinct
  priority (a loose index scan, written as a recursive CTE).
- **Workers** and **schedules**: their own small tables (one row per worker process, per
  schedule).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sqlalchemy import Column, Float, Integer, MetaData, Table, and_, cast, func, literal, select
from sqlalchemy.dialects.postgresql import REGCLASS

from sqla_pgjobs import functions as fn
from sqla_pgjobs.admin import STATES, JobCount, job_state
from sqla_pgjobs.database import mapped_schema
from sqla_pgjobs.schedules import InvalidScheduleError, parse_schedule
from sqla_pgjobs.schema import quote_schema
from sqla_pgjobs.tables import jobs, scheduled_jobs, workers

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection
    from sqlalchemy.sql.expression import FromClause

__all__ = [
    "EXACT_PAGES",
    "SAMPLE_PAGES",
    "DatabaseState",
    "JobCounts",
    "ScheduleLag",
    "WorkerCounts",
    "collect",
    "job_counts",
    "oldest_due_seconds",
    "schedule_lag",
    "worker_counts",
]

#: Up to this many pages (8 KiB) the jobs table is counted exactly: reading a page and
#: grouping its rows took 65 us on a 2-core machine, so about 30 ms at most.
EXACT_PAGES = 500
#: Above EXACT_PAGES, about this many random pages are read (2% of 1,000,000 small jobs:
#: 9 ms on the same machine), whatever the table's size.
SAMPLE_PAGES = 400


@dataclass(frozen=True)
class JobCounts:
    """Jobs by task, queue and state (every state of :data:`sqla_pgjobs.admin.STATES` that
    has jobs). ``estimated``: the due, delayed and failed counts were scaled from a sample
    of the table's pages (``pages`` of them in all); running ones are always exact."""

    counts: list[JobCount]
    estimated: bool
    pages: int

    def total(
        self, state: str | None = None, *, task: str | None = None, queue: str | None = None
    ) -> int:
        """The jobs in ``state`` (all states when None) of ``task`` and ``queue`` (any when
        None; there is no way to ask for "no queue" here: filter :attr:`counts`)."""
        return sum(
            count.jobs
            for count in self.counts
            if (state is None or count.state == state)
            and (task is None or count.task_identifier == task)
            and (queue is None or count.queue_name == queue)
        )


@dataclass(frozen=True)
class WorkerCounts:
    """Registered workers (those that heartbeat), and how many of them are alive."""

    alive: int
    registered: int


@dataclass(frozen=True)
class ScheduleLag:
    """Scheduled jobs, how many are late (a fire time has passed without a fire), and the
    lateness of the latest-running one in seconds (0 when none is late)."""

    schedules: int
    overdue: int
    max_lag_seconds: float


@dataclass(frozen=True)
class DatabaseState:
    """Everything :func:`collect` reads, with the time the database gave."""

    jobs: JobCounts
    oldest_due_seconds: float
    workers: WorkerCounts
    schedules: ScheduleLag
    now: datetime


def collect(connection: Connection) -> DatabaseState:
    """Every view of this module, in the connection's transaction."""
    return DatabaseState(
        jobs=job_counts(connection),
        oldest_due_seconds=oldest_due_seconds(connection),
        workers=worker_counts(connection),
        schedules=schedule_lag(connection),
        now=connection.execute(select(func.now())).scalar_one(),
    )


# The catalog's row counts, as the planner reads them.
pg_class = Table(
    "pg_class",
    MetaData(schema="pg_catalog"),
    Column("oid", REGCLASS),
    Column("reltuples", Float),
    Column("relpages", Integer),
)

# The predicate of jobs_available_idx (schema_v1.sql): the jobs that may run, due or not.
_MAY_RUN = and_(jobs.c.locked_at.is_(None), jobs.c.attempts < jobs.c.max_attempts)


def job_counts(
    connection: Connection, *, exact_pages: int = EXACT_PAGES, sample_pages: int = SAMPLE_PAGES
) -> JobCounts:
    """Jobs by task, queue and state: exact up to ``exact_pages`` pages of table, above it
    estimated from about ``sample_pages`` of them (see the module doc)."""
    relation = cast(literal(f"{quote_schema(mapped_schema(connection))}.jobs"), REGCLASS)
    size, block_size, live_rows, analyzed_pages = connection.execute(
        select(
            func.pg_relation_size(relation),
            func.current_setting("block_size"),
            select(pg_class.c.reltuples).where(pg_class.c.oid == relation).scalar_subquery(),
            select(pg_class.c.relpages).where(pg_class.c.oid == relation).scalar_subquery(),
        )
    ).one()
    pages = int(size) // int(block_size)
    estimated = pages > exact_pages
    source: FromClause = jobs
    if estimated:
        percent = 100.0 * sample_pages / pages
        source = jobs.tablesample(func.system(percent), name="sampled")
    state = job_state(source)
    rows = connection.execute(
        select(
            source.c.task_identifier, source.c.queue_name, state, func.count().label("jobs")
        ).group_by(source.c.task_identifier, source.c.queue_name, state)
    ).all()
    if not estimated:
        counts = [JobCount(*row) for row in rows]
    else:
        # Scale the sample to the table's rows as the planner estimates them (the rows per
        # page of the last VACUUM or ANALYZE, times the pages now): the number of pages a
        # SYSTEM sample reads varies by about 5% (1,000,000 jobs, 400 pages), which the
        # plain 100/percent scaling would carry into every count. Never analyzed: that.
        sampled = sum(row.jobs for row in rows)
        if analyzed_pages > 0 and live_rows >= 0 and sampled:
            scale = live_rows / analyzed_pages * pages / sampled
        else:
            scale = 100.0 / percent
        counts = [
            JobCount(row.task_identifier, row.queue_name, row.state, round(row.jobs * scale))
            for row in rows
            if row.state != "running"
        ]
        # The running ones are few and indexed: count them exactly.
        running = connection.execute(
            select(jobs.c.task_identifier, jobs.c.queue_name, func.count().label("jobs"))
            .where(jobs.c.locked_at.is_not(None))
            .group_by(jobs.c.task_identifier, jobs.c.queue_name)
        )
        counts += [
            JobCount(row.task_identifier, row.queue_name, "running", row.jobs) for row in running
        ]
    order = {state: number for number, state in enumerate(STATES)}
    counts.sort(key=lambda c: (c.task_identifier, c.queue_name or "", order[c.state]))
    return JobCounts(counts, estimated, pages)


def oldest_due_seconds(connection: Connection) -> float:
    """How long the oldest due job (not running, attempts left, run_at passed) has been
    due, in seconds; 0 when no job is due. Jobs of paused queues and tasks count: they
    wait too."""
    # The priorities that have jobs which may run, one index probe each (a loose scan).
    priorities = select(func.min(jobs.c.priority).label("priority")).where(_MAY_RUN)
    priorities_cte = priorities.cte("priorities", recursive=True)
    following = select(
        select(func.min(jobs.c.priority))
        .where(_MAY_RUN, jobs.c.priority > priorities_cte.c.priority)
        .scalar_subquery()
    ).where(priorities_cte.c.priority.is_not(None))
    priorities_cte = priorities_cte.union_all(following)
    head = (
        select(func.min(jobs.c.run_at))
        .where(_MAY_RUN, jobs.c.priority == priorities_cte.c.priority)
        .scalar_subquery()
    )
    row = connection.execute(
        select(func.min(head).label("oldest"), func.now().label("now"))
        .select_from(priorities_cte)
        .where(priorities_cte.c.priority.is_not(None))
    ).one()
    if row.oldest is None:
        return 0.0
    return max(0.0, float((row.now - row.oldest).total_seconds()))


def worker_counts(connection: Connection) -> WorkerCounts:
    """Registered and alive workers (``app_jobs.alive_until``: the schema's one rule)."""
    alive = fn.alive_until(workers.c.last_heartbeat, workers.c.heartbeat_timeout) >= func.now()
    row = connection.execute(
        select(
            func.count().filter(alive).label("alive"), func.count().label("registered")
        ).select_from(workers)
    ).one()
    return WorkerCounts(alive=row.alive, registered=row.registered)


def schedule_lag(connection: Connection) -> ScheduleLag:
    """Late schedules: those whose next fire time after their last fire has passed (a
    scheduler fires within moments of it, so lateness means no scheduler holds the
    schedule, or it is stuck). A schedule that never fired is not late: its first fire is
    the first time after a scheduler claims it. One that cannot be read is never late."""
    now = datetime.now(UTC)
    rows = connection.execute(
        select(scheduled_jobs.c.schedule_info, scheduled_jobs.c.last_scheduled)
    )
    schedules = overdue = 0
    worst = 0.0
    for row in rows:
        schedules += 1
        if row.last_scheduled is None:
            continue
        try:
            fire = parse_schedule(row.schedule_info).next_fire(row.last_scheduled)
        except InvalidScheduleError:
            continue
        if fire is not None and fire < now:
            overdue += 1
            worst = max(worst, (now - fire).total_seconds())
    return ScheduleLag(schedules, overdue, worst)
