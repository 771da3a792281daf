"""Running jobs' handlers: ``async`` ones as tasks on the worker's event loop, plain ones on
its handler threads (:mod:`sqla_pgjobs.worker.threads`). Each run's end is handed to the
``on_finished`` callback with the exception it raised (None when it returned) and its
duration, and logged.

Timeouts (``Task.timeout``): an ``async`` handler is cancelled and its job fails with a
TimeoutError. A plain function cannot be stopped: a warning is logged at the timeout, the
job keeps its slot until the function returns (so that it never runs twice at once), and
then fails with a TimeoutError.

Cancel requests (:meth:`Handlers.cancel`): an ``async`` handler's task is cancelled and its
run ends with a :class:`~sqla_pgjobs.errors.JobCancelledError`; a plain function sees
``job.cancel_requested`` and may stop by raising. Either way the failure reported for a
job with a cancel request ends it as cancelled in the database.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from sqla_pgjobs.errors import InvalidPayloadError, JobCancelledError
from sqla_pgjobs.worker.threads import HandlerThreads

if TYPE_CHECKING:
    from collections.abc import Callable

    from opentelemetry.trace import Span

    from sqla_pgjobs.tasks import Job, Task, TaskRegistry
    from sqla_pgjobs.worker.spans import JobSpans
    from sqla_pgjobs.worker.threads import Outcome

__all__ = ["Handlers"]

log = logging.getLogger("sqla_pgjobs.worker")


class Handlers:
    """The handlers of ``tasks`` running for worker ``worker_id``, at most ``concurrency``
    plain ones at once, each in its span of ``spans`` (None: not traced)."""

    def __init__(
        self,
        tasks: TaskRegistry,
        worker_id: str,
        concurrency: int,
        on_finished: Callable[[Job, BaseException | None, float], None],
        spans: JobSpans | None = None,
    ) -> None:
        self._tasks = tasks
        self._worker_id = worker_id
        self._on_finished = on_finished
        self._spans = spans
        # A task for an async handler, a future the handler threads resolve for a plain one.
        self._running: dict[int, asyncio.Future[None]] = {}
        self._threads = HandlerThreads(
            asyncio.get_running_loop(), concurrency, self._on_outcomes, spans
        )

    def __len__(self) -> int:
        return len(self._running)

    def job_ids(self) -> list[int]:
        return list(self._running)

    def __contains__(self, job_id: int) -> bool:
        return job_id in self._running

    def cancel(self, job_id: int) -> None:
        """Stop the run of ``job_id``, whose cancellation was requested: an ``async``
        handler's task is cancelled; a plain function cannot be, and is left to look at
        ``job.cancel_requested``."""
        running = self._running.get(job_id)
        if isinstance(running, asyncio.Task):
            # On the next turn of the loop: a task created in this one has not entered its
            # handler yet, and a cancel now would end it before it could report the run.
            asyncio.get_running_loop().call_soon(running.cancel, "cancel requested")

    def start(self, job: Job) -> None:
        task = self._tasks.get(job.task_identifier)
        span = None if self._spans is None else self._spans.start(job)
        # Log records cost more than a no-op job: build them only when they are wanted.
        if log.isEnabledFor(logging.INFO):
            log.info(
                "job %d (%s) started, attempt %d of %d",
                job.id,
                job.task_identifier,
                job.attempts,
                job.max_attempts,
                extra=self._fields(job),
            )
        if task is None or task.is_async:
            self._running[job.id] = asyncio.create_task(
                self._run_async(job, task, span), name=f"job-{job.id}"
            )
            return
        running = self._running[job.id] = asyncio.get_running_loop().create_future()
        if task.timeout is not None:
            timeout = task.timeout.total_seconds()
            warning = asyncio.get_running_loop().call_later(
                timeout, self._over_timeout, job, timeout
            )
            running.add_done_callback(lambda _: warning.cancel())
        self._threads.submit(job, task, span)

    async def stop(self, timeout: float) -> list[int]:
        """Wait up to ``timeout`` seconds for the running handlers, then cancel the async
        ones still running. Returns the jobs that did not finish (their results will never
        come; plain handlers past the timeout cannot be stopped and are abandoned)."""
        if not self._running:
            return []
        log.info(
            "waiting up to %.0f s for %d running job(s)",
            timeout,
            len(self._running),
            extra={"worker_id": self._worker_id},
        )
        _, pending = await asyncio.wait(list(self._running.values()), timeout=timeout)
        unfinished = [job_id for job_id, run in self._running.items() if run in pending]
        for run in pending:
            run.cancel()
        if pending:
            await asyncio.wait(pending, timeout=1.0)
        self._running.clear()
        return unfinished

    def close(self) -> None:
        self._threads.close()

    # --- Runs -----------------------------------------------------------------------------------

    async def _run_async(self, job: Job, task: Task | None, span: Span | None) -> None:
        started = time.monotonic()
        error: BaseException | None = None
        try:
            if task is None:
                raise LookupError(
                    f"no handler for task {job.task_identifier!r} in this worker "
                    f"(it has: {', '.join(self._tasks.names) or 'none'})"
                )
            timeout = task.timeout.total_seconds() if task.timeout is not None else None
            if span is None or self._spans is None:
                await asyncio.wait_for(task(job.payload, job), timeout=timeout)
            else:
                with self._spans.current(span):
                    await asyncio.wait_for(task(job.payload, job), timeout=timeout)
        except asyncio.CancelledError as exc:
            if not job.cancel_requested:
                # Stopping: the job is released with its attempt refunded, not failed.
                self._running.pop(job.id, None)
                raise
            # Its cancellation was requested: the run ends here, as cancelled.
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()
            error = JobCancelledError()
            error.__cause__ = exc
        except BaseException as exc:
            error = exc
        self._finish(job, task, error, time.monotonic() - started)

    def _on_outcomes(self, outcomes: list[Outcome]) -> None:
        """Plain handlers' outcomes, delivered by the handler threads."""
        for outcome in outcomes:
            job, task = outcome.job, outcome.task
            running = self._running.get(job.id)
            if running is None or running.done():
                continue  # given up while stopping: the job has been released
            error = outcome.error
            if error is None and task.timeout is not None:
                limit = task.timeout.total_seconds()
                if outcome.duration > limit:
                    error = TimeoutError(
                        f"the handler ran {outcome.duration:.1f} s, over its {limit:g} s timeout"
                    )
            running.set_result(None)
            self._finish(job, task, error, outcome.duration)

    def _over_timeout(self, job: Job, timeout: float) -> None:
        log.warning(
            "job %d (%s) is over its %g s timeout; a plain function cannot be "
            "stopped, so the job keeps its slot until it returns and then fails",
            job.id,
            job.task_identifier,
            timeout,
            extra={"worker_id": self._worker_id, "job_id": job.id},
        )

    def _finish(
        self, job: Job, task: Task | None, error: BaseException | None, duration: float
    ) -> None:
        self._running.pop(job.id, None)
        if error is None:
            if log.isEnabledFor(logging.INFO):
                log.info(
                    "job %d (%s) completed in %.1f ms",
                    job.id,
                    job.task_identifier,
                    duration * 1000,
                    extra={
                        **self._fields(job),
                        "duration_ms": round(duration * 1000, 3),
                        "outcome": "completed",
                    },
                )
        elif job.cancel_requested:
            log.info(
                "job %d (%s) cancelled after %.1f ms: %s",
                job.id,
                job.task_identifier,
                duration * 1000,
                f"{type(error).__name__}: {error}".split("\n", 1)[0],
                extra={
                    **self._fields(job),
                    "duration_ms": round(duration * 1000, 3),
                    "outcome": "cancelled",
                },
            )
        else:
            log.warning(
                "job %d (%s) failed in %.1f ms: %s",
                job.id,
                job.task_identifier,
                duration * 1000,
                f"{type(error).__name__}: {error}".split("\n", 1)[0],
                extra={
                    **self._fields(job),
                    "duration_ms": round(duration * 1000, 3),
                    "outcome": "failed",
                    "will_retry": job.attempts < job.max_attempts
                    and not isinstance(error, InvalidPayloadError),
                },
            )
        self._on_finished(job, error, duration)

    def _fields(self, job: Job) -> dict[str, Any]:
        fields = {
            "worker_id": self._worker_id,
            "job_id": job.id,
            "task": job.task_identifier,
            "queue": job.queue_name,
            "attempt": job.attempts,
            "max_attempts": job.max_attempts,
        }
        if self._spans is not None:
            fields["trace_id"] = self._spans.trace_id(job.id)
        return fields
