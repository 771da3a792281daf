"""A tracing worker's spans: one ``process <task>`` span (kind CONSUMER) per run, the child
of the span that enqueued the job when its trace context was stored (see
:mod:`sqla_pgjobs.tracing`, which says what the spans carry).

Imported only by a worker that traces (:func:`sqla_pgjobs.tracing.instrument` was called),
so the worker of an application without OpenTelemetry never imports it. A span starts on
the event loop when the job starts (so the log line of the start carries its trace id), is
made current around the handler (an ``async`` one's task, or the handler thread), and ends
on the event loop with the run's outcome.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind, Status, StatusCode, format_trace_id

from sqla_pgjobs.tracing import MESSAGING_SYSTEM

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    from opentelemetry.trace import Span, Tracer

    from sqla_pgjobs.outcomes import Failure
    from sqla_pgjobs.tasks import Job
    from sqla_pgjobs.worker.observer import Outcome

__all__ = ["JobSpans"]

#: How much of an error's text goes into a span's status description.
_STATUS_TEXT = 200


class JobSpans:
    """The spans of the runs of worker ``worker_id``, from ``tracer``."""

    def __init__(self, tracer: Tracer, worker_id: str) -> None:
        self._tracer = tracer
        self._worker_id = worker_id
        self._spans: dict[int, Span] = {}

    def __len__(self) -> int:
        return len(self._spans)

    def start(self, job: Job) -> Span:
        """Start the span of ``job``'s run (ended by :meth:`end`). Its attributes are the
        few that identify the run: each costs the SDK about 1.5 us per span to check."""
        stored = job._trace_context
        # Extracted onto an empty context: the parent is the enqueuing span or nothing,
        # never whatever happens to be current on the worker's loop.
        parent = propagate.extract(stored, context=Context()) if stored else Context()
        attributes: dict[str, Any] = {
            "messaging.system": MESSAGING_SYSTEM,
            "messaging.operation.type": "process",
            "messaging.operation.name": "process",
            "messaging.destination.name": job.task_identifier,
            "messaging.message.id": str(job.id),
            "pgjobs.job.attempt": job.attempts,
            "pgjobs.worker.id": self._worker_id,
        }
        if job.queue_name is not None:
            attributes["pgjobs.job.queue"] = job.queue_name
        if job.database_id is not None:
            attributes["pgjobs.job.tenant"] = str(job.database_id)
        span = self._tracer.start_span(
            f"process {job.task_identifier}",
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes=attributes,
        )
        self._spans[job.id] = span
        return span

    def current(self, span: Span) -> AbstractContextManager[Span]:
        """``span`` as the current span (around a handler), without ending it."""
        return trace.use_span(
            span, end_on_exit=False, record_exception=False, set_status_on_exception=False
        )

    def trace_id(self, job_id: int) -> str | None:
        """The trace id (32 hex digits) of the running job ``job_id``, for its log lines."""
        span = self._spans.get(job_id)
        return None if span is None else format_trace_id(span.get_span_context().trace_id)

    def end(
        self, job: Job, error: BaseException | None, outcome: Outcome, how: Failure | None
    ) -> None:
        """End the span of ``job``'s run, which ended with ``error`` (None: it returned)
        and ends the job as ``outcome``, recorded as ``how`` says. A snooze is not an
        error; a cancelled run records its exception but is not an error either."""
        span = self._spans.pop(job.id, None)
        if span is None:
            return
        snoozed = how is not None and how.refunded
        span.set_attribute("pgjobs.job.outcome", "snoozed" if snoozed else outcome)
        if error is not None and not snoozed:
            span.record_exception(error)
            if outcome != "cancelled":
                text = f"{type(error).__name__}: {error}".split("\n", 1)[0]
                span.set_status(Status(StatusCode.ERROR, text[:_STATUS_TEXT]))
        span.end()

    def end_unfinished(self) -> None:
        """End the spans of runs that never reported (the worker stopped, and gave their
        jobs back): outcome ``released``."""
        spans, self._spans = self._spans, {}
        for span in spans.values():
            span.set_attribute("pgjobs.job.outcome", "released")
            span.end()
