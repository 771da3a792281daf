"""The worker's side of the database: its statements (``sql/worker.sql``) on one autocommit
connection, and what they return.

The worker's hot path skips SQLAlchemy: the statements go through psycopg directly, the
cycle with binary results (nothing parsed from text). A statement that meets a lost
connection is sent again on a new one (see :class:`~sqla_pgjobs._connections.
StatementConnection`): nothing of a statement lost with its connection is known to have
happened, and each of these is safe to repeat.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg.types.json import Json

from sqla_pgjobs._connections import StatementConnection
from sqla_pgjobs.schema import named_statements
from sqla_pgjobs.tasks import Job

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from collections.abc import Set as AbstractSet
    from datetime import datetime

    from sqla_pgjobs.tasks import Transactions
    from sqla_pgjobs.worker.results import Batch

__all__ = ["Cycle", "Heartbeat", "WorkerConnection"]


@dataclass(frozen=True)
class Cycle:
    """What one cycle did: results recorded (a job this worker no longer held is not),
    the jobs taken, and, when fewer were taken than asked for, ``(next_run_at, now)`` as
    the database saw them (None when no job is waiting at all)."""

    completed: int
    failed: int
    taken: list[Job]
    next_run_at: tuple[datetime, datetime] | None
    #: The statement was sent again after a lost connection: results it reports as not
    #: recorded may have been recorded by the attempt that was lost.
    resent: bool
    #: The jobs this worker has been asked to stop (app_jobs.cancel_requests).
    cancel_requested: list[int]


@dataclass(frozen=True)
class Heartbeat:
    """What a heartbeat learnt: whether this worker was still registered (False: its
    first heartbeat, or it had been given up for dead), and the jobs it is asked to stop."""

    registered: bool
    cancel_requested: list[int]


class WorkerConnection:
    """The statements of worker ``worker_id`` on the job schema ``schema``."""

    def __init__(
        self,
        url: str,
        schema: str,
        worker_id: str,
        *,
        task_filter: list[str] | None,
        job_expiry: float,
        heartbeat_timeout: float,
        info: dict[str, Any],
        on_lost: Callable[[Exception], None],
        sleep: Callable[[float], Awaitable[None]],
        cancel_requests: AbstractSet[int] = frozenset(),
        transactions: Transactions | None = None,
        traced: bool = False,
        synchronous_commit: bool = True,
    ) -> None:
        """``cancel_requests``: the set the worker keeps of the jobs it is asked to stop,
        which the jobs taken look at (:attr:`Job.cancel_requested`); ``transactions``:
        where transactional tasks get theirs; ``traced``: the jobs taken come with their
        stored trace contexts (a version 2 schema; on version 1 they come without);
        ``synchronous_commit=False``: this connection's commits do not wait for the WAL to
        reach the disk (see :class:`~sqla_pgjobs.worker.Worker`)."""
        self._sql = named_statements("worker.sql", schema)
        self._cycle_sql = self._sql["cycle_traced" if traced else "cycle"]
        self._heartbeat_sql = self._sql["heartbeat"]
        self._worker_id = worker_id
        self._cancel_requests = cancel_requests
        self._transactions = transactions
        self._losses = 0

        def lost(exc: Exception) -> None:
            self._losses += 1
            on_lost(exc)

        self._connection = StatementConnection(
            url,
            f"pgjobs worker {worker_id}",
            on_lost=lost,
            sleep=sleep,
            settings=None if synchronous_commit else {"synchronous_commit": "off"},
        )
        self._cycle_params: dict[str, Any] = {
            "worker_id": worker_id,
            "task_identifiers": task_filter,
            "job_expiry": timedelta(seconds=job_expiry),
        }
        self._heartbeat_params = {
            "worker_id": worker_id,
            "heartbeat_timeout": timedelta(seconds=heartbeat_timeout),
            "info": Json({"host": socket.gethostname(), "pid": os.getpid(), **info}),
        }

    async def cycle(self, batch: Batch, max_jobs: int) -> Cycle:
        """Report ``batch`` and take up to ``max_jobs`` jobs, in one statement (one round
        trip, one transaction). Jobs to fail for good (rare: a payload that cannot be its
        typed task's arguments) go first, in a statement of their own."""
        losses = self._losses
        failed = batch.failed
        failed_apart = 0
        if batch.failed_for_good or batch.retried:
            if self.reads_cancel_requests:
                failed_apart = await self._fail_apart(batch)
            else:  # a version 1 schema has neither function: SQL's backoff for all
                failed = [
                    *failed,
                    *batch.failed_for_good,
                    *((job_id, error) for job_id, error, _, _ in batch.retried),
                ]
        rows = await self._connection.execute(
            self._cycle_sql,
            {
                **self._cycle_params,
                "completed_ids": batch.completed,
                "failed_ids": [job_id for job_id, _ in failed],
                "error_messages": [error for _, error in failed],
                "max_jobs": max_jobs,
            },
            binary=True,
        )
        first = rows[0]
        next_run_at = first["next_run_at"]
        cancels, transactions = self._cancel_requests, self._transactions
        return Cycle(
            completed=first["completed"],
            failed=first["failed"] + failed_apart,
            taken=[
                Job.from_row(row, cancels, transactions, row.get("trace_context"))
                for row in rows
                if row["id"] is not None
            ],
            next_run_at=None if next_run_at is None else (next_run_at, first["now"]),
            resent=self._losses > losses,
            cancel_requested=first["cancel_requested"] or [],
        )

    async def _fail_apart(self, batch: Batch) -> int:
        """Record the failures the cycle statement cannot (rare: a statement each)."""
        failed = 0
        if batch.failed_for_good:
            [row] = await self._connection.execute(
                self._sql["fail_for_good"],
                {
                    "worker_id": self._worker_id,
                    "job_ids": [job_id for job_id, _ in batch.failed_for_good],
                    "error_messages": [error for _, error in batch.failed_for_good],
                },
            )
            failed += int(row["failed"])
        if batch.retried:
            [row] = await self._connection.execute(
                self._sql["retry_at"],
                {
                    "worker_id": self._worker_id,
                    "job_ids": [job_id for job_id, _, _, _ in batch.retried],
                    "error_messages": [error for _, error, _, _ in batch.retried],
                    "run_ats": [run_at for _, _, run_at, _ in batch.retried],
                    "refunds": [refunded for _, _, _, refunded in batch.retried],
                },
            )
            failed += int(row["failed"])
        return failed

    async def heartbeat(self, *, retry: bool = True) -> Heartbeat:
        """Record that this worker is alive, and read the jobs it is asked to stop."""
        try:
            [row] = await self._connection.execute(
                self._heartbeat_sql, self._heartbeat_params, retry=retry
            )
        except psycopg.errors.UndefinedFunction:
            if self._heartbeat_sql == self._sql["heartbeat_version_1"]:
                raise
            # A version 1 schema (mid-way through a rolling upgrade): no cancel requests,
            # until this worker restarts on an upgraded schema.
            self._cycle_sql = self._sql["cycle_version_1"]
            self._heartbeat_sql = self._sql["heartbeat_version_1"]
            [row] = await self._connection.execute(
                self._heartbeat_sql, self._heartbeat_params, retry=retry
            )
        return Heartbeat(bool(row["heartbeat"]), row["cancel_requested"] or [])

    @property
    def reads_cancel_requests(self) -> bool:
        """False on a version 1 schema, which has none (known after the first heartbeat)."""
        return self._cycle_sql != self._sql["cycle_version_1"]

    async def release(self, keep: list[int] | None, *, retry: bool = True) -> None:
        """Give back every job this worker holds but those in ``keep``, attempts refunded
        (all of them, and unregister, with None)."""
        await self._connection.execute(
            self._sql["release_jobs"],
            {"worker_id": self._worker_id, "keep_job_ids": keep},
            retry=retry,
        )

    async def close(self) -> None:
        await self._connection.close()
