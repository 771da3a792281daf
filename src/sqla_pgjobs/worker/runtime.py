"""The worker: takes jobs from PostgreSQL and runs their handlers.

One asyncio loop does the bookkeeping; ``async`` handlers run on it, plain ones in a pool
of threads. The worker holds two connections: one for its statements and one that LISTENs
for ``jobs:insert`` (none in poll-only mode).

The cycle: one statement (``worker_cycle``: one round trip, one transaction) reports the
jobs finished since the last cycle and takes more. Only one cycle is in flight; whatever
finishes meanwhile goes into the next, so batches grow with the load by themselves and a
busy worker pays one commit for many jobs.

Prefetch: besides the jobs running in its ``concurrency`` slots, the worker holds up to
``prefetch`` taken jobs ready to start the moment a slot frees, but only as many as it
expects to start within ``PREFETCH_HORIZON`` (from the run times of its recent jobs, or
the time since a slot last freed when all are busy). Short jobs then never wait for a round
trip, and a worker busy with long jobs holds none that another worker could run sooner:
prefetched jobs still waiting after ``GIVE_BACK_AFTER`` (long jobs after short ones) are
given back at once, attempt refunded, for other workers to take.

Waking up: a NOTIFY wakes it at once; otherwise it sleeps until the earliest time a job
could be taken (``next_run_at``: a delayed job or a retry falling due, or a silent
worker's jobs becoming recoverable), and at most ``poll_interval``.

Stopping (:meth:`Worker.stop`, or SIGTERM/SIGINT under :meth:`Worker.run`): no more jobs
are taken; running handlers get ``shutdown_timeout`` to finish; what they finish is
completed or failed; every job still held is released with its attempt refunded; the
worker unregisters. A second signal exits at once.

Connection loss: statements are retried on a new connection, with backoff from 0.1 s to
5 s; results that were not acknowledged are kept and sent then. Jobs handed to the worker
by a ``get_jobs`` whose answer was lost are given back (``release_jobs`` with the jobs it
does run kept).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import signal
import socket
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from psycopg.types.json import Json

from sqla_pgjobs import validation as check
from sqla_pgjobs._connections import (
    CONNECTION_ERRORS,
    StatementConnection,
    libpq_url,
    listen,
    seconds,
)
from sqla_pgjobs.errors import InvalidArgumentError
from sqla_pgjobs.schema import DEFAULT_SCHEMA, validate_schema_name
from sqla_pgjobs.worker.queries import Queries
from sqla_pgjobs.worker.tasks import Job, Task, TaskRegistry
from sqla_pgjobs.worker.threads import HandlerThreads, Outcome

if TYPE_CHECKING:
    from sqlalchemy.engine import URL, Engine

__all__ = ["Worker", "WorkerStats"]

log = logging.getLogger("sqla_pgjobs.worker")

# When a job is due but get_jobs gave none (its queue is busy), look again after this
# long at most: queue releases send no NOTIFY.
_BLOCKED_RETRY = 1.0
# A prefetched job should start within about this long (see the module doc)...
PREFETCH_HORIZON = 0.01
# ... and is given back when it has waited this long with every slot busy.
GIVE_BACK_AFTER = 0.25
# Weight of the newest run time in the running average that sizes the prefetch.
_DURATION_WEIGHT = 0.1
# A finished job is reported within about this long while other jobs are running (at once
# when none is), so that results travel in batches too.
REPORT_DELAY = 0.05
# Longest error text stored in last_error (tracebacks can be huge).
_MAX_ERROR = 8000


@dataclass
class WorkerStats:
    """What a worker did, for :meth:`Worker.run` callers, the demo and tests."""

    completed: int = 0
    failed: int = 0
    released: int = 0
    lost: int = 0  # finished here, but taken over while this worker could not report it
    reconnects: int = 0
    started_at: float = field(default_factory=time.monotonic)

    @property
    def processed(self) -> int:
        return self.completed + self.failed


def _default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def _error_text(exc: BaseException) -> str:
    text = "".join(traceback.format_exception(exc))
    summary = f"{type(exc).__name__}: {exc}"
    if len(text) > _MAX_ERROR:
        text = text[: _MAX_ERROR // 2] + "\n...\n" + text[-_MAX_ERROR // 2 :]
    return summary + "\n\n" + text


class Worker:
    """Runs the handlers of ``tasks`` for the jobs in a database.

    ``database``: a URL (``postgresql://...``, with or without a SQLAlchemy driver) or an
    :class:`~sqlalchemy.engine.Engine` whose URL is used. The worker opens connections of its
    own, outside any pool.

    :param concurrency: jobs run at the same time.
    :param prefetch: the most jobs held beyond the running ones, ready to start when a
        slot frees (see the module doc); 0 takes jobs only for free slots.
    :param poll_interval: the longest sleep without a NOTIFY (all a poll-only worker has).
    :param listen: LISTEN for new jobs; turn off behind PgBouncer in transaction mode.
    :param heartbeat_timeout: how long this worker may stay silent before others take its
        jobs; it heartbeats every sixth of it.
    :param job_expiry: how old a lock held by a worker that never heartbeats (a Node
        worker of the reference package) must be before its job is taken over.
    :param shutdown_timeout: how long running handlers get to finish when stopping.
    :param unknown_tasks: ``"skip"`` takes only jobs of registered tasks (other workers
        may run the rest); ``"fail"`` takes every job and fails those it has no handler for.
    """

    def __init__(
        self,
        database: str | URL | Engine,
        tasks: TaskRegistry,
        *,
        concurrency: int = 10,
        prefetch: int = 100,
        worker_id: str | None = None,
        schema: str = DEFAULT_SCHEMA,
        poll_interval: float | timedelta = 10.0,
        listen: bool = True,
        heartbeat_timeout: float | timedelta = 30.0,
        job_expiry: float | timedelta = timedelta(hours=4),
        shutdown_timeout: float | timedelta = 30.0,
        unknown_tasks: str = "skip",
    ) -> None:
        if not isinstance(tasks, TaskRegistry):
            raise InvalidArgumentError("tasks", tasks, "it must be a TaskRegistry")
        if unknown_tasks not in ("skip", "fail"):
            raise InvalidArgumentError(
                "unknown_tasks", unknown_tasks, 'it must be "skip" or "fail"'
            )
        self.tasks = tasks
        self.concurrency = int(
            check.check_positive("concurrency", concurrency, optional=False) or 1
        )
        self.prefetch = int(check.check_count("prefetch", prefetch, optional=False) or 0)
        self.worker_id = check.check_worker_id(worker_id or _default_worker_id())
        self.schema = validate_schema_name(schema)
        self.poll_interval = seconds("poll_interval", poll_interval)
        self.listen = bool(listen)
        self.heartbeat_timeout = seconds("heartbeat_timeout", heartbeat_timeout)
        self.job_expiry = seconds("job_expiry", job_expiry)
        self.shutdown_timeout = seconds("shutdown_timeout", shutdown_timeout)
        self.unknown_tasks = unknown_tasks
        self.stats = WorkerStats()
        self._url = libpq_url(database)
        self._queries = Queries.for_schema(self.schema)
        self._task_filter = None if unknown_tasks == "fail" else tasks.names
        self._stopping = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None

    # --- Public API ---------------------------------------------------------------------------

    def run(self, *, drain: bool = False, install_signal_handlers: bool = True) -> WorkerStats:
        """Run until stopped (or, with ``drain``, until no job is due); return the stats.

        Under the main thread, SIGTERM and SIGINT stop the worker gracefully; a second
        signal exits the process at once.
        """
        return asyncio.run(self._main(drain=drain, signals=install_signal_handlers))

    async def run_async(self, *, drain: bool = False) -> WorkerStats:
        """Run on the current event loop (no signal handlers); see :meth:`run`."""
        return await self._main(drain=drain, signals=False)

    def stop(self) -> None:
        """Ask the worker to stop gracefully (from any thread)."""
        self._stopping.set()
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(wake.set)

    # --- Main loop ----------------------------------------------------------------------------

    async def _main(self, *, drain: bool, signals: bool) -> WorkerStats:
        self._loop = asyncio.get_running_loop()
        run = _Run(self, drain=drain)
        self._wake = run.wake
        if signals and threading.current_thread() is threading.main_thread():
            self._install_signal_handlers()
        try:
            await run.execute()
        finally:
            if signals:
                self._remove_signal_handlers()
            self._wake = None
        return self.stats

    def _install_signal_handlers(self) -> None:
        assert self._loop is not None
        for signum in (signal.SIGTERM, signal.SIGINT):
            self._loop.add_signal_handler(signum, self._on_signal, signum)

    def _remove_signal_handlers(self) -> None:
        assert self._loop is not None
        for signum in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(Exception):
                self._loop.remove_signal_handler(signum)

    def _on_signal(self, signum: int) -> None:
        name = signal.Signals(signum).name
        if self._stopping.is_set():
            log.warning(
                "second %s: exiting now; held jobs recover after the heartbeat timeout", name
            )
            logging.shutdown()
            os._exit(1)
        log.info(
            "%s: stopping (running jobs get %.0f s)",
            name,
            self.shutdown_timeout,
            extra={"worker_id": self.worker_id},
        )
        self.stop()


class _Run:
    """One run of a worker: its connections, running and prefetched jobs, and the results
    not yet reported."""

    def __init__(self, worker: Worker, *, drain: bool) -> None:
        self.worker = worker
        self.drain = drain
        self.q = worker._queries
        # Set by a NOTIFY, by stop(), and by a job finishing when that makes a cycle due.
        self.wake = asyncio.Event()
        self.connection = StatementConnection(
            worker._url,
            f"pgjobs worker {worker.worker_id}",
            on_lost=self._lost_connection,
            sleep=self._sleep,
        )
        # The jobs running: a task for async handlers, a future the handler threads resolve
        # for plain ones.
        self.running: dict[int, asyncio.Future[None]] = {}
        # Taken, waiting for a slot (see the module doc on prefetch), with when they were.
        self.prefetched: collections.deque[tuple[Job, float]] = collections.deque()
        # Running average of handler run times, in seconds (None until a job has run), and
        # when a job last finished (monotonic).
        self.average_duration: float | None = None
        self.last_finished = time.monotonic()
        self.completed: list[int] = []
        self.failed: list[tuple[int, str]] = []
        self.results_since = 0.0  # when the oldest unreported result came in (monotonic)
        self.threads = HandlerThreads(
            asyncio.get_running_loop(), worker.concurrency, self.on_outcomes
        )
        self.helpers: list[asyncio.Task[None]] = []
        # False after a reconnect, until jobs a lost answer may have handed over are given back.
        self.reconciled = True

    # --- Lifecycle ----------------------------------------------------------------------------

    async def execute(self) -> None:
        worker = self.worker
        # The first statement does not retry: a wrong URL or a missing schema fails at once.
        try:
            await self.sql(self.q.heartbeat, self._heartbeat_params(), retry=False)
        except BaseException:
            await self._close()
            raise
        log.info(
            "worker %s started: %d task(s), concurrency %d, %s",
            worker.worker_id,
            len(worker.tasks),
            worker.concurrency,
            "listening" if worker.listen else f"polling every {worker.poll_interval:g} s",
            extra={"worker_id": worker.worker_id},
        )
        helpers = [self.heartbeats()] + ([self.listener()] if worker.listen else [])
        self.helpers = [asyncio.create_task(helper) for helper in helpers]
        taking = asyncio.create_task(self.take_jobs())
        try:
            # A helper that dies (an error other than a lost connection) stops the worker.
            done, _ = await asyncio.wait(
                [taking, *self.helpers], return_when=asyncio.FIRST_COMPLETED
            )
            if taking not in done:
                worker._stopping.set()
                self.wake.set()
                await asyncio.wait([taking])
            for task in done:
                task.result()
        finally:
            await self.shut_down()

    async def shut_down(self) -> None:
        worker = self.worker
        if self.running:
            log.info(
                "waiting up to %.0f s for %d running job(s)",
                worker.shutdown_timeout,
                len(self.running),
                extra={"worker_id": worker.worker_id},
            )
            _, pending = await asyncio.wait(
                list(self.running.values()), timeout=worker.shutdown_timeout
            )
            unfinished = [job_id for job_id, task in self.running.items() if task in pending]
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1.0)
        else:
            unfinished = []
        for helper in self.helpers:
            helper.cancel()
        await asyncio.gather(*self.helpers, return_exceptions=True)
        with contextlib.suppress(*CONNECTION_ERRORS):
            await self.flush()
        # Whatever this worker still holds goes back, with its attempt refunded (plain
        # handlers past the timeout cannot be stopped: their jobs go back too).
        held = sorted(set(unfinished) | set(self.running) | {job.id for job, _ in self.prefetched})
        self.prefetched.clear()
        with contextlib.suppress(*CONNECTION_ERRORS):
            await self.sql(
                self.q.release_jobs,
                {"worker_id": worker.worker_id, "keep_job_ids": None},
                retry=False,
            )
        worker.stats.released += len(held)
        if held:
            log.warning(
                "released %d unfinished job(s): %s",
                len(held),
                held,
                extra={"worker_id": worker.worker_id},
            )
        await self._close()
        log.info(
            "worker %s stopped: %d completed, %d failed",
            worker.worker_id,
            worker.stats.completed,
            worker.stats.failed,
            extra={"worker_id": worker.worker_id},
        )

    async def _close(self) -> None:
        self.threads.close()
        await self.connection.close()

    # --- Database -------------------------------------------------------------------------------

    async def sql(
        self, statement: str, params: dict[str, Any], *, retry: bool = True
    ) -> list[dict[str, Any]]:
        """Run one statement; on a lost connection, reconnect (with backoff) and run it again."""
        return await self.connection.execute(statement, params, retry=retry)

    def _lost_connection(self, exc: Exception) -> None:
        self.worker.stats.reconnects += 1
        log.warning(
            "database connection lost (%s); reconnecting",
            exc,
            extra={"worker_id": self.worker.worker_id},
        )
        self.reconciled = False

    async def _reconcile(self) -> None:
        """After a reconnect (or after being given up for dead): give back the jobs a lost
        answer may have handed us, and the prefetched ones, which may have been taken over."""
        await self.flush()
        await self.release_prefetched()
        await self.sql(self.q.heartbeat, self._heartbeat_params())
        self.reconciled = True

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.wake.wait(), timeout=seconds)

    def _heartbeat_params(self) -> dict[str, Any]:
        return {
            "worker_id": self.worker.worker_id,
            "heartbeat_timeout": timedelta(seconds=self.worker.heartbeat_timeout),
            "info": Json(
                {
                    "host": socket.gethostname(),
                    "pid": os.getpid(),
                    "concurrency": self.worker.concurrency,
                    "tasks": self.worker.tasks.names,
                }
            ),
        }

    # --- Taking jobs --------------------------------------------------------------------------

    async def take_jobs(self) -> None:
        worker = self.worker
        while not worker._stopping.is_set():
            if self.prefetch_is_stuck():
                await self.give_back_prefetched()
            if not self.cycle_due():
                self.wake.clear()
                await self._wait(self.idle_wait())
                continue
            wanted = self.room()
            if not self.reconciled:
                await self._reconcile()
            self.wake.clear()
            taken, next_run_at = await self.cycle(max_jobs=max(wanted, 0))
            now = time.monotonic()
            self.prefetched.extend((job, now) for job in taken)
            self.start_prefetched()
            if wanted <= 0 or len(taken) == wanted:
                continue  # maybe more are due: take again as soon as there is room
            wait, due = self.sleep_time(next_run_at, got_jobs=bool(taken))
            if self.drain and not due and not taken and not self.holds_jobs():
                return
            await self._wait(wait)

    def cycle_due(self) -> bool:
        """Whether to cycle now. Taking waits until the prefetched jobs are down to half
        their target (with no prefetch: until a slot is free), so that one commit serves
        many jobs; reporting waits at most REPORT_DELAY."""
        if self.room() > 0 and 2 * len(self.prefetched) <= self.prefetch_target():
            return True
        return self.has_results() and (
            not self.running or time.monotonic() - self.results_since >= REPORT_DELAY
        )

    def prefetch_target(self) -> int:
        """How many jobs to hold beyond the running ones: as many as should start within
        PREFETCH_HORIZON at the recent run times, at most ``prefetch``. With every slot
        busy, the time since one last freed counts as a run time too: a burst of long jobs
        stops the prefetch before their first one ends."""
        worker = self.worker
        if not worker.prefetch or self.average_duration is None:
            return 0
        duration = self.average_duration
        if len(self.running) >= worker.concurrency:
            duration = max(duration, time.monotonic() - self.last_finished)
        expected = worker.concurrency * PREFETCH_HORIZON / max(duration, 1e-6)
        return min(worker.prefetch, int(expected))

    def prefetch_is_stuck(self) -> bool:
        """Prefetched jobs have waited GIVE_BACK_AFTER with every slot busy."""
        return (
            bool(self.prefetched)
            and len(self.running) >= self.worker.concurrency
            and time.monotonic() - max(self.prefetched[0][1], self.last_finished) >= GIVE_BACK_AFTER
        )

    async def give_back_prefetched(self) -> None:
        """Release the prefetched jobs for other workers to take."""
        given_back = len(self.prefetched)
        await self.release_prefetched()
        log.info(
            "gave back %d prefetched job(s): every slot has been busy for %.2f s",
            given_back,
            time.monotonic() - self.last_finished,
            extra={"worker_id": self.worker.worker_id},
        )

    async def release_prefetched(self) -> None:
        """Give back (attempt refunded) every job held but the running ones and those
        finished but not reported yet: the prefetched, and any a lost answer handed over."""
        self.worker.stats.released += len(self.prefetched)
        self.prefetched.clear()
        keep = [*self.running, *self.completed, *(job_id for job_id, _ in self.failed)]
        await self.sql(
            self.q.release_jobs, {"worker_id": self.worker.worker_id, "keep_job_ids": keep}
        )

    def idle_wait(self) -> float:
        """How long to wait when no cycle is due: until results are due to be reported,
        or prefetched jobs would be given back, at most poll_interval."""
        wait = self.worker.poll_interval
        if self.has_results():
            wait = min(wait, REPORT_DELAY)
        if self.prefetched:
            wait = min(wait, GIVE_BACK_AFTER)
        return wait

    def room(self) -> int:
        """How many jobs to take: free slots, plus the prefetch target."""
        return (
            self.worker.concurrency
            + self.prefetch_target()
            - len(self.running)
            - len(self.prefetched)
        )

    def holds_jobs(self) -> bool:
        return bool(self.running or self.prefetched or self.has_results())

    def sleep_time(
        self, next_run_at: tuple[datetime, datetime] | None, *, got_jobs: bool
    ) -> tuple[float, bool]:
        """How long to sleep (at most poll_interval), and whether a job is due now, from
        ``(next_run_at, now)`` as the last cycle saw them (None: no job to wait for)."""
        if next_run_at is None:
            return self.worker.poll_interval, False
        seconds = (next_run_at[0] - next_run_at[1]).total_seconds()
        if seconds <= 0:
            # Due, yet not given to us: its queue is busy (or another worker was quicker).
            return (0.0 if got_jobs else min(_BLOCKED_RETRY, self.worker.poll_interval)), True
        return min(seconds, self.worker.poll_interval), False

    async def _wait(self, timeout: float) -> None:
        """Until woken (see ``wake``) or ``timeout`` seconds, whichever comes first."""
        if self.wake.is_set():
            return
        timer = asyncio.get_running_loop().call_later(timeout, self.wake.set)
        try:
            await self.wake.wait()
        finally:
            timer.cancel()

    # --- Running jobs -------------------------------------------------------------------------

    def start_prefetched(self) -> None:
        """Start prefetched jobs in the free slots (none once stopping)."""
        while (
            self.prefetched
            and len(self.running) < self.worker.concurrency
            and not self.worker._stopping.is_set()
        ):
            self.start(self.prefetched.popleft()[0])

    def start(self, job: Job) -> None:
        task = self.worker.tasks.get(job.task_identifier)
        # Log records cost more than a no-op job: build them only when they are wanted.
        if log.isEnabledFor(logging.INFO):
            log.info(
                "job %d (%s) started, attempt %d of %d",
                job.id,
                job.task_identifier,
                job.attempts,
                job.max_attempts,
                extra=self._log_fields(job),
            )
        if task is None or task.is_async:
            self.running[job.id] = asyncio.create_task(
                self.run_async(job, task), name=f"job-{job.id}"
            )
            return
        running = self.running[job.id] = asyncio.get_running_loop().create_future()
        if task.timeout is not None:
            timeout = task.timeout.total_seconds()
            warning = asyncio.get_running_loop().call_later(
                timeout, self._over_timeout, job, timeout
            )
            running.add_done_callback(lambda _: warning.cancel())
        self.threads.submit(job, task)

    async def run_async(self, job: Job, task: Task | None) -> None:
        started = time.monotonic()
        error: BaseException | None = None
        try:
            if task is None:
                raise LookupError(
                    f"no handler for task {job.task_identifier!r} in this worker "
                    f"(it has: {', '.join(self.worker.tasks.names) or 'none'})"
                )
            timeout = task.timeout.total_seconds() if task.timeout is not None else None
            await asyncio.wait_for(task(job.payload, job), timeout=timeout)
        except asyncio.CancelledError:
            # Stopping: the job is released with its attempt refunded, not failed.
            self.running.pop(job.id, None)
            raise
        except BaseException as exc:
            error = exc
        self.finish(job, error, time.monotonic() - started)

    def on_outcomes(self, outcomes: list[Outcome]) -> None:
        """Plain handlers' outcomes, delivered by the handler threads."""
        for outcome in outcomes:
            job = outcome.job
            running = self.running.get(job.id)
            if running is None or running.done():
                continue  # given up while stopping: the job has been released
            task = self.worker.tasks.get(job.task_identifier)
            error = outcome.error
            if (
                error is None
                and task is not None
                and task.timeout is not None
                and outcome.duration > task.timeout.total_seconds()
            ):
                error = TimeoutError(
                    f"the handler ran {outcome.duration:.1f} s, "
                    f"over its {task.timeout.total_seconds():g} s timeout"
                )
            running.set_result(None)
            self.finish(job, error, outcome.duration)

    def _over_timeout(self, job: Job, timeout: float) -> None:
        log.warning(
            "job %d (%s) is over its %g s timeout; a plain function cannot be "
            "stopped, so the job keeps its slot until it returns and then fails",
            job.id,
            job.task_identifier,
            timeout,
            extra={"worker_id": self.worker.worker_id, "job_id": job.id},
        )

    def finish(self, job: Job, exc: BaseException | None, duration: float) -> None:
        """Record how a job ended, free its slot and start the next prefetched job."""
        average = self.average_duration
        self.average_duration = (
            duration if average is None else average + _DURATION_WEIGHT * (duration - average)
        )
        self.last_finished = time.monotonic()
        if not self.has_results():
            self.results_since = time.monotonic()
        if exc is None:
            self.completed.append(job.id)
            if log.isEnabledFor(logging.INFO):
                log.info(
                    "job %d (%s) completed in %.1f ms",
                    job.id,
                    job.task_identifier,
                    duration * 1000,
                    extra={
                        **self._log_fields(job),
                        "duration_ms": round(duration * 1000, 3),
                        "outcome": "completed",
                    },
                )
        else:
            error = _error_text(exc)
            self.failed.append((job.id, error))
            log.warning(
                "job %d (%s) failed in %.1f ms: %s",
                job.id,
                job.task_identifier,
                duration * 1000,
                error.split("\n", 1)[0],
                extra={
                    **self._log_fields(job),
                    "duration_ms": round(duration * 1000, 3),
                    "outcome": "failed",
                    "will_retry": job.attempts < job.max_attempts,
                },
            )
        self.running.pop(job.id, None)
        self.start_prefetched()
        if self.cycle_due():
            self.wake.set()

    def _log_fields(self, job: Job) -> dict[str, Any]:
        return {
            "worker_id": self.worker.worker_id,
            "job_id": job.id,
            "task": job.task_identifier,
            "attempt": job.attempts,
            "max_attempts": job.max_attempts,
        }

    # --- Reporting results and taking jobs ------------------------------------------------------

    def has_results(self) -> bool:
        return bool(self.completed or self.failed)

    async def cycle(self, *, max_jobs: int) -> tuple[list[Job], tuple[datetime, datetime] | None]:
        """Report the results gathered so far and take up to ``max_jobs`` jobs, in one
        statement (``worker_cycle``: one round trip, one transaction). Returns the jobs
        taken and, when fewer than ``max_jobs`` were, ``(next_run_at, now)`` as the
        database saw them (None when no job is waiting at all)."""
        worker = self.worker
        completed, failed = self.completed, self.failed
        self.completed, self.failed = [], []
        params = {
            "worker_id": worker.worker_id,
            "completed_ids": completed,
            "failed_ids": [job_id for job_id, _ in failed],
            "error_messages": [error for _, error in failed],
            "task_identifiers": worker._task_filter,
            "job_expiry": timedelta(seconds=worker.job_expiry),
            "max_jobs": max_jobs,
        }
        reconnects = worker.stats.reconnects
        try:
            # Nothing of a statement lost with its connection is known to have happened: it
            # is sent again (completing and failing jobs twice is harmless; a lost answer's
            # jobs are given back by _reconcile). Binary results: nothing parsed from text.
            rows = await self.connection.execute(self.q.cycle, params, binary=True)
        except BaseException:
            self.completed, self.failed = completed + self.completed, failed + self.failed
            raise
        retried = worker.stats.reconnects > reconnects
        first = rows[0]
        worker.stats.completed += first["completed"]
        worker.stats.failed += first["failed"]
        missing = len(completed) - first["completed"] + len(failed) - first["failed"]
        if missing and retried:
            # The attempt lost with the connection may have committed them: not news.
            log.info(
                "%d result(s) sent again after a reconnect were already recorded "
                "(or their jobs taken over)",
                missing,
                extra={"worker_id": worker.worker_id},
            )
        else:
            self._report_lost(missing)
        taken = [Job.from_row(row) for row in rows if row["id"] is not None]
        next_run_at = first["next_run_at"]
        return taken, (None if next_run_at is None else (next_run_at, first["now"]))

    async def flush(self) -> None:
        """Report the results gathered so far, taking no job."""
        while self.has_results():
            await self.cycle(max_jobs=0)

    def _report_lost(self, count: int) -> None:
        if count > 0:
            self.worker.stats.lost += count
            log.warning(
                "%d job(s) finished here had been taken over (this worker was silent longer than "
                "its heartbeat timeout); they may run again elsewhere",
                count,
                extra={"worker_id": self.worker.worker_id},
            )

    # --- Heartbeats and notifications ------------------------------------------------------------

    async def heartbeats(self) -> None:
        interval = self.worker.heartbeat_timeout / 6
        while True:
            await asyncio.sleep(interval)
            [row] = await self.sql(self.q.heartbeat, self._heartbeat_params())
            if not row["heartbeat"]:
                log.warning(
                    "this worker had been given up for dead (silent longer than %g s); "
                    "jobs it held may have been taken over",
                    self.worker.heartbeat_timeout,
                    extra={"worker_id": self.worker.worker_id},
                )
                self.reconciled = False

    async def listener(self) -> None:
        await listen(
            self.worker._url, ["jobs:insert"], self.wake, log, {"worker_id": self.worker.worker_id}
        )
