"""The worker: takes jobs from PostgreSQL and runs their handlers.

One asyncio loop does the bookkeeping; ``async`` handlers run on it, plain ones on handler
threads (:mod:`~sqla_pgjobs.worker.handlers`). The worker holds two connections: one for
its statements (:mod:`~sqla_pgjobs.worker.connection`) and one that LISTENs for
``jobs:insert`` (none in poll-only mode).

The cycle: one statement (``worker_cycle``: one round trip, one transaction) reports the
jobs finished since the last cycle and takes more. Only one cycle is in flight; whatever
finishes meanwhile waits in the :class:`~sqla_pgjobs.worker.results.Results` buffer for the
next, so batches grow with the load by themselves and a busy worker pays one commit for
many jobs. When to cycle, how many jobs to take and how long to sleep are the decisions of
:mod:`~sqla_pgjobs.worker.policy`; this module only does the I/O they call for.

Prefetch: besides the jobs running in its ``concurrency`` slots, the worker holds up to
``prefetch`` taken jobs ready to start the moment a slot frees, but only as many as it
expects to start within ``policy.PREFETCH_HORIZON``; prefetched jobs still waiting after
``policy.GIVE_BACK_AFTER`` with every slot busy are given back at once, attempt refunded.

Waking up: a NOTIFY wakes it at once; otherwise it sleeps until the earliest time a job
could be taken (``next_run_at``: a delayed job or a retry falling due, or a silent
worker's jobs becoming recoverable), and at most ``poll_interval``.

Cancel requests (``cancel_jobs``, schema version 2): each cycle and each heartbeat read the
jobs this worker is asked to stop, and a NOTIFY on ``jobs:cancel`` naming this worker makes
a cycle due at once. A prefetched job is failed without being started; a running one is
stopped (:meth:`~sqla_pgjobs.worker.handlers.Handlers.cancel`). The failure reported for it
ends the job as cancelled.

Stopping (:meth:`Worker.stop`, or SIGTERM/SIGINT under :meth:`Worker.run`, see
:mod:`sqla_pgjobs.service`): no more jobs are taken; running handlers get
``shutdown_timeout`` to finish; what they finish is completed or failed; every job still
held is released with its attempt refunded; the worker unregisters. A second signal exits
at once.

Tracing (:mod:`sqla_pgjobs.tracing`): when :func:`~sqla_pgjobs.tracing.instrument` has been
called before the worker starts, each run is in a span (:mod:`~sqla_pgjobs.worker.spans`),
and the cycle reads the trace contexts stored with the jobs it takes.

Connection loss: statements are retried on a new connection, with backoff from 0.1 s to
5 s; results that were not acknowledged are kept and sent then. Jobs handed to the worker
by a cycle whose answer was lost are given back (``release_jobs`` keeping the jobs it does
run and those with a result waiting).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING

from sqla_pgjobs import service, tracing
from sqla_pgjobs import validation as check
from sqla_pgjobs._connections import CONNECTION_ERRORS, listen, seconds
from sqla_pgjobs.database import libpq_url
from sqla_pgjobs.errors import InvalidArgumentError
from sqla_pgjobs.outcomes import Failure, failure
from sqla_pgjobs.schema import DEFAULT_SCHEMA, validate_schema_name
from sqla_pgjobs.tasks import TaskRegistry, error_text
from sqla_pgjobs.worker.connection import WorkerConnection
from sqla_pgjobs.worker.handlers import Handlers
from sqla_pgjobs.worker.observer import outcome_of
from sqla_pgjobs.worker.policy import Load, Pace, Policy
from sqla_pgjobs.worker.pruning import prune_periodically
from sqla_pgjobs.worker.results import Results
from sqla_pgjobs.worker.transactions import HandlerTransactions

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from sqlalchemy.engine import URL, Engine

    from sqla_pgjobs.tasks import Job
    from sqla_pgjobs.worker.connection import Cycle
    from sqla_pgjobs.worker.observer import WorkerObserver
    from sqla_pgjobs.worker.spans import JobSpans

__all__ = ["Worker", "WorkerStats"]

log = logging.getLogger("sqla_pgjobs.worker")


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


class Worker(service.Service):
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
    :param prune_interval: how often the workers of a database prune the job history's
        expired rows (one of them each time: :mod:`~sqla_pgjobs.worker.pruning`); None
        leaves it to ``pgjobs prune``. Not while draining.
    :param observer: told of every job started and ended and of every cycle (metrics:
        :mod:`~sqla_pgjobs.worker.observer`); None costs nothing.
    :param synchronous_commit: False (an opt-in) sets ``synchronous_commit = off`` for the
        worker's own statements (taking, completing, failing, releasing jobs; heartbeats):
        their commits stop waiting for the disk. A stop of PostgreSQL without a clean
        shutdown (a crash, a power loss) may then undo the last of them, up to three times
        ``wal_writer_delay`` (0.6 s by default): a job recorded as done or failed is back as
        taken by this worker, which gives it back when it reconnects, so it runs again; a
        take is undone, so the job may run twice; a failure's attempt is undone, so one
        more attempt may run. Never lost: an enqueued job (its commit is the application's),
        and a job is never recorded done without having run. Transactional tasks complete
        in their handler's transaction, which stays durable. See ``docs/workers.md``.
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
        prune_interval: float | timedelta | None = 300.0,
        observer: WorkerObserver | None = None,
        synchronous_commit: bool = True,
    ) -> None:
        super().__init__()
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
        self.worker_id = check.check_worker_id(worker_id or service.default_id())
        self.schema = validate_schema_name(schema)
        self.poll_interval = seconds("poll_interval", poll_interval)
        self.listen = bool(listen)
        self.heartbeat_timeout = seconds("heartbeat_timeout", heartbeat_timeout)
        self.job_expiry = seconds("job_expiry", job_expiry)
        self.shutdown_timeout = seconds("shutdown_timeout", shutdown_timeout)
        self.unknown_tasks = unknown_tasks
        self.prune_interval = (
            None if prune_interval is None else seconds("prune_interval", prune_interval)
        )
        self.observer = observer
        if not isinstance(synchronous_commit, bool):
            raise InvalidArgumentError(
                "synchronous_commit", synchronous_commit, "it must be True or False"
            )
        self.synchronous_commit = synchronous_commit
        self.stats = WorkerStats()
        self._url = libpq_url(database)

    def __str__(self) -> str:
        return f"worker {self.worker_id}"

    def run(self, *, drain: bool = False, install_signal_handlers: bool = True) -> WorkerStats:
        """Run until stopped (or, with ``drain``, until no job is due); return the stats.

        Under the main thread, SIGTERM and SIGINT stop the worker gracefully; a second
        signal exits the process at once.
        """
        service.run({self: self.run_async(drain=drain)}, signals=install_signal_handlers)
        return self.stats

    async def run_async(self, *, drain: bool = False) -> WorkerStats:
        """Run on the current event loop (no signal handlers); see :meth:`run`."""
        wake = asyncio.Event()  # set by a NOTIFY, by stop(), and when a cycle falls due
        with self._waking(wake):
            await _Run(self, url=self._url, wake=wake, pause=self._pause, drain=drain).execute()
        return self.stats


class _Run:
    """One run of a worker: its connection, the jobs it holds, and the loop that takes
    jobs, starts them and reports how they ended."""

    def __init__(
        self,
        worker: Worker,
        *,
        url: str,
        wake: asyncio.Event,
        pause: Callable[[float], Awaitable[None]],
        drain: bool,
    ) -> None:
        self.worker = worker
        self.url = url
        self.wake = wake
        self.drain = drain
        self.stats = worker.stats
        self.observer = worker.observer
        self.policy = Policy(worker.concurrency, worker.prefetch, worker.poll_interval)
        self.pace = Pace(time.monotonic())
        self.results = Results()
        # Taken, waiting for a slot, with when they were taken (monotonic).
        self.prefetched: collections.deque[tuple[Job, float]] = collections.deque()
        self.spans = _job_spans(worker.worker_id)
        self.handlers = Handlers(
            worker.tasks, worker.worker_id, worker.concurrency, self.finish, self.spans
        )
        # The running jobs this worker is asked to stop (their Job.cancel_requested reads
        # it), and whether a NOTIFY said there may be new requests.
        self.cancel_requests: set[int] = set()
        self.cancel_notified = False
        self.transactions = HandlerTransactions(url, worker.schema, worker.concurrency)
        self.connection = WorkerConnection(
            url,
            worker.schema,
            worker.worker_id,
            task_filter=None if worker.unknown_tasks == "fail" else worker.tasks.names,
            job_expiry=worker.job_expiry,
            heartbeat_timeout=worker.heartbeat_timeout,
            info={"concurrency": worker.concurrency, "tasks": worker.tasks.names},
            on_lost=self._lost_connection,
            sleep=pause,
            cancel_requests=self.cancel_requests,
            transactions=self.transactions,
            traced=self.spans is not None,
            synchronous_commit=worker.synchronous_commit,
        )
        self.helpers: list[asyncio.Task[None]] = []
        # False after a reconnect (or after being given up for dead), until the jobs a lost
        # answer may have handed over are given back.
        self.reconciled = True
        self._fields = {"worker_id": worker.worker_id}

    def load(self, now: float) -> Load:
        """What the policy decides on."""
        prefetched = self.prefetched
        return Load(
            running=len(self.handlers),
            prefetched=len(prefetched),
            results=len(self.results),
            results_age=now - self.results.since,
            prefetched_age=now - prefetched[0][1] if prefetched else 0.0,
            since_finished=now - self.pace.last_finished,
            average_duration=self.pace.average,
        )

    # --- Lifecycle ----------------------------------------------------------------------------

    async def execute(self) -> None:
        worker = self.worker
        # The first statement does not retry: a wrong URL or a missing schema fails at once.
        try:
            await self.connection.heartbeat(retry=False)
        except BaseException:
            await self._close()
            raise
        log.info(
            "worker %s started: %d task(s), concurrency %d, %s",
            worker.worker_id,
            len(worker.tasks),
            worker.concurrency,
            "listening" if worker.listen else f"polling every {worker.poll_interval:g} s",
            extra=self._fields,
        )
        if not self.connection.reads_cancel_requests:
            log.info(
                "the job schema is at version 1: jobs cannot be cancelled while they run "
                "until this worker restarts on an upgraded schema",
                extra=self._fields,
            )
        helpers = [self.heartbeats()] + ([self.listener()] if worker.listen else [])
        if worker.prune_interval is not None and not self.drain:
            helpers.append(
                prune_periodically(
                    self.url, worker.schema, worker.worker_id, worker.prune_interval, self._fields
                )
            )
        self.helpers = [asyncio.create_task(helper) for helper in helpers]
        taking = asyncio.create_task(self.take_jobs())
        try:
            # A helper that dies (an error other than a lost connection) stops the worker.
            done, _ = await asyncio.wait(
                [taking, *self.helpers], return_when=asyncio.FIRST_COMPLETED
            )
            if taking not in done:
                worker.stop()
                await asyncio.wait([taking])
            for task in done:
                task.result()
        finally:
            await self.shut_down()

    async def shut_down(self) -> None:
        unfinished = await self.handlers.stop(self.worker.shutdown_timeout)
        for helper in self.helpers:
            helper.cancel()
        await asyncio.gather(*self.helpers, return_exceptions=True)
        with contextlib.suppress(*CONNECTION_ERRORS):
            await self.flush()
        # Whatever this worker still holds goes back, with its attempt refunded (plain
        # handlers past the timeout cannot be stopped: their jobs go back too).
        held = sorted({*unfinished, *(job.id for job, _ in self.prefetched)})
        self.prefetched.clear()
        if self.spans is not None:
            self.spans.end_unfinished()
        with contextlib.suppress(*CONNECTION_ERRORS):
            await self.connection.release(None, retry=False)
        self.stats.released += len(held)
        if held:
            log.warning("released %d unfinished job(s): %s", len(held), held, extra=self._fields)
        await self._close()
        log.info(
            "worker %s stopped: %d completed, %d failed",
            self.worker.worker_id,
            self.stats.completed,
            self.stats.failed,
            extra=self._fields,
        )

    async def _close(self) -> None:
        self.handlers.close()
        await self.connection.close()
        await self.transactions.close()

    # --- Taking jobs --------------------------------------------------------------------------

    async def take_jobs(self) -> None:
        policy = self.policy
        while not self.worker.stopping:
            if policy.prefetch_is_stuck(self.load(time.monotonic())):
                await self.give_back_prefetched()
            load = self.load(time.monotonic())
            if not policy.cycle_due(load) and not self.cancel_notified:
                self.wake.clear()
                await self._wait(policy.idle_wait(load))
                continue
            wanted = policy.room(load)
            if not self.reconciled:
                await self._reconcile()
            self.wake.clear()
            self.cancel_notified = False
            started = time.monotonic()
            cycle = await self.cycle(max_jobs=wanted)
            now = time.monotonic()
            self.prefetched.extend((job, now) for job in cycle.taken)
            self.start_prefetched()
            if self.observer is not None:
                self.observer.cycle_done(
                    now - started, len(cycle.taken), len(self.prefetched), len(self.handlers)
                )
            if wanted == 0 or len(cycle.taken) == wanted:
                continue  # maybe more are due: take again as soon as there is room
            wait, due = policy.after_cycle(cycle.next_run_at, took_jobs=bool(cycle.taken))
            if self.drain and not due and not cycle.taken and not self.holds_jobs():
                return
            await self._wait(wait)

    def holds_jobs(self) -> bool:
        return bool(self.handlers or self.prefetched or self.results)

    async def cycle(self, *, max_jobs: int) -> Cycle:
        """Report the results gathered so far and take up to ``max_jobs`` jobs."""
        batch = self.results.take()
        try:
            cycle = await self.connection.cycle(batch, max_jobs)
        except BaseException:
            self.results.give_back(batch)
            raise
        self.stats.completed += cycle.completed
        self.stats.failed += cycle.failed
        if cycle.cancel_requested:
            self.cancel(cycle.cancel_requested)
        missing = len(batch) - cycle.completed - cycle.failed
        if missing and cycle.resent:
            # The attempt lost with the connection may have recorded them: not news.
            log.info(
                "%d result(s) sent again after a reconnect were already recorded "
                "(or their jobs taken over)",
                missing,
                extra=self._fields,
            )
        elif missing > 0:
            self.stats.lost += missing
            log.warning(
                "%d job(s) finished here had been taken over (this worker was silent longer "
                "than its heartbeat timeout); they may run again elsewhere",
                missing,
                extra=self._fields,
            )
        return cycle

    async def flush(self) -> None:
        """Report the results gathered so far, taking no job."""
        while self.results:
            await self.cycle(max_jobs=0)

    async def give_back_prefetched(self) -> None:
        """Release the prefetched jobs for other workers to take."""
        given_back = len(self.prefetched)
        await self.release_prefetched()
        log.info(
            "gave back %d prefetched job(s): every slot has been busy for %.2f s",
            given_back,
            time.monotonic() - self.pace.last_finished,
            extra=self._fields,
        )

    async def release_prefetched(self) -> None:
        """Give back (attempt refunded) every job held but the running ones and those with
        a result waiting: the prefetched, and any a lost answer handed over."""
        self.stats.released += len(self.prefetched)
        self.prefetched.clear()
        await self.connection.release([*self.handlers.job_ids(), *self.results.job_ids()])

    async def _reconcile(self) -> None:
        """After a reconnect (or after being given up for dead): give back the jobs a lost
        answer may have handed us, and the prefetched ones, which may have been taken over."""
        await self.flush()
        await self.release_prefetched()
        await self.connection.heartbeat()
        self.reconciled = True

    # --- Running jobs -------------------------------------------------------------------------

    def start_prefetched(self) -> None:
        """Start prefetched jobs in the free slots (none once stopping)."""
        prefetched, handlers = self.prefetched, self.handlers
        concurrency = self.worker.concurrency
        observer = self.observer
        while prefetched and len(handlers) < concurrency and not self.worker.stopping:
            job = prefetched.popleft()[0]
            if observer is not None:
                observer.job_started(job)
            handlers.start(job)

    def cancel(self, job_ids: list[int]) -> None:
        """Stop the jobs of ``job_ids`` this worker holds and has not been asked to stop
        yet: a prefetched job fails at once, unstarted; a running one is stopped. (Others
        have finished here: the result waiting for the next cycle decides.)"""
        new = {job_id for job_id in job_ids if job_id not in self.cancel_requests}
        if not new:
            return
        unstarted = [job for job, _ in self.prefetched if job.id in new]
        if unstarted:
            self.prefetched = collections.deque(
                entry for entry in self.prefetched if entry[0].id not in new
            )
            now = time.monotonic()
            for job in unstarted:
                self.results.failed(job.id, "cancelled at an operator's request before it ran", now)
                if self.observer is not None:
                    self.observer.job_finished(job, "cancelled", 0.0)
                log.info(
                    "job %d (%s) cancelled before it started",
                    job.id,
                    job.task_identifier,
                    extra={
                        **self._fields,
                        "job_id": job.id,
                        "task": job.task_identifier,
                        "queue": job.queue_name,
                        "attempt": job.attempts,
                        "duration_ms": 0.0,
                        "outcome": "cancelled",
                    },
                )
            # Report them now: their history row says when they were cancelled.
            self.cancel_notified = True
            self.wake.set()
        for job_id in new:
            if job_id in self.handlers:
                self.cancel_requests.add(job_id)
                self.handlers.cancel(job_id)
                log.info(
                    "job %d: cancel requested, stopping it",
                    job_id,
                    extra={**self._fields, "job_id": job_id},
                )

    def finish(self, job: Job, error: BaseException | None, duration: float) -> None:
        """A handler ended (called by the handlers): keep its result for the next cycle,
        start the next prefetched job, and wake the loop if that makes a cycle due."""
        now = time.monotonic()
        how = None if error is None else self._failed(job, error, now)
        # Before the discard below: job.cancel_requested tells.
        if self.observer is not None:
            self.observer.job_finished(job, outcome_of(job, error, how), duration)
        if self.spans is not None:
            self.spans.end(job, error, outcome_of(job, error, how), how)
        if self.cancel_requests:
            self.cancel_requests.discard(job.id)
        self.pace.finished(duration, now)
        if error is None:
            if job.id in self.transactions.done:
                # Completed in its handler's own transaction: nothing to report.
                self.transactions.done.discard(job.id)
                self.stats.completed += 1
            else:
                self.results.completed(job.id, now)
        self.start_prefetched()
        # Once the loop is woken it decides afresh: skip the decision (a Load per job was 8%
        # of a no-op job's worker CPU) until it has run.
        if not self.wake.is_set() and self.policy.cycle_due(self.load(now)):
            self.wake.set()

    def _failed(self, job: Job, error: BaseException, now: float) -> Failure:
        """Keep a failed run's result as :func:`sqla_pgjobs.outcomes.failure` says."""
        how = failure(error, self.worker.tasks.get(job.task_identifier), job)
        text = error_text(error)
        if how.run_at is not None:
            self.results.retried(job.id, text, how.run_at, now, refunded=how.refunded)
        else:
            self.results.failed(job.id, text, now, for_good=how.for_good)
        return how

    # --- Heartbeats, notifications, connection loss ---------------------------------------------

    async def heartbeats(self) -> None:
        interval = self.worker.heartbeat_timeout / 6
        while True:
            await asyncio.sleep(interval)
            heartbeat = await self.connection.heartbeat()
            if heartbeat.cancel_requested:
                self.cancel(heartbeat.cancel_requested)
            if not heartbeat.registered:
                log.warning(
                    "this worker had been given up for dead (silent longer than %g s); "
                    "jobs it held may have been taken over",
                    self.worker.heartbeat_timeout,
                    extra=self._fields,
                )
                self.reconciled = False

    async def listener(self) -> None:
        await listen(
            self.url,
            ["jobs:insert", "jobs:cancel"],
            self.wake,
            log,
            self._fields,
            on_notify=self._notified,
        )

    def _notified(self, channel: str, payload: str) -> None:
        if channel == "jobs:cancel" and payload == self.worker.worker_id:
            self.cancel_notified = True

    def _lost_connection(self, exc: Exception) -> None:
        self.stats.reconnects += 1
        log.warning("database connection lost (%s); reconnecting", exc, extra=self._fields)
        self.reconciled = False

    async def _wait(self, timeout: float) -> None:
        """Until woken (see ``wake``) or ``timeout`` seconds, whichever comes first."""
        if self.wake.is_set():
            return
        timer = asyncio.get_running_loop().call_later(timeout, self.wake.set)
        try:
            await self.wake.wait()
        finally:
            timer.cancel()


def _job_spans(worker_id: str) -> JobSpans | None:
    """The spans of a worker's runs when tracing is on (the module is imported only then)."""
    tracer = tracing.tracer()
    if tracer is None:
        return None
    from sqla_pgjobs.worker.spans import JobSpans

    return JobSpans(tracer, worker_id)
