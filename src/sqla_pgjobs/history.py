"""The job history (schema version 2): views of it, and pruning it in bounded batches.

Every finished job gets a row in ``app_jobs.job_history`` (:data:`sqla_pgjobs.tables.
job_history`), written by the SQL function that finishes it, with an expiry from the
retention rules (:func:`sqla_pgjobs.functions.set_history_retention`). :func:`prune`
deletes expired rows a batch per transaction, so that no lock is held for long and a
table of any size is pruned without a long transaction: each batch deletes at most
``batch`` rows, and a batch that runs into ``batch_timeout`` is retried at half the size
(down to :data:`MIN_BATCH`), as River's cleaner does.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, select, text
from sqlalchemy.exc import OperationalError

from sqla_pgjobs import functions as fn
from sqla_pgjobs import validation as check
from sqla_pgjobs.errors import InvalidArgumentError
from sqla_pgjobs.filters import job_filters
from sqla_pgjobs.tables import job_history

if TYPE_CHECKING:
    import uuid

    from sqlalchemy.engine import Connection, Engine

__all__ = [
    "DEFAULT_BATCH",
    "MIN_BATCH",
    "HistoryView",
    "PruneResult",
    "history_of",
    "list_history",
    "prune",
]


# --- Views ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HistoryView:
    """One finished run of a job: its row of ``app_jobs.job_history``, and how long its
    last attempt took (None when it never ran)."""

    id: int
    job_id: int
    database_id: uuid.UUID | None
    task_identifier: str
    queue_name: str | None
    payload: Any
    key: str | None
    priority: int
    attempts: int
    max_attempts: int
    created_at: datetime
    run_at: datetime
    first_started_at: datetime | None
    started_at: datetime | None
    finished_at: datetime
    outcome: str
    last_error: str | None
    worker_id: str | None
    expires_at: datetime | None

    @property
    def duration(self) -> timedelta | None:
        return None if self.started_at is None else self.finished_at - self.started_at


def list_history(
    connection: Connection,
    *,
    task: str | None = None,
    queue: str | None = None,
    tenant: uuid.UUID | str | None = None,
    outcome: str | None = None,
    key: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    payload: Any = None,
    before: int | None = None,
    limit: int = 100,
) -> list[HistoryView]:
    """Finished runs matching every filter given, newest first: ``since``/``until`` bound
    the finishing time, ``payload`` keeps runs whose payload contains it (JSON
    containment: ``{"order_id": 42}`` matches ``{"order_id": 42, "lines": [...]}``), and
    ``before`` continues a listing after its last id (keyset pagination)."""
    conditions = job_filters(
        job_history, task=task, queue=queue, tenant=tenant, key=key, payload=payload
    )
    if outcome is not None:
        conditions.append(job_history.c.outcome == check.check_outcome("outcome", outcome))
    if since is not None:
        conditions.append(job_history.c.finished_at >= check.check_aware("since", since))
    if until is not None:
        conditions.append(job_history.c.finished_at < check.check_aware("until", until))
    if before is not None:
        conditions.append(job_history.c.id < check.check_id("before", before))
    size = check.check_positive("limit", limit, optional=False)
    rows = connection.execute(
        select(job_history)
        .where(and_(True, *conditions))
        .order_by(job_history.c.id.desc())
        .limit(size)
    ).mappings()
    return [HistoryView(**row) for row in rows]


def history_of(connection: Connection, job_id: int) -> list[HistoryView]:
    """Every recorded finish of one job, oldest first (a job retried by hand after it
    failed for good has one per finish)."""
    rows = connection.execute(
        select(job_history)
        .where(job_history.c.job_id == check.check_id("job_id", job_id))
        .order_by(job_history.c.id)
    ).mappings()
    return [HistoryView(**row) for row in rows]


# --- Pruning ----------------------------------------------------------------------------------

#: Rows a batch deletes at most, by default.
DEFAULT_BATCH = 10_000
#: The smallest batch a timed-out batch is cut down to.
MIN_BATCH = 100


@dataclass(frozen=True)
class PruneResult:
    """What :func:`prune` did: rows deleted, batches run, the longest batch in seconds
    (how long its locks were held), and how many batches ran into the timeout."""

    deleted: int
    batches: int
    longest_batch: float
    timeouts: int


def prune(
    engine: Engine,
    *,
    older_than: timedelta | None = None,
    batch: int = DEFAULT_BATCH,
    pause: float = 0.05,
    batch_timeout: timedelta = timedelta(seconds=5),
    max_batches: int | None = None,
) -> PruneResult:
    """Delete the history rows past their expiry (with ``older_than``: the rows that
    finished longer ago than that, whatever their expiry), one batch of at most ``batch``
    rows per transaction, sleeping ``pause`` seconds between batches, until none is left
    (or ``max_batches`` ran). ``engine`` points at the job schema (see
    :func:`sqla_pgjobs.database.on_schema`)."""
    size = _check_batch(batch)
    if not 0 <= pause <= 60:
        raise InvalidArgumentError("pause", pause, "it must be from 0 to 60 seconds")
    if max_batches is not None and max_batches < 1:
        raise InvalidArgumentError("max_batches", max_batches, "it must be at least 1, or None")
    fn.prune_job_history(older_than=older_than)  # checks older_than before anything runs
    timeout_ms = int(batch_timeout.total_seconds() * 1000)
    if timeout_ms < 1:
        raise InvalidArgumentError("batch_timeout", batch_timeout, "it must be at least 1 ms")
    deleted = batches = timeouts = 0
    longest = 0.0
    while max_batches is None or batches < max_batches:
        started = time.perf_counter()
        try:
            with engine.begin() as connection:
                connection.execute(text(f"SET LOCAL statement_timeout = {timeout_ms}"))
                count = connection.execute(
                    fn.prune_job_history(max_rows=size, older_than=older_than)
                ).scalar_one()
        except OperationalError as error:
            if getattr(error.orig, "sqlstate", None) != "57014" or size == MIN_BATCH:
                raise
            timeouts += 1
            size = max(MIN_BATCH, size // 2)
            continue
        batches += 1
        longest = max(longest, time.perf_counter() - started)
        deleted += count
        if count < size:
            break
        if pause:
            time.sleep(pause)
    return PruneResult(deleted, batches, longest, timeouts)


def _check_batch(batch: object) -> int:
    if isinstance(batch, bool) or not isinstance(batch, int) or not MIN_BATCH <= batch <= 1_000_000:
        raise InvalidArgumentError(
            "batch", batch, f"it must be an integer from {MIN_BATCH} to 1000000"
        )
    return batch
